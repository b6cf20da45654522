"""Resizing an instance: vCPUs and RAM while it is stopped, its disk grown (never shrunk) whether it runs or not.

The new size is checked against the tenant's quota and the host's capacity under the same locks as a create, and
held from the moment it is accepted (the instance's row carries it; a failure puts the old one back). Billing
prices each part of the month at the size it had: the size history (InstanceSize) is written when the worker has
applied the change.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from hosts import guests
from hosts import services as host_services
from instances import definition
from instances.choices import BootSource, Operation, Status
from instances.exceptions import InvalidInstance, InvalidOperation
from instances.models import Instance, InstanceAction, InstanceSize
from instances.services import check_memory, request_operation
from tenants import quotas

SIZES = ("vcpus", "memory_mib", "disk_gib")


def resize(*, instance: Instance, user: AbstractBaseUser | None, vcpus: int | None = None,
           memory_mib: int | None = None, disk_gib: int | None = None) -> InstanceAction:
    """Accept a resize (only what is given changes); refused with the reason when it cannot be done."""
    before = {size: getattr(instance, size) for size in SIZES}
    after = {size: value if value is not None else before[size]
             for size, value in zip(SIZES, (vcpus, memory_mib, disk_gib), strict=True)}
    if after == before:
        raise InvalidOperation(f"'{instance.name}' already has that size")
    if instance.host_id is None or instance.status == Status.DELETED:
        raise InvalidOperation(f"'{instance.name}' is deleted")
    if instance.boot_source == BootSource.ADOPTED:
        raise InvalidOperation("an adopted domain's definition and disks are its own: resize it on its host")
    if after["disk_gib"] < before["disk_gib"]:
        raise InvalidOperation(f"a disk never shrinks: '{instance.name}' has {before['disk_gib']} GiB, "
                               f"{after['disk_gib']} GiB asked (the file system on it would be cut)")
    if after["disk_gib"] != before["disk_gib"]:
        if instance.boot_source == BootSource.VOLUME:
            raise InvalidOperation(f"'{instance.name}' boots from a volume: extend the volume instead")
        if instance.host is None or not instance.host.can.disk_volume or instance.boot_source == BootSource.DISK:
            raise InvalidOperation("this instance's disk is not a volume of the panel's: it cannot be grown here")
        if not before["disk_gib"] and instance.boot_source != BootSource.IMAGE:
            raise InvalidOperation(f"'{instance.name}' has no disk to grow")
    cpu_or_ram = (after["vcpus"], after["memory_mib"]) != (before["vcpus"], before["memory_mib"])
    if cpu_or_ram and instance.status != Status.STOPPED:
        raise InvalidOperation(f"'{instance.name}' is {instance.get_status_display().lower()}: its vCPUs and RAM "
                               "change while it is stopped (its definition leaves no room to add them live); a "
                               "disk grows either way")
    check_memory(after["memory_mib"], image=instance.image, boot_kernel=instance.boot_kernel)
    if instance.host is not None and (why := guests.vcpu_refusal(
            instance.host, definition.guest_of(instance).arch, after["vcpus"])):
        raise InvalidInstance(why)
    for size in SIZES:  # the model's bounds (the API's serializer has the same; a page's form may not)
        try:
            Instance._meta.get_field(size).clean(after[size], instance)
        except ValidationError as exc:
            raise InvalidInstance(f"{size}: {' '.join(exc.messages)}") from None
    with transaction.atomic():
        quotas.check(tenant=instance.tenant, request={size: max(0, after[size] - before[size]) for size in SIZES})
        host_services.check_resize(host_id=instance.host_id, instance_id=instance.pk, vcpus=after["vcpus"],
                                   memory_mib=after["memory_mib"], disk_gib=after["disk_gib"])
        # (claimed only if it is still stopped then, for vCPUs and RAM: a start may have finished meanwhile)
        action = request_operation(instance=instance, operation=Operation.RESIZE, user=user,
                                   resize={"from": before, "to": after},
                                   allowed_from=frozenset({Status.STOPPED}) if cpu_or_ram else None)
        Instance.objects.filter(pk=instance.pk).update(**after)  # held from now: the quota and the host see it
        if not instance.sizes.exists():  # billing's history starts with the size it had so far
            InstanceSize.objects.create(instance=instance, at=instance.created_at, **before)
        return action
