"""The services mode: web, worker, beat and listener under a supervisor, each restarted on its own; each process's
database connections bounded by its pool."""

import os
import signal
import subprocess
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import connection

from tenants.services import create_api_token
from tests.factories import free_port, make_instance, wait_for

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


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting to be reaped."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def web_workers(pid: int) -> list[int]:
    """The worker processes a web process started (not multiprocessing's resource tracker)."""
    found = subprocess.run(["pgrep", "-P", str(pid), "-f", "multiprocessing-fork"], capture_output=True,
                           text=True).stdout.split()
    return [int(child) for child in found]


def test_a_killed_service_comes_back_within_seconds_and_the_others_keep_serving(tmp_path):
    # Given the four services on the test database, with a queue and channel prefix of their own, two web processes
    db = connection.settings_dict
    port, mark = free_port(), uuid.uuid4().hex[:8]
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "CLOUDPANEL_VAR_DIR": str(tmp_path), "CLOUDPANEL_TASK_QUEUE": f"services-{mark}",
           "CLOUDPANEL_CHANNEL_PREFIX": f"services-{mark}", "CLOUDPANEL_WEB_WORKERS": "2"}
    process = subprocess.Popen(["scripts/run-services.sh", str(port)], cwd=ROOT, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last: dict[str, tuple[str, int]] = {}
    try:
        assert wait_for(lambda: answers(port) and all(
            state == "RUNNING" for state, _ in status(env).values()) and len(status(env)) == 4, timeout=60)
        for name in ("worker", "listener", "beat", "web"):
            before = status(env)
            workers = web_workers(before["web"][1])
            assert len(workers) == 2
            # When one is killed outright
            os.kill(before[name][1], signal.SIGKILL)
            # Then it runs again within seconds, as a new process, and the others were never restarted
            assert wait_for(lambda n=name, b=before: status(env)[n][0] == "RUNNING"
                            and status(env)[n][1] not in (0, b[n][1]), timeout=15), status(env)
            after = status(env)
            assert {other: after[other] for other in SERVICES if other != name} == {
                other: before[other] for other in SERVICES if other != name}
            assert wait_for(lambda: answers(port), timeout=20)
            if name == "web":  # its worker processes ended with it, and the new one serves with workers of its own
                assert wait_for(lambda w=workers: not any(running(pid) for pid in w), timeout=15)
                assert wait_for(lambda: len(web_workers(status(env)["web"][1])) == 2, timeout=20)
        last = status(env)
    finally:
        # And stopping the supervisor stops all four
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=40)
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", f"services-{mark}"], capture_output=True, text=True).stdout.split()
    assert not left and not answers(port)
    assert len(last) == 4 and not [name for name, (_, pid) in last.items() if running(pid)]


def test_web_processes_hold_no_more_database_connections_than_their_pools(tenant, member, host):
    # Given two web processes with a pool of 2 connections each, and many instances to list
    for index in range(40):
        make_instance(tenant=tenant, host=host, name=f"load-{index}")
    _, key = create_api_token(user=member, name="load", tenant=tenant, expires_at=None)
    db = connection.settings_dict
    port, name = free_port(), f"pool-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "CLOUDPANEL_DB_POOL_SIZE": "2", "CLOUDPANEL_DB_APPLICATION_NAME": name, "CLOUDPANEL_WEB_WORKERS": "2",
           "CLOUDPANEL_CHANNEL_PREFIX": name, "CLOUDPANEL_TASK_QUEUE": name}
    process = subprocess.Popen([".venv/bin/python", "manage.py", "serve", "--port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: answers(port), timeout=30)

        def get(_):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/instances/?limit=40",
                                             headers={"Authorization": f"Token {key}"})
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status

        peak = 0
        with ThreadPoolExecutor(max_workers=24) as pool:
            futures = [pool.submit(get, index) for index in range(240)]
            while not all(f.done() for f in futures):
                with connection.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name])
                    peak = max(peak, cursor.fetchone()[0])
            # When 24 clients ask at once, then every request is answered and the two processes never held more than
            # their pools of 2 together
            assert [f.result() for f in futures] == [200] * 240
        assert len(web_workers(process.pid)) == 2
        assert 1 <= peak <= 4
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_the_systemd_units_run_what_the_supervisor_runs_and_systemd_accepts_them(tmp_path):
    import configparser
    import re

    supervised = configparser.RawConfigParser()
    supervised.read(ROOT / "deploy/supervisord.conf")
    for name in SERVICES:
        unit = configparser.RawConfigParser(strict=False)
        unit.optionxform = str
        unit.read(ROOT / f"deploy/systemd/cloudpanel-{name}.service")
        # Each unit runs the same command as the supervisor's program, restarts on its own, and joins the target
        command = re.sub(r"%\(ENV_(\w+)\)s", r"${\1}", supervised.get(f"program:{name}", "command"))
        command = command.replace("${CLOUDPANEL_ROOT}", "/opt/cloudpanel").replace(
            "${CLOUDPANEL_VAR_DIR}", "/var/lib/cloudpanel")
        assert unit.get("Service", "ExecStart") == command
        assert unit.get("Service", "Restart") == "always" and unit.get("Unit", "PartOf") == "cloudpanel.target"
        assert f"cloudpanel-{name}.service" in (ROOT / "deploy/systemd/cloudpanel.target").read_text()
        # And systemd's own check accepts it (pointed at this checkout instead of /opt/cloudpanel)
        local = tmp_path / f"cloudpanel-{name}.service"
        local.write_text((ROOT / f"deploy/systemd/cloudpanel-{name}.service").read_text().replace(
            "/opt/cloudpanel", str(ROOT)))
        verified = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
        assert verified.returncode == 0 and "cloudpanel" not in verified.stderr, verified.stderr


@pytest.mark.parametrize("value", ["0", "two", "65", "²"])
def test_a_bad_number_of_web_processes_stops_the_panel_with_the_reason(value):
    result = subprocess.run([".venv/bin/python", "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "CLOUDPANEL_WEB_WORKERS": value})
    assert result.returncode != 0
    assert "CLOUDPANEL_WEB_WORKERS is a number of processes from 1 to 64" in result.stderr


@pytest.mark.parametrize(("unit_name", "headers"), [("host-worker", {}), ("host-steps", {"cloudpanel_lane": "steps"})])
def test_a_host_worker_unit_consumes_its_hosts_queue_and_systemd_accepts_it(tmp_path, settings, unit_name, headers):
    import configparser

    from cloudpanel.celery import route_to_host
    from cloudpanel.tasking import HOST_HEADER, LANE_HEADER

    unit = configparser.RawConfigParser(strict=False)
    unit.optionxform = str
    template = ROOT / f"deploy/systemd/cloudpanel-{unit_name}@.service"
    unit.read(template)
    # The unit for host 3 consumes the queue the router sends host 3's work (or its steps) to
    settings.CLOUDPANEL_HOST_QUEUES = True
    assert set(headers) <= {LANE_HEADER}
    routed = route_to_host("instances.tasks.start_instance", (1,), {}, {"headers": {HOST_HEADER: 3, **headers}})
    assert unit.get("Service", "ExecStart").split(" -Q ")[1].split()[0].replace("%i", "3") == routed["queue"]
    assert unit.get("Service", "Restart") == "always"
    # And systemd's own check accepts it, instantiated (pointed at this checkout instead of /opt/cloudpanel)
    local = tmp_path / f"cloudpanel-{unit_name}@3.service"
    local.write_text(template.read_text().replace("/opt/cloudpanel", str(ROOT)))
    verified = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert verified.returncode == 0 and "cloudpanel" not in verified.stderr, verified.stderr


def test_a_host_listener_unit_listens_to_its_host_only_and_systemd_accepts_it(tmp_path):
    import configparser

    from hosts.management.commands.listen_events import Command

    template = ROOT / "deploy/systemd/cloudpanel-host-listener@.service"
    unit = configparser.RawConfigParser(strict=False)
    unit.optionxform = str
    unit.read(template)
    command = unit.get("Service", "ExecStart").replace("%i", "3").split()
    assert command[:3] == ["/opt/cloudpanel/.venv/bin/python", "manage.py", "listen_events"]
    assert Command().create_parser("manage.py", "listen_events").parse_args(command[3:]).hosts == [3]
    assert unit.get("Service", "Restart") == "always"
    local = tmp_path / "cloudpanel-host-listener@3.service"
    local.write_text(template.read_text().replace("/opt/cloudpanel", str(ROOT)))
    verified = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert verified.returncode == 0 and "cloudpanel" not in verified.stderr, verified.stderr
