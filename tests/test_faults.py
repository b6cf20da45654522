"""Faults against the real services, started by the test: its own Redis, and web, worker, beat and listener as
processes under the supervisor. A worker killed mid-create or mid-delete, Redis stopped during an operation, the
database connections of every process terminated, libvirtd restarted, domains changed by hand: nothing is lost,
nothing stays busy, and each instance shows the truth within the stated time."""

import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.db import connection

from hosts import hypervisor
from hosts.choices import HostState
from hosts.models import Host
from instances.choices import ActionStatus, Status
from instances.models import Instance, InstanceAction
from tenants.services import create_api_token
from tests.factories import free_port, make_boot_kernel, wait_for
from tests.test_services import answers, status

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
LIBVIRT_SOCKET = "/var/run/libvirt/libvirt-sock"
LOST_WITHIN = 30  # seconds: the README's promise for an operation whose worker died


class LibvirtPath:
    """A unix socket in front of libvirtd that can cut one process off, by its pid: its bytes, both ways, wait
    while it is cut off (a partition between that process and the host; others pass)."""

    def __init__(self, path: Path) -> None:
        self.path, self.cut_off = path, set()
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            pid, _, _ = struct.unpack("3i", client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
            daemon = socket.socket(socket.AF_UNIX)
            try:
                daemon.connect(LIBVIRT_SOCKET)
            except OSError:  # libvirtd is restarting: the client sees its connection refused, as it would
                daemon.close()
                client.close()
                continue
            for source, target in ((client, daemon), (daemon, client)):
                threading.Thread(target=self._pipe, args=(source, target, pid), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, pid: int) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                while pid in self.cut_off:
                    time.sleep(0.05)
                target.sendall(data)
        for end in (source, target):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()


@dataclass
class Stack:
    env: dict
    port: int
    libvirt: LibvirtPath
    redis_port: int
    redis_dir: Path
    redis: subprocess.Popen | None = None
    app_name: str = ""
    tokens: dict = field(default_factory=dict)

    def pid(self, service: str) -> int:
        return status(self.env)[service][1]

    def start_redis(self) -> None:
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(self.redis_dir),
             "--appendonly", "yes", "--save", ""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: _redis_answers(self.redis_port), timeout=10)

    def stop_redis(self) -> None:
        self.redis.terminate()
        self.redis.wait(timeout=10)

    def api(self, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict, dict]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                code, text, headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            code, text, headers = exc.code, exc.read(), exc.headers
        return code, json.loads(text or b"{}"), {key.lower(): value for key, value in headers.items()}


def _redis_answers(port: int) -> bool:
    with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")
    return False


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker, tmp_path_factory):
    """The services mode on the test database and a Redis of its own, libvirt reached through a LibvirtPath."""
    base = tmp_path_factory.mktemp("faults")
    (base / "redis").mkdir()
    mark = uuid.uuid4().hex[:8]
    db = connection.settings_dict
    port = free_port()
    services = Stack(env={}, port=port, libvirt=LibvirtPath(base / "libvirt.sock"), redis_port=free_port(),
                     redis_dir=base / "redis", app_name=f"faults-{mark}")
    services.start_redis()
    services.env = {
        **os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": f"redis://127.0.0.1:{services.redis_port}/0", "CLOUDPANEL_VAR_DIR": str(base / "var"),
        "CLOUDPANEL_TASK_QUEUE": f"faults-{mark}", "CLOUDPANEL_CHANNEL_PREFIX": f"faults-{mark}",
        "CLOUDPANEL_DB_APPLICATION_NAME": services.app_name, "CLOUDPANEL_PANEL_URL": f"http://127.0.0.1:{port}"}
    process = subprocess.Popen(["scripts/run-services.sh", str(port)], cwd=ROOT, env=services.env,
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: answers(port) and len(status(services.env)) == 4 and all(
            state == "RUNNING" for state, _ in status(services.env).values()), timeout=60)
        yield services
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=40)
        services.stop_redis()
        services.libvirt.close()


BACKGROUND = ("worker", "listener")  # the services that write to the database of their own accord (beat only sends)


@pytest.fixture(autouse=True)
def background(stack):
    """Worker and listener run during each test and are stopped after it, before its database is flushed: the
    flush's TRUNCATE would otherwise deadlock with their row locks."""
    subprocess.run(["scripts/services-ctl.sh", "start", *BACKGROUND], cwd=ROOT, env=stack.env, capture_output=True)
    assert wait_for(lambda: all(status(stack.env).get(name, ("",))[0] == "RUNNING" for name in BACKGROUND),
                    timeout=30)
    yield
    subprocess.run(["scripts/services-ctl.sh", "stop", *BACKGROUND], cwd=ROOT, env=stack.env, capture_output=True)


@pytest.fixture
def host(stack, background):
    """A host on libvirtd's shared test driver, reached through the stack's LibvirtPath."""
    uri = f"test+unix:///default?socket={stack.libvirt.path}"
    made = Host.objects.create(name=f"faults-{uuid.uuid4().hex[:6]}", uri=uri, technology="test",
                               storage_pool="default-pool", state=HostState.ONLINE, cpus=16, memory_mib=16384)
    yield made
    stack.libvirt.cut_off.clear()
    for instance in Instance.objects.filter(host=made):
        with suppress(hypervisor.HypervisorError):
            hypervisor.undefine(uri, str(instance.uuid))


@pytest.fixture
def token(member, tenant):
    return create_api_token(user=member, name="faults", tenant=tenant, expires_at=None)[1]


def action(action_id: int) -> InstanceAction:
    return InstanceAction.objects.get(pk=action_id)


def instance(instance_id: int) -> Instance:
    return Instance.objects.get(pk=instance_id)


def running_instance(stack: Stack, token: str, host: Host) -> int:
    code, body, _ = stack.api("POST", "/api/v1/instances/", token, {
        "name": f"f-{uuid.uuid4().hex[:6]}", "vcpus": 1, "memory_mib": 64, "disk_gib": 1,
        "boot_kernel": make_boot_kernel(host).pk})
    assert code == 202, body
    assert wait_for(lambda: instance(body["instance"]).status == Status.RUNNING, timeout=30), \
        instance(body["instance"]).status_reason
    return body["instance"]


def test_a_worker_killed_mid_create_is_noticed_within_30_s_and_the_create_can_be_retried(stack, host, token):
    # Given the worker cut off from the host, so that a create hangs in the middle
    worker = stack.pid("worker")
    stack.libvirt.cut_off.add(worker)
    code, body, _ = stack.api("POST", "/api/v1/instances/", token, {
        "name": "mid-create", "vcpus": 1, "memory_mib": 64, "disk_gib": 1, "boot_kernel": make_boot_kernel(host).pk})
    assert code == 202, body
    assert wait_for(lambda: action(body["id"]).status == ActionStatus.RUNNING, timeout=15)
    # When the worker is killed outright
    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    # Then within 30 s the create has failed with the reason, and the instance is free: an error to retry
    assert wait_for(lambda: action(body["id"]).status == ActionStatus.FAILED, timeout=LOST_WITHIN)
    assert time.monotonic() - killed < LOST_WITHIN
    assert action(body["id"]).error.startswith("worker lost")
    assert wait_for(lambda: (instance(body["instance"]).status, instance(body["instance"]).task_state)
                    == (Status.ERROR, None), timeout=5)
    # And the restarted worker creates it on retry
    code, retried, _ = stack.api("POST", f"/api/v1/actions/{body['id']}/retry/", token)
    assert code == 202, retried
    # (the restarted worker may still be starting, on a machine the rest of the suite keeps busy)
    assert wait_for(lambda: instance(body["instance"]).status == Status.RUNNING, timeout=60), (
        instance(body["instance"]).status_reason, action(retried["id"]).status, action(retried["id"]).error)


def test_a_worker_killed_mid_delete_is_replaced_and_the_delete_finishes(stack, host, token):
    # Given a running instance, and the worker cut off from its host as it deletes it
    instance_id = running_instance(stack, token, host)
    worker = stack.pid("worker")
    stack.libvirt.cut_off.add(worker)
    code, body, _ = stack.api("POST", f"/api/v1/instances/{instance_id}/delete/", token)
    assert code == 202, body
    assert wait_for(lambda: action(body["id"]).status == ActionStatus.RUNNING, timeout=15)
    # When the worker is killed outright
    os.kill(worker, signal.SIGKILL)
    # Then within 30 s the restarted worker has run the delete again, to the end
    assert wait_for(lambda: action(body["id"]).status == ActionStatus.SUCCEEDED, timeout=LOST_WITHIN), \
        action(body["id"]).error
    assert action(body["id"]).attempts == 2
    assert instance(instance_id).status == Status.DELETED
    with pytest.raises(hypervisor.DomainNotFound):
        hypervisor.state(host.uri, str(instance(instance_id).uuid))


def test_redis_stopped_during_an_operation_loses_nothing_and_refuses_cleanly_until_it_is_back(stack, host, token):
    # Given a suspend in flight (its worker held up at the host)
    instance_id = running_instance(stack, token, host)
    stack.libvirt.cut_off.add(stack.pid("worker"))
    code, body, _ = stack.api("POST", f"/api/v1/instances/{instance_id}/suspend/", token)
    assert code == 202 and wait_for(lambda: action(body["id"]).status == ActionStatus.RUNNING, timeout=15)
    # When Redis stops, and then the worker gets through to the host
    stack.stop_redis()
    try:
        stack.libvirt.cut_off.clear()
        # Then the suspend is done and recorded all the same
        assert wait_for(lambda: action(body["id"]).status == ActionStatus.SUCCEEDED, timeout=20)
        assert (instance(instance_id).status, instance(instance_id).task_state) == (Status.PAUSED, None)
        # And a new operation is refused with 503 and Retry-After, storing nothing, the instance not left busy
        code, refused, headers = stack.api("POST", f"/api/v1/instances/{instance_id}/resume/", token)
        assert code == 503 and headers.get("retry-after") == "15" and "task queue" in refused["detail"]
        assert (instance(instance_id).task_state, InstanceAction.objects.filter(operation="resume").count()) == (
            None, 0)
        # And reads still answer
        assert stack.api("GET", f"/api/v1/instances/{instance_id}/", token)[0] == 200
    finally:
        stack.start_redis()
    # And once Redis is back, operations run again
    assert wait_for(lambda: stack.api("POST", f"/api/v1/instances/{instance_id}/resume/", token)[0] == 202,
                    timeout=30, interval=1)
    assert wait_for(lambda: instance(instance_id).status == Status.RUNNING, timeout=30)


def terminate_connections(stack: Stack) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                       [stack.app_name])
        return cursor.fetchone()[0]


def test_database_connections_terminated_mid_operation_lose_nothing(stack, host, token):
    # Given a suspend in flight, and the listener watching the host
    instance_id = running_instance(stack, token, host)
    stack.libvirt.cut_off.add(stack.pid("worker"))
    code, body, _ = stack.api("POST", f"/api/v1/instances/{instance_id}/suspend/", token)
    assert code == 202 and wait_for(lambda: action(body["id"]).status == ActionStatus.RUNNING, timeout=15)
    # When PostgreSQL drops every connection of web, worker, beat and listener
    assert terminate_connections(stack) >= 3
    stack.libvirt.cut_off.clear()
    # Then the worker records the suspend all the same
    assert wait_for(lambda: action(body["id"]).status == ActionStatus.SUCCEEDED, timeout=20)
    assert instance(instance_id).status == Status.PAUSED
    # And after a second cut, reads are answered (never a 500) and operations run
    terminate_connections(stack)
    assert [stack.api("GET", "/api/v1/instances/", token)[0] for _ in range(5)] == [200] * 5
    code, body, _ = stack.api("POST", f"/api/v1/instances/{instance_id}/resume/", token)
    assert code == 202 and wait_for(lambda: action(body["id"]).status == ActionStatus.SUCCEEDED, timeout=20)
    # And the listener records the next event from the host, once its pool has replaced the dropped connections
    # (within 20 s: before the stack's first reconcile sweep, at 30 s, could)
    terminate_connections(stack)
    hypervisor.power_off(host.uri, str(instance(instance_id).uuid))
    assert wait_for(lambda: instance(instance_id).status == Status.STOPPED, timeout=20)


def test_domains_changed_by_hand_show_at_once(stack, host, token, admin_user):
    # Given a running instance the listener watches
    instance_id = running_instance(stack, token, host)
    domain_uuid = str(instance(instance_id).uuid)
    # When its domain is undefined by hand, then it shows as missing, with only delete offered
    hypervisor.undefine(host.uri, domain_uuid)
    assert wait_for(lambda: instance(instance_id).status == Status.MISSING, timeout=10)
    code, body, _ = stack.api("GET", f"/api/v1/instances/{instance_id}/", token)
    assert code == 200 and body["operations"] == ["delete"]
    code, body, _ = stack.api("POST", f"/api/v1/instances/{instance_id}/start/", token)
    assert code == 409
    # And a domain defined by hand shows at once among the host's unmanaged domains, for a platform admin to adopt
    a_domain_defined_by_hand_is_listed(stack, host, admin_user)


def a_domain_defined_by_hand_is_listed(stack: Stack, host: Host, admin_user) -> None:
    """Define a domain on the host by hand: within 10 s it is among the host's domains, as not the panel's."""
    admin = create_api_token(user=admin_user, name="faults-admin", tenant=None, expires_at=None)[1]
    hand_made = str(uuid.uuid4())
    hypervisor.connection(host.uri).defineXML(
        f"<domain type='test'><name>hand-{hand_made[:8]}</name><uuid>{hand_made}</uuid><memory unit='MiB'>128</memory>"
        "<vcpu>1</vcpu><os><type>hvm</type></os></domain>")
    try:
        assert wait_for(lambda: {row["uuid"]: row["managed"] for row in stack.api(
            "GET", f"/api/v1/hosts/{host.pk}/domains/", admin)[1]}.get(hand_made) is False, timeout=10, interval=0.5)
    finally:
        hypervisor.undefine(host.uri, hand_made)


def restart_libvirtd() -> None:
    pid = int(Path("/var/run/libvirtd.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=20)
    subprocess.run([str(ROOT / "scripts/libvirtd.sh"), "start"], check=True, capture_output=True)


def test_after_a_libvirtd_restart_the_host_is_read_again_and_events_and_operations_go_on(stack, host, token,
                                                                                       admin_user):
    # Given a running instance on the test driver (whose domains live in libvirtd's memory)
    instance_id = running_instance(stack, token, host)
    # When libvirtd restarts (and so forgets the test driver's domains)
    restart_libvirtd()
    # Then the listener is back on the host and reads it at once: the instance is missing, as the host says
    assert wait_for(lambda: instance(instance_id).status == Status.MISSING, timeout=30), instance(instance_id).status
    # And events go on: a domain defined by hand now shows among the host's domains
    a_domain_defined_by_hand_is_listed(stack, host, admin_user)
    # And operations go on: the missing instance is deleted, and a new one runs
    code, body, _ = stack.api("POST", f"/api/v1/instances/{instance_id}/delete/", token)
    assert code == 202 and wait_for(lambda: action(body["id"]).status == ActionStatus.SUCCEEDED, timeout=20)
    running_instance(stack, token, host)
