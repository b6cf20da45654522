"""The Celery app. Reconciliation is scheduled by the event listener, not by beat."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpanel.settings")

app = Celery("cloudpanel")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
