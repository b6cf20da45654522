"""Host maintenance: nothing new is placed on the host, and its instances leave it, each by its own policy.

The plan comes first (plan): for each instance on the host, what will become of it and why: a live migration
(running or paused) or a cold one (stopped) to the host placement would choose (its tags and server group kept),
next to what the plan sends there before it, a shut-down (its policy says so), or nothing (with the reason: busy,
in error, nowhere to go). Entering maintenance (enter) marks the host and asks for each step; the page and the API
show each instance's migration as it goes. Leaving maintenance (leave) lets placement use the host again; nothing
moves back by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from cloudpanel.exceptions import DomainError
from hosts import placement as placing
from hosts import services as host_services
from hosts.models import Host
from hosts.placement import Held
from instances import migration, wants
from instances.choices import GroupPolicy, MaintenancePolicy, Operation, Status
from instances.exceptions import InvalidOperation
from instances.models import Instance, InstanceAction
from instances.services import request_operation

MIGRATE_LIVE, MIGRATE_COLD, SHUT_DOWN, FORCE_OFF, STAYS = ("migrate live", "migrate cold", "shut down", "force off",
                                                        "stays")


@dataclass
class Step:
    """What becomes of one instance of the host."""

    instance: Instance
    action: str  # MIGRATE_LIVE, MIGRATE_COLD, SHUT_DOWN or STAYS
    target: Host | None = None
    reason: str = ""
    outcome: str = ""  # once asked for: "" (accepted) or why it was refused
    current: InstanceAction | None = None  # the operation in flight on it, if any (see in_flight)
    placement: dict | None = None  # placement's decision for a move: every other host, kept or dropped and why


def _group(instance: Instance, moved: dict[int, Host]) -> placing.Group | None:
    """The instance's server group as placement sees it, its other members where the plan sends them."""
    group = instance.server_group
    if group is None:
        return None
    members = {}
    for pk, host_id, name in (Instance.objects.live().filter(server_group=group, host__isnull=False)
                              .exclude(pk=instance.pk).values_list("pk", "host_id", "name")):
        members[moved[pk].pk if pk in moved else host_id] = name
    return placing.Group(name=group.name, affinity=group.policy == GroupPolicy.AFFINITY, members=members)


def _leaves(instance: Instance, *, live: bool, candidates: list[Host], used: dict[int, Held],
            moved: dict[int, Host]) -> Step:
    """Where the instance goes: where placement would put it among the candidates (its tags and server group kept,
    with what the plan already sends where)."""
    kind = MIGRATE_LIVE if live else MIGRATE_COLD
    try:
        migration.check_migratable(instance, live=live)
    except InvalidOperation as exc:
        return Step(instance, STAYS, reason=str(exc))
    wanted = migration.needs(instance)
    refusals = {c.pk: migration.refusal(instance, c, live=live) for c in candidates}
    refused = [reason for reason in refusals.values() if reason]
    fitting = [c for c in candidates if not refusals[c.pk]]
    request = placing.Request(vcpus=wanted.vcpus, memory_mib=wanted.memory_mib, disk_gib=wanted.disk_gib,
                              tags=frozenset(instance.host_tags.split()), group=_group(instance, moved),
                              networks=tuple(wants.networks_of(instance)), image=wants.image_of(instance))
    decision = placing.decide(fitting, request, used)
    decision.verdicts += [placing.Verdict(c.pk, c.name, False, refusals[c.pk]) for c in candidates
                          if refusals[c.pk]]
    if decision.host is None:
        reasons = refused + [v.reason for v in decision.verdicts if not v.kept and v.reason not in refused]
        return Step(instance, STAYS, reason="no other host can take it: " + ("; ".join(reasons) or "there is none"),
                    placement=decision.as_dict())
    target = decision.host
    used[target.pk] = Held(*(a + b for a, b in zip(used[target.pk], wanted, strict=True)))
    moved[instance.pk] = target
    return Step(instance, kind, target=target, placement=decision.as_dict())


def plan(host: Host) -> list[Step]:
    """What entering maintenance would do to each instance of the host (nothing is held or changed)."""
    candidates = list(Host.objects.filter(technology=host.technology).exclude(pk=host.pk))
    used = host_services.allocations([c.pk for c in candidates])
    steps, moved = [], {}
    for instance in (Instance.objects.filter(host=host).live().select_related("host", "tenant", "server_group")
                     .order_by("name")):
        if instance.task_state:
            steps.append(Step(instance, STAYS, reason=f"busy: {instance.get_task_state_display().lower()}; enter "
                                                      "maintenance again once it is done"))
        elif instance.status in (Status.RUNNING, Status.PAUSED):
            if instance.on_host_maintenance == MaintenancePolicy.STOP and instance.status == Status.PAUSED:
                steps.append(Step(instance, FORCE_OFF, reason="its policy is to stop it, and a paused guest cannot "
                                                              "shut down"))
            elif instance.on_host_maintenance == MaintenancePolicy.STOP:
                steps.append(Step(instance, SHUT_DOWN, reason="its policy is to shut it down (forced off if it has "
                                                              "not stopped when the shut-down timeout ends)"))
            else:
                steps.append(_leaves(instance, live=True, candidates=candidates, used=used, moved=moved))
        elif instance.status == Status.STOPPED:
            steps.append(_leaves(instance, live=False, candidates=candidates, used=used, moved=moved))
        else:
            steps.append(Step(instance, STAYS, reason=f"it is {instance.get_status_display().lower()}: nothing "
                                                      "the panel can move"))
    return steps


def enter(*, host: Host, user: AbstractBaseUser | None) -> list[Step]:
    """Put the host in maintenance and ask for each step of its plan; returns the steps, each with its outcome."""
    with transaction.atomic():
        host_services.set_maintenance(host=host, on=True)
    steps = plan(host)
    for step in steps:
        try:
            if step.action in (MIGRATE_LIVE, MIGRATE_COLD):
                migration.migrate(instance=step.instance, host=step.target, user=user)
            elif step.action == SHUT_DOWN:
                request_operation(instance=step.instance, operation=Operation.SHUTDOWN, user=user, force=True)
            elif step.action == FORCE_OFF:
                request_operation(instance=step.instance, operation=Operation.POWEROFF, user=user)
        except DomainError as exc:
            step.outcome = str(exc)
    return steps


def set_policy(*, instance: Instance, policy: str) -> Instance:
    """What becomes of the instance when its host goes into maintenance: migrated or shut down."""
    if policy not in MaintenancePolicy.values:
        raise InvalidOperation(f"the policy is one of: {', '.join(MaintenancePolicy.values)}")
    Instance.objects.filter(pk=instance.pk).update(on_host_maintenance=policy)
    instance.on_host_maintenance = policy
    return instance


def leave(*, host: Host) -> Host:
    """Let placement use the host again (what left it stays where it went)."""
    with transaction.atomic():
        return host_services.set_maintenance(host=host, on=False)


def with_progress(host: Host, steps: list[Step]) -> list[Step]:
    """The steps, each with the operation in flight on its instance (a migration away, a shut-down), if any."""
    actions = InstanceAction.objects.in_flight().filter(instance__host=host).select_related("target_host")
    current = {action.instance_id: action for action in actions}
    for step in steps:
        step.current = current.get(step.instance.pk)
    return steps
