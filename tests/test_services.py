"""The services mode: web, worker, beat and listener under a supervisor, each restarted on its own."""

import os
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.db import connection

from tests.factories import wait_for
from tests.test_queue_outage import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("beat", "listener", "web", "worker")

pytestmark = pytest.mark.django_db(transaction=True)


def status(env: dict) -> dict[str, tuple[str, int]]:
    """Each service's state and pid, as supervisorctl tells them."""
    result = subprocess.run(["scripts/services-ctl.sh", "status"], cwd=ROOT, env=env, capture_output=True, text=True)
    seen = {}
    for line in result.stdout.splitlines():
        name, state, *rest = line.split()
        pid = int(rest[1].rstrip(",")) if state == "RUNNING" else 0
        seen[name] = (state, pid)
    return seen


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def test_a_killed_service_comes_back_within_seconds_and_the_others_keep_serving(tmp_path):
    # Given the four services on the test database, with a queue and channel prefix of their own
    db = connection.settings_dict
    port, mark = free_port(), uuid.uuid4().hex[:8]
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "CLOUDPANEL_VAR_DIR": str(tmp_path), "CLOUDPANEL_TASK_QUEUE": f"services-{mark}",
           "CLOUDPANEL_CHANNEL_PREFIX": f"services-{mark}"}
    process = subprocess.Popen(["scripts/run-services.sh", str(port)], cwd=ROOT, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: answers(port) and all(
            state == "RUNNING" for state, _ in status(env).values()) and len(status(env)) == 4, timeout=60)
        for name in ("worker", "listener", "web"):
            before = status(env)
            # When one is killed outright
            os.kill(before[name][1], signal.SIGKILL)
            # Then it runs again within seconds, as a new process, and the others were never restarted
            assert wait_for(lambda n=name, b=before: status(env)[n][0] == "RUNNING"
                            and status(env)[n][1] not in (0, b[n][1]), timeout=15), status(env)
            after = status(env)
            assert {other: after[other] for other in SERVICES if other != name} == {
                other: before[other] for other in SERVICES if other != name}
            assert wait_for(lambda: answers(port), timeout=20)
    finally:
        # And stopping the supervisor stops all four
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=40)
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", f"services-{mark}"], capture_output=True, text=True).stdout.split()
    assert not left and not answers(port)
