"""Migration: an instance moved to another host of its technology, live while it runs, cold while it is stopped.

Platform admins ask for it (hosts are theirs to arrange). The checks a request can make without the hosts run
here, each refused with its reason; the worker (instances.migration_jobs) does the rest and checks again what
only the hosts can tell. While it is on its way, the target host counts the instance's vCPUs, RAM and disk as
held, so that nothing else is placed into the room it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from hosts import guests
from hosts import services as host_services
from hosts.exceptions import NoCapacity
from hosts.models import Host
from hosts.placement import Held, Verdict
from instances import boot, definition, groups, wants
from instances.choices import ActionStatus, Operation, Status
from instances.exceptions import InvalidInstance, InvalidOperation
from instances.models import Instance, InstanceAction, Leftover, Snapshot, Volume
from instances.services import request_operation


def _domain_type(instance: Instance, host: Host) -> str:
    """What the host runs the instance's guest with: a guest moves only between hosts that agree."""
    return "kvm" if definition.kvm(instance, host) else "tcg"


def needs(instance: Instance) -> Held:
    """What the instance holds of a host: its size, and the volumes that go along with it."""
    volume_gib = Volume.objects.live().filter(instance=instance).aggregate(gib=Sum("size_gib"))["gib"] or 0
    return Held(instance.vcpus, instance.memory_mib, instance.disk_gib + volume_gib)


def refusal(instance: Instance, target: Host, *, live: bool) -> str | None:
    """Why the instance cannot go to the target host (short of room, which the placement lock checks), or None."""
    source = instance.host
    if target.pk == source.pk:
        return f"'{instance.name}' is on {target.name} already"
    if target.technology != source.technology:
        return (f"host '{target.name}' runs {target.get_technology_display()}, not "
                f"{source.get_technology_display()}")
    if _domain_type(instance, target) != _domain_type(instance, source):
        return (f"host '{target.name}' runs guests with {_domain_type(instance, target).upper()}, '{source.name}' "
                f"with {_domain_type(instance, source).upper()}: a guest moves only between hosts that run it alike")
    if why := guests.refusal(target, definition.guest_of(instance)):
        return why
    if live and not urlsplit(target.uri).netloc:
        return (f"host '{target.name}' is registered as {target.uri}, which another host's libvirtd cannot reach: "
                "register it by its address (qemu+tcp://, qemu+tls:// or qemu+ssh://)")
    if Leftover.objects.filter(instance=instance, host=target).exists():
        return (f"host '{target.name}' still holds what '{instance.name}' left there (evacuated from it, or a "
                "migration to it that failed); it is removed once the host answers and is reconciled")
    if instance.ports.exists() and not target.can.networks:
        return f"host '{target.name}' cannot put NICs on CloudPanel networks"
    try:  # a platform admin's paths on the host: the target must allow them too
        boot.check_host_paths(boot.Boot(source=instance.boot_source, kernel=instance.kernel, initrd=instance.initrd,
                                        boot_disk=instance.boot_disk), target)
    except InvalidInstance as exc:
        return str(exc)
    return None


def check_migratable(instance: Instance, *, live: bool) -> None:
    """What the instance itself must be for a migration of that kind (refused with the reason)."""
    source = instance.host
    if source is None:
        raise InvalidOperation(f"'{instance.name}' is on no host")
    can = source.can
    if not (can.live_migration if live else can.cold_migration):
        kind = "running" if live else "stopped"
        raise InvalidOperation(f"{source.get_technology_display()} instances cannot be migrated while {kind}")
    if live and Snapshot.objects.live().filter(instance=instance).exists():
        raise InvalidOperation(f"'{instance.name}' has snapshots, which live inside its disk: a live migration's "
                               "copy does not carry them. Shut it down to migrate it cold (they go along), or "
                               "delete them")


def migrate(*, instance: Instance, host: Host | None, user: AbstractBaseUser | None) -> InstanceAction:
    """Accept a migration of the instance to the host given, or to the host placement picks among the others of its
    technology: live if it runs (or is paused), cold if it is stopped. 409 with the reason when it cannot go."""
    if instance.host is None:
        raise InvalidOperation(f"'{instance.name}' is on no host")
    current = Instance.objects.filter(pk=instance.pk).values_list("status", flat=True).first()
    live = current in (Status.RUNNING, Status.PAUSED)
    if current in (Status.RUNNING, Status.PAUSED, Status.STOPPED):
        check_migratable(instance, live=live)
    with transaction.atomic():
        wanted, group = needs(instance), groups.for_placement(instance.server_group, excluding=instance.pk)
        if host is None:
            candidates = Host.objects.filter(technology=instance.host.technology).exclude(pk=instance.host_id)
            refused = {c.pk: (c, why) for c in candidates if (why := refusal(instance, c, live=live))}
            fitting = [c.pk for c in candidates if c.pk not in refused]
            if not fitting:
                raise NoCapacity(f"no other host can take '{instance.name}'"
                                 + (": " + "; ".join(why for _, why in refused.values()) if refused else ""))
            try:
                decision = host_services.placement(
                    vcpus=wanted.vcpus, memory_mib=wanted.memory_mib, disk_gib=wanted.disk_gib, among=fitting,
                    tags=instance.host_tags.split(), group=group, networks=wants.networks_of(instance),
                    image=wants.image_of(instance))
            except NoCapacity as exc:
                raise NoCapacity(f"no other host can take '{instance.name}': {exc}") from None
            decision.verdicts += [Verdict(c.pk, c.name, False, why) for c, why in refused.values()]
        else:
            reason = refusal(instance, host, live=live)
            if reason:
                raise InvalidOperation(reason)
            decision = host_services.placement(
                vcpus=wanted.vcpus, memory_mib=wanted.memory_mib, disk_gib=wanted.disk_gib, host=host,
                tags=instance.host_tags.split(), group=group, networks=wants.networks_of(instance),
                image=wants.image_of(instance))
        target = decision.host
        Instance.objects.filter(pk=instance.pk).update(
            placement=decision.as_dict() | {"for": "migration", "at": timezone.now().isoformat()})
        return request_operation(instance=instance, operation=Operation.MIGRATE, user=user, target_host=target)


def cancel(*, instance: Instance) -> InstanceAction:
    """Ask the migration in flight to stop: the guest stays where it is (409 if none is in flight)."""
    with transaction.atomic():
        action = (InstanceAction.objects.select_for_update().in_flight()
                  .filter(instance=instance, operation=Operation.MIGRATE).first())
        if action is None:
            raise InvalidOperation(f"no migration of '{instance.name}' is in progress")
        action.cancel_requested = True
        action.save(update_fields=["cancel_requested"])
    return action


def inbound(host_ids: list[int]) -> Mapping[int, Held]:
    """What the instances migrating to each host hold of it meanwhile (a host capacity holder)."""
    held: dict[int, Held] = {}
    moving = (InstanceAction.objects.filter(operation=Operation.MIGRATE, target_host_id__in=host_ids,
                                            status__in=(ActionStatus.PENDING, ActionStatus.RUNNING))
              .select_related("instance"))
    for action in moving:
        wanted = needs(action.instance)
        now = held.get(action.target_host_id, Held())
        held[action.target_host_id] = Held(*(a + b for a, b in zip(now, wanted, strict=True)))
    return held
