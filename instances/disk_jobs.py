"""The worker's steps on disks that its tasks run: backups into the store and restores from it, volumes' own
operations, and the volumes a definition holds."""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings

from hosts import hypervisor
from hosts.models import Host
from images import distribution, processing
from instances import backup_store
from instances.choices import BackupStatus, VolumeTask
from instances.models import Backup, Instance, InstanceAction, Volume

log = logging.getLogger(__name__)


def volume_path(volume: Volume, host: Host) -> str:
    path = hypervisor.volume_path(host.uri, volume.pool, volume.volume_name)
    if path is None:
        raise hypervisor.HypervisorError(f"the volume '{volume.name}' is not in the pool {volume.pool} of {host.name}")
    return path


def volume_disks(instance: Instance, host: Host) -> dict[str, object]:
    """The instance's volumes as disks: the one it boots from, and those attached."""
    disks: dict[str, object] = {"volumes": ()}
    for volume in Volume.objects.filter(instance=instance).order_by("device"):
        if volume.boot:
            disks["boot_disk"] = volume_path(volume, host)
        else:
            disks["volumes"] += ((volume_path(volume, host), volume.device),)
    return disks


def restore_disk(backup: Backup | None, host: Host, volume: str, size_gib: int) -> str:
    """Put the backup's disk (its chain read through) in the host's pool as the volume of that name (replacing one
    there), a standalone qcow2 of size_gib; returns its path."""
    if backup is None or backup.status != BackupStatus.AVAILABLE:
        raise hypervisor.HypervisorError("the backup is no longer available")
    base, top = f"{volume}.restore-base", f"{volume}.restore-top"
    with processing.scratch() as workdir:
        flat = Path(workdir) / "disk.qcow2"
        backup_store.flatten(backup, flat)
        for leftover in (top, base):
            hypervisor.delete_volume(host.uri, host.storage_pool, leftover)
        try:
            with open(flat, "rb") as source:
                base_path = hypervisor.upload_volume(host.uri, host.storage_pool, base, size=flat.stat().st_size,
                                                     read=source.read)
            flat.unlink()
            hypervisor.create_volume(host.uri, host.storage_pool, top, size_gib,
                                     backing=hypervisor.Backing(base_path, "qcow2"))
            hypervisor.delete_volume(host.uri, host.storage_pool, volume)
            return hypervisor.clone_volume(host.uri, host.storage_pool, top, volume, size_gib)
        finally:
            for leftover in (top, base):
                hypervisor.delete_volume(host.uri, host.storage_pool, leftover)


def backup_parent(instance: Instance, host: Host, backup: Backup) -> Backup | None:
    """What the backup is incremental over: the instance's last one, while its checkpoint is still on the domain
    and its chain is shorter than settings.CLOUDPANEL_BACKUP_CHAIN; else None (a full backup)."""
    last = (Backup.objects.filter(instance=instance, status=BackupStatus.AVAILABLE).exclude(pk=backup.pk)
            .order_by("-taken_at", "-id").first())
    if last is None or last.checkpoint not in hypervisor.checkpoints(host.uri, str(instance.uuid)):
        return None
    depth, link = 0, last
    while link.parent_id is not None:
        depth, link = depth + 1, link.parent
    return last if depth < settings.CLOUDPANEL_BACKUP_CHAIN else None


def back_up(action: InstanceAction) -> str:
    """Back the action's instance up into the store: by a backup job while it runs (incremental over the last backup
    where it can), its disk whole when it is stopped."""
    instance, host, backup = action.instance, action.instance.host, action.backup
    if backup is None:
        raise hypervisor.HypervisorError("the backup's record was removed")
    uuid, copy = str(instance.uuid), f"cp-backup-{backup.uuid}.qcow2"
    hypervisor.delete_volume(host.uri, host.storage_pool, copy)  # (one an attempt left)
    running = hypervisor.state(host.uri, uuid) in (hypervisor.PowerState.RUNNING, hypervisor.PowerState.PAUSED)
    parent, quiesced = None, False
    try:
        if running:  # a push-mode job: a consistent copy as of its start, a checkpoint for the next one
            parent = backup_parent(instance, host, backup)
            # (recorded first: the parent is not deleted while this one is made over it)
            Backup.objects.filter(pk=backup.pk).update(parent=parent)
            path = hypervisor.create_volume(host.uri, host.storage_pool, copy, instance.disk_gib)
            quiesced = hypervisor.back_up(host.uri, uuid, target=path, checkpoint=backup.checkpoint,
                                          incremental=parent.checkpoint if parent else "")
        else:  # stopped: its disk whole (its layers flattened in), which nothing changed since its last checkpoint
            hypervisor.clone_volume(host.uri, host.storage_pool, instance.volume_name, copy, instance.disk_gib)
        with hypervisor.reading_volume(host.uri, host.storage_pool, copy) as read:
            stored = backup_store.store(backup, read, parent=parent)
    finally:
        hypervisor.delete_volume(host.uri, host.storage_pool, copy)
    Backup.objects.filter(pk=backup.pk).update(parent=parent, stored_bytes=stored, quiesced=quiesced)
    if running:  # only the newest is built on (should this fail, the next backup is incremental over older ones)
        try:
            hypervisor.drop_checkpoints(host.uri, uuid, keep=backup.checkpoint)
        except hypervisor.HypervisorError as exc:
            log.warning("instance %s: older checkpoints stay: %s", instance.pk, exc)
    return hypervisor.state(host.uri, uuid)


def restore(action: InstanceAction) -> str:
    """Put the action's backup back over its instance's disk, which nothing may run on (its checkpoints go with the
    old disk). A domain that is gone (an instance in error) gets its disk back all the same."""
    instance, host, uuid = action.instance, action.instance.host, str(action.instance.uuid)
    try:
        current = hypervisor.state(host.uri, uuid)
    except hypervisor.DomainNotFound:
        current = None
    if current not in (None, hypervisor.PowerState.STOPPED, hypervisor.PowerState.CRASHED):
        raise hypervisor.HypervisorError(f"the guest is {current.value} on its host: stop it before a restore "
                                         "replaces its disk")
    restore_disk(action.backup, host, instance.volume_name, instance.disk_gib)
    if current is None:
        return instance.status
    hypervisor.drop_checkpoints(host.uri, uuid, metadata_only=True)
    return hypervisor.state(host.uri, uuid)


def volume_work(volume: Volume) -> None:
    """A volume's own operation on its host: made (empty, or over its image's copy there), grown, or deleted."""
    host = volume.host
    if volume.task_state == VolumeTask.CREATING:
        backing = None
        if volume.image_name:
            if volume.image is None:
                raise hypervisor.HypervisorError(f"the image {volume.image_name} was deleted before the volume was "
                                                 "made")
            base = distribution.ensure_copy(image=volume.image, host=host)
            backing = hypervisor.Backing(base.path, volume.image.disk_format)
        hypervisor.create_volume(host.uri, volume.pool, volume.volume_name, volume.size_gib, backing=backing)
    elif volume.task_state == VolumeTask.EXTENDING:
        hypervisor.grow_disk(host.uri, None, pool=volume.pool, volume=volume.volume_name, size_gib=volume.size_gib)
    elif volume.task_state == VolumeTask.DELETING:
        hypervisor.delete_volume(host.uri, volume.pool, volume.volume_name)
