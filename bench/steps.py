"""Timing the steps of a path: functions wrapped in place record when each call started and ended.

bench/control_plane.py wraps the API's steps in its own process and starts its Celery worker through
`python bench/steps.py worker ...`, which wraps the task's steps the same way and appends them to the file
BENCH_STEPS names, one JSON object a line.
"""

import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable

from common import setup_django

RECORDED: list[dict] = []
_lock = threading.Lock()
WORKER_STEPS = (("instances.services", "begin_action", "claim"), ("instances.tasks", "_run", "task"),
                ("instances.tasks", "_do_create", "prepare"), ("hosts.hypervisor", "define", "libvirt"),
                ("instances.services", "finish_action", "finish"))
API_STEPS = (("tenants.quotas", "check", "quota"), ("hosts.services", "place", "placement"),
             ("cloudpanel.tasking", "check_queue", "broker check"), ("cloudpanel.tasking", "_publish", "publish"))


def wrap(module: str, name: str, step: str, sink: Callable[[dict], None] | None = None) -> None:
    """Replace module.name by a wrapper recording {step, start, end} (wall clock, comparable across processes)."""
    owner = importlib.import_module(module)
    inner = getattr(owner, name)

    def timed(*args, **kwargs):
        start = time.time()
        try:
            return inner(*args, **kwargs)
        finally:
            record = {"step": step, "start": start, "end": time.time()}
            with _lock:
                RECORDED.append(record)
                if sink is not None:
                    sink(record)

    setattr(owner, name, timed)


def run_worker(argv: list[str]) -> None:
    """A Celery worker whose task steps are timed into the file BENCH_STEPS."""
    setup_django()
    out = open(os.environ["BENCH_STEPS"], "a")  # noqa: SIM115 (open for the worker's life)

    def sink(record: dict) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    for module, name, step in WORKER_STEPS:
        wrap(module, name, step, sink)
    from cloudpanel.celery import app

    app.worker_main(["worker", *argv])


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    run_worker(sys.argv[2:])
