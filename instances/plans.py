"""Dry runs: what a create, resize or migration would do, shown before it is done.

The request's own service runs as it would (its checks, the quota, placement with the hosts locked) inside a
transaction that is rolled back once the plan is read from what it wrote. Nothing it wrote outlives it, no task is
queued (a rolled-back transaction's on-commit callbacks never run) and nothing stays held: a dry run never takes
what a real request needs. A refusal is the real request's refusal, with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import NamedTuple

from django.db import transaction

from instances import definition
from instances.models import Instance, InstanceAction
from tenants import quotas
from tenants.models import Tenant


class Size(NamedTuple):
    """What an instance is billed for by the month: its size, its licence, and its addresses on shared networks."""

    vcpus: int
    memory_mib: int
    disk_gib: int
    licensed: bool
    public_addresses: int


@dataclass(frozen=True)
class Price:
    """The price per month of an instance running the whole month, on its tenant's plan as it is now (before tax);
    before: the price at its current size, for a change."""

    currency: str
    per_month: Decimal
    before: Decimal | None = None


# Billing prices sizes: (tenant id, size) → its Price without `before`, or None when the tenant has no plan.
Pricer = Callable[[int, Size], Price | None]
_pricers: list[Pricer] = []


def register_pricer(pricer: Pricer) -> None:
    """Price plans' sizes (called by billing in its AppConfig.ready)."""
    _pricers.append(pricer)


def _price(tenant_id: int, size: Size) -> Price | None:
    return next((price for pricer in _pricers if (price := pricer(tenant_id, size)) is not None), None)


@dataclass(frozen=True)
class QuotaEffect:
    """One limited resource the request changes: the tenant's use before and after it, and the limit (None: none)."""

    resource: str
    label: str
    used: str
    after: str
    limit: int | None


@dataclass
class Plan:
    """What the request would do: the host and why (every host's verdict), the definition the host would get (and
    its diff against the current one, for a change), the quota it takes and the price per month."""

    operation: str
    instance: str
    host: str | None
    host_id: int | None
    placement: dict | None
    definition: str
    diff: str = ""
    changes: list[str] = field(default_factory=list)
    quota: list[QuotaEffect] = field(default_factory=list)
    price: Price | None = None

    def shown_to(self, admin: bool) -> Plan:
        """The plan as the asker may see it: other hosts' verdicts and the definition (the host's paths, pools and
        uid ranges) are platform admins'."""
        return self if admin else replace(self, placement=None, definition="", diff="")


class _Undo(Exception):
    def __init__(self, plan: Plan) -> None:
        super().__init__("dry run")
        self.plan = plan


def size_of(instance: Instance) -> Size:
    public = instance.ports.filter(network__tenant__isnull=True).count()
    return Size(instance.vcpus, instance.memory_mib, instance.disk_gib, instance.licensed, public)


def _quota(tenant_id: int, before: dict[str, int], after: dict[str, int]) -> list[QuotaEffect]:
    limits = quotas.quota_of(Tenant.objects.get(pk=tenant_id))
    return [QuotaEffect(r.key, r.label + (f" ({r.unit})" if r.unit else ""), r.show(before[r.key]),
                        r.show(after[r.key]), getattr(limits, r.key))
            for r in quotas.RESOURCES if before[r.key] != after[r.key]]


def rehearse(tenant_id: int, perform: Callable[[], InstanceAction], describe: Callable[[InstanceAction], Plan],
             *, priced_before: Size | None = None) -> Plan:
    """Perform the request, describe what it did, and undo it all; the plan gets the quota's and price's effect."""
    try:
        with transaction.atomic():
            before = quotas.usage_of([tenant_id])[tenant_id]
            action = perform()
            plan = describe(action)
            plan.quota = _quota(tenant_id, before, quotas.usage_of([tenant_id])[tenant_id])
            instance = Instance.objects.get(pk=action.instance_id)
            price = _price(tenant_id, size_of(instance))
            if price is not None and priced_before is not None:
                earlier = _price(tenant_id, priced_before)
                price = Price(price.currency, price.per_month, earlier.per_month if earlier else None)
            plan.price = price
            raise _Undo(plan)
    except _Undo as undo:
        return undo.plan


def _where(instance: Instance) -> dict | None:
    return Instance.objects.filter(pk=instance.pk).values_list("placement", flat=True).first() or None


def for_create(perform: Callable[[], InstanceAction], tenant_id: int) -> Plan:
    """The plan of a create (perform: the create, as it would be asked for)."""
    def describe(action: InstanceAction) -> Plan:
        instance = Instance.objects.select_related("host", "image", "boot_kernel", "cdrom").get(pk=action.instance_id)
        return Plan("create", instance.name, instance.host.name, instance.host_id, _where(instance),
                    definition.text(instance, instance.host),
                    changes=[f"create {instance.name} on {instance.host.name}"
                             + (" and start it" if action.start else ", left stopped")])

    return rehearse(tenant_id, perform, describe)


def for_resize(instance: Instance, perform: Callable[[], InstanceAction]) -> Plan:
    """The plan of a resize of the instance (perform: the resize)."""
    def describe(action: InstanceAction) -> Plan:
        # (once the resize was accepted: the instance here still has the size it has now)
        host = instance.host
        current = definition.text(instance, host)
        resized = Instance.objects.select_related("host", "image", "boot_kernel", "cdrom").get(pk=instance.pk)
        after = definition.text(resized, host)
        was, becomes = action.resize["from"], action.resize["to"]
        changes = [f"{label}: {was[key]} → {becomes[key]}" for key, label in
                   (("vcpus", "vCPUs"), ("memory_mib", "RAM (MiB)"), ("disk_gib", "disk (GiB)"))
                   if was[key] != becomes[key]]
        if becomes["disk_gib"] > was["disk_gib"]:
            changes.append(f"the disk volume {instance.volume_name} grows to {becomes['disk_gib']} GiB in the pool "
                           f"'{host.storage_pool}' of {host.name}")
        return Plan("resize", instance.name, host.name, host.pk, None, after,
                    diff=definition.diff(current, after, was=f"{instance.name} now", becomes="resized"),
                    changes=changes)

    return rehearse(instance.tenant_id, perform, describe, priced_before=size_of(instance))


def for_migration(instance: Instance, perform: Callable[[], InstanceAction]) -> Plan:
    """The plan of a migration of the instance (perform: the migration)."""
    def describe(action: InstanceAction) -> Plan:
        source, target = instance.host, action.target_host
        current = definition.text(instance, source)
        after = definition.text(instance, target)
        live = action.instance.status in ("running", "paused")
        return Plan("migrate", instance.name, target.name, target.pk, _where(instance), after,
                    diff=definition.diff(current, after, was=source.name, becomes=target.name),
                    changes=[f"{'live' if live else 'cold'} migration from {source.name} to {target.name}"
                             + (": its disks are copied while it runs" if live else
                                ": its disks and snapshots are copied, then it is defined there")])

    return rehearse(instance.tenant_id, perform, describe, priced_before=size_of(instance))
