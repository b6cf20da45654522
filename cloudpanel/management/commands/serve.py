"""Serve the dashboard (HTTP + websockets). Embedded, it also runs the worker, beat and the listener.

Without REDIS_URL the broker and channel layer live in memory, so the Celery worker, the
periodic schedule and the event listener must run in this same process: they start as
threads here. With REDIS_URL they are separate processes (celery worker, celery beat,
manage.py listen_events), and the web tier itself runs as CLOUDPANEL_WEB_WORKERS processes
(default: one per CPU, at most 4) on one port: Django runs a process's views one at a time, so one
process uses at most one core.
"""

import logging
import os
import threading

import uvicorn
from channels.routing import get_default_application
from django.conf import settings
from django.core.management.base import BaseCommand

from cloudpanel import telemetry

log = logging.getLogger(__name__)


def start_embedded_worker() -> None:
    """A Celery worker on the in-memory broker, in a thread of this process."""
    from cloudpanel.celery import app

    worker = app.WorkController(pool_cls="threads", concurrency=4, without_heartbeat=True,
                                without_mingle=True, without_gossip=True, queues=[settings.CELERY_TASK_DEFAULT_QUEUE])
    threading.Thread(target=worker.start, name="celery-worker", daemon=True).start()


def start_listener() -> None:
    from hosts.listener import Listener

    threading.Thread(target=Listener().run, name="event-listener", daemon=True).start()


def start_embedded_beat() -> None:
    """The periodic schedule (cloudpanel/schedule.py), sent to the in-process worker from a thread."""
    from celery.beat import EmbeddedService

    from cloudpanel.celery import app

    EmbeddedService(app, thread=True, scheduler_cls="celery.beat:Scheduler").start()


class Command(BaseCommand):
    help = "Serve CloudPanel; without REDIS_URL, also run the worker, beat and the event listener in-process."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host: str, port: int, **options):
        workers = 1 if settings.EMBEDDED else settings.CLOUDPANEL_WEB_WORKERS
        telemetry.start_afresh()
        if settings.EMBEDDED:
            if "CLOUDPANEL_PANEL_URL" not in os.environ:  # the in-process worker fetches image bytes from here
                local = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
                settings.CLOUDPANEL_PANEL_URL = f"http://{local}:{port}"
            start_embedded_worker()
            start_listener()
            start_embedded_beat()
            mode = "embedded (worker, listener and periodic schedule in this process)"
        else:
            mode = f"web only, {workers} process{'es' if workers > 1 else ''} (run the worker, beat and listener " \
                   "as their own processes)"
        self.stdout.write(f"CloudPanel on http://{host}:{port}/ — {mode}")
        # uvicorn rather than daphne: it reads a request body as the application consumes it, so a
        # multi-GiB image upload streams to disk instead of being queued in memory first.
        # Behind a proxy, the client's address (audit log, sign-in lock-out) comes from its header.
        served = {"host": host, "port": port, "http": "httptools", "ws": "websockets", "lifespan": "off",
                   "log_level": "warning", "proxy_headers": settings.CLOUDPANEL_BEHIND_PROXY,
                   "forwarded_allow_ips": "*" if settings.CLOUDPANEL_BEHIND_PROXY else None}
        if workers == 1:
            uvicorn.Server(uvicorn.Config(get_default_application(), **served)).run()
        else:  # uvicorn's supervisor: it binds the port, starts the workers and replaces one that dies
            os.environ["CLOUDPANEL_WEB_PARENT"] = str(os.getpid())
            uvicorn.run("cloudpanel.webworker:application", workers=workers, timeout_graceful_shutdown=10,
                        **served)
