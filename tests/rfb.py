"""A small RFB (VNC) client for the tests and benchmarks: handshake, raw framebuffer updates, key events.

It speaks over any byte transport given as two coroutines (read exactly n bytes; send bytes), so the same
client talks to a guest's display socket directly or through the panel's websocket.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable

Read = Callable[[int], Awaitable[bytes]]
Write = Callable[[bytes], Awaitable[None]]

SECURITY_NONE = 1
RAW = 0


class RfbClient:
    """One RFB 3.8 session with no authentication, asking only for raw rectangles."""

    def __init__(self, read: Read, write: Write) -> None:
        self.read, self.write = read, write
        self.width = self.height = self.bytes_per_pixel = 0
        self.name = ""
        self.framebuffer = bytearray()

    async def handshake(self) -> None:
        version = await self.read(12)
        if not version.startswith(b"RFB "):
            raise AssertionError(f"not an RFB server: {version!r}")
        await self.write(b"RFB 003.008\n")
        (count,) = await self.read(1)
        if count == 0:
            (length,) = struct.unpack(">I", await self.read(4))
            raise AssertionError(f"refused: {(await self.read(length)).decode(errors='replace')}")
        offered = await self.read(count)
        if SECURITY_NONE not in offered:
            raise AssertionError(f"the display asks for authentication: {list(offered)}")
        await self.write(bytes([SECURITY_NONE]))
        (result,) = struct.unpack(">I", await self.read(4))
        if result != 0:
            raise AssertionError("security handshake failed")
        await self.write(b"\x01")  # shared: other viewers stay connected
        self.width, self.height = struct.unpack(">HH", await self.read(4))
        pixel_format = await self.read(16)
        self.bytes_per_pixel = pixel_format[0] // 8
        (length,) = struct.unpack(">I", await self.read(4))
        self.name = (await self.read(length)).decode(errors="replace")
        self.framebuffer = bytearray(self.width * self.height * self.bytes_per_pixel)
        await self.write(struct.pack(">BxHi", 2, 1, RAW))

    async def request(self) -> None:
        """Ask for the whole screen (not only what changed)."""
        await self.write(struct.pack(">BBHHHH", 3, 0, 0, 0, self.width, self.height))

    async def update(self) -> int:
        """Read server messages up to and including one framebuffer update; the rectangles it had."""
        while True:
            (kind,) = await self.read(1)
            if kind == 0:
                break
            if kind == 2:  # bell
                continue
            if kind == 3:  # cut text
                (length,) = struct.unpack(">3xI", await self.read(7))
                await self.read(length)
                continue
            raise AssertionError(f"unexpected server message {kind}")
        (rectangles,) = struct.unpack(">xH", await self.read(3))
        for _ in range(rectangles):
            x, y, w, h, encoding = struct.unpack(">HHHHi", await self.read(12))
            if encoding != RAW:
                raise AssertionError(f"unexpected encoding {encoding}")
            data = await self.read(w * h * self.bytes_per_pixel)
            row = w * self.bytes_per_pixel
            for line in range(h):
                start = ((y + line) * self.width + x) * self.bytes_per_pixel
                self.framebuffer[start:start + row] = data[line * row:(line + 1) * row]
        return rectangles

    async def key(self, keysym: int) -> None:
        await self.write(struct.pack(">BBxxI", 4, 1, keysym) + struct.pack(">BBxxI", 4, 0, keysym))

    async def type(self, text: str) -> None:
        """Type text of keys without Shift (lower-case letters, digits, space, -./), a newline as Return."""
        for char in text:
            await self.key(0xFF0D if char == "\n" else ord(char))

    def lit(self) -> int:
        """How many pixels are not black."""
        step = self.bytes_per_pixel
        fb = self.framebuffer
        return sum(1 for i in range(0, len(fb), step) if any(fb[i:i + 3]))
