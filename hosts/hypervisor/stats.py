"""Resource counters of a host and all its domains, read in bulk for the metrics sampler.

One `getAllDomainStats` call gives every domain's CPU time, memory, block and interface counters; the node's CPU
times and memory come from two node calls and the storage pools' use from one call per active pool. What a
driver does not report in bulk (the test driver's counters, LXC which has no bulk call at all) is read from each
domain's info() instead: CPU time and memory only. Counters are cumulative and reset when a guest's process
restarts; turning them into rates is the caller's business.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import libvirt

from hosts.hypervisor import connections
from hosts.hypervisor.connections import PowerState

_GROUPS = ("STATE", "CPU_TOTAL", "BALLOON", "VCPU", "INTERFACE", "BLOCK")


@dataclass(frozen=True)
class DomainCounters:
    """One domain's cumulative counters at one moment (None: the driver does not report it)."""

    uuid: str
    state: PowerState
    vcpus: int
    cpu_time_ns: int | None
    memory_bytes: int | None  # what the guest has (the balloon's current size)
    memory_used_bytes: int | None  # what it uses: the guest's own figure, else its process's resident size
    disk_read_bytes: int | None = None
    disk_write_bytes: int | None = None
    disk_read_reqs: int | None = None
    disk_write_reqs: int | None = None
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None


@dataclass(frozen=True)
class NodeCounters:
    """The host's own CPU times (ns, all CPUs) and memory; None where its driver does not tell."""

    cpu_busy_ns: int | None
    cpu_total_ns: int | None
    memory_bytes: int | None
    memory_used_bytes: int | None
    pool_capacity_bytes: int
    pool_used_bytes: int


@dataclass(frozen=True)
class HostCounters:
    """Everything one sampling round reads of a host; `taken`: when (Unix time, s)."""

    taken: float
    node: NodeCounters
    domains: tuple[DomainCounters, ...]


def _flags() -> int:
    stats = 0
    for group in _GROUPS:
        stats |= getattr(libvirt, f"VIR_DOMAIN_STATS_{group}")
    return stats


def _summed(stats: dict, prefix: str, field: str) -> int | None:
    """The counter summed over the domain's disks or interfaces; None unless every one of them reports it (a busy
    domain's monitor-read counters are left out under NOWAIT: a partial sum would look like a reset)."""
    count = stats.get(f"{prefix}.count")
    if count is None:
        return None
    values = [stats.get(f"{prefix}.{i}.{field}") for i in range(count)]
    return None if None in values else sum(values)


def _from_bulk(dom: libvirt.virDomain, stats: dict) -> DomainCounters:
    current = stats.get("balloon.current")
    used = None
    if "balloon.available" in stats and "balloon.unused" in stats:  # the guest's balloon driver reports
        used = (stats["balloon.available"] - stats["balloon.unused"]) * 1024
    elif "balloon.rss" in stats:
        used = stats["balloon.rss"] * 1024
        if current is not None:
            used = min(used, current * 1024)
    return DomainCounters(
        uuid=dom.UUIDString(), state=connections.state_of(stats["state.state"]),
        vcpus=stats.get("vcpu.current", 0), cpu_time_ns=stats.get("cpu.time"),
        memory_bytes=current * 1024 if current is not None else None, memory_used_bytes=used,
        disk_read_bytes=_summed(stats, "block", "rd.bytes"), disk_write_bytes=_summed(stats, "block", "wr.bytes"),
        disk_read_reqs=_summed(stats, "block", "rd.reqs"), disk_write_reqs=_summed(stats, "block", "wr.reqs"),
        net_rx_bytes=_summed(stats, "net", "rx.bytes"), net_tx_bytes=_summed(stats, "net", "tx.bytes"),
    )


def _from_info(dom: libvirt.virDomain) -> DomainCounters | None:
    try:
        state_code, max_kib, memory_kib, vcpus, cpu_time = dom.info()
        domain_uuid = dom.UUIDString()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:  # else undefined meanwhile
            raise
        return None
    state = connections.state_of(state_code)
    running = state in (PowerState.RUNNING, PowerState.PAUSED)
    # (its current memory: what an LXC container's cgroup uses, a VM's balloon; out of its maximum)
    return DomainCounters(uuid=domain_uuid, state=state, vcpus=vcpus, cpu_time_ns=cpu_time if running else None,
                          memory_bytes=max_kib * 1024, memory_used_bytes=memory_kib * 1024 if running else None)


def _domains(conn: libvirt.virConnect) -> list[DomainCounters]:
    try:
        read = conn.getAllDomainStats(_flags(), getattr(libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT", 0))
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
        read = [(dom, {}) for dom in conn.listAllDomains(0)]
    found = []
    for dom, stats in read:
        if "state.state" in stats and ("cpu.time" in stats or stats["state.state"] != libvirt.VIR_DOMAIN_RUNNING):
            found.append(_from_bulk(dom, stats))
        else:  # not reported in bulk (this driver), or skipped as busy (NOWAIT)
            counters = _from_info(dom)
            if counters is not None:
                found.append(counters)
    return found


def _node(conn: libvirt.virConnect) -> NodeCounters:
    busy = total = memory = used = None
    try:
        cpu = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS)
        busy = cpu.get("kernel", 0) + cpu.get("user", 0)
        total = busy + cpu.get("idle", 0) + cpu.get("iowait", 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
    try:
        mem = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
        memory = mem["total"] * 1024
        used = memory - (mem.get("free", 0) + mem.get("buffers", 0) + mem.get("cached", 0)) * 1024
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
    capacity = allocation = 0
    try:
        pools = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
        pools = []
    for pool in pools:
        try:
            _state, pool_capacity, pool_allocation, _available = pool.info()
        except libvirt.libvirtError:  # stopped or removed since it was listed
            continue
        capacity += pool_capacity
        allocation += pool_allocation
    return NodeCounters(cpu_busy_ns=busy, cpu_total_ns=total, memory_bytes=memory, memory_used_bytes=used,
                        pool_capacity_bytes=capacity, pool_used_bytes=allocation)


def counters(uri: str) -> HostCounters:
    """A host's and all its domains' counters, read now."""
    conn = connections.connection(uri)
    with connections.errors(uri):
        taken = time.time()
        domains = _domains(conn)
        node = _node(conn)
    return HostCounters(taken=taken, node=node, domains=tuple(domains))
