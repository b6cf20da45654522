"""Alert rules: made and checked here, evaluated by a periodic job over the raw samples, told through
notifications when one starts holding for a host or instance and when it stops.

A rule holds for an object when it has been sampled over the whole duration (the oldest sample of the window is
no later than two rounds after its start) and every sample meets the condition. It stops holding when the newest
sample does not, or the object is sampled no more (stopped, deleted, its host gone).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Count, ExpressionWrapper, F, FloatField, Min, Q, Value, When
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone

from cloudpanel.exceptions import DomainError, NotFound
from cloudpanel.scoping import Scope
from hosts.models import Host
from instances.models import Instance
from metrics.choices import Comparison, Measure, Resolution, Target
from metrics.models import AlertRule, AlertState, HostSample, InstanceSample
from notifications.choices import Kind
from notifications.services import notify
from tenants.models import Tenant

PERCENT = (Measure.CPU, Measure.MEMORY, Measure.POOL)
LONGEST = timedelta(hours=6)  # the raw samples' retention: a rule can't look further back
MAX_RULES = 100


class InvalidRule(DomainError):
    """The rule can't be kept as asked; the message says why."""


def _value(measure: str):
    """The measure of a sample, as a database expression (NULL where it was not sampled)."""
    if measure in (Measure.MEMORY, Measure.POOL):
        used, total = ("memory_used", "memory_total") if measure == Measure.MEMORY else ("pool_used", "pool_capacity")
        return ExpressionWrapper(F(used) * Value(100.0) / NullIf(F(total), Value(0.0)), output_field=FloatField())
    if measure in (Measure.DISK, Measure.NET):
        first, second = ("disk_read", "disk_write") if measure == Measure.DISK else ("net_rx", "net_tx")
        return Case(When(**{f"{first}__isnull": True, f"{second}__isnull": True}, then=Value(None)),
                    default=Coalesce(first, Value(0.0)) + Coalesce(second, Value(0.0)), output_field=FloatField())
    return F("cpu")


def _meets(rule: AlertRule, value: float | None) -> bool:
    if value is None:
        return False
    return value > rule.threshold if rule.comparison == Comparison.ABOVE else value < rule.threshold


# --- rules ---------------------------------------------------------------------------------------------------


def create_rule(*, scope: Scope, user, tenant: Tenant | None, name: str, target: str, measure: str,
                comparison: str, threshold: float, seconds: int, instance_id: int | None = None,
                host_id: int | None = None) -> AlertRule:
    """A new rule: a tenant's on its instances, or (platform admins) the platform's on hosts or every instance."""
    fields = _checked(scope=scope, tenant=tenant, target=target, measure=measure, threshold=threshold,
                      seconds=seconds, instance_id=instance_id, host_id=host_id)
    return AlertRule.objects.create(tenant=tenant, name=name, target=target, measure=measure, comparison=comparison,
                                    threshold=threshold, seconds=seconds, created_by=user, **fields)


def _checked(*, scope: Scope, tenant: Tenant | None, target: str, measure: str, threshold: float, seconds: int,
             instance_id: int | None, host_id: int | None) -> dict:
    if target == Target.HOST and tenant is not None:
        raise InvalidRule("a tenant's rules watch its instances; hosts are watched by platform rules")
    if measure == Measure.POOL and target != Target.HOST:
        raise InvalidRule("storage pool use is a host's measure")
    if measure in (Measure.DISK, Measure.NET) and target == Target.HOST:
        raise InvalidRule("disk and network I/O are an instance's measures: a host rule watches CPU, memory or pools")
    if AlertRule.objects.filter(tenant=tenant).count() >= MAX_RULES:
        raise InvalidRule(f"at most {MAX_RULES} alert rules each (the tenant's, or the platform's)")
    if threshold < 0 or measure in PERCENT and threshold > 100:
        raise InvalidRule(f"the threshold of a percentage is from 0 to 100, not {threshold:g}")
    if not 60 <= seconds <= LONGEST.total_seconds():
        raise InvalidRule("a rule holds for a minute to 6 hours (the raw samples' retention)")
    fields: dict = {"instance": None, "host": None}
    if instance_id is not None:
        if target != Target.INSTANCE:
            raise InvalidRule("a host rule names no instance")
        found = Instance.objects.in_scope(scope).live().filter(pk=instance_id)
        fields["instance"] = found.filter(tenant=tenant).first() if tenant is not None else found.first()
        if fields["instance"] is None:
            raise NotFound("No such instance.")
    if host_id is not None:
        if target != Target.HOST:
            raise InvalidRule("an instance rule names no host")
        fields["host"] = Host.objects.filter(pk=host_id).first()
        if fields["host"] is None:
            raise NotFound("No such host.")
    return fields


# --- evaluation ----------------------------------------------------------------------------------------------


def evaluate(*, now: datetime | None = None) -> tuple[int, int]:
    """Check every enabled rule against the raw samples; tell what starts and stops holding. Returns how many
    started and stopped. A rule another run is checking meanwhile is left to it."""
    now = now or timezone.now()
    started = stopped = 0
    for rule_id in AlertRule.objects.filter(enabled=True).values_list("pk", flat=True):
        with transaction.atomic():
            rule = (AlertRule.objects.select_for_update(skip_locked=True)
                    .filter(pk=rule_id, enabled=True).first())
            if rule is None:
                continue
            holding = _holding(rule, now)
            firing = {state.object_id: state for state in AlertState.objects.filter(rule=rule)}
            newest = _newest(rule, set(holding) | set(firing), now)
            names = _names(rule, set(holding) | set(firing))
            for object_id in holding:
                value = newest.get(object_id)
                if object_id in firing:
                    AlertState.objects.filter(pk=firing[object_id].pk).update(value=value)
                    continue
                AlertState.objects.create(rule=rule, object_id=object_id, since=now, value=value)
                _tell(rule, Kind.ALERT_FIRING, object_id, names, value)
                started += 1
            for object_id, state in firing.items():
                if object_id in holding or _meets(rule, newest.get(object_id)):  # (meets it, window not full)
                    continue
                state.delete()
                _tell(rule, Kind.ALERT_RESOLVED, object_id, names, newest.get(object_id))
                stopped += 1
    return started, stopped


def _samples(rule: AlertRule, since: datetime, now: datetime):
    model = HostSample if rule.target == Target.HOST else InstanceSample
    rows = model.objects.filter(resolution=Resolution.RAW, time__gte=since, time__lte=now)
    if rule.target == Target.HOST:
        return rows.filter(host_id=rule.host_id) if rule.host_id else rows
    if rule.instance_id:
        return rows.filter(instance_id=rule.instance_id)
    return rows.filter(tenant_id=rule.tenant_id) if rule.tenant_id else rows


def _holding(rule: AlertRule, now: datetime) -> set[int]:
    """The hosts or instances sampled over the rule's whole duration (its first sample no later than two rounds
    after the start) with every sample meeting it: counted in the database, one row per object."""
    key = "host_id" if rule.target == Target.HOST else "instance_id"
    since = now - timedelta(seconds=rule.seconds)
    meets = Q(value__gt=rule.threshold) if rule.comparison == Comparison.ABOVE else Q(value__lt=rule.threshold)
    rows = (_samples(rule, since, now).annotate(value=_value(rule.measure)).values(key)
            .annotate(first=Min("time"), samples=Count("time"), met=Count("time", filter=meets)).order_by())
    covered = since + timedelta(seconds=2 * settings.CLOUDPANEL_METRICS_SECONDS)
    return {row[key] for row in rows if row["first"] <= covered and row["met"] == row["samples"]}


def _newest(rule: AlertRule, ids: set[int], now: datetime) -> dict[int, float | None]:
    """The newest sample's value of each of these objects, among the last three rounds (absent: not sampled)."""
    if not ids:
        return {}
    key = "host_id" if rule.target == Target.HOST else "instance_id"
    since = now - timedelta(seconds=3 * settings.CLOUDPANEL_METRICS_SECONDS)
    rows = (_samples(rule, since, now).filter(**{f"{key}__in": ids}).annotate(value=_value(rule.measure))
            .order_by("time").values_list(key, "value"))
    return dict(rows)


def _names(rule: AlertRule, ids: set[int]) -> dict[int, str]:
    model = Host if rule.target == Target.HOST else Instance
    return dict(model.objects.filter(pk__in=ids).values_list("pk", "name"))


def _tell(rule: AlertRule, kind: Kind, object_id: int, names: dict[int, str], value: float | None) -> None:
    name = names.get(object_id, f"#{object_id}")
    what = "host" if rule.target == Target.HOST else "instance"
    shown = "no longer sampled" if value is None else f"now {value:.1f}"
    title = (f"{rule.name}: {what} {name}: {rule.condition}" if kind == Kind.ALERT_FIRING
             else f"{rule.name} resolved: {what} {name}")
    notify(kind=kind, tenant_id=rule.tenant_id, title=title, body=f"{rule.condition} ({shown}).",
           link=f"/{what}s/{object_id}/", data={"rule": rule.pk, what: object_id, "value": value})


def firing(rules: list[AlertRule]) -> dict[int, list[AlertState]]:
    """The rules' current firing states by rule, each with the `name` of its host or instance."""
    found: dict[int, list[AlertState]] = defaultdict(list)
    states = list(AlertState.objects.filter(rule__in=rules).select_related("rule").order_by("since"))
    hosts = dict(Host.objects.filter(pk__in=[s.object_id for s in states if s.rule.target == Target.HOST])
                 .values_list("pk", "name"))
    instances = dict(Instance.objects.filter(pk__in=[s.object_id for s in states if s.rule.target != Target.HOST])
                     .values_list("pk", "name"))
    for state in states:
        state.name = (hosts if state.rule.target == Target.HOST else instances).get(state.object_id,
                                                                                    f"#{state.object_id}")
        found[state.rule_id].append(state)
    return found


def set_enabled(*, rule: AlertRule, enabled: bool) -> None:
    """Turn a rule on or off; off, what it was firing for is forgotten (told as resolved no more)."""
    with transaction.atomic():
        AlertRule.objects.filter(pk=rule.pk).update(enabled=enabled)
        if not enabled:
            AlertState.objects.filter(rule=rule).delete()
