"""Tenant quotas: limits from the Quota row, usage counted from the live resources.

Requests are checked with the tenant's row locked (SELECT … FOR UPDATE) inside the
transaction that creates the resource, so concurrent requests of one tenant are checked
one after the other, each seeing the rows the previous one committed. Usage is counted
from the resources themselves, so it is released when they go away: each app that owns
some of them registers a counter (register_counter, in its AppConfig.ready).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from django.conf import settings

from tenants.exceptions import QuotaExceeded
from tenants.models import Quota, Tenant


@dataclass(frozen=True)
class Resource:
    """A limited resource; use is counted in units of 1/per of the limit's unit (image storage: bytes)."""

    key: str
    label: str
    unit: str = ""
    per: int = 1

    def show(self, amount: int) -> str:
        return str(amount) if self.per == 1 else f"{amount / self.per:.2f}".rstrip("0").rstrip(".")


RESOURCES = (
    Resource("instances", "Instances"),
    Resource("vcpus", "vCPUs"),
    Resource("memory_mib", "RAM", "MiB"),
    Resource("disk_gib", "Disk", "GiB"),
    Resource("snapshots", "Snapshots"),
    Resource("volumes", "Volumes"),
    Resource("volume_gib", "Volume storage", "GiB"),
    Resource("image_gib", "Image storage", "GiB", per=1 << 30),
    Resource("networks", "Networks"),
    # Addresses the tenant's instances hold on shared networks (the platform's, say a provider network).
    Resource("public_addresses", "Public addresses"),
)


@dataclass(frozen=True)
class Line:
    """One resource's use against its limit (None: unlimited)."""

    resource: Resource
    used: int
    limit: int | None

    @property
    def shown(self) -> str:
        """The use in the limit's unit."""
        return self.resource.show(self.used)

    @property
    def percent(self) -> int:
        if not self.limit:
            return 0 if self.limit is None else 100
        return min(100, round(100 * self.used / (self.limit * self.resource.per)))

    @property
    def over(self) -> bool:
        return self.limit is not None and self.used > self.limit * self.resource.per


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


# A counter: (tenant ids, the image to leave out or None) → {tenant id: {resource key: use}}, in a query or two.
Counter = Callable[[list[int], int | None], Mapping[int, Mapping[str, int]]]
_counters: list[tuple[Counter, frozenset[str]]] = []


def register_counter(counter: Counter, keys: Collection[str]) -> None:
    """Count some of the resources (their keys in RESOURCES) for the quota: called by the app owning them."""
    _counters.append((counter, frozenset(keys)))


def usage_of(tenant_ids: list[int], *, excluding_image: int | None = None,
             keys: Collection[str] | None = None) -> dict[int, dict[str, int]]:
    """Current use per tenant, from the registered counters (image storage in bytes, see Resource.per): those of
    `keys` only, when given; excluding_image leaves out an image whose final size is being checked."""
    used = {tid: {r.key: 0 for r in RESOURCES} for tid in tenant_ids}
    for counter, counts in _counters:
        if keys is None or counts & set(keys):
            for tenant_id, counted in counter(tenant_ids, excluding_image).items():
                used[tenant_id].update(counted)
    return used


def shown_usage(used: dict[str, int]) -> dict[str, int | float]:
    """Use in each limit's unit, for the API."""
    return {r.key: used[r.key] if r.per == 1 else round(used[r.key] / r.per, 2) for r in RESOURCES}


def lines(quota: Quota, used: dict[str, int]) -> list[Line]:
    return [Line(r, used.get(r.key, 0), getattr(quota, r.key)) for r in RESOURCES]


def check(*, tenant: Tenant, request: dict[str, int], excluding_image: int | None = None) -> None:
    """Refuse, with every limit it breaks, a request that would take the tenant over quota.

    Call inside the transaction that creates the resource: the tenant row stays locked
    until it commits. Only what the request asks for, and is limited, is counted. Amounts
    are in the units usage is counted in (image storage: bytes); excluding_image leaves out
    an image whose final size is being checked.
    """
    lock_tenant(tenant.pk)
    quota = quota_of(tenant)
    limited = [key for key, wanted in request.items() if wanted and getattr(quota, key) is not None]
    if not limited:
        return  # nothing asked for is limited: nothing to count
    used = usage_of([tenant.pk], excluding_image=excluding_image, keys=limited)[tenant.pk]
    broken = []
    for line in lines(quota, used):
        wanted, resource = request.get(line.resource.key, 0), line.resource
        if wanted and line.limit is not None and line.used + wanted > line.limit * resource.per:
            unit = f" {resource.unit}" if resource.unit else ""
            broken.append(f"{resource.label}: {line.shown} of {line.limit}{unit} in use, "
                          f"{resource.show(wanted)}{unit} more asked")
    if broken:
        raise QuotaExceeded(f"Quota exceeded for {tenant}: " + "; ".join(broken) + ". Free some resources "
                            "or ask an administrator to raise the quota.")
