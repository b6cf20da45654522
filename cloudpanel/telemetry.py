"""The web processes' own figures for /metrics: requests by view and status, their latency, open websockets.

prometheus_client runs in its multiprocess mode: each process writes its figures to files in
PROMETHEUS_MULTIPROC_DIR (settings: one directory per `manage.py serve`, shared by the web processes it starts,
emptied as it starts), and a scrape sums them, whichever process answers it.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

from django.conf import settings
from prometheus_client import Counter, Gauge, Histogram, multiprocess

HERE = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
HERE.mkdir(parents=True, exist_ok=True)

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
SOCKETS = {"status", "console", "display"}
REQUESTS = Counter("cloudpanel_http_requests", "HTTP requests answered, by method, view and status code",
                   ["method", "view", "status"])
LATENCY = Histogram("cloudpanel_http_request_duration_seconds", "Time to answer an HTTP request, by method and view",
                    ["method", "view"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
WEBSOCKETS = Gauge("cloudpanel_websocket_connections", "Websockets open now, by kind (status, console, display)",
                   ["kind"], multiprocess_mode="livesum")


class RequestMetrics:
    """Counts and times each request under its view's URL name (bounded labels: a path is never one)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = match.view_name if match is not None and match.view_name else "(unmatched)"
        method = request.method if request.method in METHODS else "other"
        LATENCY.labels(method, view).observe(time.perf_counter() - started)
        REQUESTS.labels(method, view, str(response.status_code)).inc()
        return response


class CountWebsockets:
    """ASGI middleware: a websocket counts as open from its accept until its consumer ends."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        kind = scope["path"].rstrip("/").rsplit("/", 1)[-1]
        gauge = WEBSOCKETS.labels(kind if kind in SOCKETS else "other")
        accepted = False

        async def counting(message):
            nonlocal accepted
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                gauge.inc()
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            if accepted:
                gauge.dec()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_afresh() -> None:
    """At `manage.py serve`'s start, in a directory it made itself: nothing of an earlier process with its pid
    (a restarted container) is counted, and the directories earlier runs on this machine left are removed."""
    if not settings.CLOUDPANEL_PROMETHEUS_OWN:
        return
    for path in HERE.glob("*.db"):
        path.unlink(missing_ok=True)
    machine = socket.gethostname()
    for other in settings.CLOUDPANEL_PROMETHEUS_ROOT.iterdir():
        name, _, pid = other.name.rpartition("-")
        if other != HERE and name == machine and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(other, ignore_errors=True)


def forget_dead() -> None:
    """Drop the open-websocket counts of web processes that ended (the server replaced them)."""
    for path in HERE.glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), str(HERE))
