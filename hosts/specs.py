"""Typed specs: what callers ask the driver for. The driver renders libvirt's XML from them.

Plain frozen dataclasses, free of libvirt and of XML: an instance (DomainSpec with its NICs,
user namespace and disks), a storage volume's backing, a network (NetworkSpec) and a NIC's
firewall (PortFilter).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hosts.choices import Accelerator

ID_RANGE = 65536  # uids and gids of a container's user namespace


@dataclass(frozen=True)
class Nic:
    """A network interface: the libvirt network it joins, its MAC and its network filter (if it has one)."""

    network: str
    mac: str
    filter: str = ""


@dataclass(frozen=True)
class IdMap:
    """A container's user namespace: its uids and gids 0..count-1 are the host's target..target+count-1."""

    target: int
    count: int = ID_RANGE


@dataclass(frozen=True)
class DomainSpec:
    """Everything the driver needs to describe one instance to libvirt."""

    name: str
    uuid: str
    vcpus: int
    memory_mib: int
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    boot_disk: str = ""
    disk_path: str = ""
    init: str = ""
    accelerator: Accelerator = Accelerator.AUTO
    title: str = ""
    cdrom_path: str = ""  # an ISO in the CD-ROM drive
    cdrom_drive: bool = False  # a CD-ROM drive even without an ISO (QEMU: to insert one while the guest runs)
    seed_path: str = ""  # a cloud-init NoCloud seed, as a second CD-ROM
    boot_cdrom: bool = False  # an install: boot the CD-ROM, then the disk
    nics: tuple[Nic, ...] = ()
    root_dir: str = ""  # a container's own root filesystem on the host
    idmap: IdMap | None = None  # where container root lands among the host's uids and gids
    init_env: tuple[tuple[str, str], ...] = ()  # a container's environment
    volumes: tuple[tuple[str, str], ...] = ()  # volumes attached: (path on the host, target such as vdc)
    arch: str = ""  # the guest's architecture (QEMU: any it has an emulator for; "" = x86_64)
    machine: str = ""  # its machine type ("" = the architecture's usual one)
    cpu_mode: str = ""  # hosts.choices.CpuMode ("" = the hypervisor's default, or the model TCG needs for the arch)
    cpu_model: str = ""  # the named model of a custom CPU


@dataclass(frozen=True)
class Backing:
    """The base under a copy-on-write volume: a cached image on the same host."""

    path: str
    format: str


@dataclass(frozen=True)
class DhcpHost:
    mac: str
    address: str
    name: str = ""


@dataclass(frozen=True)
class IPRange:
    """One family's part: the gateway (the host side's address), prefix, DHCP range and pinned hosts."""

    gateway: str
    prefix: int
    dhcp_start: str
    dhcp_end: str
    hosts: tuple[DhcpHost, ...] = ()
    family: str = "ipv4"


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    uuid: str
    kind: str  # networks.choices.NetworkKind values
    bridge: str  # libvirt's own bridge (nat, routed, isolated) or the host bridge (bridge, vlan)
    ranges: tuple[IPRange, ...] = ()
    vlan_id: int | None = None
    domain: str = ""
    dns_servers: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class FilterRule:
    """Accept traffic: direction "in" (to the guest) or "out" (from it), from or to remote (a CIDR, "" for
    anywhere), on a port range where the protocol has ports."""

    direction: str
    family: int
    protocol: str  # any, tcp, udp, icmp
    remote: str = ""
    port_min: int | None = None
    port_max: int | None = None


@dataclass(frozen=True)
class PortFilter:
    name: str
    uuid: str
    mac: str
    ipv4: str = ""
    ipv6: str = ""
    dhcp_server: str = ""  # the IPv4 address of the network's DHCP server (its gateway), if it has one
    rules: tuple[FilterRule, ...] = ()
