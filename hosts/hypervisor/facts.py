"""What a probe reads of a host: technology, versions, capacity, storage pools."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

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


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def probe(uri: str) -> HostInfo:
    """Read a host's technology, versions, capacity and storage pools."""
    conn = connections.connection(uri)
    with connections.errors(uri):
        info = conn.getInfo()
        try:
            hv_version = _version(conn.getVersion())
        except libvirt.libvirtError:
            hv_version = ""
        pools = []
        for pool in conn.listAllStoragePools():
            _state, capacity, _alloc, available = pool.info()
            path = ET.fromstring(pool.XMLDesc()).findtext("target/path") or ""
            pools.append(PoolInfo(pool.name(), bool(pool.isActive()), capacity, available, path))
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
