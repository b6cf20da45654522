"""A domain's serial console stream, and its graphical display as a socket."""

from __future__ import annotations

import socket
from collections.abc import Callable
from contextlib import suppress

from hosts import capabilities
from hosts.hypervisor import connections
from hosts.hypervisor.connections import (
    HypervisorError,
    libvirt,
    technology_of,
)


class Console:
    """A domain's serial console stream; output arrives on the libvirt event thread."""

    def __init__(self, uri: str, domain_uuid: str, on_output: Callable[[bytes], None],
                 on_close: Callable[[str], None]) -> None:
        self._on_output = on_output
        self._on_close = on_close
        self._closed = False
        dom = connections.domain(uri, domain_uuid)
        conn = connections.connection(uri)
        with connections.errors(uri):
            if not dom.isActive():
                raise HypervisorError("the instance is not running")
            self._stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            if not capabilities.of(technology_of(uri)).console_flags:
                dom.openConsole(None, self._stream, 0)
            else:
                try:
                    dom.openConsole(None, self._stream, libvirt.VIR_DOMAIN_CONSOLE_SAFE)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_FAILED:
                        raise
                    # Another client (say virsh console) holds it: take it over.
                    dom.openConsole(None, self._stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            self._stream.eventAddCallback(
                libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
                | libvirt.VIR_STREAM_EVENT_HANGUP,
                self._readable, None,
            )

    def _readable(self, stream: libvirt.virStream, events: int, _opaque: object) -> None:
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self.close("the console stream ended")
            return
        while not self._closed:
            try:
                data = stream.recv(4096)
            except libvirt.libvirtError as exc:
                self.close(f"the console stream failed: {exc.get_error_message()}")
                return
            if data == -2:  # would block
                return
            if not data:
                self.close("the guest closed its console")
                return
            self._on_output(data)

    def write(self, data: bytes) -> None:
        """Send keystrokes to the guest."""
        if self._closed:
            return
        try:
            while data:
                sent = self._stream.send(data)
                if sent == -2:
                    continue
                data = data[sent:]
        except libvirt.libvirtError as exc:
            self.close(f"the console stream failed: {exc.get_error_message()}")

    def close(self, reason: str = "closed") -> None:
        """End the stream once, telling on_close why."""
        if self._closed:
            return
        self._closed = True
        with suppress(libvirt.libvirtError):
            self._stream.eventRemoveCallback()
        with suppress(libvirt.libvirtError):
            self._stream.abort()
        self._on_close(reason)


def open_display(uri: str, domain_uuid: str) -> socket.socket:
    """A connected socket to the running domain's VNC display, handed over by libvirt (no port is opened).

    libvirt passes the descriptor over its own socket, so the host must be reached through a local unix socket
    (qemu:///system, qemu:///session); a remote transport is refused with libvirt's reason.
    """
    if not capabilities.of(technology_of(uri)).graphics:
        raise HypervisorError("this technology has no graphical console in CloudPanel")
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        if not dom.isActive():
            raise HypervisorError("the instance is not running")
        fd = dom.openGraphicsFD(0, libvirt.VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock
