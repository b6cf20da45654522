"""One serial console, many web processes: the console service owns the stream, viewers anywhere share it."""

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from django.test import Client
from websockets.sync.client import connect

from cloudpanel.asgi import application
from hosts import console_service
from instances import consumers, services
from instances.choices import Status
from instances.models import Instance
from tests.factories import free_port, make_instance, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def two_web_processes():
    """Two `manage.py serve` processes (Redis mode) on ports of their own, sharing this test's channel layer."""
    if settings.EMBEDDED:
        pytest.fail("this test needs REDIS_URL: web processes meet only through Redis")
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "CLOUDPANEL_WEB_WORKERS": "1", "CLOUDPANEL_CHANNEL_PREFIX": settings.CHANNEL_LAYERS["default"]["CONFIG"]
           ["prefix"]}
    ports = [free_port(), free_port()]
    processes = [subprocess.Popen([sys.executable, "manage.py", "serve", "--port", str(port)], cwd=ROOT, env=env)
                 for port in ports]
    try:
        for port in ports:
            assert wait_for(lambda port=port: _answers(port), timeout=30), f"no web process on {port}"
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)


def _answers(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def read_until(socket, pattern: str, timeout: float = 30.0) -> str:
    text, deadline = "", time.monotonic() + timeout
    while not re.search(pattern, text):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {pattern!r} on the console; got {text[-600:]!r}")
        try:
            text += socket.recv(timeout=remaining)
        except TimeoutError:
            continue
    return text


@pytest.mark.qemu
def test_viewers_in_two_web_processes_share_one_console_both_ways(two_web_processes, qemu_host, member, tenant,
                                                                  guest_kernel):
    action = services.create_instance(user=member, tenant=tenant, name="shared", vcpus=1, memory_mib=128,
                                      disk_gib=0, boot_kernel=guest_kernel, host=qemu_host)
    assert wait_for(lambda: Instance.objects.get(pk=action.instance_id).status == Status.RUNNING, timeout=60)
    client = Client()
    client.force_login(member)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    with ExitStack() as stack:
        viewers = [stack.enter_context(connect(f"ws://127.0.0.1:{port}/ws/instances/{action.instance_id}/console/",
                                               origin=f"http://127.0.0.1:{port}",
                                               additional_headers={"Cookie": cookie}))
                   for port in two_web_processes]
        first, second = viewers
        # Keys from the viewer on one process reach the guest; both viewers read the answer
        first.send("\n")
        read_until(first, r"# ", timeout=60)
        first.send("echo one-$((6*7))\n")
        for viewer in viewers:
            read_until(viewer, r"one-42")
        # and the other way round: the second process took nothing from the first
        second.send("echo two-$((7*7))\n")
        for viewer in viewers:
            read_until(viewer, r"two-49")


def test_a_console_closes_with_the_reason_when_the_console_service_stops_answering(member, tenant, host,
                                                                                    monkeypatch):
    # Given a console service on a channel of this test's own, answering quickly
    monkeypatch.setattr(console_service, "CHANNEL", f"consoles-{uuid.uuid4().hex[:8]}")
    monkeypatch.setattr(console_service, "HEARTBEAT", 0.3)
    monkeypatch.setattr(consumers, "ANSWER_SECONDS", 1.0)
    instance = make_instance(tenant=tenant, host=host, status=Status.RUNNING)

    @async_to_sync
    async def scenario():
        service = asyncio.ensure_future(console_service.ConsoleService().run())
        with mock.patch("hosts.hypervisor.Console") as console:
            viewer = WebsocketCommunicator(application, f"/ws/instances/{instance.pk}/console/",
                                           headers=[ORIGIN, HOST])
            viewer.scope["user"] = member
            assert (await viewer.connect())[0]
            await viewer.send_to(text_data="ls\n")
            # the service opened the stream once and typed into it, heartbeat after heartbeat
            for _ in range(50):
                await asyncio.sleep(0.05)
                if console.return_value.write.called:
                    break
            await asyncio.sleep(1.0)
            assert console.call_count == 1 and console.return_value.write.call_args.args == (b"ls\n",)
            # When the service dies, the next unanswered heartbeat closes the console, saying why
            service.cancel()
            text = ""
            while True:
                message = await viewer.receive_output(timeout=5)
                if message["type"] == "websocket.close":
                    break
                text += message.get("text", "")
            assert message["code"] == 4409 and "the console service does not answer" in text
            console.return_value.close.assert_called_once()  # it closed its stream on the way out

    scenario()


def test_a_viewer_arriving_as_the_last_one_leaves_gets_a_stream_of_its_own(member, tenant, host, monkeypatch):
    monkeypatch.setattr(console_service, "CHANNEL", f"consoles-{uuid.uuid4().hex[:8]}")
    instance = make_instance(tenant=tenant, host=host, status=Status.RUNNING)

    def viewer():
        communicator = WebsocketCommunicator(application, f"/ws/instances/{instance.pk}/console/",
                                             headers=[ORIGIN, HOST])
        communicator.scope["user"] = member
        return communicator

    @async_to_sync
    async def scenario():
        service = asyncio.ensure_future(console_service.ConsoleService().run())
        with mock.patch("hosts.hypervisor.Console") as console:
            first = viewer()
            assert (await first.connect())[0]
            await asyncio.sleep(0.3)
            await first.disconnect()  # the last viewer leaves: its stream closes
            second = viewer()
            assert (await second.connect())[0]
            await second.send_to(text_data="uptime\n")
            for _ in range(40):
                await asyncio.sleep(0.05)
                if console.call_count == 2 and console.return_value.write.called:
                    break
            # the second viewer got a stream of its own and was not closed with the first one's end
            assert console.call_count == 2
            assert console.return_value.write.call_args.args == (b"uptime\n",)
            assert await second.receive_nothing(timeout=0.5)
            await second.disconnect()
        service.cancel()

    scenario()


def test_the_console_service_waits_out_a_broker_error_and_serves_on(member, tenant, host, monkeypatch):
    monkeypatch.setattr(console_service, "CHANNEL", f"consoles-{uuid.uuid4().hex[:8]}")
    instance = make_instance(tenant=tenant, host=host, status=Status.RUNNING)

    @async_to_sync
    async def scenario():
        service = console_service.ConsoleService()
        receive, failures = service.layer.receive, []

        async def flaky_receive(channel):
            if not failures:  # the broker drops the first receive
                failures.append(channel)
                raise ConnectionError("Redis went away")
            return await receive(channel)

        service.layer = mock.Mock(wraps=service.layer, receive=flaky_receive)
        running = asyncio.ensure_future(service.run())
        with mock.patch("hosts.hypervisor.Console") as console:
            viewer = WebsocketCommunicator(application, f"/ws/instances/{instance.pk}/console/",
                                           headers=[ORIGIN, HOST])
            viewer.scope["user"] = member
            assert (await viewer.connect())[0]
            await viewer.send_to(text_data="ls\n")
            for _ in range(60):
                await asyncio.sleep(0.05)
                if console.return_value.write.called:
                    break
            assert failures and not running.done()
            assert console.return_value.write.call_args.args == (b"ls\n",)
            await viewer.disconnect()
        running.cancel()

    scenario()
