"""The console service: the one owner of each domain's serial console stream, whichever web process its viewers
reach.

libvirt lets one client hold a console at a time, so web processes do not open streams themselves: a viewer
(instances.consumers.ConsoleConsumer) joins the channel-layer group of the domain's console and asks this service,
on the channel CHANNEL, to attach it. The service opens the stream once, publishes its output to the group in
order, and writes every viewer's keys to it. Viewers repeat their attach as a heartbeat and expect an answer; a
viewer not heard from for VIEWER_TIMEOUT is dropped (its web process died), and a stream with no viewer left is
closed. With Redis the service runs in the listener process (manage.py listen_events); embedded, as a task on the
web server's loop. It keeps no state elsewhere: restarted, it opens a stream again at its viewers' next
heartbeat. Messages come only from the panel's processes, with a host URI and domain UUID read from the database.

With per-host workers (CLOUDPANEL_HOST_QUEUES), each host's own listener serves that host's consoles on a channel
of its own (channel_for), and relays its graphical displays too (hosts.display_relay): libvirt hands a display's
socket over a local connection only, which the host's own machine has.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings

from hosts import hypervisor
from hosts.display_relay import DisplayRelay

log = logging.getLogger(__name__)

CHANNEL = "consoles"
HEARTBEAT = 20.0  # seconds between a viewer's attaches
VIEWER_TIMEOUT = 3 * HEARTBEAT


def per_host() -> bool:
    """Whether each host's own listener serves its consoles and displays (per-host workers, with Redis)."""
    return settings.CLOUDPANEL_HOST_QUEUES and not settings.EMBEDDED


def channel_for(host_id: int) -> str:
    """The channel of the console service serving a host's consoles."""
    return f"{CHANNEL}.host.{host_id}" if per_host() else CHANNEL


def console_group(domain_uuid: str) -> str:
    """The group of every viewer of a domain's console."""
    return f"console.{domain_uuid}"


@dataclass(eq=False)
class _Stream:
    uri: str
    domain_uuid: str
    console: hypervisor.Console | None = None
    viewers: dict[str, float] = field(default_factory=dict)  # channel name → when last heard (monotonic)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # this stream, not an earlier or later one
    typed: list[bytes] = field(default_factory=list)  # keys not yet written
    typing: asyncio.Event = field(default_factory=asyncio.Event)
    output: list[str] = field(default_factory=list)  # text not yet published
    ended: str | None = None  # why the stream ended
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))
    opening: asyncio.Task | None = None

    @property
    def group(self) -> str:
        return console_group(self.domain_uuid)


class ConsoleService:
    """Receives attach, input and detach messages on its channels (CHANNEL, or hosts' own); one stream per domain.
    Display messages go to its display relay."""

    def __init__(self, channels: list[str] | None = None) -> None:
        self.layer = get_channel_layer()
        self.channels = channels or [CHANNEL]
        self.streams: dict[tuple[str, str], _Stream] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tasks: set[asyncio.Future] = set()  # held until done: the loop keeps only weak references
        self.displays = DisplayRelay(self.layer)

    def _spawn(self, work) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self) -> None:
        """Serve until cancelled; every stream is closed on the way out."""
        self.loop = asyncio.get_running_loop()
        sweeper = asyncio.ensure_future(self._sweep())
        self.tasks.add(sweeper)
        try:
            await asyncio.gather(*(self._serve(channel) for channel in self.channels))
        finally:
            sweeper.cancel()
            self.displays.close_all("the console service stopped")
            for stream in list(self.streams.values()):
                if stream.console is not None:
                    stream.console.close("the console service stopped")

    async def _serve(self, channel: str) -> None:
        backoff = 0.5
        while True:
            try:
                message = await self.layer.receive(channel)
            except Exception:  # noqa: BLE001 - the broker went away: wait for it, never stop serving
                log.warning("console service: cannot receive; again in %.1f s", backoff, exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            try:
                if str(message.get("type", "")).startswith("display."):
                    self.displays.handle(message)
                else:
                    self._handle(message)
            except (KeyError, TypeError, ValueError):
                log.warning("console service: malformed %r message", message.get("type"))

    def _handle(self, message: dict) -> None:
        kind, key, viewer = message["type"], (str(message["uri"]), str(message["uuid"])), str(message["viewer"])
        stream = self.streams.get(key)
        if kind == "console.detach":
            if stream is not None and stream.viewers.pop(viewer, None) is not None and not stream.viewers:
                self._close(stream, "the last viewer left")
            return
        if stream is None:
            stream = self.streams[key] = _Stream(*key)
            stream.opening = asyncio.ensure_future(self._open(stream))
            self.tasks.add(stream.opening)
            stream.opening.add_done_callback(self.tasks.discard)
        stream.viewers[viewer] = time.monotonic()
        if kind == "console.attach":
            self._spawn(self._answer(stream, viewer))
        elif kind == "console.input":
            data = message["data"]
            stream.typed.append(data if isinstance(data, bytes) else str(data).encode())
            stream.typing.set()

    async def _open(self, stream: _Stream) -> None:
        loop = self.loop
        stream.console = await asyncio.to_thread(
            hypervisor.Console, stream.uri, stream.domain_uuid,
            on_output=lambda data: loop.call_soon_threadsafe(self._output, stream, data),
            on_close=lambda reason: loop.call_soon_threadsafe(self._ended, stream, reason))
        if stream.ended is not None:  # every viewer left while it opened
            await asyncio.to_thread(stream.console.close, stream.ended)
            return
        self._spawn(self._publish(stream))
        self._spawn(self._type(stream))

    async def _type(self, stream: _Stream) -> None:
        """Write viewers' keys to the guest in order, in a thread (libvirt's send may wait on a slow host)."""
        while stream.ended is None:
            await stream.typing.wait()
            stream.typing.clear()
            while stream.typed and stream.ended is None:
                data = b"".join(stream.typed)
                stream.typed.clear()
                await asyncio.to_thread(stream.console.write, data)

    async def _answer(self, stream: _Stream, viewer: str) -> None:
        """Tell a viewer it is attached once the stream is open, or why it could not be opened."""
        try:
            await asyncio.shield(stream.opening)
        except hypervisor.HypervisorError as exc:
            self._ended(stream, str(exc))
            await self._send(viewer, {"type": "console.closed", "reason": str(exc), "opened": False})
            return
        except Exception as exc:  # noqa: BLE001 - a viewer must hear why, whatever libvirt raised
            log.exception("console service: opening %s failed", stream.domain_uuid)
            self._ended(stream, "the console could not be opened")
            await self._send(viewer, {"type": "console.closed", "reason": f"the console could not be opened: {exc}",
                                      "opened": False})
            return
        if stream.ended is not None:  # it ended while it opened (every viewer had left)
            await self._send(viewer, {"type": "console.closed", "reason": stream.ended, "opened": False})
            return
        await self._send(viewer, {"type": "console.attached", "stream": stream.id})

    def _output(self, stream: _Stream, data: bytes) -> None:
        text = stream.decoder.decode(data)
        if text:
            stream.output.append(text)
            stream.wake.set()

    def _ended(self, stream: _Stream, reason: str) -> None:
        if stream.ended is not None:
            return
        if self.streams.get((stream.uri, stream.domain_uuid)) is stream:
            del self.streams[(stream.uri, stream.domain_uuid)]
        stream.ended = reason
        stream.wake.set()
        stream.typing.set()

    def _close(self, stream: _Stream, reason: str) -> None:
        if stream.console is not None:  # its on_close ends the stream; libvirt's abort may wait on the host
            if self.streams.get((stream.uri, stream.domain_uuid)) is stream:
                del self.streams[(stream.uri, stream.domain_uuid)]  # a viewer arriving now gets a stream of its own
            self._spawn(asyncio.to_thread(stream.console.close, reason))
        else:
            self._ended(stream, reason)

    async def _publish(self, stream: _Stream) -> None:
        """The stream's output to its group in order, what queued up meanwhile in one message; then its end."""
        while True:
            await stream.wake.wait()
            stream.wake.clear()
            if stream.output:
                text = "".join(stream.output)
                stream.output.clear()
                await self._group_send(stream, {"type": "console.output", "text": text, "stream": stream.id})
            if stream.ended is not None and not stream.output:
                await self._group_send(stream, {"type": "console.closed", "reason": stream.ended, "opened": True,
                                                "stream": stream.id})
                return

    async def _group_send(self, stream: _Stream, message: dict) -> None:
        try:
            await self.layer.group_send(stream.group, message)
        except Exception:  # noqa: BLE001 - the broker is away: this chunk is lost, the stream goes on
            log.warning("console service: could not publish to %s", stream.group, exc_info=True)

    async def _send(self, viewer: str, message: dict) -> None:
        try:
            await self.layer.send(viewer, message)
        except (ChannelFull, OSError):
            log.warning("console service: could not answer %s", viewer)

    async def _sweep(self) -> None:
        """Drop viewers whose web process stopped sending heartbeats; close streams nobody watches."""
        while True:
            await asyncio.sleep(HEARTBEAT)
            cutoff = time.monotonic() - VIEWER_TIMEOUT
            self.displays.sweep(cutoff)
            for stream in list(self.streams.values()):
                for viewer in [v for v, seen in stream.viewers.items() if seen < cutoff]:
                    del stream.viewers[viewer]
                if not stream.viewers:
                    self._close(stream, "no viewer left")


_local: tuple[asyncio.AbstractEventLoop, asyncio.Task] | None = None
_local_lock = threading.Lock()


def ensure_running_here() -> None:
    """Embedded mode: run the service on the current (web server's) loop, once; the in-memory channel layer
    reaches nothing outside this loop."""
    global _local
    loop = asyncio.get_running_loop()
    with _local_lock:
        if _local is not None and _local[0] is loop and not _local[1].done():
            return
        _local = (loop, loop.create_task(ConsoleService().run(), name="console-service"))


def run_in_thread(channels: list[str] | None = None) -> threading.Thread:
    """A thread serving consoles on a loop of its own (the listener process, with the Redis channel layer): on
    CHANNEL, or on the given hosts' own channels."""
    thread = threading.Thread(target=lambda: asyncio.run(ConsoleService(channels).run()), name="console-service",
                              daemon=True)
    thread.start()
    return thread
