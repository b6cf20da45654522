"""Rebuild (reinstall an instance from a library image or template, keeping its name, UUID, NICs and addresses),
rename, save as image (a golden image made from an instance's disk) and clone (a new instance with a copy of it)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from hosts import guests
from hosts import services as host_services
from hosts.architectures import DEFAULT_ARCH
from images import cloudinit
from images import services as image_services
from images.choices import DiskFormat
from images.models import Image, Template, usable_by
from instances import definition
from instances.choices import BootSource, Operation, Status, TaskState
from instances.events import publish_on_commit
from instances.exceptions import InvalidInstance, InvalidOperation
from instances.models import Instance, InstanceAction, InstanceSize, check_fields, check_name
from instances.resizing import SIZES
from instances.services import attach_nics, check_memory, image_boot, nics_like, request_operation
from tenants import quotas


def rebuild(*, instance: Instance, user: AbstractBaseUser | None, image: Image | None = None,
            template: Template | None = None, ssh_keys: str = "", password: str = "") -> InstanceAction:
    """Accept a rebuild: the guest's disk is replaced by a new overlay of the image (the template's, with its
    cloud-init), and it is started again if it ran. Its disk grows if the image needs more, never shrinks."""
    if instance.boot_source != BootSource.IMAGE or instance.host is None or not instance.host.can.disk_volume:
        raise InvalidOperation("only an instance booted from a library image is rebuilt from one")
    if template is not None:
        image = template.image
    if image is None:
        raise InvalidOperation("choose an image or a template to rebuild from")
    if not usable_by(image, instance.tenant_id) or (template is not None and not usable_by(template,
                                                                                           instance.tenant_id)):
        raise InvalidOperation("no such image")
    if image.disk_format == DiskFormat.ISO:
        raise InvalidOperation("an ISO installs through the CD-ROM: insert it and install, or create a new instance")
    if image.licensed != instance.licensed:
        raise InvalidOperation("an instance's licence is fixed when it is made: this image's differs, so create a "
                               "new instance from it")
    arch = definition.guest_of(instance).arch
    if guests.differ(instance.host, image.arch, arch):
        raise InvalidOperation(f"'{instance.name}' is an {arch} guest; {image.name} is for {image.arch} guests: "
                               "create a new instance from it")
    if instance.snapshots.live().exists():
        raise InvalidOperation(f"'{instance.name}' has snapshots of the disk a rebuild replaces: delete them first")
    check_memory(instance.memory_mib, image=image, boot_kernel=instance.boot_kernel)
    disk_gib, user_data = image_boot(tenant=instance.tenant, image=image, template=template, name=instance.name,
                                     disk_gib=0, ssh_keys=ssh_keys, password=password)
    before = {size: getattr(instance, size) for size in SIZES}
    after = {**before, "disk_gib": max(disk_gib, before["disk_gib"])}
    with transaction.atomic():
        quotas.check(tenant=instance.tenant, request={"disk_gib": after["disk_gib"] - before["disk_gib"]})
        if after != before:
            host_services.check_resize(host_id=instance.host_id, instance_id=instance.pk, vcpus=after["vcpus"],
                                       memory_mib=after["memory_mib"], disk_gib=after["disk_gib"])
        # (start: whether it runs again afterwards: only if it ran, so it holds its host's capacity already)
        action = request_operation(instance=instance, operation=Operation.REBUILD, user=user, image=image,
                                   resize={"from": before, "to": after},
                                   start=instance.status in (Status.RUNNING, Status.PAUSED))
        Instance.objects.filter(pk=instance.pk).update(image=image, template=template, user_data=user_data,
                                                       disk_gib=after["disk_gib"], restored_from=None)
        if after != before and not instance.sizes.exists():
            InstanceSize.objects.create(instance=instance, at=instance.created_at, **before)
        return action


def rename(*, instance: Instance, name: str, user: AbstractBaseUser | None) -> InstanceAction:
    """Give the instance a new name, unique among the tenant's instances (its domain's name on the host is its UUID's
    and does not change; the worker sets the domain's title)."""
    if name.strip() == instance.name:
        raise InvalidOperation(f"'{instance.name}' already has that name")
    name = check_name(name)
    try:
        with transaction.atomic():
            action = request_operation(instance=instance, operation=Operation.RENAME, user=user)
            Instance.objects.filter(pk=instance.pk).update(name=name)
            return action
    except IntegrityError:
        raise InvalidInstance(f"an instance named '{name}' already exists in {instance.tenant}") from None


def save_as_image(*, instance: Instance, name: str, user: AbstractBaseUser | None) -> InstanceAction:
    """Save the stopped instance's disk as a new private image of its tenant: the worker copies it whole (its
    image's layers flattened in), and the copy goes through the same inspection as an upload."""
    if instance.host is None or not instance.host.can.disk_volume or not instance.host.can.stores_data:
        raise InvalidOperation("this technology has no disk the panel can copy")
    if instance.boot_source in (BootSource.DISK, BootSource.ADOPTED, BootSource.CONTAINER) or not instance.disk_gib:
        raise InvalidOperation(f"'{instance.name}' has no disk of the panel's to save")
    with transaction.atomic():
        image = image_services.create_capture(
            user=user, tenant=instance.tenant, name=name.strip(), host=instance.host,
            size_gib=instance.disk_gib, os_type=instance.image.os_type if instance.image else "linux",
            min_memory_mib=instance.image.min_memory_mib if instance.image else 0,
            arch=definition.guest_of(instance).arch or DEFAULT_ARCH)
        return request_operation(instance=instance, operation=Operation.CAPTURE, user=user, image=image)


def clone(*, instance: Instance, name: str, user: AbstractBaseUser | None) -> InstanceAction:
    """Accept a clone of the stopped instance: a new instance of its tenant on its host, of its size and boot, with
    a full copy of its disk (its image's layers flattened in) and a NIC on each of its networks (new addresses, the
    same security groups), left stopped. The source's worker copies the disk, then the clone is created; returns
    the clone's create, which waits for the copy. Its volumes and snapshots are not copied."""
    if instance.host is None or not instance.host.can.disk_volume:
        raise InvalidOperation("this technology has no disk the panel can copy")
    if instance.boot_source not in (BootSource.IMAGE, BootSource.KERNEL) or not instance.disk_gib:
        raise InvalidOperation(f"'{instance.name}' has no disk of the panel's to copy (a clone copies the disk the "
                               "panel made for it)")
    new = Instance(name=name.strip(), tenant=instance.tenant, vcpus=instance.vcpus, memory_mib=instance.memory_mib,
                   disk_gib=instance.disk_gib, boot_source=instance.boot_source, boot_kernel=instance.boot_kernel,
                   kernel=instance.kernel, initrd=instance.initrd, cmdline=instance.cmdline, image=instance.image,
                   template=instance.template, cdrom=instance.cdrom, cdrom_drive=instance.cdrom_drive,
                   licensed=instance.licensed, cloned_from=instance, created_by=user, arch=instance.arch,
                   machine=instance.machine, cpu_mode=instance.cpu_mode, cpu_model=instance.cpu_model,
                   user_data=cloudinit.with_hostname(instance.user_data, name.strip()) if instance.user_data else "",
                   task_state=TaskState.CREATING, task_started_at=timezone.now())
    check_fields(new, exclude=["host", "tenant", "created_by", "cloned_from"])
    try:
        with transaction.atomic():
            quotas.check(tenant=instance.tenant, request={"instances": 1, "vcpus": new.vcpus,
                                                          "memory_mib": new.memory_mib, "disk_gib": new.disk_gib})
            host_services.check_pool(host_id=instance.host_id, disk_gib=new.disk_gib)  # (it stays stopped)
            new.host = instance.host
            new.save()
            attach_nics(new, nics_like(instance))
            create = InstanceAction.objects.create(instance=new, operation=Operation.CREATE, user=user, start=False)
            request_operation(instance=instance, operation=Operation.CLONE, user=user, target=new)
            publish_on_commit(new)
            return create
    except IntegrityError:
        raise InvalidInstance(f"an instance named '{new.name}' already exists in {instance.tenant}") from None
