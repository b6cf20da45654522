"""One sampling round of a host: its counters, read in bulk, turned into rates against the previous round's and
stored as raw samples of the host and of each panel instance running there.

A counter that went down (the guest's process restarted: a reboot, a migration) is read as restarted from zero,
as Prometheus' rate() does, so no rate is ever negative. A round too long after the previous one (the worker
was down) gives no rates, only the counters for the next round.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction

from cloudpanel.events import instance_group, publish_many
from hosts.hypervisor import DomainCounters, HostCounters, PowerState
from instances.models import Instance
from metrics.choices import Resolution
from metrics.models import Cursor, HostSample, InstanceSample

# cumulative counters kept per domain, in this order, and the sample field each becomes a rate of
RATES = (("disk_read_bytes", "disk_read"), ("disk_write_bytes", "disk_write"), ("disk_read_reqs", "disk_read_iops"),
         ("disk_write_reqs", "disk_write_iops"), ("net_rx_bytes", "net_rx"), ("net_tx_bytes", "net_tx"))
STALE_ROUNDS = 6  # a previous round older than this many intervals is not a base for rates


@dataclass(frozen=True)
class Round:
    """What one round stored: its time and how many rows."""

    time: datetime
    instances: int
    host: bool


def _delta(now: int | None, before: int | None) -> int | None:
    if now is None or before is None:
        return None
    return now if now < before else now - before  # went down: restarted from zero


def _instance_row(counters: DomainCounters, before: list | None, seconds: float) -> dict | None:
    """The sample fields of a running domain, or None without a base for its rates."""
    if before is None:
        return None
    cpu = _delta(counters.cpu_time_ns, before[0])
    row = {"cpu": None if cpu is None or not counters.vcpus
           else min(100.0, cpu / (seconds * 1e9 * counters.vcpus) * 100)}
    for (counter, field), previous in zip(RATES, before[1:], strict=True):
        delta = _delta(getattr(counters, counter), previous)
        row[field] = None if delta is None else delta / seconds
    row["memory_used"], row["memory_total"] = counters.memory_used_bytes, counters.memory_bytes
    return row


def _kept(counters: DomainCounters) -> list:
    return [counters.cpu_time_ns] + [getattr(counters, counter) for counter, _field in RATES]


def record(*, host_id: int, read: HostCounters) -> Round:
    """Store a round the host's worker read: raw samples of the host and its panel instances, and the counters
    for the next round. Live charts hear of the new points once this commits."""
    time = datetime.fromtimestamp(read.taken, UTC)
    running = [d for d in read.domains if d.state in (PowerState.RUNNING, PowerState.PAUSED)]
    with transaction.atomic():
        cursor = Cursor.objects.select_for_update().filter(host_id=host_id).first()
        seconds = read.taken - cursor.taken if cursor is not None else 0.0
        fresh = 0 < seconds <= STALE_ROUNDS * settings.CLOUDPANEL_METRICS_SECONDS
        before = cursor.counters if fresh else {}
        # (an instance's domain on another host, the target of its live migration, is not it yet)
        owners = {str(uuid): (pk, tenant_id) for uuid, pk, tenant_id in Instance.objects.filter(
            host_id=host_id, uuid__in=[d.uuid for d in running]).values_list("uuid", "pk", "tenant_id")}
        samples, points, guest_cpu = [], {}, None
        for domain in running:
            row = _instance_row(domain, before.get("domains", {}).get(domain.uuid), seconds)
            if row is None:
                continue
            if row["cpu"] is not None:
                guest_cpu = (guest_cpu or 0.0) + row["cpu"] / 100 * domain.vcpus
            if domain.uuid in owners:
                instance_id, tenant_id = owners[domain.uuid]
                samples.append(InstanceSample(instance_id=instance_id, resolution=Resolution.RAW, time=time,
                                              tenant_id=tenant_id, **row))
                points[instance_id] = row
        InstanceSample.objects.bulk_create(samples, ignore_conflicts=True)
        host_row = _host_row(read, before.get("node"), running, guest_cpu) if fresh else None
        if host_row is not None:
            HostSample.objects.bulk_create([HostSample(host_id=host_id, resolution=Resolution.RAW, time=time,
                                                       **host_row)], ignore_conflicts=True)
        kept = {"node": [read.node.cpu_busy_ns, read.node.cpu_total_ns],
                "domains": {d.uuid: _kept(d) for d in running}}
        Cursor.objects.update_or_create(host_id=host_id, defaults={"taken": read.taken, "counters": kept})
        transaction.on_commit(lambda: _publish(host_id, time, host_row, points))
    return Round(time=time, instances=len(samples), host=host_row is not None)


def _host_row(read: HostCounters, before: list | None, running: list[DomainCounters],
              guest_cpu: float | None) -> dict:
    node = read.node
    busy = _delta(node.cpu_busy_ns, before[0] if before else None)
    total = _delta(node.cpu_total_ns, before[1] if before else None)
    return {
        "cpu": min(100.0, busy / total * 100) if busy is not None and total else None,
        "memory_used": node.memory_used_bytes, "memory_total": node.memory_bytes,
        "running": len(running), "vcpus": sum(d.vcpus for d in running), "guest_cpu": guest_cpu,
        "pool_used": node.pool_used_bytes if node.pool_capacity_bytes else None,
        "pool_capacity": node.pool_capacity_bytes or None,
    }


def _publish(host_id: int, time: datetime, host_row: dict | None, points: dict[int, dict]) -> None:
    """New points for open charts: the host's to admin pages, each instance's to its own page."""
    at = time.timestamp() * 1000
    messages = [([instance_group(instance_id)], {"type": "metrics", "of": "instance", "id": instance_id,
                                                 "point": {"t": at, **row}}) for instance_id, row in points.items()]
    if host_row is not None:
        messages.append((["admin"], {"type": "metrics", "of": "host", "id": host_id, "point": {"t": at, **host_row}}))
    publish_many(messages)
