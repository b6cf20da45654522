"""The driver layer: the only module that imports libvirt.

Plain functions over a host URI and a domain UUID. They return frozen dataclasses
and enums, never libvirt objects, and raise HypervisorError and its subclasses.
Domain XML is built from a typed spec by one pure builder per technology.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import logging
import os
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from hosts.domain_xml import (
    Accelerator,
    Backing,
    DomainSpec,
    IdMap,
    Nic,
    Technology,
    UnsafeDefinition,
    cdrom_xml,
    domain_xml,
    has_cdrom,
    interface_xml,
    raw_volume_xml,
    uses_disk_volume,
    volume_xml,
)
from hosts.network_xml import DhcpHost, dhcp_host_xml

log = logging.getLogger(__name__)


class _OnFirstUse:
    """Stands in for libvirt until first used, then imports it and takes its place here.

    The web process loads this module but calls libvirt only for consoles: one that never opens
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


def _power_state(dom: libvirt.virDomain) -> PowerState:
    return _state_map().get(dom.state()[0], PowerState.STOPPED)

_SCHEME_TECHNOLOGY = {
    "qemu": Technology.QEMU,
    "lxc": Technology.LXC,
    "xen": Technology.XEN,
    "libxl": Technology.XEN,
    "openvz": Technology.OPENVZ,
    "vbox": Technology.VBOX,
    "test": Technology.TEST,
}


def technology_of(uri: str) -> Technology:
    """The technology a libvirt URI drives; raises HypervisorError for unknown schemes."""
    parts = urlsplit(uri)
    if not parts.scheme or "://" not in uri:
        raise HypervisorError(f"'{uri}' is not a libvirt URI (expected e.g. qemu:///system)")
    driver = parts.scheme.split("+", 1)[0]
    try:
        return _SCHEME_TECHNOLOGY[driver]
    except KeyError:
        known = ", ".join(sorted(_SCHEME_TECHNOLOGY))
        raise HypervisorError(f"unknown libvirt driver '{driver}' (known: {known})") from None


# --- connections -------------------------------------------------------------

_lock = threading.Lock()
_connections: dict[str, libvirt.virConnect] = {}
_event_loop_pid: int | None = None


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


def _open(uri: str) -> libvirt.virConnect:
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise HypervisorUnavailable(f"cannot connect to {uri}: {exc.get_error_message()}") from None
    if "+" in urlsplit(uri).scheme:
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
def _errors(uri: str) -> Iterator[None]:
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


def _domain(uri: str, domain_uuid: str) -> libvirt.virDomain:
    conn = connection(uri)
    with _errors(uri):
        return conn.lookupByUUIDString(domain_uuid)


# --- host facts --------------------------------------------------------------


@dataclass(frozen=True)
class PoolInfo:
    name: str
    active: bool
    capacity_bytes: int
    available_bytes: int


@dataclass(frozen=True)
class HostInfo:
    technology: Technology
    hostname: str
    hypervisor_type: str
    hypervisor_version: str
    libvirt_version: str
    cpus: int
    memory_mib: int
    kvm_available: bool
    pools: tuple[PoolInfo, ...] = field(default_factory=tuple)


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def probe(uri: str) -> HostInfo:
    """Read a host's technology, versions, capacity and storage pools."""
    conn = connection(uri)
    with _errors(uri):
        info = conn.getInfo()
        try:
            hv_version = _version(conn.getVersion())
        except libvirt.libvirtError:
            hv_version = ""
        pools = []
        for pool in conn.listAllStoragePools():
            _state, capacity, _alloc, available = pool.info()
            pools.append(PoolInfo(pool.name(), bool(pool.isActive()), capacity, available))
        caps = ET.fromstring(conn.getCapabilities())
        kvm = any(d.get("type") == "kvm" for d in caps.iter("domain"))
        return HostInfo(
            technology=technology_of(uri),
            hostname=conn.getHostname(),
            hypervisor_type=conn.getType(),
            hypervisor_version=hv_version,
            libvirt_version=_version(conn.getLibVersion()),
            cpus=int(info[2]),
            memory_mib=int(info[1]),
            kvm_available=kvm,
            pools=tuple(sorted(pools, key=lambda p: p.name)),
        )


__all__ = ["Accelerator", "Backing", "DomainSpec", "IdMap", "Nic", "Technology", "UnsafeDefinition", "domain_xml",
           "has_cdrom", "uses_disk_volume"]


# --- storage -----------------------------------------------------------------


def _pool(conn: libvirt.virConnect, uri: str, pool: str) -> libvirt.virStoragePool:
    try:
        return conn.storagePoolLookupByName(pool)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise HypervisorError(f"storage pool '{pool}' does not exist on {uri}") from None
        raise


def _volume(storage: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    try:
        return storage.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise
        return None


def create_volume(uri: str, pool: str, name: str, size_gib: int, *, backing: Backing | None = None) -> str:
    """Create (or find) a qcow2 volume in a pool, over a backing file if given; returns its path on the host."""
    conn = connection(uri)
    with _errors(uri):
        storage = _pool(conn, uri, pool)
        existing = _volume(storage, name)
        if existing is not None:
            return existing.path()
        return storage.createXML(volume_xml(name, size_gib, backing=backing), 0).path()


def volume_path(uri: str, pool: str, name: str) -> str | None:
    """A volume's path on the host, or None if the pool has no such volume."""
    conn = connection(uri)
    with _errors(uri):
        volume = _volume(_pool(conn, uri, pool), name)
        return volume.path() if volume is not None else None


def upload_volume(uri: str, pool: str, name: str, *, size: int, read: Callable[[int], bytes]) -> str:
    """Fill a new volume of exactly size bytes through libvirt's upload stream; returns its path.

    read(n) supplies the bytes (b"" at the end). The stream goes through the libvirt
    connection, so the host may be remote: nothing assumes its disk is ours. A half-written
    volume of the same name (an earlier attempt) is replaced; on failure nothing is left.
    """
    conn = connection(uri)
    with _errors(uri):
        storage = _pool(conn, uri, pool)
        stale = _volume(storage, name)
        if stale is not None:
            stale.delete(0)
        volume = storage.createXML(raw_volume_xml(name, size), 0)
        if not stores_data(uri):  # libvirt's test driver keeps no volume data: the bytes are read and dropped
            while read(1 << 20):
                pass
            return volume.path()
        stream = conn.newStream(0)
        try:
            volume.upload(stream, 0, size, 0)
            stream.sendAll(lambda _stream, nbytes, _opaque: read(nbytes), None)
            stream.finish()
        except BaseException:
            with suppress(libvirt.libvirtError):
                stream.abort()
            with suppress(libvirt.libvirtError):
                volume.delete(0)
            raise
        return volume.path()


def stores_data(uri: str) -> bool:
    """Whether the host's volumes hold real bytes (libvirt's test driver only pretends)."""
    return technology_of(uri) != Technology.TEST


def volume_sha256(uri: str, pool: str, name: str) -> tuple[str, int]:
    """Read a volume back through libvirt's download stream: its sha256 and size."""
    conn = connection(uri)
    with _errors(uri):
        volume = _volume(_pool(conn, uri, pool), name)
        if volume is None:
            raise HypervisorError(f"volume '{name}' does not exist in pool '{pool}' on {uri}")
        digest, counted = hashlib.sha256(), [0]

        def take(_stream: libvirt.virStream, data: bytes, _opaque: object) -> int:
            digest.update(data)
            counted[0] += len(data)
            return len(data)

        stream = conn.newStream(0)
        volume.download(stream, 0, 0, 0)
        stream.recvAll(take, None)
        stream.finish()
        return digest.hexdigest(), counted[0]


@contextmanager
def reading_volume(uri: str, pool: str, name: str) -> Iterator[Callable[[int], bytes]]:
    """A volume's bytes through libvirt's download stream, as read(n) (b"" at the end)."""
    conn = connection(uri)
    with _errors(uri):
        volume = _volume(_pool(conn, uri, pool), name)
        if volume is None:
            raise HypervisorError(f"volume '{name}' does not exist in pool '{pool}' on {uri}")
        stream = conn.newStream(0)
        volume.download(stream, 0, 0, 0)
        pending = bytearray()

        def read(size: int) -> bytes:
            with _errors(uri):
                while len(pending) < size:
                    block = stream.recv(max(size - len(pending), 1 << 16))
                    if not block:
                        break
                    pending.extend(block)
            data = bytes(pending[:size])
            del pending[:size]
            return data

        try:
            yield read
            while read(1 << 16):  # the rest (an archive's padding): the stream ends only once read to its end
                pass
            stream.finish()
        except BaseException:
            with suppress(libvirt.libvirtError):
                stream.abort()
            raise


def delete_volume(uri: str, pool: str, name: str) -> None:
    """Delete a volume; a missing pool or volume counts as done."""
    conn = connection(uri)
    with _errors(uri):
        try:
            conn.storagePoolLookupByName(pool).storageVolLookupByName(name).delete(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_ERR_NO_STORAGE_VOL):
                raise


# --- domain lifecycle --------------------------------------------------------


def define_and_start(uri: str, xml: str) -> PowerState:
    """Define a domain and start it through the handle defineXML returns (no lookups)."""
    conn = connection(uri)
    with _errors(uri):
        dom = conn.defineXML(xml)
        if not dom.isActive():  # a redelivered create finds it running
            dom.create()
        return _power_state(dom)


def state(uri: str, domain_uuid: str) -> PowerState:
    """The domain's current power state."""
    dom = _domain(uri, domain_uuid)
    with _errors(uri):
        return _power_state(dom)


def start(uri: str, domain_uuid: str) -> PowerState:
    """Start a stopped domain; already running counts as done."""
    dom = _domain(uri, domain_uuid)
    with _errors(uri):
        if not dom.isActive():
            dom.create()
    return state(uri, domain_uuid)


def shutdown(uri: str, domain_uuid: str) -> None:
    """Ask the guest to power off (ACPI; a container's init gets SIGTERM); returns at once."""
    dom = _domain(uri, domain_uuid)
    with _errors(uri):
        if dom.isActive():
            # LXC's default asks init through /run/initctl, which most images lack, and then does nothing.
            dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_SIGNAL if technology_of(uri) == Technology.LXC else 0)


def power_off(uri: str, domain_uuid: str) -> PowerState:
    """Force the domain off; already off counts as done."""
    dom = _domain(uri, domain_uuid)
    with _errors(uri):
        if dom.isActive():
            try:
                dom.destroyFlags(libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
            except libvirt.libvirtError:
                dom.destroy()
    return state(uri, domain_uuid)


def reboot(uri: str, domain_uuid: str) -> PowerState:
    """Reset the domain (a hard reboot that works without guest cooperation)."""
    dom = _domain(uri, domain_uuid)
    with _errors(uri):
        if not dom.isActive():
            raise HypervisorError("the instance is not running")
        try:
            dom.reset(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise
            dom.reboot(0)
    return state(uri, domain_uuid)


def suspend(uri: str, domain_uuid: str) -> PowerState:
    """Pause the domain's vCPUs."""
    dom = _domain(uri, domain_uuid)
    with _errors(uri):
        if dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
            dom.suspend()
    return state(uri, domain_uuid)


def resume(uri: str, domain_uuid: str) -> PowerState:
    """Resume a paused domain."""
    dom = _domain(uri, domain_uuid)
    with _errors(uri):
        if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
    return state(uri, domain_uuid)


def undefine(uri: str, domain_uuid: str) -> None:
    """Stop and remove the domain; a missing domain counts as done."""
    try:
        dom = _domain(uri, domain_uuid)
    except DomainNotFound:
        return
    with _errors(uri):
        if dom.isActive():
            dom.destroy()
        try:
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
                raise
            dom.undefine()


def _device_flags(dom: libvirt.virDomain) -> int:
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if dom.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    return flags


def attach_interface(uri: str, domain_uuid: str, nic: Nic) -> None:
    """Plug a NIC in, live if the domain runs, and in its definition; already there counts as done."""
    dom = _domain(uri, domain_uuid)
    with _errors(uri):
        if nic.mac not in _macs(dom):
            dom.attachDeviceFlags(ET.tostring(interface_xml(nic), encoding="unicode"), _device_flags(dom))


def _macs(dom: libvirt.virDomain) -> list[str]:
    return [m.get("address") for m in ET.fromstring(dom.XMLDesc()).findall("devices/interface/mac")]


def detach_interface(uri: str, domain_uuid: str, nic: Nic, *, wait_seconds: float = 20.0) -> None:
    """Unplug a NIC, live and from the definition; already gone counts as done.

    A running guest lets go of a device in its own time (ACPI hot-unplug): this waits until it
    has, and says so if it does not, so that the NIC's address is never freed while in use.
    """
    dom = _domain(uri, domain_uuid)
    with _errors(uri):
        if nic.mac not in _macs(dom):
            return
        dom.detachDeviceFlags(ET.tostring(interface_xml(nic), encoding="unicode"), _device_flags(dom))
        deadline = time.monotonic() + wait_seconds
        while nic.mac in _macs(dom):
            if time.monotonic() > deadline:
                raise HypervisorError(f"the guest did not release the NIC {nic.mac} within {wait_seconds:.0f} s")
            time.sleep(0.2)


def set_interface_filter(uri: str, domain_uuid: str, mac: str, filter_name: str) -> None:
    """Give the domain's NIC with this MAC the network filter (empty: none), live and in its definition.

    The NIC's own description is changed in place, so libvirt sees the same device with a new filter.
    """
    dom = _domain(uri, domain_uuid)
    with _errors(uri):
        scopes = [(libvirt.VIR_DOMAIN_XML_INACTIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG)]
        if dom.isActive():
            scopes.append((0, libvirt.VIR_DOMAIN_AFFECT_LIVE))
        for xml_flags, affect in scopes:
            interface = next((i for i in ET.fromstring(dom.XMLDesc(xml_flags)).findall("devices/interface")
                              if i.find("mac") is not None and i.find("mac").get("address") == mac), None)
            if interface is None:
                raise HypervisorError(f"the domain has no NIC {mac}")
            current = interface.find("filterref")
            if (current.get("filter") if current is not None else "") == filter_name:
                continue
            if current is not None:
                interface.remove(current)
            if filter_name:
                ET.SubElement(interface, "filterref", filter=filter_name)
            dom.updateDeviceFlags(ET.tostring(interface, encoding="unicode"), affect)


def change_media(uri: str, domain_uuid: str, path: str) -> None:
    """Insert an ISO into the CD-ROM drive (empty path: eject), live if the domain runs, and in its definition."""
    dom = _domain(uri, domain_uuid)
    with _errors(uri):
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if dom.isActive():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        dom.updateDeviceFlags(cdrom_xml(path), flags)


# --- networks ----------------------------------------------------------------


def ensure_network(uri: str, name: str, xml: str, *, host_bridge: str = "") -> bool:
    """Define the network if the host lacks it, and start it; defined and running already counts as done.
    True if it was defined now (from xml), False if the host had it.

    host_bridge: the existing bridge a bridged or VLAN network joins; libvirt would start such a
    network without it and fail only when a guest plugs in, so its absence is reported here.
    """
    conn = connection(uri)
    with _errors(uri):
        if host_bridge:
            try:
                conn.interfaceLookupByName(host_bridge)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_INTERFACE:
                    raise HypervisorError(f"there is no bridge '{host_bridge}' on this host") from None
                if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:  # no interface driver: cannot tell
                    raise
        defined = False
        try:
            network = conn.networkLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                raise
            network, defined = conn.networkDefineXML(xml), True
        if not network.isActive():
            try:
                network.create()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID or not network.isActive():
                    raise  # anything but another client having started it meanwhile
        return defined


def dhcp_hosts(uri: str, name: str) -> set[tuple[str, str]]:
    """The (MAC, address) pairs the network's IPv4 DHCP server pins now."""
    conn = connection(uri)
    with _errors(uri):
        root = ET.fromstring(conn.networkLookupByName(name).XMLDesc())
        return {(h.get("mac"), h.get("ip")) for h in root.findall("ip/dhcp/host") if h.get("mac")}


def remove_network(uri: str, name: str) -> None:
    """Stop and undefine the network; a host without it counts as done."""
    conn = connection(uri)
    with _errors(uri):
        try:
            network = conn.networkLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return
            raise
        if network.isActive():
            network.destroy()
        network.undefine()


def set_dhcp_host(uri: str, name: str, host: DhcpHost, *, present: bool = True) -> None:
    """Pin a MAC to its address in the network's DHCP server (or unpin it), live and in its definition.

    Idempotent: an entry already there (or already gone) counts as done.
    """
    conn = connection(uri)
    with _errors(uri):
        network = conn.networkLookupByName(name)
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        if network.isActive():
            flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
        existing = [e for e in ET.fromstring(network.XMLDesc()).findall("ip/dhcp/host") if e.get("mac") == host.mac]
        if present and any(e.get("ip") == host.address for e in existing):
            return
        if not present and not existing:
            return
        if not present:
            command = libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE
        elif existing:  # the MAC is pinned to another address: move it
            command = libvirt.VIR_NETWORK_UPDATE_COMMAND_MODIFY
        else:
            command = libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST
        network.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, dhcp_host_xml(host), flags)


# --- network filters (security groups) ----------------------------------------


def define_filter(uri: str, xml: str) -> None:
    """Define (or redefine, by its UUID) a network filter; guests using it get the new rules at once."""
    conn = connection(uri)
    with _errors(uri):
        try:
            conn.nwfilterDefineXML(xml)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                raise HypervisorError("this host cannot enforce firewall rules: libvirt's network filter "
                                      "driver is not available on it") from None
            raise


def remove_filter(uri: str, name: str) -> None:
    """Undefine a network filter no NIC uses any more; a host without it counts as done."""
    conn = connection(uri)
    with _errors(uri):
        try:
            conn.nwfilterLookupByName(name).undefine()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_NO_NWFILTER, libvirt.VIR_ERR_NO_SUPPORT):
                raise


def all_states(uri: str) -> dict[str, PowerState]:
    """Every domain's state on a host, in one listAllDomains call."""
    conn = connection(uri)
    with _errors(uri):
        return {
            dom.UUIDString(): _power_state(dom)
            for dom in conn.listAllDomains(0)
        }


# --- events ------------------------------------------------------------------


@dataclass(frozen=True)
class LifecycleEvent:
    uri: str
    domain_uuid: str
    state: PowerState | None
    event: str
    observed_at: datetime


@functools.cache
def _event_names() -> dict[int, str]:
    return {
        libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
        libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
        libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
        libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
        libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
        libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
        libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
        libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
    }


def watch_lifecycle(uri: str, callback: Callable[[LifecycleEvent], None]) -> int:
    """Call callback (on the libvirt event thread) for every lifecycle event on a host.

    Returns a handle for unwatch(). The state is read when the event arrives.
    """
    conn = connection(uri)

    def on_event(_conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, _detail: int,
                 _opaque: object) -> None:
        # Read the time before the state: the observation is no newer than this.
        observed_at = datetime.now(UTC)
        try:
            current: PowerState | None = _power_state(dom)
        except libvirt.libvirtError:
            current = None  # undefined in the meantime
        try:
            callback(LifecycleEvent(uri, dom.UUIDString(), current, _event_names().get(event, str(event)),
                                    observed_at))
        except Exception:
            log.exception("lifecycle callback failed for %s", uri)

    with _errors(uri):
        return conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, None)


def unwatch(uri: str, handle: int) -> None:
    """Stop a watch_lifecycle() subscription; a dropped connection counts as done."""
    with _lock:
        conn = _connections.get(uri)
    if conn is not None:
        with suppress(libvirt.libvirtError):
            conn.domainEventDeregisterAny(handle)


def is_connected(uri: str) -> bool:
    """Whether this process holds a live connection to the host."""
    with _lock:
        conn = _connections.get(uri)
    try:
        return conn is not None and bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


# --- console -----------------------------------------------------------------


class Console:
    """A domain's serial console stream; output arrives on the libvirt event thread."""

    def __init__(self, uri: str, domain_uuid: str, on_output: Callable[[bytes], None],
                 on_close: Callable[[str], None]) -> None:
        self._on_output = on_output
        self._on_close = on_close
        self._closed = False
        dom = _domain(uri, domain_uuid)
        conn = connection(uri)
        with _errors(uri):
            if not dom.isActive():
                raise HypervisorError("the instance is not running")
            self._stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            if technology_of(uri) == Technology.LXC:
                dom.openConsole(None, self._stream, 0)  # the LXC driver takes no flags at all
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
