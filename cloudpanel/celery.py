"""The Celery app, and its periodic schedule (cloudpanel/schedule.py) for beat."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpanel.settings")

app = Celery("cloudpanel")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def route_to_host(name: str, args: tuple, kwargs: dict, options: dict, task: object = None,
                  **_kw: object) -> dict | None:
    """The one router: with per-host workers (CLOUDPANEL_HOST_QUEUES), a task marked with a host goes to its queue
    (host.<id>, or host.<id>.<lane> for a lane of it)."""
    from django.conf import settings

    from cloudpanel.tasking import host_of, lane_of

    host_id = host_of(options)
    if host_id is None or not settings.CLOUDPANEL_HOST_QUEUES:
        return None
    lane = lane_of(options)
    return {"queue": f"host.{host_id}.{lane}" if lane else f"host.{host_id}"}


app.conf.task_routes = (route_to_host,)


@app.on_after_finalize.connect
def _schedule(sender: Celery, **_kwargs) -> None:
    from cloudpanel.schedule import beat_schedule

    sender.conf.beat_schedule = beat_schedule()


@signals.task_prerun.connect
@signals.task_postrun.connect
def _recycle_db_connections(**_kwargs) -> None:
    """Honour CONN_MAX_AGE and health checks around tasks, as Django does around requests."""
    from django.db import close_old_connections

    close_old_connections()
