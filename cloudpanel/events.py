"""Publishing to Channels groups from any thread: web, worker, listener or event loop.

Sends go through one long-lived event loop per process: the loop serving websockets
when this process has one (so the in-memory layer's queues stay on their own loop),
else a publisher thread's loop (so the Redis layer keeps its connections warm instead
of opening new ones for every message). Waiting for each send keeps them in order.
"""

import asyncio
import logging
import os
import threading

from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

_lock = threading.Lock()
_server_loop: asyncio.AbstractEventLoop | None = None
_publisher: tuple[int, asyncio.AbstractEventLoop] | None = None


def instance_group(instance_id: int) -> str:
    """The group of an instance's page."""
    return f"instance.{instance_id}"


def tenant_group(tenant_id: int) -> str:
    """The group of a tenant's pages."""
    return f"tenant.{tenant_id}"


def notification_group(tenant_id: int | None) -> str:
    """The group of every page of a tenant's members (None: of platform admins) told of new notifications."""
    return f"notifications.{tenant_id if tenant_id is not None else 'platform'}"


def remember_server_loop() -> None:
    """Called from a consumer: the running loop is the one websockets live on."""
    global _server_loop
    with _lock:
        _server_loop = asyncio.get_running_loop()


def _send_loop() -> asyncio.AbstractEventLoop:
    global _publisher
    loop = _server_loop
    if loop is not None and loop.is_running():
        return loop
    with _lock:
        if _publisher is None or _publisher[0] != os.getpid():  # none yet, or inherited across a fork
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="channel-publisher", daemon=True).start()
            _publisher = (os.getpid(), loop)
        return _publisher[1]


def publish(groups: list[str], payload: dict) -> None:
    """Send a payload to every group; never raises (a lost update is repaired by the next one)."""
    publish_many([(groups, payload)])


def publish_many(messages: list[tuple[list[str], dict]]) -> None:
    """Send each payload to its groups, in order, in one pass over the send loop (a sampling round's points);
    never raises."""
    layer = get_channel_layer()
    if layer is None or not messages:
        return

    async def send() -> None:
        for groups, payload in messages:
            for group in groups:
                await layer.group_send(group, {"type": "panel.event", "payload": payload})

    loop = _send_loop()
    try:
        try:
            in_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            loop.create_task(send())
        else:
            asyncio.run_coroutine_threadsafe(send(), loop).result(timeout=5 + len(messages) / 100)
    except Exception:
        log.exception("could not publish %d message(s)", len(messages))
