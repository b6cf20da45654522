"""A host's own listener (per-host workers): its events, serial consoles and graphical displays, on its machine."""

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import suppress
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from cloudpanel.asgi import application
from hosts import console_service, display_relay, hypervisor
from hosts.models import Host
from instances import consumers, services
from instances.choices import Status
from instances.models import Instance
from tenants.models import AuditEvent
from tests.conftest import ROOT, run_fleet
from tests.factories import make_host, make_instance, wait_for
from tests.rfb import RfbClient
from tests.test_display import SocketBytes, screen_until

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")


@pytest.fixture
def per_host(settings):
    if settings.EMBEDDED:
        pytest.fail("per-host listeners meet the web tier through Redis: this test needs REDIS_URL")
    settings.CLOUDPANEL_HOST_QUEUES = True


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def communicator(path: str, user, session_key: str | None = None) -> WebsocketCommunicator:
    socket_ = WebsocketCommunicator(application, path, headers=[ORIGIN, HOST], subprotocols=["binary"])
    socket_.scope["user"] = user
    if session_key is not None:
        socket_.scope["session"] = SessionStore(session_key)
    return socket_


async def closing(socket_: WebsocketCommunicator) -> tuple[int, str]:
    """(close code, text sent before it)."""
    text = ""
    while True:
        message = await socket_.receive_output(timeout=15)
        if message["type"] == "websocket.close":
            return message["code"], text
        text += message.get("text") or ""


def test_the_listener_refuses_a_set_up_that_would_leave_hosts_unwatched_or_watched_twice(per_host, host, settings):
    with pytest.raises(CommandError, match="each host runs a listener of its own"):
        call_command("listen_events")
    with pytest.raises(CommandError, match=f"no host with id {host.pk + 1000}"):
        call_command("listen_events", "--host", str(host.pk), "--host", str(host.pk + 1000))
    settings.CLOUDPANEL_HOST_QUEUES = False
    with pytest.raises(CommandError, match="--host is for per-host workers"):
        call_command("listen_events", "--host", str(host.pk))


@pytest.mark.parametrize("value", ["qemu:///system", "qemu+tcp://a/system=qemu:///system", "node1=>qemu:///system"])
def test_a_malformed_local_uri_stops_the_panel_with_the_reason(value):
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "CLOUDPANEL_LOCAL_URIS": value})
    assert result.returncode != 0 and "is not a 'registered-uri=>local-uri' pair" in result.stderr


def test_consoles_go_to_their_hosts_own_service_and_a_silent_one_closes_them_with_the_reason(
        per_host, member, tenant, monkeypatch):
    monkeypatch.setattr(consumers, "ANSWER_SECONDS", 0.5)
    first = make_host(name="node-a", uri="qemu+tcp://node-a/system")
    second = make_host(name="node-b", uri="qemu+tcp://node-b/system")
    on_first = make_instance(tenant=tenant, host=first, status=Status.RUNNING)
    on_second = make_instance(tenant=tenant, host=second, status=Status.RUNNING)
    client = signed_in(member)
    ticket = client.post(f"/api/v1/instances/{on_second.pk}/display-ticket/")
    assert ticket.status_code == 201, ticket.content
    session_key = client.session.session_key

    @async_to_sync
    async def scenario():
        # Only the first host's service runs (not the panel's shared one, which this test's session also runs)
        service = asyncio.ensure_future(console_service.ConsoleService([console_service.channel_for(first.pk)]).run())
        with mock.patch("hosts.hypervisor.Console") as console:
            viewer = communicator(f"/ws/instances/{on_first.pk}/console/", member)
            assert (await viewer.connect())[0]
            await viewer.send_to(text_data="ls\n")
            assert await async_wait(lambda: console.return_value.write.called)
            assert console.call_args.args == (first.uri, str(on_first.uuid))
            await viewer.disconnect()
            # The second host's console and display are nobody's here: each closes, saying why
            viewer = communicator(f"/ws/instances/{on_second.pk}/console/", member)
            assert (await viewer.connect())[0]
            code, text = await closing(viewer)
            assert code == 4409 and "the console service does not answer" in text
            display = communicator(ticket.json()["url"], member, session_key)
            assert (await display.connect())[0]
            assert (await closing(display))[0] == 4409
            assert console.call_count == 1
        service.cancel()

    scenario()
    refusal = AuditEvent.objects.filter(action="display.open", target_id=str(on_second.pk)).get()
    assert refusal.status_code == 4409 and "the host's console service does not answer" in refusal.detail


async def async_wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return False


class FakeDisplay:
    """The host's end of a display: a socket pair whose far end the test reads and writes as QEMU would."""

    def __init__(self):
        self.qemu: socket.socket | None = None

    def __call__(self, uri, domain_uuid):
        ours, self.qemu = socket.socketpair()
        ours.setblocking(False)
        return ours


def test_a_relayed_display_passes_bytes_both_ways_in_order_and_closes_when_its_viewer_goes_silent(
        per_host, member, tenant, monkeypatch):
    monkeypatch.setattr(console_service, "CHANNEL", f"consoles-{uuid.uuid4().hex[:8]}")
    node = make_host(name="node-v", uri="qemu+tcp://node-v/system")
    instance = make_instance(tenant=tenant, host=node, status=Status.RUNNING)
    client = signed_in(member)
    url = client.post(f"/api/v1/instances/{instance.pk}/display-ticket/").json()["url"]
    session_key = client.session.session_key
    fake = FakeDisplay()

    @async_to_sync
    async def scenario():
        service = console_service.ConsoleService([console_service.channel_for(node.pk)])
        running = asyncio.ensure_future(service.run())
        with mock.patch("hosts.hypervisor.open_display", fake):
            viewer = communicator(url, member, session_key)
            connected, subprotocol = await viewer.connect()
            assert connected and subprotocol == "binary"
            await viewer.send_to(bytes_data=b"RFB 003.008\n")
            assert await async_wait(lambda: fake.qemu is not None)
            qemu = fake.qemu
            qemu.settimeout(5)
            assert qemu.recv(100) == b"RFB 003.008\n"
            # A screen's worth of bytes reaches the viewer whole and in order
            screen = bytes(range(256)) * 4096
            await asyncio.to_thread(qemu.sendall, screen)
            received = b""
            while len(received) < len(screen):
                received += (await viewer.receive_output(timeout=10))["bytes"]
            assert received == screen
            opened = AuditEvent.objects.filter(action="display.open", target_id=str(instance.pk))
            assert await asyncio.to_thread(lambda: opened.get().result) == "ok"
            # A viewer no longer heard from (its web process died) has its display closed on the host
            assert len(service.displays.displays) == 1
            service.displays.sweep(time.monotonic() + 1)
            assert service.displays.displays == {}
            assert await asyncio.to_thread(qemu.recv, 100) == b""
            assert (await closing(viewer))[0] == 4410
        running.cancel()

    scenario()


def test_a_relayed_display_stops_reading_while_its_viewer_is_not_reading_and_closes_once_it_gives_up(monkeypatch):
    monkeypatch.setattr(display_relay, "FULL_SECONDS", 1.0)
    layer = get_channel_layer()
    fake = FakeDisplay()
    viewer = f"viewer-{uuid.uuid4().hex[:8]}"

    def flood(qemu: socket.socket) -> int:
        """What QEMU gets to write in 3 s (or until the relay closes the display)."""
        qemu.settimeout(3)
        written = 0
        with suppress(OSError):
            while True:
                qemu.sendall(b"x" * 65536)
                written += 65536
        return written

    @async_to_sync
    async def scenario():
        relay = display_relay.DisplayRelay(layer)
        with mock.patch("hosts.hypervisor.open_display", fake):
            relay.handle({"type": "display.open", "viewer": viewer, "uri": "qemu:///system", "uuid": "x"})
            assert await async_wait(lambda: fake.qemu is not None)
            # Nobody reads the viewer's channel: the relay fills it, then stops reading the display
            written = await asyncio.to_thread(flood, fake.qemu)
            assert 65536 < written < 16 * 100 * 65536  # (a hundred messages wait for the viewer, at most)
            assert relay.displays == {}  # and it gave up on the viewer, closing the display
            with suppress(ConnectionResetError):  # (what it had not read yet is discarded)
                assert fake.qemu.recv(10) == b""

    scenario()


@pytest.mark.qemu
@pytest.mark.fleet_host
def test_a_hosts_own_listener_records_its_events_and_serves_its_console_and_display(
        qemu_host, member, tenant, guest_kernel, settings):
    action = services.create_instance(user=member, tenant=tenant, name="remote", vcpus=1, memory_mib=128,
                                      disk_gib=0, boot_kernel=guest_kernel, host=qemu_host)
    assert wait_for(lambda: Instance.objects.get(pk=action.instance_id).status == Status.RUNNING, timeout=60)
    instance = Instance.objects.get(pk=action.instance_id)
    local = dict(pair.split("=>") for pair in run_fleet("local-uris"))[qemu_host.uri]
    # This process reaches the host over TCP only: libvirt will not hand it the display
    with pytest.raises(hypervisor.HypervisorError):
        hypervisor.open_display(qemu_host.uri, str(instance.uuid))
    settings.CLOUDPANEL_HOST_QUEUES = True
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "CLOUDPANEL_CHANNEL_PREFIX": settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
           "CLOUDPANEL_HOST_QUEUES": "1", "CLOUDPANEL_LOCAL_URIS": f"{qemu_host.uri}=>{local}"}
    seen = Host.objects.get(pk=qemu_host.pk).last_seen_at
    process = subprocess.Popen([sys.executable, "manage.py", "listen_events", "--host", str(qemu_host.pk)],
                               cwd=ROOT, env=env)
    try:  # (ready once it has read its host: it probes it when it starts watching it)
        assert wait_for(lambda: Host.objects.get(pk=qemu_host.pk).last_seen_at != seen, timeout=30)
        _through_the_hosts_listener(instance, member)
    finally:
        process.terminate()
        process.wait(timeout=20)


def _through_the_hosts_listener(instance: Instance, member) -> None:
    client = signed_in(member)
    url = client.post(f"/api/v1/instances/{instance.pk}/display-ticket/").json()["url"]
    session_key = client.session.session_key

    @async_to_sync
    async def scenario():
        # The serial console, typed into and read through the host's own console service
        console = communicator(f"/ws/instances/{instance.pk}/console/", member)
        assert (await console.connect())[0]
        text, deadline = "", time.monotonic() + 60
        while "far-42" not in text:
            assert time.monotonic() < deadline, text[-500:]
            await console.send_to(text_data="echo far-$((6*7))\n")
            while not await console.receive_nothing(timeout=2):
                message = await console.receive_output()
                assert message["type"] == "websocket.send", message
                text += message.get("text", "")
        await console.disconnect()
        # The screen, opened by the host's service through its local socket and relayed to this viewer
        display = communicator(url, member, session_key)
        connected, _ = await display.connect(timeout=10)
        assert connected
        stream = SocketBytes(display)
        viewer = RfbClient(stream.read, stream.write)
        await viewer.handshake()
        assert (viewer.width, viewer.height) == (720, 400) and "QEMU" in viewer.name
        await screen_until(viewer, lambda lit: lit > 1000, typed="dmesg\n")
        await display.disconnect()

    scenario()
    # Its lifecycle events are recorded by the host's listener (no other listener runs here)
    hypervisor.suspend(instance.host.uri, str(instance.uuid))
    assert wait_for(lambda: Instance.objects.get(pk=instance.pk).status == Status.PAUSED, timeout=15)
    sessions = AuditEvent.objects.filter(action__in=["console.open", "display.open"], target_id=str(instance.pk))
    assert sorted(sessions.values_list("action", "result")) == [("console.open", "ok"), ("display.open", "ok")]
