"""One serial console stream per instance per process, shared by every viewer.

libvirt lets one client hold a domain's console at a time, so viewers of the same
instance attach to a shared session: output fans out to all of them, input from any
of them goes to the guest. The stream closes when the last viewer leaves.
"""

from __future__ import annotations

import asyncio
import codecs
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from hosts import hypervisor

OutputCallback = Callable[[str], None]
CloseCallback = Callable[[str], None]


@dataclass(eq=False)
class Viewer:
    """A subscriber living on an asyncio loop; callbacks are called on that loop."""

    loop: asyncio.AbstractEventLoop
    on_output: OutputCallback
    on_close: CloseCallback


@dataclass(eq=False)
class Session:
    key: str
    console: hypervisor.Console | None = None
    error: hypervisor.HypervisorError | None = None
    opened: threading.Event = field(default_factory=threading.Event)
    viewers: list[Viewer] = field(default_factory=list)
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )


_lock = threading.Lock()
_sessions: dict[str, Session] = {}


def _fan_out(session: Session, data: bytes) -> None:
    text = session.decoder.decode(data)
    if not text:
        return
    with _lock:
        viewers = list(session.viewers)
    for viewer in viewers:
        viewer.loop.call_soon_threadsafe(viewer.on_output, text)


def _ended(session: Session, reason: str) -> None:
    with _lock:
        if _sessions.get(session.key) is session:
            del _sessions[session.key]
        viewers, session.viewers = list(session.viewers), []
    for viewer in viewers:
        viewer.loop.call_soon_threadsafe(viewer.on_close, reason)


def attach(uri: str, domain_uuid: str, viewer: Viewer) -> None:
    """Join (or open) the console of a domain; raises HypervisorError if it can't be opened.

    A viewer arriving while another is still opening the stream waits for that
    attempt instead of opening a second stream (which would take the first over).
    """
    key = f"{uri}#{domain_uuid}"
    with _lock:
        session = _sessions.get(key)
        opener = session is None
        if opener:
            session = Session(key=key)
            _sessions[key] = session
        session.viewers.append(viewer)
    if opener:
        try:
            session.console = hypervisor.Console(
                uri, domain_uuid, on_output=lambda data: _fan_out(session, data),
                on_close=lambda reason: _ended(session, reason),
            )
        except hypervisor.HypervisorError as exc:
            session.error = exc
            with _lock:
                if _sessions.get(key) is session:
                    del _sessions[key]
        finally:
            session.opened.set()
        with _lock:
            orphaned = session.console is not None and not session.viewers
        if orphaned:  # every viewer left while the stream was opening
            session.console.close("no viewer left")
            return
    else:
        session.opened.wait(timeout=30)
    if session.console is None:
        with _lock:
            if viewer in session.viewers:
                session.viewers.remove(viewer)
        raise session.error or hypervisor.HypervisorError("the console did not open in time")


def detach(uri: str, domain_uuid: str, viewer: Viewer) -> None:
    """Leave a console; the last viewer out closes the stream."""
    key = f"{uri}#{domain_uuid}"
    with _lock:
        session = _sessions.get(key)
        if session is None or viewer not in session.viewers:
            return
        session.viewers.remove(viewer)
        last = not session.viewers
        if last:
            del _sessions[key]
    if last and session.console is not None:
        session.console.close("last viewer left")


def send(uri: str, domain_uuid: str, data: bytes) -> None:
    """Type into a console that is open in this process."""
    with _lock:
        session = _sessions.get(f"{uri}#{domain_uuid}")
    if session is not None and session.console is not None:
        session.console.write(data)
