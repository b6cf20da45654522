"""Backups of an instance's disk to the panel's backup store: on demand or on the instance's schedule (keeping its
newest few), incremental while it runs (the blocks changed since the last one, from a dirty bitmap) or full; restored
over the same instance or into a new one; billed per GiB-month of what they store."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from hosts import capabilities, guests
from hosts import services as host_services
from hosts.exceptions import NoCapacity
from hosts.guests import Guest
from instances import backup_store, services, tasks
from instances.choices import BackupStatus, BootSource, Operation, Status, TaskState
from instances.events import publish_on_commit
from instances.exceptions import InstanceBusy, InvalidInstance, InvalidOperation
from instances.models import Backup, Instance, InstanceAction, check_fields, check_name
from tenants import quotas

TECHNOLOGIES = [technology for technology, can in capabilities.TABLE.items() if can.backups]


def _check_disk(instance: Instance) -> None:
    if instance.host is None or not instance.host.can.backups:
        raise InvalidOperation("backups are for QEMU/KVM instances: this technology cannot take them here")
    if instance.boot_source not in (BootSource.IMAGE, BootSource.KERNEL) or not instance.disk_gib:
        raise InvalidOperation(f"'{instance.name}' has no disk of the panel's to back up (its volumes are not "
                               "backed up)")


def take(*, instance: Instance, user: AbstractBaseUser | None, name: str = "",
         scheduled: bool = False) -> InstanceAction:
    """Back up the instance's disk: incremental while it runs and the last backup's checkpoint is still on it, full
    otherwise (a stopped instance's disk is copied whole)."""
    _check_disk(instance)
    name = check_name(name) if name.strip() else ""
    backup = Backup(tenant_id=instance.tenant_id, instance=instance, instance_name=instance.name, name=name,
                    scheduled=scheduled, vcpus=instance.vcpus, memory_mib=instance.memory_mib,
                    disk_gib=instance.disk_gib, boot_source=instance.boot_source,
                    boot_kernel_id=instance.boot_kernel_id, image_id=instance.image_id, cmdline=instance.cmdline,
                    licensed=instance.licensed, created_by=user)
    with transaction.atomic():
        backup.save()
        return services.request_operation(instance=instance, operation=Operation.BACKUP, user=user, backup=backup)


def _available(backup: Backup) -> None:
    if backup.status != BackupStatus.AVAILABLE:
        raise InvalidOperation(f"the backup is {backup.get_status_display().lower()}")


def restore_over(*, backup: Backup, user: AbstractBaseUser | None) -> InstanceAction:
    """Put the backup's disk back in place of its instance's (stopped: nothing may run on the disk meanwhile)."""
    _available(backup)
    instance = backup.instance
    if instance is None or instance.status == Status.DELETED:
        raise InvalidOperation("the backup's instance was deleted: restore it into a new instance")
    _check_disk(instance)
    if instance.snapshots.live().exists():
        raise InvalidOperation(f"'{instance.name}' has snapshots inside the disk a restore replaces: delete them "
                               "first")
    if instance.disk_gib < backup.disk_gib:
        raise InvalidOperation(f"'{instance.name}' has a {instance.disk_gib} GiB disk, the backup {backup.disk_gib} "
                               "GiB")
    return services.request_operation(instance=instance, operation=Operation.RESTORE, user=user, backup=backup)


def _arch_of(backup: Backup, source: Instance | None) -> str:
    """What the backed-up guest was: its instance's architecture while it lives, else what it booted."""
    booted = backup.boot_kernel or backup.image
    return (source.arch if source is not None else "") or (booted.arch if booted is not None else "")


def restore_new(*, backup: Backup, name: str, user: AbstractBaseUser | None) -> InstanceAction:
    """Make a new instance of the backup's tenant from it: the size and boot its instance had, its disk the backup's,
    a NIC on each network of its instance if that still exists; placed on a host that takes backups, and left
    stopped. Returns its create."""
    _available(backup)
    source = backup.instance if backup.instance is not None and backup.instance.status != Status.DELETED else None
    new = Instance(name=name.strip(), tenant_id=backup.tenant_id, vcpus=backup.vcpus, memory_mib=backup.memory_mib,
                   disk_gib=backup.disk_gib, boot_source=backup.boot_source, boot_kernel=backup.boot_kernel,
                   image=backup.image, cmdline=backup.cmdline, restored_from=backup, created_by=user,
                   licensed=backup.licensed, arch=_arch_of(backup, source),
                   machine=source.machine if source is not None else "",
                   cpu_mode=source.cpu_mode if source is not None else "",
                   cpu_model=source.cpu_model if source is not None else "",
                   task_state=TaskState.CREATING, task_started_at=timezone.now())
    if backup.boot_source == BootSource.KERNEL and backup.boot_kernel is None:
        raise InvalidOperation("the backup's boot kernel was deleted from the library: nothing would boot its disk")
    check_fields(new, exclude=["host", "tenant", "created_by", "restored_from"])
    try:
        with transaction.atomic():
            quotas.check(tenant=backup.tenant, request={"instances": 1, "vcpus": new.vcpus,
                                                        "memory_mib": new.memory_mib, "disk_gib": new.disk_gib})
            # (placed as a stopped one: its disk; its vCPUs and RAM when it starts) beside its instance where it can
            guest = Guest(arch=new.arch, machine=new.machine, cpu_mode=new.cpu_mode, cpu_model=new.cpu_model,
                          vcpus=new.vcpus, made=source is not None)  # (its instance's CPU, while it lives)
            try:
                new.host = host_services.place(vcpus=0, memory_mib=0, disk_gib=new.disk_gib,
                                               host=source.host if source is not None else None,
                                               technologies=TECHNOLOGIES, guest=guest)
            except NoCapacity:
                if source is None:
                    raise
                new.host = host_services.place(vcpus=0, memory_mib=0, disk_gib=new.disk_gib,
                                               technologies=TECHNOLOGIES, guest=guest)
            new.arch = guests.arch_for(new.host, guest)
            new.cpu_mode, new.cpu_model = guests.cpu_of(new.host, guest)
            new.save()
            services.attach_nics(new, services.nics_like(source) if source is not None else [])
            action = InstanceAction.objects.create(instance=new, operation=Operation.CREATE, user=user, start=False)
            tasks.enqueue(action)
            publish_on_commit(new)
            return action
    except IntegrityError:
        raise InvalidInstance(f"an instance named '{new.name}' already exists in {backup.tenant}") from None


def _restoring(backup: Backup) -> bool:
    """Whether a restore from the backup (over its instance, or a new instance's create) is in flight."""
    return (InstanceAction.objects.filter(backup=backup).in_flight().exists()
            or backup.restores.filter(task_state__isnull=False).exists())


def delete(*, backup: Backup) -> None:
    """Delete a backup from the store (not one being taken, nor one an incremental backup is made over)."""
    with transaction.atomic():
        locked = Backup.objects.select_for_update().get(pk=backup.pk)
        if locked.status == BackupStatus.CREATING:
            raise InstanceBusy("the backup is being taken; wait for it to finish")
        if locked.status == BackupStatus.DELETED:
            return
        if locked.children.live().exists():
            raise InvalidOperation("incremental backups are made over this one: delete them first")
        if _restoring(locked):
            raise InstanceBusy("a restore from this backup is in progress; wait for it to finish")
        Backup.objects.filter(pk=backup.pk).update(status=BackupStatus.DELETED, deleted_at=timezone.now())
        transaction.on_commit(lambda: backup_store.remove(locked))


def set_schedule(*, instance: Instance, every_hours: int, keep: int) -> Instance:
    """Back the instance up every so many hours (0: no schedule), keeping its newest `keep` scheduled backups."""
    if every_hours:
        _check_disk(instance)
    for field, value in (("backup_every_hours", every_hours), ("backup_keep", keep)):
        try:
            Instance._meta.get_field(field).clean(value, instance)
        except ValidationError as exc:
            raise InvalidInstance(f"{field}: {' '.join(exc.messages)}") from None
    next_at = timezone.now() + timedelta(hours=every_hours) if every_hours else None
    Instance.objects.filter(pk=instance.pk).update(backup_every_hours=every_hours, backup_keep=keep,
                                                   backup_next_at=next_at)
    instance.backup_every_hours, instance.backup_keep, instance.backup_next_at = every_hours, keep, next_at
    return instance


def run_due(now=None) -> int:
    """Back up the instances whose schedule is due (one busy now is tried at the next tick); returns how many."""
    now = now or timezone.now()
    taken = 0
    due = Instance.objects.live().filter(backup_every_hours__gt=0, backup_next_at__lte=now).select_related("host")
    for instance in due:
        try:
            take(instance=instance, user=None, scheduled=True)
        except InstanceBusy:
            continue
        except InvalidOperation:
            pass  # (it cannot be backed up now: the next time comes round)
        else:
            taken += 1
        Instance.objects.filter(pk=instance.pk).update(
            backup_next_at=now + timedelta(hours=instance.backup_every_hours))
    return taken


def prune(instance_id: int) -> None:
    """Inside the caller's transaction: delete the instance's scheduled backups beyond its newest `backup_keep`,
    each once no backup left is made over it."""
    keep = Instance.objects.filter(pk=instance_id).values_list("backup_keep", flat=True).first()
    if not keep:
        return
    scheduled = list(Backup.objects.filter(instance_id=instance_id, scheduled=True, status=BackupStatus.AVAILABLE)
                     .order_by("-taken_at", "-id"))
    for backup in scheduled[keep:]:  # (newest first: an old chain goes whole once its last one may)
        if not backup.children.live().exists() and not _restoring(backup):
            Backup.objects.filter(pk=backup.pk).update(status=BackupStatus.DELETED, deleted_at=timezone.now())
            transaction.on_commit(lambda backup=backup: backup_store.remove(backup))
