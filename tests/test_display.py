"""The graphical console: tickets bound to a user, an instance and a session; refusals before the display opens."""

import asyncio
import hashlib
import time
import xml.etree.ElementTree as ET
from datetime import timedelta
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from django.utils import timezone

from cloudpanel.asgi import application
from hosts import hypervisor
from instances import services
from instances.choices import Status
from instances.models import DisplayTicket, Instance
from tenants.choices import Role
from tenants.models import AuditEvent
from tests.factories import make_host, make_instance, make_tenant, make_user, wait_for
from tests.rfb import RfbClient

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")


@pytest.fixture
def qemu_row(tenant):
    """A running instance on a QEMU host (no guest behind it: the display is opened by a spy)."""
    host = make_host(uri="qemu:///system", name="qemu-row")
    return make_instance(tenant=tenant, host=host, status=Status.RUNNING)


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def ticket_for(client: Client, instance) -> dict:
    response = client.post(f"/api/v1/instances/{instance.pk}/display-ticket/")
    assert response.status_code == 201, response.content
    return response.json()


@async_to_sync
async def open_display(path: str, user, session_key: str | None):
    """(connected, close code) of the display socket at path, as the user in that browser session."""
    communicator = WebsocketCommunicator(application, path, headers=[ORIGIN, HOST], subprotocols=["binary"])
    if user is not None:
        communicator.scope["user"] = user
    if session_key is not None:
        communicator.scope["session"] = SessionStore(session_key)
    connected, code = await communicator.connect(timeout=5)
    if connected:
        await communicator.disconnect()
    return connected, code


class FakeDisplay:
    """Stands in for libvirt's display socket: records that it was opened, then is unavailable."""

    def __init__(self):
        self.opened = []

    def __call__(self, uri, domain_uuid):
        self.opened.append(domain_uuid)
        raise hypervisor.HypervisorError("no guest behind this row")


@pytest.fixture
def display():
    fake = FakeDisplay()
    with mock.patch("hosts.hypervisor.open_display", fake):
        yield fake


def test_a_ticket_opens_the_display_once_for_its_user_instance_and_session(member, qemu_row, display):
    client = signed_in(member)
    issued = ticket_for(client, qemu_row)
    assert issued["url"] == f"/ws/instances/{qemu_row.pk}/display/?ticket={issued['ticket']}"
    # Only its digest is stored
    stored = DisplayTicket.objects.get(instance=qemu_row)
    assert issued["ticket"] not in (stored.digest, stored.session_digest) and len(stored.digest) == 64
    # The right user, instance and session get through to the display (which this row lacks: 4409)
    assert open_display(issued["url"], member, client.session.session_key) == (False, 4409)
    assert display.opened == [str(qemu_row.uuid)]
    # and a replay is refused before the display is opened again
    assert open_display(issued["url"], member, client.session.session_key) == (False, 4419)
    assert display.opened == [str(qemu_row.uuid)]
    refusal = AuditEvent.objects.filter(action="display.open", status_code=4419).get()
    assert refusal.detail == "the ticket was already used" and refusal.user == member


def test_tickets_are_refused_for_another_user_instance_session_or_after_they_expire(tenant, member, qemu_row,
                                                                                   display):
    client = signed_in(member)
    colleague = make_user(tenant=tenant)
    other = make_instance(tenant=tenant, host=qemu_row.host, status=Status.RUNNING)
    session = client.session.session_key
    cases = [
        (ticket_for(client, qemu_row)["url"], colleague, signed_in(colleague).session.session_key,
         "the ticket is another user's"),
        (ticket_for(client, qemu_row)["url"].replace(f"/{qemu_row.pk}/", f"/{other.pk}/"), member, session,
         "the ticket is for another instance"),
        (ticket_for(client, qemu_row)["url"], member, signed_in(member).session.session_key,
         "the ticket is another session's"),
        (ticket_for(client, qemu_row)["url"] + "x", member, session, "unknown ticket"),
        (f"/ws/instances/{qemu_row.pk}/display/", member, session, "no ticket"),
        (f"/ws/instances/{qemu_row.pk}/display/?ticket=", member, session, "no ticket"),
    ]
    expired = ticket_for(client, qemu_row)
    DisplayTicket.objects.filter(digest=hashlib.sha256(expired["ticket"].encode()).hexdigest()).update(
        expires_at=timezone.now() - timedelta(seconds=1))
    cases.append((expired["url"], member, session, "the ticket expired"))
    for url, user, session_key, reason in cases:
        assert open_display(url, user, session_key) == (False, 4419), reason
        assert AuditEvent.objects.filter(action="display.open", status_code=4419).latest("id").detail == reason
    assert display.opened == []


def test_a_deleted_instances_ticket_and_a_viewers_are_refused(tenant, member, qemu_row, display):
    client = signed_in(member)
    url = ticket_for(client, qemu_row)["url"]
    viewer = make_user(tenant=tenant, role=Role.VIEWER)
    viewer_client = signed_in(viewer)
    refused = viewer_client.post(f"/api/v1/instances/{qemu_row.pk}/display-ticket/")
    assert refused.status_code == 403
    assert open_display(url, viewer, viewer_client.session.session_key) == (False, 4403)
    qemu_row.status = Status.DELETED
    qemu_row.save(update_fields=["status"])
    assert open_display(url, member, client.session.session_key) == (False, 4404)
    response = client.post(f"/api/v1/instances/{qemu_row.pk}/display-ticket/")
    assert response.status_code == 409 and "deleted" in response.json()["detail"]
    outsider = make_user(tenant=make_tenant())
    assert open_display(url, outsider, signed_in(outsider).session.session_key) == (False, 4404)
    assert display.opened == []


def test_a_ticket_is_refused_with_the_reason_where_there_is_no_display(tenant, member, member_api, host, qemu_row):
    client = signed_in(member)
    # A token is not a browser session
    response = member_api.post(f"/api/v1/instances/{qemu_row.pk}/display-ticket/")
    assert response.status_code == 400 and "browser session" in response.json()["detail"]
    # A technology without a graphical console
    container = make_instance(tenant=tenant, host=host, status=Status.RUNNING)
    response = client.post(f"/api/v1/instances/{container.pk}/display-ticket/")
    assert response.status_code == 409 and "serial console" in response.json()["detail"]
    # A guest that does not run
    qemu_row.status = Status.STOPPED
    qemu_row.save(update_fields=["status"])
    response = client.post(f"/api/v1/instances/{qemu_row.pk}/display-ticket/")
    assert response.status_code == 409 and "stopped" in response.json()["detail"]
    assert not DisplayTicket.objects.exists()


def test_old_tickets_are_purged_when_new_ones_are_issued(member, qemu_row):
    client = signed_in(member)
    ticket_for(client, qemu_row)
    DisplayTicket.objects.update(expires_at=timezone.now() - timedelta(hours=2))
    ticket_for(client, qemu_row)
    assert DisplayTicket.objects.count() == 1


def test_the_page_offers_the_display_to_operators_of_qemu_guests_only(tenant, member, host, qemu_row):
    page = signed_in(member).get(f"/instances/{qemu_row.pk}/").content.decode()
    assert 'id="display-connect"' in page and "core/rfb.js" in page
    other = make_instance(tenant=tenant, host=host, status=Status.RUNNING)
    assert 'id="display"' not in signed_in(member).get(f"/instances/{other.pk}/").content.decode()
    viewer = make_user(tenant=tenant, role=Role.VIEWER)
    page = signed_in(viewer).get(f"/instances/{qemu_row.pk}/").content.decode()
    assert 'id="display-connect"' not in page and "display, which types into the guest" in page


class SocketBytes:
    """An RFB byte stream over the panel's display websocket."""

    def __init__(self, communicator: WebsocketCommunicator):
        self.communicator, self.buffer = communicator, bytearray()

    async def read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            message = await self.communicator.receive_output(timeout=30)
            if message["type"] == "websocket.close":
                raise AssertionError(f"the display closed ({message.get('code')})")
            self.buffer += message.get("bytes") or b""
        data, self.buffer = bytes(self.buffer[:count]), self.buffer[count:]
        return data

    async def write(self, data: bytes) -> None:
        await self.communicator.send_to(bytes_data=data)


async def screen_until(client: RfbClient, settled, typed: str = "", timeout: float = 60.0) -> int:
    """Type (again, every few seconds while the guest boots) until the lit pixel count settles; that count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if typed:
            await client.type(typed)
        for _ in range(10):
            await asyncio.sleep(0.3)
            await client.request()
            await client.update()
            if settled(client.lit()):
                return client.lit()
    raise AssertionError(f"the screen never settled after {typed!r}: {client.lit()} pixels lit")


@pytest.mark.qemu
def test_a_real_guests_screen_is_shared_and_typed_into_through_the_panel(qemu_host, member, tenant, guest_kernel):
    action = services.create_instance(user=member, tenant=tenant, name="screen", vcpus=1, memory_mib=128,
                                      disk_gib=0, boot_kernel=guest_kernel, host=qemu_host)
    assert wait_for(lambda: Instance.objects.get(pk=action.instance_id).status == Status.RUNNING, timeout=60)
    instance = Instance.objects.get(pk=action.instance_id)
    # Its display listens on no network address: libvirt hands the panel a socket
    graphics = ET.fromstring(hypervisor.connection(qemu_host.uri).lookupByUUIDString(str(instance.uuid))
                             .XMLDesc()).find("devices/graphics")
    assert graphics.get("type") == "vnc" and graphics.get("port") in (None, "-1")
    assert [listen.get("type") for listen in graphics.findall("listen")] == ["none"]
    client = signed_in(member)
    urls = [ticket_for(client, instance)["url"] for _ in range(2)]

    @async_to_sync
    async def scenario():
        viewers = []
        for url in urls:
            communicator = WebsocketCommunicator(application, url, headers=[ORIGIN, HOST], subprotocols=["binary"])
            communicator.scope["user"] = member
            communicator.scope["session"] = SessionStore(client.session.session_key)
            connected, subprotocol = await communicator.connect(timeout=10)
            assert connected and subprotocol == "binary"
            stream = SocketBytes(communicator)
            viewer = RfbClient(stream.read, stream.write)
            await viewer.handshake()
            viewers.append((communicator, viewer))
        first, second = viewers[0][1], viewers[1][1]
        assert (first.width, first.height) == (720, 400) and "QEMU" in first.name
        # Typed on one viewer: the shell on the guest's screen clears it, then fills it with the kernel's log
        cleared = await screen_until(first, lambda lit: lit < 3000, typed="clear\n")
        filled = await screen_until(first, lambda lit: lit > cleared + 10000, typed="dmesg\n", timeout=30)
        # and the other viewer, still connected, sees the same screen
        await screen_until(second, lambda lit: abs(lit - filled) < 500)
        for communicator, _ in viewers:
            await communicator.disconnect()

    scenario()
    sessions = AuditEvent.objects.filter(action="display.open", target_id=str(instance.pk), result="ok")
    assert sessions.count() == 2 and all(s.ended_at and s.user == member for s in sessions)
