"""What a probe reads of a host: technology, versions, capacity, storage pools, and what its guests can be.

Every call past opening the connection is optional: a driver that lacks one (VirtualBox and OpenVZ have no storage
pools; remote drivers no domain capabilities) still gives the rest, and the probe says what was missing.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from hosts import architectures, capabilities
from hosts.choices import Technology
from hosts.hypervisor import connections
from hosts.hypervisor.connections import (
    libvirt,
    technology_of,
)


@dataclass(frozen=True)
class PoolInfo:
    name: str
    active: bool
    capacity_bytes: int
    available_bytes: int
    path: str = ""  # where its volumes are (a directory pool's directory), "" if it has no such path


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
    arch: str = ""  # the host's own CPU architecture
    # What its guests can be, from its capabilities: [{"os_type", "arch", "domain_types", "machines"}]
    guests: tuple[dict, ...] = field(default_factory=tuple)
    # Its domain capabilities per "arch/domain type": max_vcpus, cpu_modes, cpu_models, disk_buses, graphics, video,
    # features
    domain_caps: dict[str, dict] = field(default_factory=dict)
    missing: tuple[str, ...] = ()  # what its driver could not tell: "storage pools: this function is not supported…"


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


T = TypeVar("T")


class _Optional:
    """Calls a driver may lack: each failure is noted (what, and libvirt's reason) and its default used instead;
    a lost connection still fails the probe."""

    def __init__(self, uri: str) -> None:
        self.uri, self.missing = uri, []

    def __call__(self, what: str, call: Callable[[], T], default: T) -> T:
        try:
            return call()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_NO_CONNECT,
                                        libvirt.VIR_ERR_INVALID_CONN):
                with connections.errors(self.uri):
                    raise
            self.missing.append(f"{what}: {exc.get_error_message()}")
            return default
        except (ET.ParseError, ValueError) as exc:
            self.missing.append(f"{what}: unreadable ({exc})")
            return default


def _pools(conn: libvirt.virConnect) -> list[PoolInfo]:
    pools = []
    for pool in conn.listAllStoragePools():
        _state, capacity, _alloc, available = pool.info()
        path = ET.fromstring(pool.XMLDesc()).findtext("target/path") or ""
        pools.append(PoolInfo(pool.name(), bool(pool.isActive()), capacity, available, path))
    return sorted(pools, key=lambda p: p.name)


def _guests(caps: ET.Element) -> list[dict]:
    guests = []
    for guest in caps.findall("guest"):
        arch = guest.find("arch")
        if arch is None:
            continue
        machines = {m.text for m in arch.iter("machine") if m.text}
        guests.append({"os_type": guest.findtext("os_type", ""), "arch": arch.get("name", ""),
                       "domain_types": sorted({d.get("type", "") for d in arch.findall("domain")}),
                       "machines": sorted(machines)})
    return guests


def _values(root: ET.Element, path: str) -> list[str]:
    return [v.text for v in root.findall(f"{path}/value") if v.text]


def parse_domain_caps(text: str) -> dict:
    """What a domain capabilities document offers guests: vCPUs, CPU modes and usable models, buses, devices."""
    root = ET.fromstring(text)
    vcpu = root.find("vcpu")
    modes = [m.get("name", "") for m in root.findall("cpu/mode") if m.get("supported") == "yes"]
    models = sorted({m.text for m in root.findall("cpu/mode[@name='custom']/model")
                     if m.text and m.get("usable") != "no"})
    features = sorted(f.tag for f in root.findall("features/*") if f.get("supported") == "yes")
    return {"max_vcpus": int(vcpu.get("max", "0")) if vcpu is not None else 0, "cpu_modes": modes,
            "cpu_models": models, "disk_buses": _values(root, "devices/disk/enum[@name='bus']"),
            "graphics": _values(root, "devices/graphics/enum[@name='type']"),
            "video": _values(root, "devices/video/enum[@name='modelType']"), "features": features}


def _domain_caps(conn: libvirt.virConnect, guests: list[dict], optional: _Optional) -> dict[str, dict]:
    """Per architecture CloudPanel describes and domain type, read for the machine its guests get."""
    found = {}
    for guest in guests:
        arch = guest["arch"]
        if guest["os_type"] != "hvm" or arch not in architectures.ARCHES:
            continue
        machine = architectures.of(arch).machine if architectures.of(arch).machine in guest["machines"] else None
        for virt_type in guest["domain_types"]:
            caps = optional(f"domain capabilities of {arch} ({virt_type})", lambda a=arch, m=machine, t=virt_type: (
                parse_domain_caps(conn.getDomainCapabilities(None, a, m, t))), None)
            if caps is not None:
                found[f"{arch}/{virt_type}"] = caps
    return found


def probe(uri: str) -> HostInfo:
    """Read a host's technology, versions, capacity, storage pools and guest capabilities."""
    conn = connections.connection(uri)
    technology = technology_of(uri)
    optional = _Optional(uri)
    with connections.errors(uri):
        info = optional("capacity (node info)", conn.getInfo, [None, 0, 0])
        hv_version = optional("hypervisor version", lambda: _version(conn.getVersion()), "")
        pools = optional("storage pools", lambda: _pools(conn), []) if capabilities.of(technology).storage_pools \
            else []
        caps = optional("capabilities", lambda: ET.fromstring(conn.getCapabilities()), ET.Element("capabilities"))
        guests = _guests(caps)
        domain_caps = _domain_caps(conn, guests, optional) if capabilities.of(technology).architectures else {}
        return HostInfo(
            technology=technology,
            hostname=optional("host name", conn.getHostname, ""),
            hypervisor_type=optional("hypervisor type", conn.getType, ""),
            hypervisor_version=hv_version,
            libvirt_version=optional("libvirt version", lambda: _version(conn.getLibVersion()), ""),
            cpus=int(info[2]),
            memory_mib=int(info[1]),
            kvm_available=any(d.get("type") == "kvm" for d in caps.iter("domain")),
            pools=tuple(pools),
            arch=caps.findtext("host/cpu/arch", "")[:20],
            guests=tuple(guests),
            domain_caps=domain_caps,
            missing=tuple(optional.missing),
        )
