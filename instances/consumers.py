"""Websockets: live status for the pages a user can see, serial consoles and graphical displays.

All authorize in connect() before accept(): a login (else 4401) and, for a console,
an instance visible in the user's current tenant (else 4404) that their role lets them
operate (else 4403); a display also needs a ticket issued to this user, instance and
session, unused and unexpired (else 4419). Console and display sessions, and refused
attempts, go to the audit log. Origin is checked by the cloudpanel.origin around the
router (scheme, host and port: cloudpanel/asgi.py).
"""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from cloudpanel.events import instance_group, notification_group, remember_server_loop, tenant_group
from cloudpanel.scoping import SESSION_TENANT, Scope
from hosts import capabilities, console_service, hypervisor
from hosts.choices import Technology
from images.events import PUBLIC_GROUP as PUBLIC_IMAGES
from instances import tickets
from instances.choices import Status
from instances.models import Instance
from tenants import audit
from tenants.scoping import resolve_scope

UNAUTHENTICATED = 4401
FORBIDDEN = 4403
NOT_FOUND = 4404
CONSOLE_UNAVAILABLE = 4409
CONSOLE_ENDED = 4410
TICKET_REFUSED = 4419
ANSWER_SECONDS = 10.0  # how long a console socket waits for the console service to answer an attach


async def signed_in_user(consumer: AsyncWebsocketConsumer):
    """The scope's user if signed in; otherwise the socket is closed with 4401 and None returned."""
    user = consumer.scope.get("user")
    if user is None or not user.is_authenticated:
        await consumer.close(code=UNAUTHENTICATED)
        return None
    remember_server_loop()
    return user


@database_sync_to_async
def scope_for(consumer: AsyncWebsocketConsumer, user) -> Scope:
    """The same scope as the user's pages: the tenant chosen in their session."""
    session = consumer.scope.get("session")
    return resolve_scope(user, requested=session.get(SESSION_TENANT) if session else None, strict=False)


def address_of(consumer: AsyncWebsocketConsumer) -> str | None:
    client = consumer.scope.get("client")
    return client[0] if client else None


class StatusConsumer(AsyncWebsocketConsumer):
    """Pushes instance and host changes the user may see (one socket per page)."""

    async def connect(self) -> None:
        user = await signed_in_user(self)
        if user is None:
            return
        scope = await scope_for(self, user)
        instance_id = self.scope["url_route"]["kwargs"].get("instance_id")
        if instance_id is not None:
            visible = await database_sync_to_async(
                Instance.objects.in_scope(scope).filter(pk=instance_id).exists
            )()
            if not visible:
                await self.close(code=NOT_FOUND)
                return
            self.groups_joined = [instance_group(instance_id)]
        elif scope.tenant_ids is None:
            self.groups_joined = ["admin"]
        else:
            self.groups_joined = [tenant_group(i) for i in scope.tenant_ids] + [PUBLIC_IMAGES]
        # every page's bell: new notifications the user may read
        self.groups_joined += [notification_group(None)] if scope.tenant_ids is None else [
            notification_group(i) for i in scope.tenant_ids]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def panel_event(self, message: dict) -> None:
        await self.send(text_data=json.dumps(message["payload"]))


class _InstanceSocket(AsyncWebsocketConsumer):
    """A socket to one instance the user may operate; refusals are audited and close before accept()."""

    audit_action = "console.open"
    audit_id: int | None = None

    async def operable_instance(self) -> dict | None:
        """The instance's row (pk, name, uuid, host URI, tenant), or None once the socket is closed with why."""
        instance_id = self.scope["url_route"]["kwargs"]["instance_id"]
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.refuse(None, instance_id, UNAUTHENTICATED)
            return None
        remember_server_loop()
        scope = await scope_for(self, user)
        row = await database_sync_to_async(
            lambda: Instance.objects.in_scope(scope).filter(pk=instance_id).exclude(status=Status.DELETED)
            .values("pk", "name", "uuid", "host_id", "host__uri", "host__technology", "tenant_id", "tenant__name")
            .first()
        )()
        if row is None:
            await self.refuse(user, instance_id, NOT_FOUND)
            return None
        if not scope.can_operate(row["tenant_id"]):
            await self.refuse(user, instance_id, FORBIDDEN, tenant=(row["tenant_id"], row["tenant__name"]),
                              name=row["name"])
            return None
        return row

    async def refuse(self, user, instance_id: int, code: int, tenant: tuple[int, str] | None = None,
                     name: str = "", detail: str = "") -> None:
        """Record the refusal, then close before anything opens."""
        await database_sync_to_async(audit.console_refused)(
            user=user, instance_id=instance_id, address=address_of(self), code=code, path=self.scope["path"],
            tenant=tenant, name=name, action=self.audit_action, detail=detail,
        )
        await self.close(code=code)

    async def audit_opened(self, row: dict) -> None:
        self.audit_id = await database_sync_to_async(audit.console_opened)(
            user=self.scope["user"], instance=row, address=address_of(self), action=self.audit_action
        )

    async def audit_closed(self, code: int) -> None:
        if self.audit_id is not None:
            audit_id, self.audit_id = self.audit_id, None
            await database_sync_to_async(audit.console_closed)(audit_id, detail=f"closed with code {code}")


class ConsoleConsumer(_InstanceSocket):
    """Bridges xterm.js to the guest's serial console through the console service: text frames both ways.

    The stream itself is the console service's (hosts.console_service), so viewers in every web process share it.
    The socket repeats its attach as a heartbeat; when the service does not answer one in time, it closes (4409).
    """

    heartbeat: asyncio.Task | None = None
    attached = False
    stream: str | None = None  # the console service's stream this socket is attached to

    async def connect(self) -> None:
        row = await self.operable_instance()
        if row is None:
            return
        if row["host_id"] is None:
            await self.refuse(self.scope["user"], row["pk"], CONSOLE_UNAVAILABLE, detail="the instance has no host")
            return
        if not capabilities.of(row["host__technology"]).serial_console:
            await self.refuse(self.scope["user"], row["pk"], CONSOLE_UNAVAILABLE,
                              detail=f"{Technology(row['host__technology']).label} guests have no serial console "
                                     "through libvirt")
            return
        if settings.EMBEDDED:
            console_service.ensure_running_here()
        self.service = console_service.channel_for(row["host_id"])
        self.hello = {"uri": row["host__uri"], "uuid": str(row["uuid"]), "viewer": self.channel_name}
        await self.audit_opened(row)
        await self.accept()
        await self.channel_layer.group_add(console_service.console_group(self.hello["uuid"]), self.channel_name)
        self.heartbeat = asyncio.ensure_future(self._heartbeat())

    async def _heartbeat(self) -> None:
        """Attach, and again every HEARTBEAT; close if an attach goes unanswered."""
        while True:
            self.answered = asyncio.Event()
            if not await self._tell("console.attach"):
                return
            try:
                await asyncio.wait_for(self.answered.wait(), timeout=ANSWER_SECONDS)
            except TimeoutError:
                await self._unavailable("the console service does not answer")
                return
            await asyncio.sleep(console_service.HEARTBEAT)

    async def _tell(self, kind: str, **fields) -> bool:
        try:
            await self.channel_layer.send(self.service, {"type": kind, **self.hello, **fields})
        except ChannelFull:
            await self._unavailable("the console service is not keeping up")
            return False
        return True

    async def _unavailable(self, reason: str) -> None:
        await self.send(text_data=f"\r\n[console unavailable: {reason}]\r\n")
        await self.close(code=CONSOLE_UNAVAILABLE)

    async def console_attached(self, message: dict) -> None:
        self.attached, self.stream = True, message.get("stream")
        self.answered.set()

    async def console_output(self, message: dict) -> None:
        await self.send(text_data=message["text"])

    async def console_closed(self, message: dict) -> None:
        if message.get("stream") and self.stream and message["stream"] != self.stream:
            return  # an earlier stream of this console ending: this socket is on the one opened since
        if message.get("opened") or self.attached:
            await self.send(text_data=f"\r\n[console closed: {message['reason']}]\r\n")
            await self.close(code=CONSOLE_ENDED)
        else:
            await self._unavailable(message["reason"])

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        data = bytes_data if bytes_data is not None else (text_data or "").encode()
        if data:
            await self._tell("console.input", data=data)

    async def disconnect(self, code: int) -> None:
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            await self.channel_layer.group_discard(console_service.console_group(self.hello["uuid"]),
                                                   self.channel_name)
            with suppress(ChannelFull):
                await self.channel_layer.send(self.service, {"type": "console.detach", **self.hello})
        await self.audit_closed(code)


class DisplayConsumer(_InstanceSocket):
    """Bridges noVNC to the guest's VNC display: binary frames both ways.

    Each viewer gets a display connection of its own from QEMU (shared mode), so viewers in any web process see
    the same screen without taking it from each other. The socket is the one libvirt hands over a local
    connection: opened here, or with per-host workers by the host's own console service, which relays it
    (hosts.display_relay) and tells this socket display.opened, display.output and display.closed.
    """

    audit_action = "display.open"
    writer: asyncio.StreamWriter | None = None
    pump: asyncio.Task | None = None
    service: str | None = None  # the host's console service relaying the display
    row: dict | None = None

    async def connect(self) -> None:
        row = await self.operable_instance()
        if row is None:
            return
        user = self.scope["user"]
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        session = self.scope.get("session")
        refusal = await database_sync_to_async(tickets.redeem)(
            (query.get("ticket") or [""])[0], instance_id=row["pk"], user=user,
            session_key=session.session_key if session else None,
        )
        if refusal:
            await self.refuse(user, row["pk"], TICKET_REFUSED, tenant=(row["tenant_id"], row["tenant__name"]),
                              name=row["name"], detail=refusal)
            return
        if console_service.per_host() and row["host_id"] is not None:
            await self._relayed(row)
            return
        try:
            sock = await sync_to_async(hypervisor.open_display, thread_sensitive=False)(
                row["host__uri"], str(row["uuid"]))
        except hypervisor.HypervisorError as exc:
            await self._unavailable(row, str(exc))
            return
        reader, self.writer = await asyncio.open_connection(sock=sock)
        await self.audit_opened(row)
        await self.accept(self._subprotocol())
        self.pump = asyncio.ensure_future(self._pump(reader))

    def _subprotocol(self) -> str | None:
        return "binary" if "binary" in self.scope.get("subprotocols", []) else None

    async def _unavailable(self, row: dict, reason: str) -> None:
        await self.refuse(self.scope["user"], row["pk"], CONSOLE_UNAVAILABLE,
                          tenant=(row["tenant_id"], row["tenant__name"]), name=row["name"],
                          detail=f"display unavailable: {reason}"[:2000])

    async def _relayed(self, row: dict) -> None:
        """Ask the host's console service to open the display; accepted now, closed with 4409 and the reason if it
        cannot open it or does not answer."""
        self.row, self.service = row, console_service.channel_for(row["host_id"])
        await self.accept(self._subprotocol())
        if await self._tell({"type": "display.open", "uri": row["host__uri"], "uuid": str(row["uuid"])}):
            self.pump = asyncio.ensure_future(self._keep_alive())

    async def _tell(self, message: dict) -> bool:
        try:
            await self.channel_layer.send(self.service, {**message, "viewer": self.channel_name})
        except ChannelFull:
            await self._unavailable(self.row, "the host's console service is not keeping up")
            return False
        return True

    async def _keep_alive(self) -> None:
        """Close if the display is not open in time; then tell the service this viewer stays, every HEARTBEAT."""
        await asyncio.sleep(ANSWER_SECONDS)
        if self.audit_id is None:
            await self._unavailable(self.row, "the host's console service does not answer")
            return
        while await self._tell({"type": "display.alive"}):
            await asyncio.sleep(console_service.HEARTBEAT)

    async def display_opened(self, message: dict) -> None:
        if self.audit_id is None and self.row is not None:
            await self.audit_opened(self.row)

    async def display_output(self, message: dict) -> None:
        await self.send(bytes_data=message["data"])

    async def display_closed(self, message: dict) -> None:
        if self.pump is not None:
            self.pump.cancel()
        if message.get("opened"):
            await self.close(code=CONSOLE_ENDED)
        else:
            await self._unavailable(self.row, message["reason"])

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        """The display's bytes to the browser, until the guest's side closes."""
        try:
            while data := await reader.read(1 << 16):
                await self.send(bytes_data=data)
        except (ConnectionError, OSError):
            pass
        await self.close(code=CONSOLE_ENDED)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if bytes_data is None:
            return
        if self.service is not None:
            await self._tell({"type": "display.input", "data": bytes_data})
            return
        if self.writer is None:
            return
        try:
            self.writer.write(bytes_data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            await self.close(code=CONSOLE_ENDED)

    async def disconnect(self, code: int) -> None:
        if self.pump is not None:
            self.pump.cancel()
        if self.service is not None:
            with suppress(ChannelFull):
                await self.channel_layer.send(self.service, {"type": "display.close", "viewer": self.channel_name})
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()
        await self.audit_closed(code)
