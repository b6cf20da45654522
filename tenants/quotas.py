"""Tenant quotas: limits from the Quota row, usage counted from the live resources.

Requests are checked with the tenant's row locked (SELECT … FOR UPDATE) inside the
transaction that creates the resource, so concurrent requests of one tenant are checked
one after the other, each seeing the rows the previous one committed. Usage is counted
from the resources themselves, so it is released when they go away.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce

from tenants.exceptions import QuotaExceeded
from tenants.models import Quota, Tenant


@dataclass(frozen=True)
class Resource:
    key: str
    label: str
    unit: str = ""


RESOURCES = (
    Resource("instances", "Instances"),
    Resource("vcpus", "vCPUs"),
    Resource("memory_mib", "RAM", "MiB"),
    Resource("disk_gib", "Disk", "GiB"),
)


@dataclass(frozen=True)
class Line:
    """One resource's use against its limit (None: unlimited)."""

    resource: Resource
    used: int
    limit: int | None

    @property
    def percent(self) -> int:
        if not self.limit:
            return 0 if self.limit is None else 100
        return min(100, round(100 * self.used / self.limit))

    @property
    def over(self) -> bool:
        return self.limit is not None and self.used > self.limit


def lock_tenant(tenant_id: int) -> None:
    """Lock the tenant's row until the transaction ends: one quota or membership change at a time.

    FOR NO KEY UPDATE, so rows that merely reference the tenant (audit rows, instances of
    other requests already checked) can still be written meanwhile.
    """
    Tenant.objects.select_for_update(no_key=True).filter(pk=tenant_id).values_list("pk", flat=True).get()


def default_limits() -> dict[str, int | None]:
    """The limits a new tenant starts with (settings.CLOUDPANEL_DEFAULT_QUOTA)."""
    configured = settings.CLOUDPANEL_DEFAULT_QUOTA
    return {r.key: configured.get(r.key) for r in RESOURCES}


def quota_of(tenant: Tenant) -> Quota:
    """The tenant's quota row, created with the defaults the first time it is needed."""
    quota, _ = Quota.objects.get_or_create(tenant=tenant, defaults=default_limits())
    return quota


def quotas_of(tenants: list[Tenant]) -> dict[int, Quota]:
    """The quota rows of several tenants in one query (created with the defaults where missing)."""
    found = {q.tenant_id: q for q in Quota.objects.filter(tenant_id__in=[t.pk for t in tenants])}
    return {t.pk: found.get(t.pk) or quota_of(t) for t in tenants}


def usage_of(tenant_ids: list[int]) -> dict[int, dict[str, int]]:
    """Current use per tenant, in one query."""
    from instances.models import Instance

    rows = (
        Instance.objects.filter(tenant_id__in=tenant_ids).live().values("tenant_id")
        .annotate(instances=Count("id"), vcpus=Coalesce(Sum("vcpus"), 0), memory_mib=Coalesce(Sum("memory_mib"), 0),
                  disk_gib=Coalesce(Sum("disk_gib"), 0))
    )
    used = {tid: {r.key: 0 for r in RESOURCES} for tid in tenant_ids}
    for row in rows:
        used[row.pop("tenant_id")] = row
    return used


def lines(quota: Quota, used: dict[str, int]) -> list[Line]:
    return [Line(r, used.get(r.key, 0), getattr(quota, r.key)) for r in RESOURCES]


def check(*, tenant: Tenant, request: dict[str, int]) -> None:
    """Refuse, with every limit it breaks, a request that would take the tenant over quota.

    Call inside the transaction that creates the resource: the tenant row stays locked
    until it commits.
    """
    lock_tenant(tenant.pk)
    quota = quota_of(tenant)
    used = usage_of([tenant.pk])[tenant.pk]
    broken = []
    for line in lines(quota, used):
        wanted = request.get(line.resource.key, 0)
        if wanted and line.limit is not None and line.used + wanted > line.limit:
            unit = f" {line.resource.unit}" if line.resource.unit else ""
            broken.append(f"{line.resource.label}: {line.used} of {line.limit}{unit} in use, "
                          f"{wanted}{unit} more asked")
    if broken:
        raise QuotaExceeded(f"Quota exceeded for {tenant}: " + "; ".join(broken) + ". Free some resources "
                            "or ask an administrator to raise the quota.")
