"""Metering: what each billable resource used, hour by hour, written to the usage ledger idempotently.

Each meter source turns a resource's history into spans (a size used from one second to
another): an instance's vCPUs, RAM and licence while it runs (or is paused: it holds them),
and its disk from its first start to its deletion, all from the instance state history; a
snapshot from when it was taken until it is deleted; a volume at each size it had, from when it was made on its
host until it is deleted; a backup at what it stores from when it was taken until it is deleted; a public address
while a NIC holds it.
A new billable item plugs in as another source.

Spans are cut into hours, in whole seconds. For each resource, meter and hour the ledger
gets a new revision only when the count differs from the sum of what it already holds (and
the revision is added to its month's UsageMonth in the same transaction), so
metering again never counts twice, a late event lands in its own hour (an invoiced month's
correction is counted by the next invoice), and two concurrent runs cannot both write a
revision (the second one's insert fails on the unique key and it counts again).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Q, Sum
from django.utils import timezone

from billing.choices import Meter
from billing.invoicing import lock_ledger, plan_versions, rate_at
from billing.models import AddressHold, RateVersion, TenantBilling, UsageMonth, UsageRecord
from instances.choices import Status
from instances.models import Backup, Instance, Snapshot, Volume

log = logging.getLogger(__name__)
HOUR = timedelta(hours=1)
BILLED_WHILE_RUNNING = {Status.RUNNING, Status.PAUSED}


@dataclass(frozen=True)
class Span:
    """A resource used `size` units per second (vCPUs, MiB of RAM, GiB of disk, 1) from start to end."""

    meter: str
    size: int
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Resource:
    tenant_id: int
    resource_type: str
    resource_id: int
    name: str
    spans: tuple[Span, ...]


def whole_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def hours(start: datetime, end: datetime) -> Iterator[tuple[datetime, int]]:
    """(hour, seconds in it) from start to end."""
    moment = whole_second(start)
    end = whole_second(end)
    while moment < end:
        hour = moment.replace(minute=0, second=0)
        upto = min(hour + HOUR, end)
        yield hour, int((upto - moment).total_seconds())
        moment = upto


def _sized(instance: Instance, start: datetime, stop: datetime) -> Iterator[tuple[datetime, datetime, int, int, int]]:
    """(from, to, vCPUs, MiB of RAM, GiB of disk) for each part of start..stop at one size: from its size history
    (written by resizes; its first row covers everything before it), else its size now."""
    sizes = list(instance.sizes.all())
    if not sizes:
        yield start, stop, instance.vcpus, instance.memory_mib, instance.disk_gib
        return
    for index, size in enumerate(sizes):
        begin = max(start, size.at) if index else start
        end = min(stop, sizes[index + 1].at) if index + 1 < len(sizes) else stop
        if begin < end:
            yield begin, end, size.vcpus, size.memory_mib, size.disk_gib


def _instance(instance: Instance, until: datetime) -> Resource:
    """Running spans from the state history (vCPUs, RAM, licence), and the disk from its first start to its
    deletion, each part at the size it had."""
    running: list[tuple[datetime, datetime]] = []
    since = None
    first_start = None
    for to_status, at in instance.state_changes.order_by("at", "id").values_list("to_status", "at"):
        if to_status in BILLED_WHILE_RUNNING:
            first_start = first_start or at
            since = since or at
        elif since is not None:
            running.append((since, at))
            since = None
    end = min(until, instance.deleted_at) if instance.deleted_at else until
    if since is not None:
        running.append((since, end))
    spans = []
    for start, stop in running:
        for begin, finish, vcpus, memory_mib, _disk in _sized(instance, start, stop):
            spans += [Span(Meter.VCPU, vcpus, begin, finish), Span(Meter.RAM, memory_mib, begin, finish)]
        if instance.licensed:
            spans.append(Span(Meter.LICENCE, 1, start, stop))
    if first_start is not None:
        spans += [Span(Meter.DISK, disk_gib, begin, finish)
                  for begin, finish, _vcpus, _memory, disk_gib in _sized(instance, first_start, end) if disk_gib]
    return Resource(instance.tenant_id, "instance", instance.pk, instance.name, tuple(spans))


def instance_resources(tenant_ids: set[int], since: datetime, until: datetime) -> Iterator[Resource]:
    """Every instance of the tenants that existed in the window."""
    instances = (Instance.objects.filter(tenant_id__in=tenant_ids, created_at__lt=until)
                 .filter(Q(deleted_at__isnull=True) | Q(deleted_at__gt=since)))
    for instance in instances.prefetch_related("sizes").iterator(chunk_size=500):
        yield _instance(instance, until)


def snapshot_resources(tenant_ids: set[int], since: datetime, until: datetime) -> Iterator[Resource]:
    """Every snapshot the tenants kept in the window: its size from when it was taken until it was deleted."""
    snapshots = (Snapshot.objects.filter(instance__tenant_id__in=tenant_ids, taken_at__lt=until)
                 .filter(Q(deleted_at__isnull=True) | Q(deleted_at__gt=since))
                 .values("pk", "name", "size_gib", "taken_at", "deleted_at", "instance__tenant_id", "instance__name"))
    for row in snapshots.iterator():
        span = Span(Meter.SNAPSHOT, row["size_gib"], row["taken_at"], min(row["deleted_at"] or until, until))
        yield Resource(row["instance__tenant_id"], "snapshot", row["pk"],
                       f"{row['instance__name']}: snapshot {row['name']}", (span,))


def volume_resources(tenant_ids: set[int], since: datetime, until: datetime) -> Iterator[Resource]:
    """Every volume the tenants kept in the window: each size it had, from when it had it until it was deleted."""
    volumes = (Volume.objects.filter(tenant_id__in=tenant_ids, ready_at__lt=until)
               .filter(Q(deleted_at__isnull=True) | Q(deleted_at__gt=since))
               .values("pk", "name", "sizes", "deleted_at", "tenant_id"))
    for row in volumes.iterator():
        end = min(row["deleted_at"] or until, until)
        sizes = [(datetime.fromisoformat(at), gib) for at, gib in row["sizes"]]
        spans = tuple(Span(Meter.VOLUME, gib, begin, min(finish, end))
                      for (begin, gib), (finish, _next) in zip(sizes, [*sizes[1:], (end, 0)], strict=True)
                      if begin < end)
        yield Resource(row["tenant_id"], "volume", row["pk"], f"volume {row['name']}", spans)


def backup_resources(tenant_ids: set[int], since: datetime, until: datetime) -> Iterator[Resource]:
    """Every backup the tenants kept in the window: what it stores, in whole GiB, from taken until deleted."""
    kept = (Backup.objects.filter(tenant_id__in=tenant_ids, taken_at__lt=until)
            .filter(Q(deleted_at__isnull=True) | Q(deleted_at__gt=since)))
    for backup in kept.iterator():
        span = Span(Meter.BACKUP, backup.billed_gib, backup.taken_at, min(backup.deleted_at or until, until))
        yield Resource(backup.tenant_id, "backup", backup.pk, f"{backup.instance_name}: backup {backup.pk}", (span,))


def address_resources(tenant_ids: set[int], since: datetime, until: datetime) -> Iterator[Resource]:
    """Every public address the tenants held in the window."""
    holds = AddressHold.objects.filter(tenant_id__in=tenant_ids, started_at__lt=until).filter(
        Q(ended_at__isnull=True) | Q(ended_at__gt=since))
    for hold in holds.iterator():
        span = Span(Meter.ADDRESS, 1, hold.started_at, min(hold.ended_at or until, until))
        yield Resource(hold.tenant_id, "address", hold.allocation_id, f"{hold.address} ({hold.network_name})",
                       (span,))


SOURCES: tuple[Callable[[set[int], datetime, datetime], Iterable[Resource]], ...] = (
    instance_resources, snapshot_resources, volume_resources, backup_resources, address_resources)


def _record(resource: Resource, since: datetime, until: datetime, versions: list[RateVersion]) -> int:
    """Bring the ledger's counts of the resource within the window in line with its spans; returns the
    number of revisions written."""
    wanted: dict[tuple[str, datetime], int] = defaultdict(int)
    for span in resource.spans:
        for hour, seconds in hours(max(span.start, since), min(span.end, until)):
            wanted[(span.meter, hour)] += seconds * span.size
    held = {(row["meter"], row["interval_start"]): (row["units"], row["last"]) for row in
            UsageRecord.objects.filter(resource_type=resource.resource_type, resource_id=resource.resource_id,
                                       interval_start__gte=since.replace(minute=0, second=0, microsecond=0),
                                       interval_start__lt=until)
            .values("meter", "interval_start").annotate(units=Sum("units"), last=Max("revision"))}
    revisions = []
    for key in sorted(wanted.keys() | held.keys()):  # one order for every worker: concurrent runs never deadlock
        units, last = held.get(key, (0, 0))
        delta = wanted.get(key, 0) - units
        rate = rate_at(versions, key[1])
        if delta and rate is not None:
            revisions.append(UsageRecord(
                tenant_id=resource.tenant_id, resource_type=resource.resource_type,
                resource_id=resource.resource_id, resource_name=resource.name[:100], meter=key[0],
                interval_start=key[1], revision=last + 1, units=delta, rate=rate))
    UsageRecord.objects.bulk_create(revisions)
    _add_to_months(resource, revisions)
    return len(revisions)


def _add_to_months(resource: Resource, revisions: list[UsageRecord]) -> None:
    """Add the revisions to their UsageMonth sums, in place (an upsert that adds), so that concurrent
    metering of other hours of the same month adds up too."""
    added: dict[tuple[str, int, datetime], int] = defaultdict(int)
    for revision in revisions:
        month = revision.interval_start.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0)
        added[(revision.meter, revision.rate.pk, month)] += revision.units
    if not added:
        return
    table = UsageMonth._meta.db_table
    rows = [[resource.tenant_id, resource.resource_type, resource.resource_id, resource.name[:100], meter, rate_id,
             connection.ops.adapt_datetimefield_value(month), units]
            for (meter, rate_id, month), units in sorted(added.items())]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (tenant_id, resource_type, resource_id, resource_name, meter, rate_id, month, units,"
            f" invoiced_units) VALUES {', '.join(['(%s, %s, %s, %s, %s, %s, %s, %s, 0)'] * len(rows))}"
            f" ON CONFLICT (resource_type, resource_id, meter, rate_id, month) DO UPDATE SET"
            f" units = {table}.units + excluded.units, resource_name = excluded.resource_name",
            [value for row in rows for value in row])


def meter(*, since: datetime | None = None, until: datetime | None = None, tenant_ids: set[int] | None = None
          ) -> int:
    """Meter every billed tenant's resources from since to until (whole hours; by default from the start of
    the previous month to the last full hour). Returns the number of ledger revisions written."""
    until = until or timezone.now().replace(minute=0, second=0, microsecond=0)
    if since is None:
        this_month = until.replace(day=1, hour=0)
        since = (this_month - timedelta(days=1)).replace(day=1)
    billing = TenantBilling.objects.all() if tenant_ids is None else TenantBilling.objects.filter(
        tenant_id__in=tenant_ids)
    plan_of, start_of = {}, {}
    for tenant_id, plan_id, billed_from in billing.values_list("tenant_id", "plan_id", "billed_from"):
        plan_of[tenant_id], start_of[tenant_id] = plan_id, max(since, billed_from)
    rates = plan_versions(set(plan_of.values()))
    written = 0
    for source in SOURCES:
        for resource in source(set(plan_of), since, until):
            for attempt in (1, 2):
                try:
                    with transaction.atomic():
                        lock_ledger(shared=True)
                        written += _record(resource, start_of[resource.tenant_id], until,
                                           rates[plan_of[resource.tenant_id]])
                    break
                except IntegrityError:  # another run wrote the same revision: count again against it
                    if attempt == 2:
                        raise
    return written
