"""Snapshots of an instance: taken, reverted to and deleted as operations of the instance (one at a time, in the
worker), within the tenant's quota."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from cloudpanel.exceptions import NotFound
from hosts import services as host_services
from instances.choices import BootSource, Operation, SnapshotStatus, Status
from instances.exceptions import InvalidInstance, InvalidOperation
from instances.models import Instance, InstanceAction, Snapshot, check_fields
from instances.services import request_operation
from tenants import quotas

RUNNING = (Status.RUNNING, Status.PAUSED)


def _check_snapshots(instance: Instance) -> None:
    """Refuse, with the reason, an instance whose technology or disks cannot hold snapshots."""
    if instance.host is None or not instance.host.can.snapshots:
        raise InvalidOperation("snapshots are for QEMU/KVM instances: this technology cannot take them here")
    if instance.boot_source in (BootSource.DISK, BootSource.ADOPTED):
        raise InvalidOperation("this instance's disks are not the panel's (a disk on the host, or an adopted "
                               "domain): their format may not hold snapshots")
    if instance.volumes.exists():
        raise InvalidOperation("this instance has volumes (or boots from one), which its snapshots would not hold: "
                               "detach them first")
    if instance.boot_source not in (BootSource.IMAGE,) and not instance.disk_gib:
        raise InvalidOperation("this instance has no disk to hold a snapshot: give it a disk when you create it")


def _plugged(instance: Instance) -> list[str]:
    return sorted(instance.ports.values_list("mac", flat=True))


def take(*, instance: Instance, name: str, description: str = "", memory: bool | None = None,
         user: AbstractBaseUser | None) -> InstanceAction:
    """Take a snapshot of the instance: with its memory while it runs (a guest that runs cannot have its disks
    alone taken here), of its disks alone while it is stopped."""
    _check_snapshots(instance)
    runs = instance.status in RUNNING
    if memory is None:
        memory = runs
    if memory and not runs:
        raise InvalidOperation(f"'{instance.name}' is {instance.get_status_display().lower()}: there is no memory "
                               "to keep; take a disk-only snapshot")
    if not memory and runs:
        raise InvalidOperation(f"'{instance.name}' runs: its snapshot keeps its memory too (a disk-only snapshot "
                               "of a running guest could not be reverted to here); stop it first for disks alone")
    snapshot = Snapshot(instance=instance, name=name, description=description, memory=memory, created_by=user,
                        size_gib=Snapshot.billed_gib(disk_gib=instance.disk_gib, memory_mib=instance.memory_mib,
                                                     memory=memory),
                        macs=_plugged(instance), cdrom_id=instance.cdrom_id, vcpus=instance.vcpus,
                        memory_mib=instance.memory_mib, disk_gib=instance.disk_gib)
    check_fields(snapshot, exclude=["instance", "created_by", "cdrom"])
    try:
        with transaction.atomic():
            quotas.check(tenant=instance.tenant, request={"snapshots": 1})
            host_services.check_pool(host_id=instance.host_id, disk_gib=snapshot.size_gib)
            snapshot.save()
            return request_operation(instance=instance, operation=Operation.SNAPSHOT, user=user, snapshot=snapshot)
    except IntegrityError:
        raise InvalidInstance(f"'{instance.name}' already has a snapshot named '{name}'") from None


def _of(instance: Instance, snapshot: Snapshot) -> None:
    if snapshot.instance_id != instance.pk or snapshot.status == SnapshotStatus.DELETED:
        raise NotFound("No such snapshot of this instance.")


def revert(*, instance: Instance, snapshot: Snapshot, user: AbstractBaseUser | None) -> InstanceAction:
    """Bring the instance back to the snapshot (running from that moment if its memory was kept, else stopped).

    Refused when the NICs or the CD-ROM changed since: a revert would bring back devices the panel no longer
    has (their addresses, their firewall) or take away ones it has.
    """
    _of(instance, snapshot)
    if snapshot.status != SnapshotStatus.AVAILABLE:
        raise InvalidOperation(f"the snapshot '{snapshot.name}' is {snapshot.get_status_display().lower()}")
    if _plugged(instance) != sorted(snapshot.macs):
        raise InvalidOperation(f"the NICs of '{instance.name}' changed since the snapshot '{snapshot.name}' was "
                               "taken: plug or unplug them to match it, or take a new snapshot")
    then = (snapshot.vcpus, snapshot.memory_mib, snapshot.disk_gib)
    if (instance.vcpus, instance.memory_mib, instance.disk_gib) != then:
        raise InvalidOperation(f"'{instance.name}' was resized since the snapshot '{snapshot.name}' was taken "
                               f"({then[0]} vCPU, {then[1]} MiB, {then[2]} GiB then): a revert would bring that size "
                               "back; resize it to match, or take a new snapshot")
    if instance.cdrom_id != snapshot.cdrom_id:
        raise InvalidOperation(f"the CD-ROM of '{instance.name}' changed since the snapshot '{snapshot.name}' was "
                               "taken: put back what it held, or take a new snapshot")
    with transaction.atomic():
        if snapshot.memory and instance.status not in RUNNING:  # the revert starts it: its host must have room now
            host_services.check_start(host_id=instance.host_id, instance_id=instance.pk, vcpus=instance.vcpus,
                                      memory_mib=instance.memory_mib)
        return request_operation(instance=instance, operation=Operation.REVERT, user=user, snapshot=snapshot)


def delete(*, instance: Instance, snapshot: Snapshot, user: AbstractBaseUser | None) -> InstanceAction:
    """Delete a snapshot from the host (a failed one too: it may have been taken before its worker went)."""
    _of(instance, snapshot)
    if snapshot.status not in (SnapshotStatus.AVAILABLE, SnapshotStatus.ERROR):
        raise InvalidOperation(f"the snapshot '{snapshot.name}' is {snapshot.get_status_display().lower()}")
    return request_operation(instance=instance, operation=Operation.UNSNAPSHOT, user=user, snapshot=snapshot)
