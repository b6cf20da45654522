"""Graphical displays relayed through a host's own console service (per-host workers).

libvirt hands a display's socket over a local connection only, so a web process elsewhere cannot open it. The
viewer's web process (instances.consumers.DisplayConsumer) asks the host's console service instead: display.open
opens the display on the host's machine, its bytes go to the viewer's channel as display.output, in order, and
the viewer's display.input is written to it. A viewer repeats display.alive while it stays; one not heard from in
time (its web process died) is closed, as is one whose channel stays full (nobody reads it): while it is full the
relay stops reading the display, so a slow viewer slows QEMU's VNC server rather than filling memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from channels.exceptions import ChannelFull

from hosts import hypervisor

log = logging.getLogger(__name__)

CHUNK = 1 << 16  # bytes read from a display at a time
FULL_SECONDS = 15.0  # how long a viewer's channel may stay full before its display is closed
INPUT_LIMIT = 1 << 20  # input bytes the display may leave unread before the relay gives up on it


@dataclass(eq=False)
class _Display:
    viewer: str
    seen: float = field(default_factory=time.monotonic)
    writer: asyncio.StreamWriter | None = None
    typed: list[bytes] = field(default_factory=list)  # input that came before the display opened
    task: asyncio.Task | None = None
    closed: bool = False


class DisplayRelay:
    """The displays one console service relays, by viewer channel."""

    def __init__(self, layer) -> None:
        self.layer = layer
        self.displays: dict[str, _Display] = {}
        self.tasks: set[asyncio.Task] = set()  # farewells being sent (the loop keeps only weak references)

    def handle(self, message: dict) -> None:
        kind, viewer = message["type"], str(message["viewer"])
        display = self.displays.get(viewer)
        if kind == "display.open":
            if display is None:
                display = self.displays[viewer] = _Display(viewer)
                display.task = asyncio.ensure_future(self._relay(display, str(message["uri"]), str(message["uuid"])))
            return
        if display is None:
            return  # a viewer this service no longer knows (it closed, or the service restarted)
        display.seen = time.monotonic()
        if kind == "display.input":
            data = message["data"]
            self._write(display, data if isinstance(data, bytes) else str(data).encode())
        elif kind == "display.close":
            self._close(display)

    def _write(self, display: _Display, data: bytes) -> None:
        if display.writer is None:
            display.typed.append(data)
            if sum(map(len, display.typed)) > INPUT_LIMIT:
                self._close(display, "the display does not take the input")
            return
        display.writer.write(data)
        if display.writer.transport.get_write_buffer_size() > INPUT_LIMIT:
            self._close(display, "the display does not take the input")

    async def _relay(self, display: _Display, uri: str, domain_uuid: str) -> None:
        """Open the display, tell the viewer, then pass its bytes on until either side ends."""
        reason, opened = "the display closed", False
        try:
            sock = await asyncio.to_thread(hypervisor.open_display, uri, domain_uuid)
            reader, display.writer = await asyncio.open_connection(sock=sock, limit=CHUNK)
            for data in display.typed:
                display.writer.write(data)
            display.typed.clear()
            if not await self._deliver(display, {"type": "display.opened"}):
                reason = "the viewer does not read its display"
                return
            opened = True
            while not display.closed and (data := await reader.read(CHUNK)):
                if not await self._deliver(display, {"type": "display.output", "data": data}):
                    reason = "the viewer does not read its display"
                    break
        except hypervisor.HypervisorError as exc:
            reason = str(exc)
        except (ConnectionError, OSError) as exc:
            reason = f"the display closed: {exc}"
        finally:
            self._close(display, reason, opened=opened)

    async def _deliver(self, display: _Display, message: dict, patience: float | None = None) -> bool:
        """Send to the viewer, waiting while its channel is full (FULL_SECONDS unless told); False if it stays full
        (nobody reads it)."""
        deadline = time.monotonic() + (FULL_SECONDS if patience is None else patience)
        while True:
            try:
                await self.layer.send(display.viewer, message)
                return True
            except ChannelFull:
                if time.monotonic() > deadline:
                    log.warning("display relay: %s does not read its display; closing it", display.viewer)
                    return False
                await asyncio.sleep(0.05)
            except OSError:
                log.warning("display relay: cannot reach %s", display.viewer, exc_info=True)
                return False

    def _close(self, display: _Display, reason: str | None = None, *, opened: bool = True) -> None:
        """Close the display once; reason: tell the viewer why (not when it asked)."""
        if self.displays.get(display.viewer) is display:
            del self.displays[display.viewer]
        if display.closed:
            return
        display.closed = True
        if display.writer is not None:
            display.writer.close()
        if display.task is not None and display.task is not asyncio.current_task():
            display.task.cancel()
        if reason is not None:
            farewell = asyncio.ensure_future(self._deliver(
                display, {"type": "display.closed", "reason": reason, "opened": opened}, patience=1.0))
            self.tasks.add(farewell)
            farewell.add_done_callback(self.tasks.discard)

    def sweep(self, cutoff: float) -> None:
        """Close the displays of viewers not heard from since cutoff (monotonic)."""
        for display in [d for d in self.displays.values() if d.seen < cutoff]:
            self._close(display, "the viewer was not heard from")

    def close_all(self, reason: str) -> None:
        for display in list(self.displays.values()):
            self._close(display, reason)
