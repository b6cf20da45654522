"""Volumes: disks of a tenant's own in a host's storage pool, made empty or from a library image, attached to an
instance of that host, extended (never shrunk), deleted once detached, or booted from.

A volume's own operations (create, the extend of a detached one, delete) are claimed on its row (task_state) and run
by its host's worker under a lease, as an instance's actions are; attach, detach and the extend of an attached volume
are operations of its instance (queued behind the instance's others), which hold the volume's row meanwhile.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Now
from django.utils import timezone

from cloudpanel.exceptions import NotFound
from hosts import capabilities
from hosts import services as host_services
from hosts.models import Host
from images import cloudinit
from images.choices import DISK_FORMATS, DiskFormat, ImageStatus
from images.models import Image, usable_by
from instances import services, tasks
from instances.choices import Operation, Status, VolumeStatus, VolumeTask
from instances.events import publish_volume_on_commit
from instances.exceptions import InstanceBusy, InvalidInstance, InvalidOperation
from instances.models import MAX_VOLUME_GIB, Instance, InstanceAction, Volume, check_fields
from tenants import quotas
from tenants.models import Tenant

# vda and vdb are an instance's own disks (its boot disk, its disk); volumes take the rest of the virtio bus.
DEVICES = tuple(f"vd{letter}" for letter in "cdefghijklmnopqrstuvwxyz")
TECHNOLOGIES = [technology for technology, can in capabilities.TABLE.items() if can.volumes]
RUNNING = (Status.RUNNING, Status.PAUSED)


def _image_size(image: Image, tenant_id: int, size_gib: int | None) -> int:
    """The size of a volume made from the image: the one asked for, at least what the image needs."""
    if not usable_by(image, tenant_id):
        raise NotFound("no such image")
    if image.status != ImageStatus.AVAILABLE:
        raise InvalidInstance(f"the image {image.name} is {image.get_status_display().lower()}, not available")
    if image.disk_format not in DISK_FORMATS or image.disk_format == DiskFormat.ISO:
        raise InvalidInstance(f"{image.name} is a {image.get_disk_format_display().lower()}, not a disk image to "
                              "copy onto a volume")
    needed = max(1, image.min_disk_gib, -(-image.virtual_size // services.GIB))
    if size_gib and size_gib < needed:
        raise InvalidInstance(f"{image.name} needs a volume of at least {needed} GiB")
    return size_gib or needed


def create(*, user: AbstractBaseUser | None, tenant: Tenant, name: str, size_gib: int | None = None,
           description: str = "", image: Image | None = None, instance: Instance | None = None,
           host: Host | None = None) -> Volume:
    """Accept a new volume, empty or a copy of a library image: on the host of `instance` (to attach it there), on
    `host` (platform admins), or on the host placement finds room on."""
    if image is not None:
        size_gib = _image_size(image, tenant.pk, size_gib)
    if not size_gib:
        raise InvalidInstance("give the volume's size in GiB (or an image to copy)")
    if instance is not None:
        if instance.tenant_id != tenant.pk:
            raise NotFound("no such instance")
        if instance.host is None or instance.status == Status.DELETED:
            raise InvalidOperation(f"'{instance.name}' is deleted")
        host = instance.host
    volume = Volume(name=name.strip(), description=description, tenant=tenant, size_gib=size_gib, image=image,
                    image_name=image.name if image is not None else "",
                    created_by=user, task_state=VolumeTask.CREATING, task_started_at=timezone.now())
    check_fields(volume, exclude=["tenant", "host", "image", "instance", "created_by"])
    try:
        with transaction.atomic():
            quotas.check(tenant=tenant, request={"volumes": 1, "volume_gib": size_gib})
            if image is not None and not Image.objects.select_for_update().filter(pk=image.pk).exists():
                raise InvalidInstance(f"{image.name} was deleted meanwhile")
            if instance is not None:  # beside its instance, whether or not its host takes new instances
                if not host.can.volumes:
                    raise InvalidOperation(f"{host.get_technology_display()} instances have no volumes here")
                host_services.check_pool(host_id=host.pk, disk_gib=size_gib)
                volume.host = host
            else:
                volume.host = host_services.place(vcpus=0, memory_mib=0, disk_gib=size_gib, host=host,
                                                  technologies=TECHNOLOGIES)
                if not volume.host.can.volumes:
                    raise InvalidOperation(f"host '{volume.host.name}' cannot hold volumes (its technology)")
            volume.pool = volume.host.storage_pool
            volume.save()
            tasks.enqueue_volume(volume)
            publish_volume_on_commit(volume)
    except IntegrityError:
        raise InvalidInstance(f"a volume named '{volume.name}' already exists in {tenant}") from None
    return volume


def _claim(volume: Volume, task: str, *, attached_to: int | None, **fields: object) -> Volume:
    """Inside a transaction: take the volume for an operation, or refuse (409) if it is busy, not there, or no longer
    attached as the request saw it (attached_to: its instance's id then, None: detached). Returns it as locked."""
    current = Volume.objects.select_for_update().filter(pk=volume.pk).first()
    if current is None or current.status == VolumeStatus.DELETED:
        raise NotFound("No such volume.")
    if current.task_state:
        raise InstanceBusy(f"the volume '{current.name}' is busy: {VolumeTask(current.task_state).label.lower()} "
                           "is in progress; wait for it to finish")
    if current.instance_id != attached_to:
        raise InvalidOperation(f"the volume '{current.name}' was attached or detached meanwhile: look again")
    if current.status != VolumeStatus.AVAILABLE and task != VolumeTask.DELETING:
        raise InvalidOperation(f"the volume '{current.name}' is {current.get_status_display().lower()}")
    Volume.objects.filter(pk=volume.pk).update(task_state=task, task_started_at=Now(), heartbeat_at=None,
                                               attempts=0, error="", **fields)
    publish_volume_on_commit(current)
    return current


def _check_plugging(volume: Volume, instance: Instance, verb: str) -> None:
    can = instance.host.can if instance.host is not None else None
    if can is None or not can.volumes:
        raise InvalidOperation("volumes attach to QEMU/KVM instances (and the test driver's)")
    if instance.status in RUNNING and not can.disk_hotplug:
        raise InvalidOperation(f"this technology cannot {verb} a disk while the guest runs: stop '{instance.name}' "
                               "first")


def attach(*, volume: Volume, instance: Instance, user: AbstractBaseUser | None) -> InstanceAction:
    """Plug the volume into an instance of its tenant on its host: live while it runs (hot-plug), else into its
    definition."""
    if instance.tenant_id != volume.tenant_id:
        raise NotFound("no such instance")
    if volume.instance_id is not None:
        raise InvalidOperation(f"the volume '{volume.name}' is attached to '{volume.instance.name}': detach it first")
    if instance.host_id != volume.host_id:
        raise InvalidOperation(f"the volume '{volume.name}' is on host '{volume.host.name}' and '{instance.name}' on "
                               "another: a volume attaches to instances of its own host")
    _check_plugging(volume, instance, "plug in")
    if instance.snapshots.live().exists():
        raise InvalidOperation(f"'{instance.name}' has snapshots, which a volume would not be in (a revert would take "
                               "it away): delete them first")
    with transaction.atomic():
        # The instance first: its claim orders attaches to it, so two never pick the same free device.
        action = services.request_operation(instance=instance, operation=Operation.ATTACH_VOLUME, user=user,
                                            volume=volume)
        used = set(Volume.objects.filter(instance=instance).values_list("device", flat=True))
        device = next((d for d in DEVICES if d not in used), None)
        if device is None:
            raise InvalidOperation(f"'{instance.name}' has {len(DEVICES)} volumes, the most it takes")
        _claim(volume, VolumeTask.ATTACHING, attached_to=None, instance=instance, device=device)
        return action


def detach(*, volume: Volume, user: AbstractBaseUser | None) -> InstanceAction:
    """Unplug the volume from its instance (a running guest lets go of it first)."""
    instance = volume.instance
    if instance is None:
        raise InvalidOperation(f"the volume '{volume.name}' is not attached")
    if volume.boot:
        raise InvalidOperation(f"'{instance.name}' boots from the volume '{volume.name}': it stays until the instance "
                               "is deleted")
    _check_plugging(volume, instance, "unplug")
    with transaction.atomic():
        _claim(volume, VolumeTask.DETACHING, attached_to=instance.pk)
        return services.request_operation(instance=instance, operation=Operation.DETACH_VOLUME, user=user,
                                          volume=volume)


def extend(*, volume: Volume, size_gib: int, user: AbstractBaseUser | None) -> InstanceAction | None:
    """Grow the volume to size_gib (never shrink it): online through its guest's block device when its instance runs.
    Returns the instance's action for an attached volume (None: the volume's own operation)."""
    if size_gib > MAX_VOLUME_GIB:
        raise InvalidInstance(f"size_gib: at most {MAX_VOLUME_GIB} GiB")
    with transaction.atomic():
        # (its size as locked: a concurrent extend may have grown it since the request read it)
        volume = Volume.objects.select_for_update(of=("self",)).select_related("instance", "tenant").get(pk=volume.pk)
        if size_gib <= volume.size_gib:
            raise InvalidOperation(f"a volume never shrinks: '{volume.name}' has {volume.size_gib} GiB, {size_gib} "
                                   "GiB asked" if size_gib < volume.size_gib else
                                   f"'{volume.name}' has {size_gib} GiB already")
        grow = size_gib - volume.size_gib
        quotas.check(tenant=volume.tenant, request={"volume_gib": grow})
        host_services.check_pool(host_id=volume.host_id, disk_gib=grow)
        _claim(volume, VolumeTask.EXTENDING, attached_to=volume.instance_id, size_before=volume.size_gib,
               size_gib=size_gib)
        if volume.instance_id is None:
            tasks.enqueue_volume(Volume.objects.get(pk=volume.pk))
            return None
        return services.request_operation(instance=volume.instance, operation=Operation.EXTEND_VOLUME, user=user,
                                 volume=volume)


def delete(*, volume: Volume, user: AbstractBaseUser | None) -> None:
    """Delete a detached volume from its host (a failed one too: its worker may have made it)."""
    if volume.instance_id is not None:
        how = "boots from" if volume.boot else "has"
        raise InvalidOperation(f"'{volume.instance.name}' {how} the volume '{volume.name}': "
                               + ("delete the instance first" if volume.boot else "detach it first"))
    with transaction.atomic():
        _claim(volume, VolumeTask.DELETING, attached_to=None)
        tasks.enqueue_volume(Volume.objects.get(pk=volume.pk))


def hold_for_boot(*, volume: Volume, instance: Instance) -> None:
    """Inside a create's transaction: the new instance boots from the volume (its tenant's, detached, on the host it
    was placed on), which it holds from now until it is deleted."""
    locked = Volume.objects.select_for_update().filter(pk=volume.pk).first()
    if locked is None or locked.tenant_id != instance.tenant_id or locked.status == VolumeStatus.DELETED:
        raise NotFound("no such volume")
    if locked.instance_id is not None:
        raise InvalidOperation(f"the volume '{locked.name}' is attached to an instance: detach it first")
    if locked.status != VolumeStatus.AVAILABLE or locked.task_state:
        raise InvalidOperation(f"the volume '{locked.name}' is not ready: "
                               f"{(locked.get_task_state_display() or locked.get_status_display()).lower()}")
    Volume.objects.filter(pk=volume.pk).update(instance=instance, device="vda", boot=True)


def volume_boot(*, tenant: Tenant, volume: Volume | None, host: Host | None, image: Image | None, name: str,
                disk_gib: int, ssh_keys: str, password: str) -> tuple[Host, str]:
    """Check a boot from a volume; returns its host (the instance's) and the cloud-init user-data (keys and a
    password, if given)."""
    if volume is None:
        raise InvalidInstance("choose a volume to boot from")
    if volume.tenant_id != tenant.pk:
        raise NotFound("no such volume")
    if disk_gib or image is not None:
        raise InvalidInstance("an instance booted from a volume has the volume for its disk: give no disk size or "
                              "image")
    if host is not None and host.pk != volume.host_id:
        raise InvalidInstance(f"the volume '{volume.name}' is on another host: an instance boots from a volume of "
                              "its own host")
    user_data = cloudinit.compose_user_data(
        hostname=name, ssh_keys=cloudinit.parse_ssh_keys(ssh_keys),
        password_hash=cloudinit.hash_password(password) if password else "") if ssh_keys or password else ""
    return volume.host, user_data


# --- reports from the volume's own tasks, and from its instance's actions ---------------------------------------


def begin(volume_id: int) -> Volume | None:
    """Claim the volume's pending operation for this worker (None: gone, done, or another worker's)."""
    with transaction.atomic():
        claimed = Volume.objects.filter(pk=volume_id, task_state__isnull=False, heartbeat_at__isnull=True).update(
            heartbeat_at=Now(), attempts=F("attempts") + 1)
        return Volume.objects.select_related("host", "image").get(pk=volume_id) if claimed else None


def renew(volume_id: int) -> bool:
    return bool(Volume.objects.filter(pk=volume_id, task_state__isnull=False, heartbeat_at__isnull=False)
                .update(heartbeat_at=Now()))


def _done(volume: Volume, now: datetime) -> dict:
    """What a volume's finished operation changes on its row."""
    task = volume.task_state
    if task == VolumeTask.CREATING:
        return {"status": VolumeStatus.AVAILABLE, "ready_at": now, "sizes": [[now.isoformat(), volume.size_gib]]}
    if task == VolumeTask.EXTENDING:
        return {"size_before": None, "sizes": [*volume.sizes, [now.isoformat(), volume.size_gib]]}
    if task == VolumeTask.DELETING:
        return {"status": VolumeStatus.DELETED, "deleted_at": now}
    if task == VolumeTask.DETACHING:
        return {"instance": None, "device": ""}
    return {}


def _failed(volume: Volume, error: str) -> dict:
    task = volume.task_state
    if task == VolumeTask.CREATING:
        return {"status": VolumeStatus.ERROR, "error": error[:2000]}
    if task == VolumeTask.ATTACHING:
        return {"instance": None, "device": ""}
    if task == VolumeTask.EXTENDING and volume.size_before:
        return {"size_gib": volume.size_before, "size_before": None,
                "error": f"Extend failed: {error}"[:2000]}
    return {"error": f"{VolumeTask(task).label} failed: {error}"[:2000]}


def settle(volume_id: int | None, *, error: str | None = None) -> None:
    """Inside the caller's transaction: the volume's operation ended, done (error None) or failed; the volume is
    free again."""
    volume = Volume.objects.select_for_update().filter(pk=volume_id).first() if volume_id else None
    if volume is None or not volume.task_state:
        return
    changes = _done(volume, timezone.now()) if error is None else _failed(volume, error)
    Volume.objects.filter(pk=volume.pk).update(task_state=None, task_started_at=None, heartbeat_at=None,
                                               **({"error": ""} if error is None else {}), **changes)
    publish_volume_on_commit(volume)


def finish(volume_id: int) -> None:
    with transaction.atomic():
        settle(volume_id)


def fail(volume_id: int, error: str) -> None:
    with transaction.atomic():
        settle(volume_id, error=error)


def release_all(instance: Instance) -> None:
    """Inside the caller's transaction: the instance is deleted; its volumes (its boot volume too) stay, detached."""
    Volume.objects.filter(instance=instance).update(instance=None, device="", boot=False)


# Run by the sweep: volumes' own operations are all safe to run twice.
OWN = Q(task_state__in=[VolumeTask.CREATING, VolumeTask.DELETING]) | Q(task_state=VolumeTask.EXTENDING,
                                                                        instance__isnull=True)
MAX_ATTEMPTS = 3


def recover_lost(*, lease: timedelta, timeout: timedelta) -> None:
    """Volumes' own operations whose worker died (a lease left to expire) are queued again, up to MAX_ATTEMPTS runs,
    then failed; one no worker took within `timeout` fails with that reason."""
    lost = OWN & Q(heartbeat_at__lt=Now() - Value(lease))
    unclaimed = OWN & Q(heartbeat_at__isnull=True, task_started_at__lt=Now() - Value(timeout))
    for pk in Volume.objects.filter(lost | unclaimed).values_list("pk", flat=True):
        with transaction.atomic():
            volume = Volume.objects.select_for_update().filter(lost | unclaimed, pk=pk).first()
            if volume is None:
                continue
            if volume.heartbeat_at is None:
                settle(pk, error="no worker took it in time (is its host's worker running?)")
            elif volume.attempts >= MAX_ATTEMPTS:
                settle(pk, error=f"its worker stopped {volume.attempts} times")
            else:
                Volume.objects.filter(pk=pk).update(heartbeat_at=None, task_started_at=Now())
                tasks.enqueue_volume(volume)
