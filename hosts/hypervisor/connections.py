"""Connections to hosts, cached per URI and process and reopened when they drop; libvirt's errors as ours."""

from __future__ import annotations

import enum
import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit

from hosts.choices import Technology


class _OnFirstUse:
    """Stands in for libvirt until first used, then imports it (and takes its place in this module; the
    package's other modules keep asking it, which reads from the module imported once).

    The web process loads this package but calls libvirt only for consoles: one that never opens
    a console never maps the library (some 11 MiB). Python's import lock makes the first use safe
    from several threads at once.
    """

    def __getattr__(self, name: str) -> object:
        import libvirt as module

        globals()["libvirt"] = module
        return getattr(module, name)


libvirt = _OnFirstUse()


class HypervisorError(Exception):
    """A libvirt operation failed; the message is fit to show a user."""


class HypervisorUnavailable(HypervisorError):
    """The host cannot be reached or its URI is not usable."""


class DomainNotFound(HypervisorError):
    """No domain with that UUID exists on the host."""


class PowerState(enum.StrEnum):
    """A domain's state as libvirt reports it, reduced to what a panel shows."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    CRASHED = "crashed"
    SUSPENDED = "suspended"


@functools.cache
def _state_map() -> dict[int, PowerState]:
    return {
        libvirt.VIR_DOMAIN_NOSTATE: PowerState.STOPPED,
        libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
        libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
        libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
        libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.RUNNING,
        libvirt.VIR_DOMAIN_SHUTOFF: PowerState.STOPPED,
        libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
        libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.SUSPENDED,
    }


def state_of(code: int) -> PowerState:
    """The power state of a libvirt domain state code."""
    return _state_map().get(code, PowerState.STOPPED)


def power_state(dom: libvirt.virDomain) -> PowerState:
    return state_of(dom.state()[0])

_SCHEME_TECHNOLOGY = {
    "qemu": Technology.QEMU,
    "lxc": Technology.LXC,
    "xen": Technology.XEN,
    "libxl": Technology.XEN,
    "openvz": Technology.OPENVZ,
    "vbox": Technology.VBOX,
    "esx": Technology.VMWARE,
    "gsx": Technology.VMWARE,
    "vpx": Technology.VMWARE,
    "hyperv": Technology.HYPERV,
    "bhyve": Technology.BHYVE,
    "vz": Technology.VZ,
    "parallels": Technology.VZ,
    "ch": Technology.CH,
    "test": Technology.TEST,
}

# Drivers libvirt once had and no longer has: a host of theirs is refused with the reason.
REMOVED_DRIVERS = {
    "uml": "User Mode Linux: upstream libvirt removed its driver in 5.0.0, so no libvirt can run UML guests; run "
           "them as QEMU/KVM virtual machines or LXC containers instead",
}


def schemes_of(technology: Technology) -> list[str]:
    """The URI schemes (drivers) of a technology, e.g. esx, gsx and vpx for VMware."""
    return [scheme for scheme, tech in _SCHEME_TECHNOLOGY.items() if tech == technology]


def technology_of(uri: str) -> Technology:
    """The technology a libvirt URI drives; raises HypervisorError for unknown schemes."""
    parts = urlsplit(uri)
    if not parts.scheme or "://" not in uri:
        raise HypervisorError(f"'{uri}' is not a libvirt URI (expected e.g. qemu:///system)")
    driver = parts.scheme.split("+", 1)[0]
    if driver in REMOVED_DRIVERS:
        raise HypervisorError(REMOVED_DRIVERS[driver])
    try:
        return _SCHEME_TECHNOLOGY[driver]
    except KeyError:
        known = ", ".join(sorted(_SCHEME_TECHNOLOGY))
        raise HypervisorError(f"unknown libvirt driver '{driver}' (known: {known})") from None


# --- connections -------------------------------------------------------------

_lock = threading.Lock()
_connections: dict[str, libvirt.virConnect] = {}
_event_loop_pid: int | None = None
_local: dict[str, str] = {}  # a host's URI → how this process reaches it instead (its own libvirtd's socket)


def reach_locally(uris: dict[str, str]) -> None:
    """Open these hosts through the given URIs instead (a host's own worker and listener: its local socket, which
    libvirt passes display descriptors over); everything else still names a host by its registered URI."""
    with _lock:
        _local.clear()
        _local.update(uris)
        _connections.clear()


def _silence_default_error_handler() -> None:
    # libvirt prints every error to stderr by default; we raise them instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def ensure_event_loop() -> None:
    """Run libvirt's default event loop in a daemon thread of this process, once.

    It must be registered before connections are opened for events, console
    streams and keepalive to work on them.
    """
    global _event_loop_pid
    with _lock:
        if _event_loop_pid == os.getpid():
            return
        _silence_default_error_handler()
        libvirt.virEventRegisterDefaultImpl()
        _event_loop_pid = os.getpid()
        _connections.clear()

    def run() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=run, name="libvirt-events", daemon=True).start()


def _no_prompt(_credentials: list, _opaque: object) -> int:
    """Nobody is there to type a password: a driver that asks for one (ESX, vCenter, Hyper-V, SSH) gets it from
    libvirt's own credentials file (auth.conf), or fails."""
    return -1


_CREDENTIALS = "give its credentials in libvirt's auth.conf ($LIBVIRT_AUTH_FILE, ~/.config/libvirt/auth.conf or " \
               "/etc/libvirt/auth.conf) for the user the panel runs as"


def _open(uri: str) -> libvirt.virConnect:
    reached = _local.get(uri, uri)
    try:
        conn = libvirt.openAuth(reached, [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE,
                                           libvirt.VIR_CRED_NOECHOPROMPT], _no_prompt, None], 0)
    except libvirt.libvirtError as exc:
        hint = f": {_CREDENTIALS}" if exc.get_error_code() == libvirt.VIR_ERR_AUTH_FAILED else ""
        raise HypervisorUnavailable(f"cannot connect to {reached}: {exc.get_error_message()}{hint}") from None
    if "+" in urlsplit(reached).scheme:
        with suppress(libvirt.libvirtError):
            conn.setKeepAlive(5, 3)

    def closed(_conn: libvirt.virConnect, _reason: int, _opaque: object) -> None:
        with _lock:
            if _connections.get(uri) is conn:
                del _connections[uri]

    with suppress(libvirt.libvirtError):  # drivers without close callbacks (test://) never drop
        conn.registerCloseCallback(closed, None)
    return conn


def connection(uri: str) -> libvirt.virConnect:
    """The cached connection to a host, reopened when it has dropped."""
    technology_of(uri)
    ensure_event_loop()
    with _lock:
        conn = _connections.get(uri)
    if conn is not None:
        with suppress(libvirt.libvirtError):
            if conn.isAlive():
                return conn
        forget(uri)
    conn = _open(uri)
    with _lock:
        _connections[uri] = conn
    return conn


def forget(uri: str) -> None:
    """Drop the cached connection to a host (it will be reopened on next use)."""
    with _lock:
        conn = _connections.pop(uri, None)
    if conn is not None:
        with suppress(libvirt.libvirtError):
            conn.close()


@contextmanager
def errors(uri: str) -> Iterator[None]:
    """Translate libvirt errors into our exceptions."""
    try:
        yield
    except libvirt.libvirtError as exc:
        code = exc.get_error_code()
        message = exc.get_error_message() or str(exc)
        if code == libvirt.VIR_ERR_NO_DOMAIN:
            raise DomainNotFound(message) from None
        if code in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_NO_CONNECT,
                    libvirt.VIR_ERR_INVALID_CONN):
            forget(uri)
            raise HypervisorUnavailable(f"{uri}: {message}") from None
        raise HypervisorError(message) from None


def domain(uri: str, domain_uuid: str) -> libvirt.virDomain:
    conn = connection(uri)
    with errors(uri):
        return conn.lookupByUUIDString(domain_uuid)


def cached(uri: str) -> libvirt.virConnect | None:
    """The connection this process holds to the host, if any (none is opened)."""
    with _lock:
        return _connections.get(uri)


def is_connected(uri: str) -> bool:
    """Whether this process holds a live connection to the host."""
    with _lock:
        conn = _connections.get(uri)
    try:
        return conn is not None and bool(conn.isAlive())
    except libvirt.libvirtError:
        return False
