"""The one way to queue a task: once the surrounding transaction commits, marked with the host it must run on.

The queue itself is chosen by one router, in the composition root (cloudpanel/celery.py): with per-host
workers a host's tasks go to its queue `host.<id>`, the rest to the default one.
"""

from celery import Task
from django.db import transaction

HOST_HEADER = "cloudpanel_host"


def enqueue(task: Task, *args: object, host_id: int | None = None) -> None:
    """Send the task with these arguments once the transaction commits (at once outside one); host_id: the host
    whose worker must run it."""
    headers = {HOST_HEADER: host_id} if host_id is not None else {}
    transaction.on_commit(lambda: task.apply_async(args, headers=headers))


def host_of(options: dict) -> int | None:
    """The host a queued task was marked with (see enqueue)."""
    return (options.get("headers") or {}).get(HOST_HEADER)
