"""Domains: defined from a typed spec, their lifecycle, their devices, and every domain's state at once."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import NamedTuple

from hosts import capabilities
from hosts.choices import Technology
from hosts.hypervisor import connections
from hosts.hypervisor.connections import (
    DomainNotFound,
    HypervisorError,
    PowerState,
    libvirt,
    technology_of,
)
from hosts.hypervisor.domain_xml import cdrom_xml, domain_xml, interface_xml, media_drive
from hosts.specs import DomainSpec, Nic


class DomainFacts(NamedTuple):
    """A domain as its host tells it (a tuple: a thousand of them are made in a few milliseconds)."""

    uuid: str
    name: str
    state: PowerState
    vcpus: int
    memory_mib: int


# --- domain lifecycle --------------------------------------------------------


def define(uri: str, spec: DomainSpec, *, technology: Technology, kvm_available: bool = False,
           start: bool = True) -> PowerState:
    """Define the spec's domain on a host of the technology and, unless start is false, start it, through the
    handle defineXML returns (no lookups). kvm_available: whether the host offers KVM for the guest's architecture (an
    accelerator on auto takes it then)."""
    xml = domain_xml(technology, spec, kvm_available=kvm_available)
    conn = connections.connection(uri)
    with connections.errors(uri):
        dom = conn.defineXML(xml)
        if start and not dom.isActive():  # a redelivered create finds it running
            dom.create()
        return connections.power_state(dom)


def state(uri: str, domain_uuid: str) -> PowerState:
    """The domain's current power state."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        return connections.power_state(dom)


def start(uri: str, domain_uuid: str) -> PowerState:
    """Start a stopped domain; already running counts as done."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        if not dom.isActive():
            dom.create()
    return state(uri, domain_uuid)


def shutdown(uri: str, domain_uuid: str) -> None:
    """Ask the guest to power off (ACPI; a container's init gets SIGTERM); returns at once."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        if dom.isActive():
            # LXC's default asks init through /run/initctl, which most images lack, and then does nothing.
            signal = capabilities.of(technology_of(uri)).signal_shutdown
            try:
                dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_SIGNAL if signal else 0)
            except libvirt.libvirtError as exc:
                # ("Init process ID is not yet known": the LXC controller has not told libvirtd its init, at times
                # late or never.) A graceful destroy gives the container's processes the same SIGTERM, and no KILL.
                if not signal or exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                    raise
                dom.destroyFlags(libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)


def power_off(uri: str, domain_uuid: str) -> PowerState:
    """Force the domain off; already off counts as done."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        if dom.isActive():
            try:
                dom.destroyFlags(libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
            except libvirt.libvirtError:
                dom.destroy()
    return state(uri, domain_uuid)


def reboot(uri: str, domain_uuid: str) -> PowerState:
    """Reset the domain (a hard reboot that works without guest cooperation)."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
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
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        if dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
            dom.suspend()
    return state(uri, domain_uuid)


def resume(uri: str, domain_uuid: str) -> PowerState:
    """Resume a paused domain."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
    return state(uri, domain_uuid)


def undefine(uri: str, domain_uuid: str) -> None:
    """Stop and remove the domain (and its snapshots' and checkpoints' records: their data lives in its disks); a
    missing domain counts as done."""
    try:
        dom = connections.domain(uri, domain_uuid)
    except DomainNotFound:
        return
    with connections.errors(uri):
        if dom.isActive():
            dom.destroy()
        snapshots = libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        metadata = snapshots | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        # The most a driver takes first: the test driver has no NVRAM nor checkpoints, some drivers take no flags.
        for flags in (libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | metadata,
                      metadata, snapshots):
            try:
                dom.undefineFlags(flags)
                return
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
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        if nic.mac not in _macs(dom):
            dom.attachDeviceFlags(ET.tostring(interface_xml(nic), encoding="unicode"), _device_flags(dom))


def _macs(dom: libvirt.virDomain) -> list[str]:
    return [m.get("address") for m in ET.fromstring(dom.XMLDesc()).findall("devices/interface/mac")]


def detach_interface(uri: str, domain_uuid: str, nic: Nic, *, wait_seconds: float = 20.0) -> None:
    """Unplug a NIC, live and from the definition; already gone counts as done.

    A running guest lets go of a device in its own time (ACPI hot-unplug): this waits until it
    has, and says so if it does not, so that the NIC's address is never freed while in use.
    """
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
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
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
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


NO_DRIVE = "the instance has no CD-ROM drive, and one cannot be plugged into a running guest: power it off first"


def change_media(uri: str, domain_uuid: str, path: str) -> None:
    """Insert an ISO into the CD-ROM drive (empty path: eject), live if the domain runs, and in its definition. A
    domain without the drive gets one in its definition while it is shut off; running, it cannot."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        defined = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        arch = defined.find("os/type").get("arch", "") if defined.find("os/type") is not None else ""
        target, _bus = media_drive(arch)
        has_drive = defined.find(f"./devices/disk[@device='cdrom']/target[@dev='{target}']") is not None
        if not has_drive and dom.isActive():
            raise HypervisorError(NO_DRIVE)
        if not has_drive:
            dom.attachDeviceFlags(cdrom_xml(path, arch), libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            return
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if dom.isActive():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        dom.updateDeviceFlags(cdrom_xml(path, arch), flags)


def _facts(dom: libvirt.virDomain) -> DomainFacts:
    state_code, max_kib, _kib, vcpus, _cpu_time = dom.info()
    return DomainFacts(uuid=dom.UUIDString(), name=dom.name(), state=connections.state_of(state_code), vcpus=vcpus,
                       memory_mib=max_kib // 1024)


def describe(uri: str, domain_uuid: str) -> DomainFacts:
    """One domain's name, state and size."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        return _facts(dom)


def all_domains(uri: str, sizes: Mapping[str, tuple[int, int]] | None = None) -> list[DomainFacts]:
    """Every domain on a host, with its name, state and size, in one call (getAllDomainStats), not one per domain.

    Sizes come from the same call where the driver reports them (vCPUs, the balloon's maximum); a driver that does
    not (the test driver) leaves them to `sizes` (uuid → (vCPUs, MiB): what is known already, so a resize there is
    not seen) or, for a domain new to the caller, to one info call. A driver without the call (LXC) is read one
    domain at a time.
    """
    conn = connections.connection(uri)
    sizes = sizes or {}
    flags = getattr(libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT", 0)  # skip stats a busy domain holds up
    found = []
    with connections.errors(uri):
        try:
            read = conn.getAllDomainStats(
                libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_BALLOON,
                flags)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise
            return _each_domain(conn)
        for dom, stats in read:
            domain_uuid = dom.UUIDString()
            if "state.state" not in stats:  # (skipped, busy: NOWAIT) asked on its own rather than guessed
                facts = _facts_unless_gone(dom)
                if facts is not None:
                    found.append(facts)
                continue
            if "vcpu.current" in stats and "balloon.maximum" in stats:  # what info() says too
                size = (stats["vcpu.current"], stats["balloon.maximum"] // 1024)
            elif domain_uuid in sizes:
                size = sizes[domain_uuid]
            else:
                facts = _facts_unless_gone(dom)
                if facts is None:
                    continue
                size = (facts.vcpus, facts.memory_mib)
            found.append(DomainFacts(domain_uuid, dom.name(), connections.state_of(stats["state.state"]), *size))
    return found


def _facts_unless_gone(dom: libvirt.virDomain) -> DomainFacts | None:
    try:
        return _facts(dom)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:  # else undefined meanwhile
            raise
        return None


def _each_domain(conn: libvirt.virConnect) -> list[DomainFacts]:
    """Every domain, read one at a time (inside the caller's error translation)."""
    return [facts for facts in map(_facts_unless_gone, conn.listAllDomains(0)) if facts is not None]
