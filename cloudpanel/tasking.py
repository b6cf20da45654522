"""The one way to queue a task: once the surrounding transaction commits, marked with the host it must run on.

The queue itself is chosen by one router, in the composition root (cloudpanel/celery.py): with per-host
workers a host's tasks go to its queue `host.<id>` (or one of its lanes, `host.<id>.<lane>`), the rest to the
default one.

A request never leaves work behind that nothing will do. Before anything it stores is committed, the
broker is asked whether it answers: when it does not, the request fails with QueueUnavailable (503,
Retry-After) and its transaction is rolled back, so nothing was stored. Should the broker go away in the
moment between that check and the commit, the task's owner hears of it through on_lost (an action is
failed with the reason, so its instance is not left busy) and the request fails the same way.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import redis
from celery import Task, shared_task
from django.conf import settings
from django.db import DatabaseError, InterfaceError, connections, transaction
from django.db import OperationalError as DatabaseGone
from kombu.exceptions import OperationalError

from cloudpanel.exceptions import Unavailable

HOST_HEADER = "cloudpanel_host"
LANE_HEADER = "cloudpanel_lane"
RETRY_AFTER_SECONDS = 15
# A dropped connection, a restarting server, "too many clients": gone for a while, back later.
TRANSIENT = (DatabaseGone, InterfaceError)
log = logging.getLogger(__name__)
T = TypeVar("T")


def task(fn: Callable) -> Task:
    """A Celery task that a database outage delays rather than drops: retried with back-off (up to 15 s apart)
    until the database answers. Its body must be safe to run again (instances' tasks claim their action first)."""
    return shared_task(autoretry_for=TRANSIENT, retry_backoff=1, retry_backoff_max=15, max_retries=None)(fn)


def persist(write: Callable[..., T], *args: object, within: float = 30.0, **kwargs: object) -> T:
    """Call write(*args, **kwargs), trying again while the database is away, for up to `within` seconds: what a
    task has done on a host is recorded once the database is back (beyond that, raised)."""
    deadline, pause = time.monotonic() + within, 0.25
    while True:
        try:
            return write(*args, **kwargs)
        except TRANSIENT as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("%s: the database is away (%s); trying again in %.2g s", getattr(write, "__name__", write),
                        exc, pause)
            connections.close_all()
            time.sleep(pause)
            pause = min(pause * 2, 4.0)


class QueueUnavailable(Unavailable):
    """The task queue (the broker) does not answer: nothing was done; try again shortly."""

    retry_after = RETRY_AFTER_SECONDS


@functools.cache
def _broker(url: str) -> redis.Redis | None:
    """A client of the broker to ask, with short timeouts; None for a broker inside this process."""
    if not url.startswith(("redis://", "rediss://")):
        return None
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)


def broker_client() -> redis.Redis | None:
    """A client of the broker (short timeouts), or None when the broker lives in this process."""
    return _broker(settings.CELERY_BROKER_URL)


def check_queue() -> None:
    """Raise QueueUnavailable unless the broker answers."""
    client = _broker(settings.CELERY_BROKER_URL)
    if client is None or settings.CELERY_TASK_ALWAYS_EAGER:
        return
    try:
        client.ping()
    except redis.RedisError as exc:
        raise QueueUnavailable(f"the task queue does not answer ({exc}); nothing was done: try again shortly") \
            from None


def enqueue(task: Task, *args: object, host_id: int | None = None, lane: str = "",
            on_lost: Callable[[str], None] | None = None, expires: float | None = None) -> None:
    """Send the task with these arguments once the transaction commits (at once outside one); host_id: the host
    whose worker must run it (lane: which of its queues, host.<id>.<lane>, if not its main one); on_lost(reason):
    told if the broker could not take it after all; expires: seconds after which a worker drops it untouched."""
    check_queue()
    headers = {HOST_HEADER: host_id} if host_id is not None else {}
    if lane:
        headers[LANE_HEADER] = lane
    transaction.on_commit(lambda: _publish(task, args, headers, on_lost, expires))


def _publish(task: Task, args: tuple, headers: dict, on_lost: Callable[[str], None] | None,
             expires: float | None) -> None:
    try:
        task.apply_async(args, headers=headers, **({"expires": expires} if expires is not None else {}))
    except OperationalError as exc:
        reason = f"the task queue could not take the work ({exc}); try again"
        log.error("%s%r: %s", task.name, args, reason)
        if on_lost is not None:
            on_lost(reason)
        raise QueueUnavailable(reason) from None


@contextmanager
def lease(renew: Callable[[], bool], every: float) -> Iterator[None]:
    """While the block runs, call renew() every `every` seconds from a thread of its own: the sign, stored by renew,
    that the worker running the block is alive. A renewal the database refused is tried again every half second
    until it goes through (the lease must not lapse for longer than the outage); renew() answering False (the work
    was taken from this worker meanwhile) is logged."""
    done = threading.Event()

    def beat() -> None:
        pause = every
        while not done.wait(pause):
            try:
                if not renew():
                    log.warning("lease not renewed: the work is no longer this worker's")
                pause = every
            except DatabaseError as exc:
                log.warning("lease not renewed: %s", exc)
                pause = min(every, 0.5)
            finally:
                connections.close_all()  # this thread's connection goes back to the pool

    thread = threading.Thread(target=beat, name="lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def host_of(options: dict) -> int | None:
    """The host a queued task was marked with (see enqueue)."""
    return (options.get("headers") or {}).get(HOST_HEADER)


def lane_of(options: dict) -> str:
    """The host's queue a queued task was marked with ("": its main one; see enqueue)."""
    return (options.get("headers") or {}).get(LANE_HEADER) or ""
