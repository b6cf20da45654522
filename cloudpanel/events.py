"""Publishing to Channels groups from any thread: web, worker, listener or event loop."""

import asyncio
import logging
import threading

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

# The loop that serves websockets in this process, recorded by consumers. Sending
# through it keeps the in-memory layer's queues on their own loop.
_server_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def remember_server_loop() -> None:
    """Called from a consumer: the running loop is the one websockets live on."""
    global _server_loop
    with _lock:
        _server_loop = asyncio.get_running_loop()


def publish(groups: list[str], payload: dict) -> None:
    """Send a payload to every group; never raises (a lost update is repaired by the next one)."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "panel.event", "payload": payload}

    async def send() -> None:
        for group in groups:
            await layer.group_send(group, message)

    try:
        loop = _server_loop
        if loop is not None and loop.is_running() and not loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                loop.create_task(send())
            else:
                asyncio.run_coroutine_threadsafe(send(), loop).result(timeout=5)
            return
        async_to_sync(send)()
    except Exception:
        log.exception("could not publish to %s", groups)
