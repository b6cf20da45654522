"""Image data read as the view consumes it, instead of spooled whole first.

Django's ASGI handler writes a request body to a temporary file before the view runs: for
an image upload that is a second copy of every byte on the web tier's disk, and no view
can refuse it before it has all arrived. For image data (uploads and the workers'
transfers) this handler gives the view a file whose reads pull the body from the ASGI
server as they go; every other request is handled exactly as Django does.
"""

from __future__ import annotations

import asyncio
import collections

from django.core.handlers.asgi import ASGIHandler

from cloudpanel.bodylimit import is_image_data

_READ_AHEAD = 1 << 20


class _Body:
    """The request body, read on demand from a view's thread; also the receive() Django's disconnect watch gets.

    Reads return the server's pieces as they came (up to the size asked, fewer before the end), so no
    byte is copied on its way to the view; a hop to the event loop fetches about a MiB of them at once.
    """

    def __init__(self, receive, loop: asyncio.AbstractEventLoop) -> None:
        self._receive, self._loop = receive, loop
        self._pieces: collections.deque[bytes] = collections.deque()
        self._more = True
        self._disconnected = False
        self._done = asyncio.Event()

    async def _pull(self, wanted: int) -> None:
        buffered = sum(len(p) for p in self._pieces)
        while self._more and buffered < wanted:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._more, self._disconnected = False, True
                break
            if piece := message.get("body", b""):
                self._pieces.append(piece)
                buffered += len(piece)
            self._more = message.get("more_body", False)
        if not self._more:
            self._done.set()

    def _fetch(self, wanted: int) -> None:
        asyncio.run_coroutine_threadsafe(self._pull(wanted), self._loop).result()

    def read(self, size: int = -1) -> bytes:
        """All that is left (size < 0), or the next piece of at most size bytes: b"" only at the end."""
        if size < 0:
            self._fetch(1 << 62)
            data = b"".join(self._pieces)
            self._pieces.clear()
            return data
        if not self._pieces and self._more:
            self._fetch(_READ_AHEAD)
        if not self._pieces or size == 0:
            return b""
        piece = self._pieces.popleft()
        if len(piece) > size:
            self._pieces.appendleft(piece[size:])
            piece = piece[:size]
        return piece

    def close(self) -> None:
        self._pieces.clear()

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
