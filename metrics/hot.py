"""The hottest hosts and instances now: their newest samples, sorted by what is asked."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models

from cloudpanel.scoping import Scope
from hosts.models import Host
from instances.models import Instance
from metrics import history


class Sort(models.TextChoices):
    CPU = "cpu", "CPU"
    MEMORY = "memory", "Memory"
    DISK = "disk", "Disk I/O"
    NET = "net", "Network"


def _share(part: float | None, whole: float | None) -> float | None:
    return part / whole * 100 if part is not None and whole else None


def _key(sort: Sort, values: dict) -> float:
    if sort == Sort.MEMORY:
        return _share(values["memory_used"], values["memory_total"]) or 0.0
    if sort == Sort.DISK:
        return (values.get("disk_read") or 0.0) + (values.get("disk_write") or 0.0)
    if sort == Sort.NET:
        return (values.get("net_rx") or 0.0) + (values.get("net_tx") or 0.0)
    return values["cpu"] or 0.0


@dataclass(frozen=True)
class Hottest:
    hosts: list[dict]  # empty unless the scope is a platform admin's
    instances: list[dict]


def hottest(*, scope: Scope, sort: Sort = Sort.CPU, limit: int = 10) -> Hottest:
    """The `limit` hottest instances the scope sees and, for platform admins, hosts, by their newest samples."""
    instances = sorted(history.latest("instance", tenant_ids=scope.tenant_ids),
                       key=lambda hot: _key(sort, hot.values), reverse=True)[:limit]
    names = {row["pk"]: row for row in Instance.objects.in_scope(scope).filter(
        pk__in=[hot.object_id for hot in instances]).values("pk", "name", "tenant__name", "host__name", "vcpus")}
    hosts = []
    if scope.tenant_ids is None:  # (hosts have no disk or network figures: those sort them by CPU)
        by = sort if sort in (Sort.CPU, Sort.MEMORY) else Sort.CPU
        found = sorted(history.latest("host"), key=lambda hot: _key(by, hot.values), reverse=True)[:limit]
        host_names = dict(Host.objects.filter(pk__in=[hot.object_id for hot in found]).values_list("pk", "name"))
        hosts = [{"id": hot.object_id, "name": host_names[hot.object_id], "time": hot.time, **hot.values,
                  "memory_percent": _share(hot.values["memory_used"], hot.values["memory_total"]),
                  "pool_percent": _share(hot.values["pool_used"], hot.values["pool_capacity"])}
                 for hot in found if hot.object_id in host_names]
    return Hottest(hosts=hosts, instances=[
        {"id": hot.object_id, "name": names[hot.object_id]["name"], "tenant": names[hot.object_id]["tenant__name"],
         "host": names[hot.object_id]["host__name"], "vcpus": names[hot.object_id]["vcpus"], "time": hot.time,
         **hot.values, "memory_percent": _share(hot.values["memory_used"], hot.values["memory_total"])}
        for hot in instances if hot.object_id in names])
