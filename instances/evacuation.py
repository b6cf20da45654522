"""Evacuation: the instances of a host that is down, rebuilt on other hosts from what the panel keeps of them.

A host that does not answer keeps its instances' disks with it. What can be rebuilt elsewhere is rebuilt: from the
instance's newest backup (the backup store is the panel's, not the host's), else from its library image (what was
written to its disk since is lost: the plan says so), or booted again where it has no disk. The rest stays, with the
reason: a volume or a disk on the host, an ISO install without a backup, a container (its tree is on the host). Each
instance keeps its name, UUID, NICs and addresses; it is created on its new host as a create would be, and started
if it ran. What it left on the dead host (its domain, disk and seed, its NICs' pins and filters) is recorded as a
Leftover and removed once that host answers again; the host is disabled meanwhile, so that nothing new lands there.

Only a platform admin evacuates, and only a host silent for CLOUDPANEL_HOST_DOWN_SECONDS, saying that it is really
off: a host that merely lost its network would otherwise run each guest twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from cloudpanel.exceptions import DomainError
from hosts import capabilities
from hosts import placement as placing
from hosts import services as host_services
from hosts.choices import HostState
from hosts.exceptions import NoCapacity
from hosts.models import Host
from images.choices import DiskFormat, ImageStatus
from instances import boot, definition, groups, tasks, wants
from instances.choices import BackupStatus, BootSource, Cause, Operation, SnapshotStatus, Status, TaskState
from instances.events import publish_on_commit
from instances.exceptions import InvalidInstance, InvalidOperation
from instances.models import Backup, Instance, InstanceAction, Leftover, Snapshot, Volume
from instances.services import set_status
from networks import provisioning

FROM_BACKUP, FROM_IMAGE, BOOT_AGAIN, STAYS = "from backup", "from image", "boot again", "stays"


@dataclass
class Step:
    """What evacuating does to one instance of the host."""

    instance: Instance
    action: str  # FROM_BACKUP, FROM_IMAGE, BOOT_AGAIN or STAYS
    reason: str = ""  # why it stays, or what a rebuild loses
    backup: Backup | None = None
    target: Host | None = None
    placement: dict | None = None
    start: bool = False
    outcome: str = ""  # once asked for: "" (accepted) or why it was refused

    @property
    def label(self) -> str:
        return {FROM_BACKUP: "Rebuilt from its backup", FROM_IMAGE: "Rebuilt from its image",
                BOOT_AGAIN: "Booted again", STAYS: "Stays"}[self.action]


def _was_running(instance: Instance) -> bool:
    """Whether it ran when its host went silent (an unknown one: the status it had before)."""
    status = instance.status
    if status == Status.UNKNOWN:
        status = (instance.state_changes.filter(to_status=Status.UNKNOWN).order_by("-at", "-id")
                  .values_list("from_status", flat=True).first())
    return status in (Status.RUNNING, Status.PAUSED, Status.SUSPENDED)


def _newest_backup(instance: Instance) -> Backup | None:
    return (Backup.objects.filter(instance=instance, status=BackupStatus.AVAILABLE)
            .order_by("-taken_at", "-id").first())


def _source(instance: Instance) -> Step:
    """What the instance can be rebuilt from (no host chosen yet)."""
    step = Step(instance, STAYS, start=_was_running(instance))
    if instance.task_state:
        step.reason = f"busy: {instance.get_task_state_display().lower()}; evacuate again once it has timed out"
    elif instance.boot_source in (BootSource.VOLUME, BootSource.DISK, BootSource.ADOPTED):
        step.reason = {BootSource.VOLUME: "it boots from a volume, which is on the host",
                       BootSource.DISK: "it boots a disk on the host",
                       BootSource.ADOPTED: "its definition and disks were made outside the panel, on the host"
                       }[instance.boot_source]
    elif Volume.objects.live().filter(instance=instance).exists():
        step.reason = "volumes attached to it are on the host: detach them from the panel first"
    elif (backup := _newest_backup(instance)) is not None and instance.disk_gib:
        when = backup.taken_at.strftime("%Y-%m-%d %H:%M UTC") if backup.taken_at else "its backup"
        step.action, step.backup = FROM_BACKUP, backup
        step.reason = f"its disk as backed up at {when}: what was written since is lost"
    elif instance.boot_source == BootSource.IMAGE:
        image = instance.image
        if image is None or image.status != ImageStatus.AVAILABLE:
            step.reason = "its image is no longer in the library, and it has no backup"
        elif image.disk_format == DiskFormat.ISO:
            step.reason = "it was installed from an ISO onto a disk on the host, and it has no backup"
        else:
            step.action = FROM_IMAGE
            step.reason = f"a new disk from the image {image.name}: what was written to its disk is lost"
    elif instance.boot_source == BootSource.CONTAINER:
        step.reason = "a container's root filesystem is a tree on its host: delete it and create it again"
    elif instance.disk_gib:
        step.reason = "its disk was only on the host, and it has no backup"
    elif instance.boot_source == BootSource.KERNEL and instance.boot_kernel is None and not instance.kernel:
        step.reason = "its boot kernel was deleted from the library"
    else:
        step.action, step.reason = BOOT_AGAIN, "it has no disk: nothing is lost"
    return step


def _group(instance: Instance, host: Host) -> placing.Group | None:
    """Its server group as placement sees it: members still on the host being evacuated are leaving it too (those
    already rebuilt elsewhere count where they are now)."""
    group = groups.for_placement(instance.server_group, excluding=instance.pk)
    if group is None:
        return None
    return placing.Group(group.name, group.affinity, {h: n for h, n in group.members.items() if h != host.pk})


def _place(step: Step, host: Host) -> None:
    """Choose its new host (placement, with the hosts locked: inside the caller's transaction) among the others that
    allow a platform admin's host paths it boots, and hold nothing it left there from an earlier evacuation."""
    instance = step.instance
    technologies = boot.technologies_for(instance.boot_source, needs_cdrom=bool(instance.user_data)
                                         or instance.cdrom_id is not None, library=instance.boot_kernel_id is not None)
    if step.backup is not None:  # a backup is put back on hosts that take backups
        technologies = [t for t in technologies if capabilities.of(t).backups]
    paths = boot.Boot(source=instance.boot_source, kernel=instance.kernel, initrd=instance.initrd,
                      boot_disk=instance.boot_disk)
    others = []
    for other in Host.objects.exclude(pk=host.pk).exclude(leftovers__instance=instance):
        try:
            boot.check_host_paths(paths, other)
        except InvalidInstance:
            continue
        others.append(other.pk)
    try:
        decision = host_services.placement(
            vcpus=instance.vcpus, memory_mib=instance.memory_mib, disk_gib=instance.disk_gib,
            technologies=technologies, among=others, tags=instance.host_tags.split(), group=_group(instance, host),
            networks=wants.networks_of(instance), image=wants.image_of(instance) if step.action == FROM_IMAGE else None,
            guest=definition.guest_of(instance))
    except NoCapacity as exc:
        step.action, step.reason = STAYS, "no other host can take it: " + str(exc).removeprefix("no host can take it: ")
        return
    step.target, step.placement = decision.host, decision.as_dict()


def _check_host(host: Host) -> None:
    """Only a host that has not answered for CLOUDPANEL_HOST_DOWN_SECONDS is evacuated (offline, or in error since)."""
    if host.state == HostState.ONLINE:
        raise InvalidOperation(f"host '{host.name}' is online: migrate its instances, or put it in maintenance")
    limit = settings.CLOUDPANEL_HOST_DOWN_SECONDS
    if host.last_seen_at is not None and host.last_seen_at > timezone.now() - timedelta(seconds=limit):
        raise InvalidOperation(f"host '{host.name}' answered at {host.last_seen_at:%Y-%m-%d %H:%M:%S} UTC: only a "
                               f"host silent for {limit} s is evacuated")


def _each(host: Host, user: AbstractBaseUser | None, *, queue: bool) -> list[Step]:
    """Rebuild elsewhere each instance of the host that can be, one transaction each (a refusal keeps the others);
    queue: send their creates to the workers (else, for a plan, only record them)."""
    steps = []
    for pk in Instance.objects.filter(host=host).live().order_by("name").values_list("pk", flat=True):
        step = None
        try:
            with transaction.atomic():
                _check_host(Host.objects.select_for_update().get(pk=host.pk))  # (one that answered meanwhile: stop)
                instance = (Instance.objects.select_for_update(of=("self",))
                            .select_related("image", "boot_kernel", "server_group")
                            .filter(pk=pk, host=host).exclude(status=Status.DELETED).first())
                if instance is None:
                    continue
                step = _source(instance)
                if step.action != STAYS:
                    _place(step, host)
                if step.action == STAYS:
                    step.outcome = step.reason
                else:
                    _rebuild(step, host, user, queue=queue)
        except DomainError as exc:
            if step is None:
                raise
            step.outcome = str(exc)
        steps.append(step)
    return steps


def plan(host: Host) -> list[Step]:
    """What evacuating the host would do to each of its instances, worked out as evacuate would (each placed beside
    those before it) and then undone: nothing is changed or held."""
    _check_host(host)
    with transaction.atomic():
        steps = _each(host, None, queue=False)
        transaction.set_rollback(True)
    for step in steps:
        step.outcome = ""
    return steps


def evacuate(*, host: Host, user: AbstractBaseUser | None, host_is_off: bool) -> list[Step]:
    """Disable the host and rebuild each instance its plan can elsewhere; returns the steps with their outcomes."""
    _check_host(host)
    if not host_is_off:
        raise InvalidOperation(f"make sure host '{host.name}' is off (powered down or fenced) and say so: a guest "
                               "rebuilt elsewhere while its old copy still runs would run twice")
    Host.objects.filter(pk=host.pk).update(enabled=False)  # nothing new lands on it when it comes back
    return _each(host, user, queue=True)


def _rebuild(step: Step, host: Host, user: AbstractBaseUser | None, *, queue: bool) -> None:
    """Inside the transaction with the instance locked: move its record to the new host and queue its create there
    (the step's instance is left as it was, for the plan to show)."""
    instance, now = Instance.objects.get(pk=step.instance.pk), timezone.now()
    ports = list(instance.ports.select_related("network"))
    Leftover.objects.update_or_create(instance=instance, host=host, defaults={
        "pool": host.storage_pool, "nics": provisioning.nic_records(ports)})
    Snapshot.objects.filter(instance=instance).exclude(status=SnapshotStatus.DELETED).update(
        status=SnapshotStatus.DELETED, deleted_at=now)  # (they lived inside its disk on the host)
    detail = f"evacuated from host '{host.name}' to '{step.target.name}': {step.reason}"
    action = InstanceAction.objects.create(instance=instance, operation=Operation.CREATE, user=user, start=step.start)
    set_status(instance, Status.PENDING, Cause.ACTION, action=action, detail=detail)
    instance.host, instance.restored_from = step.target, step.backup
    instance.task_state, instance.task_started_at, instance.status_reason = TaskState.CREATING, now, detail
    instance.placement = step.placement | {"for": "evacuation", "at": now.isoformat()}
    instance.save(update_fields=["host", "restored_from", "task_state", "task_started_at", "status",
                                 "status_changed_at", "status_reason", "placement"])
    if queue:
        tasks.enqueue(action)
        publish_on_commit(instance)
