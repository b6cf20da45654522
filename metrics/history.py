"""Kept samples: the periodic roll-up into coarser resolutions, retention, and the series a chart shows.

Raw samples are kept 6 hours, minute averages 7 days and hour averages a year (KEEP): per instance at most
2,160 + 10,080 + 8,784 rows, whatever its age. A chart reads the resolution that covers its range and averages
it into at most a few hundred points; the newest stretch, not yet rolled up, comes from the finer resolutions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Avg, Count, Max, Model, Sum, Value
from django.db.models.functions import Extract, Floor, Trunc
from django.utils import timezone

from metrics.choices import Range, Resolution
from metrics.models import HostSample, InstanceSample, RollUp

KEEP = {Resolution.RAW: timedelta(hours=6), Resolution.MINUTE: timedelta(days=7),
        Resolution.HOUR: timedelta(days=366)}
INSTANCE_FIELDS = ("cpu", "memory_used", "memory_total", "disk_read", "disk_write", "disk_read_iops",
                   "disk_write_iops", "net_rx", "net_tx")
HOST_FIELDS = ("cpu", "memory_used", "memory_total", "running", "vcpus", "guest_cpu", "pool_used", "pool_capacity")
KINDS: dict[str, tuple[type[Model], str, tuple[str, ...]]] = {
    "instance": (InstanceSample, "instance_id", INSTANCE_FIELDS),
    "host": (HostSample, "host_id", HOST_FIELDS),
}


@dataclass(frozen=True)
class Span:
    """How a range is charted: over which time, from which resolution, averaged into buckets of how long."""

    length: timedelta
    resolution: Resolution
    bucket: int  # seconds; 0: each stored sample is a point


SPANS = {
    Range.HOUR: Span(timedelta(hours=1), Resolution.RAW, 0),
    Range.DAY: Span(timedelta(days=1), Resolution.MINUTE, 300),
    Range.WEEK: Span(timedelta(days=7), Resolution.MINUTE, 1800),
    Range.MONTH: Span(timedelta(days=30), Resolution.HOUR, 7200),
    Range.YEAR: Span(timedelta(days=365), Resolution.HOUR, 86400),
}
FINER = {Resolution.HOUR: (Resolution.MINUTE, Resolution.RAW), Resolution.MINUTE: (Resolution.RAW,),
         Resolution.RAW: ()}


def roll_up(*, now: datetime | None = None) -> dict[str, int]:
    """Average raw samples into minutes and minutes into hours, for every whole step that ended at least a minute
    ago and is not averaged yet, then drop what is past its retention. Safe to run again or concurrently: an
    average already stored is kept. Returns the rows written per kind and resolution."""
    now = now or timezone.now()
    written = {}
    for kind, (model, key, fields) in KINDS.items():
        for source, target in ((Resolution.RAW, Resolution.MINUTE), (Resolution.MINUTE, Resolution.HOUR)):
            written[f"{kind}/{target.label}"] = _roll(kind, model, key, fields, source, target, now)
        for resolution, keep in KEEP.items():
            model.objects.filter(resolution=resolution, time__lt=now - keep).delete()
    return written


def _roll(kind: str, model: type[Model], key: str, fields: tuple[str, ...], source: Resolution,
          target: Resolution, now: datetime) -> int:
    until = _floor(now - timedelta(minutes=1), target)
    with transaction.atomic():
        mark = RollUp.objects.select_for_update().filter(kind=kind, resolution=target).first()
        since = mark.done_until if mark is not None else _floor(now - KEEP[source], target)
        if since >= until:
            return 0
        unit = "minute" if target == Resolution.MINUTE else "hour"
        rows = (model.objects.filter(resolution=source, time__gte=since, time__lt=until)
                .annotate(bucket=Trunc("time", unit, tzinfo=UTC)).values(key, "bucket")
                .annotate(**{f"avg_{field}": Avg(field) for field in fields}).order_by())
        if kind == "instance":  # an instance's tenant does not change
            rows = rows.annotate(owner=Max("tenant_id"))
        made = []
        for row in rows:
            extra = {"tenant_id": row["owner"]} if kind == "instance" else {}
            made.append(model(**{key: row[key]}, resolution=target, time=row["bucket"], **extra,
                              **{field: row[f"avg_{field}"] for field in fields}))
        model.objects.bulk_create(made, ignore_conflicts=True, batch_size=2000)
        RollUp.objects.update_or_create(kind=kind, resolution=target, defaults={"done_until": until})
    return len(made)


def _floor(moment: datetime, resolution: Resolution) -> datetime:
    seconds = int(resolution)
    stamp = int(moment.timestamp()) // seconds * seconds
    return datetime.fromtimestamp(stamp, UTC)


def series(kind: str, object_id: int, chart: Range, *, now: datetime | None = None) -> dict:
    """A chart's points of one host or instance: {"range", "bucket" (s), "t": [Unix ms], field: [value, ...]},
    oldest first, None where nothing was sampled."""
    model, key, fields = KINDS[kind]
    span = SPANS[chart]
    now = now or timezone.now()
    since = now - span.length
    if not span.bucket:
        points, gap = [], 3 * settings.CLOUDPANEL_METRICS_SECONDS
        for t, *values in _rows(model, key, object_id, span.resolution, since, fields):
            start = int(t.timestamp())
            if points and start - points[-1][0] > gap:  # not sampled meanwhile: a gap, not a line across it
                points.append((points[-1][0] + 1, *[None] * len(fields)))
            points.append((start, *values))
    else:
        buckets: dict[int, tuple[list[float], list[int]]] = {}
        covered = since
        for resolution in (span.resolution, *FINER[span.resolution]):  # then what the roll-up has not reached
            last = _add_buckets(buckets, model, key, object_id, resolution, covered, span.bucket, fields)
            if last is not None:
                covered = last + timedelta(seconds=int(resolution) or 1)
        points = []
        if buckets:  # from the first sampled bucket on, every one: an empty one is a gap in the line
            empty = ([0.0] * len(fields), [0] * len(fields))
            for start in range(min(buckets), max(math.ceil(now.timestamp()), max(buckets) + 1), span.bucket):
                sums, counts = buckets.get(start, empty)
                points.append((start, *(total / n if n else None for total, n in zip(sums, counts, strict=True))))
    out = {"range": chart.value, "bucket": span.bucket, "t": [start * 1000 for start, *_ in points]}
    for i, field in enumerate(fields, start=1):
        out[field] = [row[i] for row in points]
    return out


def _rows(model: type[Model], key: str, object_id: int, resolution: Resolution, since: datetime,
          fields: tuple[str, ...]) -> Iterable[tuple]:
    return (model.objects.filter(**{key: object_id}, resolution=resolution, time__gte=since)
            .order_by("time").values_list("time", *fields))


def _add_buckets(buckets: dict[int, tuple[list[float], list[int]]], model: type[Model], key: str, object_id: int,
                 resolution: Resolution, since: datetime, bucket: int, fields: tuple[str, ...]) -> datetime | None:
    """Add the rows of one resolution since `since` into buckets of `bucket` seconds (start → sums, counts; a
    field's None values left out); the newest row's time, None without rows. PostgreSQL sums in the database."""
    if connection.vendor != "postgresql":
        found = list(_rows(model, key, object_id, resolution, since, fields))
        for time, *values in found:
            sums, counts = buckets.setdefault(int(time.timestamp()) // bucket * bucket,
                                              ([0.0] * len(fields), [0] * len(fields)))
            for i, value in enumerate(values):
                if value is not None:
                    sums[i] += value
                    counts[i] += 1
        return found[-1][0] if found else None
    start = Floor(Extract("time", "epoch") / Value(bucket)) * Value(bucket)
    rows = (model.objects.filter(**{key: object_id}, resolution=resolution, time__gte=since)
            .annotate(start=start).values("start")
            .annotate(last=Max("time"), **{f"sum_{f}": Sum(f) for f in fields}, **{f"n_{f}": Count(f) for f in fields})
            .order_by())
    newest = None
    for row in rows:
        sums, counts = buckets.setdefault(int(row["start"]), ([0.0] * len(fields), [0] * len(fields)))
        for i, field in enumerate(fields):
            if row[f"n_{field}"]:
                sums[i] += row[f"sum_{field}"]
                counts[i] += row[f"n_{field}"]
        newest = row["last"] if newest is None or row["last"] > newest else newest
    return newest


@dataclass(frozen=True)
class Hot:
    """The latest sample of one host or instance, for the hottest lists."""

    object_id: int
    time: datetime
    values: dict


def latest(kind: str, *, tenant_ids: list[int] | None = None, now: datetime | None = None) -> list[Hot]:
    """Each host's or instance's newest raw sample of the last three sampling rounds (only the tenants' instances
    when tenant_ids is given; hosts and instances sampled no more are left out)."""
    model, key, fields = KINDS[kind]
    now = now or timezone.now()
    rows = model.objects.filter(resolution=Resolution.RAW,
                                time__gte=now - timedelta(seconds=3 * settings.CLOUDPANEL_METRICS_SECONDS))
    if tenant_ids is not None:
        rows = rows.filter(tenant_id__in=tenant_ids)
    newest: dict[int, Hot] = {}
    for object_id, time, *values in rows.order_by("time").values_list(key, "time", *fields):
        newest[object_id] = Hot(object_id, time, dict(zip(fields, values, strict=True)))
    return list(newest.values())
