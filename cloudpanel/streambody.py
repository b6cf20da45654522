"""Image data read as the view consumes it, instead of spooled whole first.

Django's ASGI handler writes a request body to a temporary file before the view runs: for
an image upload that is a second copy of every byte on the web tier's disk, and no view
can refuse it before it has all arrived. For image data (uploads and the workers'
transfers) this handler gives the view a file whose reads pull the body from the ASGI
server as they go; every other request is handled exactly as Django does.
"""

from __future__ import annotations

import asyncio

from django.core.handlers.asgi import ASGIHandler

from cloudpanel.bodylimit import is_image_data

_READ_AHEAD = 1 << 20


class _Body:
    """The request body, read on demand from a view's thread; also the receive() Django's disconnect watch gets."""

    def __init__(self, receive, loop: asyncio.AbstractEventLoop) -> None:
        self._receive, self._loop = receive, loop
        self._buffer = bytearray()
        self._more = True
        self._disconnected = False
        self._done = asyncio.Event()

    async def _pull(self, wanted: int) -> None:
        while self._more and len(self._buffer) < wanted:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._more, self._disconnected = False, True
                break
            self._buffer += message.get("body", b"")
            self._more = message.get("more_body", False)
        if not self._more:
            self._done.set()

    def read(self, size: int = -1) -> bytes:
        """Up to size bytes (all that is left if size < 0); fewer only at the end or if the client went away."""
        wanted = size if size >= 0 else 1 << 62
        if self._more and len(self._buffer) < wanted:
            asyncio.run_coroutine_threadsafe(self._pull(max(wanted, _READ_AHEAD) if size >= 0 else wanted),
                                             self._loop).result()
        data = bytes(self._buffer[:wanted])
        del self._buffer[:wanted]
        return data

    def close(self) -> None:
        self._buffer.clear()

    async def __call__(self) -> dict:
        """Django's watch for a disconnect: it may listen only once the body has been read."""
        await self._done.wait()
        if self._disconnected:
            return {"type": "http.disconnect"}
        return await self._receive()


class StreamingBodyHandler(ASGIHandler):
    """Django's ASGI handler, with image data streamed to the view rather than spooled."""

    async def handle(self, scope, receive, send):
        if scope.get("method") in ("PUT", "POST") and is_image_data(scope["path"]):
            receive = _Body(receive, asyncio.get_running_loop())
        return await super().handle(scope, receive, send)

    async def read_body(self, receive):
        if isinstance(receive, _Body):
            return receive
        return await super().read_body(receive)
