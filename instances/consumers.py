"""Websockets: live status for the pages a user can see, and serial consoles.

Both authorize in connect() before accept(): a login (else 4401) and, for a console,
an instance visible to this user (else 4404). Origin is checked by the
AllowedHostsOriginValidator around the router (cloudpanel/asgi.py).
"""

from __future__ import annotations

import asyncio
import json

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from cloudpanel.events import remember_server_loop
from cloudpanel.scoping import is_platform_admin, tenant_ids_of
from hosts import hypervisor
from instances import console
from instances.choices import Status
from instances.events import instance_group, tenant_group
from instances.models import Instance

UNAUTHENTICATED = 4401
NOT_FOUND = 4404
CONSOLE_UNAVAILABLE = 4409
CONSOLE_ENDED = 4410


async def signed_in_user(consumer: AsyncWebsocketConsumer):
    """The scope's user if signed in; otherwise the socket is closed with 4401 and None returned."""
    user = consumer.scope.get("user")
    if user is None or not user.is_authenticated:
        await consumer.close(code=UNAUTHENTICATED)
        return None
    remember_server_loop()
    return user


class StatusConsumer(AsyncWebsocketConsumer):
    """Pushes instance and host changes the user may see (one socket per page)."""

    async def connect(self) -> None:
        user = await signed_in_user(self)
        if user is None:
            return
        instance_id = self.scope["url_route"]["kwargs"].get("instance_id")
        if instance_id is not None:
            visible = await database_sync_to_async(
                Instance.objects.visible_to(user).filter(pk=instance_id).exists
            )()
            if not visible:
                await self.close(code=NOT_FOUND)
                return
            self.groups_joined = [instance_group(instance_id)]
        elif is_platform_admin(user):
            self.groups_joined = ["admin"]
        else:
            ids = await database_sync_to_async(tenant_ids_of)(user)
            self.groups_joined = [tenant_group(i) for i in ids]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def panel_event(self, message: dict) -> None:
        await self.send(text_data=json.dumps(message["payload"]))


class ConsoleConsumer(AsyncWebsocketConsumer):
    """Bridges xterm.js to the guest's serial console: text frames both ways."""

    viewer: console.Viewer | None = None

    async def connect(self) -> None:
        user = await signed_in_user(self)
        if user is None:
            return
        instance_id = self.scope["url_route"]["kwargs"]["instance_id"]
        row = await database_sync_to_async(
            lambda: Instance.objects.visible_to(user).filter(pk=instance_id).exclude(status=Status.DELETED)
            .values("uuid", "host__uri").first()
        )()
        if row is None:
            await self.close(code=NOT_FOUND)
            return
        self.uri, self.domain_uuid = row["host__uri"], str(row["uuid"])
        await self.accept()
        self.viewer = console.Viewer(
            loop=asyncio.get_running_loop(), on_output=self._output, on_close=self._closed
        )
        try:
            await sync_to_async(console.attach, thread_sensitive=False)(self.uri, self.domain_uuid, self.viewer)
        except hypervisor.HypervisorError as exc:
            self.viewer = None
            await self.send(text_data=f"\r\n[console unavailable: {exc}]\r\n")
            await self.close(code=CONSOLE_UNAVAILABLE)

    def _output(self, text: str) -> None:
        asyncio.ensure_future(self.send(text_data=text))

    def _closed(self, reason: str) -> None:
        self.viewer = None

        async def close() -> None:
            await self.send(text_data=f"\r\n[console closed: {reason}]\r\n")
            await self.close(code=CONSOLE_ENDED)

        asyncio.ensure_future(close())

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.viewer is None:
            return
        data = bytes_data if bytes_data is not None else (text_data or "").encode()
        await sync_to_async(console.send, thread_sensitive=False)(self.uri, self.domain_uuid, data)

    async def disconnect(self, code: int) -> None:
        if self.viewer is not None:
            viewer, self.viewer = self.viewer, None
            await sync_to_async(console.detach, thread_sensitive=False)(self.uri, self.domain_uuid, viewer)
