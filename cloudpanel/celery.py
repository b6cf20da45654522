"""The Celery app. Reconciliation is scheduled by the event listener, not by beat."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpanel.settings")

app = Celery("cloudpanel")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect
@signals.task_postrun.connect
def _recycle_db_connections(**_kwargs) -> None:
    """Honour CONN_MAX_AGE and health checks around tasks, as Django does around requests."""
    from django.db import close_old_connections

    close_old_connections()
