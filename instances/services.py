"""Every change to an instance goes through here.

Requests (create and the operations) are accepted in one transaction that claims
the instance with a compare-and-set on task_state, writes an InstanceAction and
enqueues its task on commit. Tasks report back through begin/finish/fail_action;
events and reconciliation report observed states through record_status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q, Value
from django.db.models.functions import Now
from django.utils import timezone

from cloudpanel.exceptions import NotFound
from cloudpanel.scoping import is_platform_admin
from hosts import guests
from hosts import placement as placing
from hosts import services as host_services
from hosts.choices import CpuMode
from hosts.hypervisor import NO_DRIVE
from hosts.models import Host, HostDomain
from images import cloudinit
from images import services as image_services
from images.choices import DISK_FORMATS, DiskFormat, ImageStatus
from images.models import BootKernel, Image, Template, usable_by
from instances import backups, boot, groups, tasks, volumes, wants
from instances.choices import (
    ActionStatus,
    BackupStatus,
    BootSource,
    Cause,
    Operation,
    SnapshotStatus,
    Status,
    TaskState,
)
from instances.events import publish_on_commit
from instances.exceptions import InstanceBusy, InvalidInstance, InvalidOperation
from instances.lifecycle import ALLOWED_FROM, TASK_STATE_OF
from instances.models import (
    Backup,
    Instance,
    InstanceAction,
    InstanceSize,
    InstanceStateChange,
    ServerGroup,
    Snapshot,
    Volume,
    check_fields,
)
from networks import security
from networks import services as network_services
from networks.models import Network, Port, SecurityGroup
from notifications.choices import Kind
from notifications.services import notify
from tenants import audit, quotas
from tenants.models import Tenant

GIB = 1 << 30


def image_boot(*, tenant: Tenant, image: Image | None, template: Template | None, name: str,
                disk_gib: int, ssh_keys: str, password: str) -> tuple[int, str]:
    """Check a boot from a library image (one the tenant may use: boot.check_request saw to it); returns the disk
    size to give it and the cloud-init user-data."""
    if image is None:
        raise InvalidInstance("choose an image to boot from")
    if image.status != ImageStatus.AVAILABLE:
        raise InvalidInstance(f"the image {image.name} is {image.get_status_display().lower()}, not available")
    if image.disk_format not in DISK_FORMATS:
        raise InvalidInstance(f"{image.name} is a {image.get_disk_format_display().lower()}, not a disk image: boot "
                              "kernels and container images have boot sources of their own")
    if image.disk_format == DiskFormat.ISO:
        if ssh_keys or password or template is not None:
            raise InvalidInstance("an install from an ISO takes no cloud-init settings or template")
        needed = max(1, image.min_disk_gib)
        if disk_gib < needed:
            raise InvalidInstance(f"an install from {image.name} needs a disk of at least {needed} GiB to install onto")
        return disk_gib, ""
    needed = max(1, image.min_disk_gib, -(-image.virtual_size // GIB))
    if disk_gib and disk_gib < needed:
        raise InvalidInstance(f"{image.name} needs a disk of at least {needed} GiB")
    user_data = cloudinit.compose_user_data(
        hostname=name, ssh_keys=cloudinit.parse_ssh_keys(ssh_keys),
        password_hash=cloudinit.hash_password(password) if password else "",
        cloud_config=template.user_data if template else "", script=template.script if template else "",
    )
    return max(disk_gib, needed), user_data


def check_memory(memory_mib: int, *, image: Image | None, boot_kernel: BootKernel | None) -> None:
    """Refuse less RAM than the boot source needs: its image's minimum, or its boot kernel's (the kernel image's)."""
    for needs in (image, boot_kernel.kernel if boot_kernel is not None else None):
        if needs is not None and memory_mib < needs.min_memory_mib:
            booted = boot_kernel.name if needs is not image else needs.name
            raise InvalidInstance(f"{booted} needs at least {needs.min_memory_mib} MiB of RAM; {memory_mib} MiB "
                                  "were asked")


def _hold_library(*, image: Image | None, boot_kernel: BootKernel | None) -> None:
    """Lock the library objects the instance boots until it is stored: a delete of one waits, then sees it used."""
    for model, obj in ((Image, image), (BootKernel, boot_kernel)):
        if obj is not None and not model.objects.select_for_update().filter(pk=obj.pk).exists():
            raise InvalidInstance(f"{obj.name} was deleted meanwhile")


class NicRequest(NamedTuple):
    """A NIC asked for: its network, the IPv4 address wanted (None: the next free one) and security groups."""

    network: Network
    address: str | None = None
    security_groups: Sequence[SecurityGroup] = ()


def nics_like(instance: Instance) -> list[NicRequest]:
    """A NIC on each network of the instance, each with the next free address and the same security groups (a
    clone's, a restored copy's)."""
    ports = instance.ports.select_related("network").prefetch_related("security_groups")
    return [NicRequest(port.network, None, list(port.security_groups.all())) for port in ports]


def attach_nics(instance: Instance, nics: Sequence[NicRequest | tuple], first_position: int = 0) -> list[Port]:
    """Ports on the networks, in order, each with an IPv4 address (asked for or the next free one), an IPv6
    one where the network has IPv6, and its security groups; within the create's transaction, so a refusal
    keeps nothing."""
    nics = [NicRequest(*nic) for nic in nics]
    if nics and not instance.host.can.networks:
        raise InvalidInstance("NICs on CloudPanel networks need a QEMU, Xen, LXC or VirtualBox host")
    public = sum(1 for nic in nics if nic.network.tenant_id is None)
    if public:  # addresses on shared networks count against the tenant's public addresses
        quotas.check(tenant=instance.tenant, request={"public_addresses": public})
    ports = []
    for position, nic in enumerate(nics, start=first_position):
        if nic.network.tenant_id not in (None, instance.tenant_id):
            raise NotFound("no such network")
        if nic.network.host_tag and nic.network.host_tag not in instance.host.tag_list:
            raise InvalidInstance(f"host '{instance.host.name}' does not reach network '{nic.network.name}' (the "
                                  f"hosts that do carry the tag {nic.network.host_tag})")
        groups = security.check_groups(nic.security_groups, instance.tenant_id)
        port = network_services.create_port(network=nic.network)
        port.instance, port.position = instance, position
        port.save(update_fields=["instance", "position"])
        for subnet in nic.network.subnets.all():
            network_services.allocate(port=port, subnet=subnet, address=nic.address if subnet.version == 4 else None)
        if groups:
            port.security_groups.set(groups)
            security.members_changed(g.pk for g in groups)
        ports.append(port)
    return ports


def create_instance(
    *,
    user: AbstractBaseUser | None,
    tenant: Tenant,
    name: str,
    vcpus: int | None = None,
    memory_mib: int | None = None,
    disk_gib: int | None = None,
    host: Host | None = None,
    boot_source: str = BootSource.KERNEL,
    kernel: str = "",
    initrd: str = "",
    cmdline: str = "",
    boot_disk: str = "",
    init: str = "",
    init_env: Mapping[str, str] | None = None,
    image: Image | None = None,
    boot_kernel: BootKernel | None = None,
    template: Template | None = None,
    ssh_keys: str = "",
    password: str = "",
    nics: Sequence[NicRequest | tuple] = (),
    start: bool = True,
    cdrom_drive: bool = False,
    volume: Volume | None = None,
    host_tags: Sequence[str] = (),
    server_group: ServerGroup | None = None,
    arch: str = "",
    machine: str = "",
    cpu_mode: str = "",
    cpu_model: str = "",
) -> InstanceAction:
    """Accept a new instance: place it, record it as pending and queue its creation (start: and then start it;
    else it is defined and left stopped). cdrom_drive: a CD-ROM drive to insert ISOs into while it runs (an ISO
    boot has one anyway); without it the guest has only the devices its boot needs.

    Tenants boot library objects only (instances/boot.py): a boot kernel, an image, a template or a container
    image; kernel, initrd and boot disk paths on the host are platform admins', under the host's allowed
    directories.
    From a template: its image, its size where none is given, and its cloud-init user-data
    and script. From an image: a copy-on-write overlay of it (an ISO: a CD-ROM to install
    from onto an empty disk), with a NoCloud seed giving the hostname, SSH keys and password.
    nics: a NIC on each network, with the address asked for or the next free one, and its security groups.
    From a volume (the tenant's, detached): on the volume's host, its disk the volume, held until it is deleted
    (SSH keys and a password come with a NoCloud seed).
    arch, machine, cpu_mode, cpu_model: the guest it asks for (QEMU/KVM; hosts.guests): placed only where the
    host's capabilities offer it; its architecture is what it boots (its boot kernel's, image's or volume's image's),
    else its host's own; its CPU, unless it names one, is its host's default for the host's own architecture.
    """
    if template is not None:
        image, boot_source = template.image, BootSource.IMAGE
        vcpus, memory_mib = vcpus or template.vcpus, memory_mib or template.memory_mib
        disk_gib = template.disk_gib if disk_gib is None else disk_gib
    if vcpus is None or memory_mib is None:
        raise InvalidInstance("give the vCPUs and memory (or a template that has them)")
    # Its architecture is what it boots: its boot kernel's, its image's (as their owners declared them).
    for what, obj in (("boot kernel", boot_kernel), ("image", image),
                      ("volume's image", volume.image if volume is not None else None)):
        if obj is not None and arch and arch != obj.arch:
            raise InvalidInstance(f"the {what} {obj.name} runs {obj.arch} guests, not {arch}")
        arch = arch or (obj.arch if obj is not None else "")
    guest = guests.Guest(arch=arch, machine=machine, cpu_mode=cpu_mode, cpu_model=cpu_model, vcpus=vcpus)
    if why := guests.check_request(guest):
        raise InvalidInstance(why)
    if cpu_mode == CpuMode.PASSTHROUGH and not (user is not None and is_platform_admin(user)):
        raise InvalidInstance("a host-passthrough CPU ties an instance to hosts with the very same CPU (maintenance "
                              "could not move it): platform admins choose it; choose host-model or a named model")
    wanted = boot.Boot(source=boot_source, kernel=kernel, initrd=initrd, boot_disk=boot_disk, cmdline=cmdline,
                       init=init, init_env=init_env or {}, image=image, boot_kernel=boot_kernel)
    boot.check_request(wanted, tenant_id=tenant.pk, admin=user is not None and is_platform_admin(user))
    if boot_source == BootSource.CONTAINER:
        boot.container_owner(tenant.pk)  # refused now if the tenant has no uid range left
    check_memory(memory_mib, image=image, boot_kernel=boot_kernel)
    disk_gib, user_data = disk_gib or 0, ""
    if boot_source == BootSource.IMAGE:
        disk_gib, user_data = image_boot(tenant=tenant, image=image, template=template, name=name,
                                          disk_gib=disk_gib, ssh_keys=ssh_keys, password=password)
    elif boot_source == BootSource.VOLUME:
        host, user_data = volumes.volume_boot(tenant=tenant, volume=volume, host=host, image=image, name=name,
                                              disk_gib=disk_gib, ssh_keys=ssh_keys, password=password)
    elif (image is not None and boot_source != BootSource.CONTAINER) or ssh_keys or password:
        raise InvalidInstance("an image, SSH keys and a password go with the image boot source")
    elif boot_source == BootSource.CONTAINER and disk_gib:
        raise InvalidInstance("a container's disk is its own root filesystem: give no disk size")
    if volume is not None and boot_source != BootSource.VOLUME:
        raise InvalidInstance("a volume goes with the volume boot source")
    iso = image is not None and image.disk_format == DiskFormat.ISO
    instance = Instance(
        name=name, tenant=tenant, vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib,
        boot_source=boot_source, kernel=kernel, initrd=initrd, cmdline=cmdline, boot_disk=boot_disk,
        init=init, init_env=dict(init_env or {}), boot_kernel=boot_kernel, created_by=user,
        task_state=TaskState.CREATING, task_started_at=timezone.now(),
        image=image, template=template, cdrom=image if iso else None, cdrom_drive=cdrom_drive or iso,
        user_data=user_data,
        licensed=image is not None and image.licensed, machine=machine, cpu_mode=cpu_mode, cpu_model=cpu_model,
    )
    if server_group is not None and server_group.tenant_id != tenant.pk:
        raise NotFound("no such server group")
    instance.server_group = server_group
    try:
        instance.host_tags = " ".join(placing.parse_tags(host_tags))
    except ValueError as exc:
        raise InvalidInstance(f"host tags: {exc}") from None
    check_fields(instance, exclude=["host", "tenant", "created_by"])
    try:
        with transaction.atomic():
            # The tenant's quota first: its row lock also orders this tenant's concurrent creates.
            quotas.check(tenant=tenant, request={"instances": 1, "vcpus": vcpus, "memory_mib": memory_mib,
                                                 "disk_gib": disk_gib})
            _hold_library(image=image, boot_kernel=boot_kernel)
            # An image boot needs a host that boots disks (and, for a seed or an ISO, has CD-ROM drives).
            needs_cdrom = iso or cdrom_drive or bool(user_data)
            decision = host_services.placement(
                vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib, host=host, tags=instance.host_tags.split(),
                technologies=boot.technologies_for(boot_source, needs_cdrom=needs_cdrom,
                                                   library=boot_kernel is not None),
                group=groups.for_placement(server_group),
                networks=wants.network_tags(NicRequest(*nic).network for nic in nics),
                image=wants.image_need(image) if boot_source == BootSource.IMAGE else None, guest=guest)
            placed = decision.host
            boot.check_on_host(wanted, placed, needs_cdrom=needs_cdrom)
            instance.host, instance.cdrom_drive = placed, instance.cdrom_drive and placed.can.cdrom
            instance.arch = guests.arch_for(placed, guest)
            if placed.can.architectures:  # (its CPU is its own from now on, whatever the host's default becomes)
                instance.cpu_mode, instance.cpu_model = guests.cpu_of(placed, guest)
            instance.placement = decision.as_dict() | {"for": "create", "at": timezone.now().isoformat()}
            instance.save()
            if volume is not None:
                volumes.hold_for_boot(volume=volume, instance=instance)
            attach_nics(instance, nics)
            action = InstanceAction.objects.create(instance=instance, operation=Operation.CREATE, user=user,
                                                   start=start)
            tasks.enqueue(action)
            publish_on_commit(instance)
    except IntegrityError:
        raise InvalidInstance(f"an instance named '{name}' already exists in {tenant}") from None
    return action


def adopt_domain(*, domain: HostDomain, tenant: Tenant, name: str, user: AbstractBaseUser | None) -> Instance:
    """Put a domain made outside the panel under a tenant: an instance from now on, in the state its host last
    showed, counted against the tenant's quota and billed from this moment. The domain is left as it is; its disks
    are not the panel's (a later delete undefines the domain and leaves them)."""
    status = domain.state if domain.state in Status.values else Status.STOPPED
    instance = Instance(uuid=domain.uuid, name=name, tenant=tenant, host_id=domain.host_id, vcpus=domain.vcpus,
                        memory_mib=domain.memory_mib, boot_source=BootSource.ADOPTED, created_by=user,
                        arch=guests.default_arch(domain.host))  # (as its host's other guests; its definition says)
    check_fields(instance, exclude=["host", "tenant", "created_by", "uuid"])
    try:
        with transaction.atomic():
            quotas.check(tenant=tenant, request={"instances": 1, "vcpus": instance.vcpus,
                                                 "memory_mib": instance.memory_mib})
            if not HostDomain.objects.select_for_update().filter(pk=domain.pk).exists():
                raise InvalidOperation(f"{domain.name} is no longer on its host")
            if Instance.objects.filter(uuid=domain.uuid).exists():
                raise InvalidOperation(f"{domain.name} is already an instance")
            instance.save()
            set_status(instance, status, Cause.ADOPTED, detail=f"domain {domain.name} adopted into {tenant}")
            instance.save(update_fields=["status", "status_changed_at"])
            publish_on_commit(instance)
    except IntegrityError:
        raise InvalidInstance(f"an instance named '{name}' already exists in {tenant}") from None
    return instance


@transaction.atomic
def request_operation(*, instance: Instance, operation: str, user: AbstractBaseUser | None,
                      image: Image | None = None, port: Port | None = None, start: bool = True,
                      snapshot: Snapshot | None = None, resize: dict | None = None, volume: Volume | None = None,
                      target: Instance | None = None, backup: Backup | None = None, target_host: Host | None = None,
                      force: bool = False, allowed_from: frozenset[str] | None = None) -> InstanceAction:
    """Accept an operation: claim the instance (409 if busy or not applicable) and queue the task (start: a create's,
    see create_instance; allowed_from: narrower statuses than the operation's own, checked in the same claim)."""
    operation = Operation(operation)
    allowed = allowed_from or ALLOWED_FROM[operation]
    current = Instance.objects.filter(pk=instance.pk).values("status", "task_state", "status_reason").first()
    if current is None:
        raise InvalidOperation("the instance no longer exists")
    if current["task_state"]:
        raise InstanceBusy(f"'{instance.name}' is busy: {TaskState(current['task_state']).label.lower()} "
                           "is in progress; wait for it to finish")
    admin = user is not None and is_platform_admin(user)
    if current["status"] == Status.UNKNOWN and not (operation == Operation.DELETE and admin):
        raise InvalidOperation(f"'{instance.name}' is unknown: its host does not answer. Nothing can be done to it "
                               "until the host is back, but for a platform admin deleting it from the panel")
    if current["status"] not in allowed:
        raise InvalidOperation(f"cannot {operation.label.lower()} '{instance.name}' while it is "
                               f"{Status(current['status']).label.lower()}")
    # A start, or a create again (the retry of one that was to start): the host must have room now.
    if instance.host_id is not None and (operation == Operation.START or (operation == Operation.CREATE and start)):
        host_services.check_start(host_id=instance.host_id, instance_id=instance.pk, vcpus=instance.vcpus,
                                  memory_mib=instance.memory_mib)
    started = timezone.now()
    # (an instance whose host does not answer is claimed as such: one that answered meanwhile is not forgotten)
    claimed = Instance.objects.filter(
        pk=instance.pk, task_state__isnull=True,
        status__in=[Status.UNKNOWN] if current["status"] == Status.UNKNOWN else allowed,
    ).update(task_state=TASK_STATE_OF[operation], task_started_at=started)
    if not claimed:
        raise InstanceBusy(f"'{instance.name}' is busy with another operation; try again")
    instance.status, instance.status_reason = current["status"], current["status_reason"]
    instance.task_state, instance.task_started_at = TASK_STATE_OF[operation], started
    action = InstanceAction.objects.create(instance=instance, operation=operation, user=user, image=image,
                                           port=port, start=start, snapshot=snapshot, resize=resize,
                                           volume=volume, target=target, backup=backup,
                                           target_host=target_host, force=force)
    if current["status"] == Status.UNKNOWN:  # a platform admin's delete, from the panel alone
        _forget(action)
    else:
        tasks.enqueue(action)
    publish_on_commit(instance)
    return action


def _forget(action: InstanceAction) -> None:
    """Delete an instance whose host does not answer, from the panel alone: deleted (not billed, out of its quota)
    at once, nothing asked of the host. Its guest may still run there, so its addresses and volumes stay held until
    the host answers again and forgotten_leftovers has removed it (the host's next reconcile)."""
    with transaction.atomic():
        Instance.objects.filter(pk=action.instance_id).update(forgotten_at=timezone.now())
        finish_action(action.pk, observed=Status.DELETED, keep_volumes=True)


def forgotten_leftovers(host: Host) -> list[Instance]:
    """Instances deleted from the panel alone while the host did not answer, whose guests are still to be removed
    from it (the host answers again)."""
    return list(Instance.objects.filter(host=host, forgotten_at__isnull=False))


def forgotten_removed(instance: Instance) -> None:
    """Its guest is gone from its host: what it held (its volumes) is let go; its NICs were released with it."""
    with transaction.atomic():
        volumes.release_all(instance)
        Instance.objects.filter(pk=instance.pk).update(forgotten_at=None)


def change_media(*, instance: Instance, image: Image | None, user: AbstractBaseUser | None) -> InstanceAction:
    """Insert an ISO from the library into the instance's CD-ROM drive (None: eject), while it runs or not."""
    if instance.host is None or not instance.host.can.cdrom:
        raise InvalidOperation("only QEMU/KVM instances have a CD-ROM drive")
    if image is not None:
        if image.disk_format != DiskFormat.ISO or image.status != ImageStatus.AVAILABLE:
            raise InvalidOperation(f"{image.name} is not an available ISO image")
        if not usable_by(image, instance.tenant_id):
            raise NotFound("no such image")
    elif instance.cdrom_id is None:
        raise InvalidOperation("the CD-ROM drive is already empty")
    if not instance.cdrom_drive and instance.boot_source != BootSource.ADOPTED and instance.status != Status.STOPPED:
        raise InvalidOperation(NO_DRIVE)  # (an adopted domain's drives are its own: its host says)
    return request_operation(instance=instance, operation=Operation.MEDIA, user=user, image=image)


@transaction.atomic
def attach_nic(*, instance: Instance, network: Network, address: str | None, user: AbstractBaseUser | None,
               security_groups: Sequence[SecurityGroup] = ()) -> InstanceAction:
    """Plug a NIC on the network into the instance, running or not; its address is allocated now (409 if taken)."""
    if instance.status == Status.DELETED:
        raise InvalidOperation("the instance is deleted")
    last = instance.ports.aggregate(last=Max("position"))["last"]
    position = 0 if last is None else last + 1
    [port] = attach_nics(instance, [NicRequest(network, address, security_groups)], first_position=position)
    return request_operation(instance=instance, operation=Operation.ATTACH_NIC, user=user, port=port)


def detach_nic(*, instance: Instance, port: Port, user: AbstractBaseUser | None) -> InstanceAction:
    """Unplug one of the instance's NICs; its addresses are freed once it is out."""
    if port.instance_id != instance.pk:
        raise NotFound("no such NIC on this instance")
    return request_operation(instance=instance, operation=Operation.DETACH_NIC, user=user, port=port)


def keep_alive(*, instance_id: int) -> bool:
    """A long operation (copying an image to the host) is still at work: restart its timeout.
    False if the operation is no longer in flight (it timed out and was marked failed)."""
    return bool(Instance.objects.filter(pk=instance_id, task_state__isnull=False)
                .update(task_started_at=timezone.now()))


def record_media(*, instance_id: int, image_id: int | None) -> None:
    """The drive (there is one now) holds this ISO (None: empty)."""
    Instance.objects.filter(pk=instance_id).update(cdrom_id=image_id, cdrom_drive=True)


@transaction.atomic
def retry_action(*, action: InstanceAction, user: AbstractBaseUser | None) -> InstanceAction:
    """Request a failed action's operation again."""
    if action.status != ActionStatus.FAILED:
        raise InvalidOperation("only a failed operation can be retried")
    if action.operation in (Operation.SNAPSHOT, Operation.RESIZE, Operation.REVERT, Operation.REBUILD,
                            Operation.CAPTURE, Operation.CLONE, Operation.BACKUP, Operation.RESTORE,
                            Operation.ATTACH_VOLUME, Operation.DETACH_VOLUME, Operation.EXTEND_VOLUME,
                            Operation.MIGRATE):
        raise InvalidOperation(f"'{action.get_operation_display()}' is not retried as it was (what it checked may "
                               "have changed since): ask for it again")
    if action.operation == Operation.CREATE and action.instance.cloned_from_id is not None:
        raise InvalidOperation("a clone's disk is a copy made once: delete this one and clone again")
    if action.operation == Operation.UNSNAPSHOT and (
            action.snapshot is None or action.snapshot.status == SnapshotStatus.DELETED):
        raise InvalidOperation("the snapshot is no longer there")
    return request_operation(instance=action.instance, operation=action.operation, user=user, image=action.image,
                             start=action.start, snapshot=action.snapshot, force=action.force)


# --- reports from tasks ------------------------------------------------------


def begin_action(action_id: int) -> InstanceAction | None:
    """Claim a pending action for this worker: mark it running, with its lease taken now. None if it is gone or
    another worker claimed it already (a redelivery, or a second copy of the task): running it twice is a no-op.
    The claim and the read are one transaction: should the read fail, the claim is undone for the task's retry."""
    with transaction.atomic():
        claimed = InstanceAction.objects.filter(pk=action_id, status=ActionStatus.PENDING).update(
            status=ActionStatus.RUNNING, started_at=Now(), heartbeat_at=Now(), attempts=F("attempts") + 1
        )
        if not claimed:
            return None
        return InstanceAction.objects.select_related("instance__host", "port__network", "image", "snapshot",
                                                     "backup").get(pk=action_id)


def renew_lease(action_id: int) -> bool:
    """The action's worker is alive (stamped with the database's clock, which the sweep reads too); False once the
    action is no longer its to run."""
    return bool(InstanceAction.objects.filter(pk=action_id, status=ActionStatus.RUNNING)
                .update(heartbeat_at=Now()))


WORKER_LOST = "worker lost: the worker running it stopped"
# Run again when their worker died: doing them twice is the same as once, and stopping halfway would leave the host
# and the panel disagreeing (a resize's definition written, a snapshot deleted or taken on the host, a backup's copy
# and checkpoint left on it).
RESUMABLE = frozenset({Operation.DELETE, Operation.POWEROFF, Operation.RESIZE, Operation.UNSNAPSHOT,
                       Operation.SNAPSHOT, Operation.BACKUP, Operation.RESTORE, Operation.ATTACH_VOLUME,
                       Operation.DETACH_VOLUME, Operation.EXTEND_VOLUME, Operation.MIGRATE})
MAX_ATTEMPTS = 3


def recover_lost_actions(*, lease: timedelta) -> set[int]:
    """Running actions whose lease was last renewed longer ago than `lease` (by the database's clock) lost their
    worker. A resumable one is queued again (up to MAX_ATTEMPTS runs); any other fails with the reason "worker
    lost", its instance freed. Returns the hosts of the failed ones, whose domains should be read at once: the
    operation may have gone through."""
    expired = Now() - Value(lease)
    lost = (Q(heartbeat_at__lt=expired) | Q(heartbeat_at__isnull=True, started_at__lt=expired)) & Q(
        status=ActionStatus.RUNNING)
    hosts = set()
    for pk in InstanceAction.objects.filter(lost).values_list("pk", flat=True):
        with transaction.atomic():
            action = InstanceAction.objects.select_for_update().select_related("instance").filter(lost, pk=pk).first()
            if action is None:
                continue  # renewed or finished meanwhile
            if action.operation in RESUMABLE and action.attempts < MAX_ATTEMPTS:
                action.status, action.heartbeat_at = ActionStatus.PENDING, None
                action.save(update_fields=["status", "heartbeat_at"])
                keep_alive(instance_id=action.instance_id)
                tasks.enqueue(action)
                continue
            fail_action(pk, error=f"{WORKER_LOST} (attempt {action.attempts}); the instance shows what its host holds")
            hosts.add(action.instance.host_id)
    return hosts


def set_status(instance: Instance, status: str, cause: str, *, action: InstanceAction | None = None,
                detail: str = "", at: datetime | None = None) -> bool:
    """Inside a transaction with the instance row locked: change status and write history."""
    if instance.status == status:
        return False
    at = at or timezone.now()
    InstanceStateChange.objects.create(
        instance=instance, from_status=instance.status, to_status=status, at=at,
        cause=cause, action=action, detail=detail[:2000],
    )
    instance.status, instance.status_changed_at = status, at
    return True


def finish_action(action_id: int, *, observed: str, keep_volumes: bool = False) -> None:
    """The task's hypervisor call worked: record the observed status and free the instance (keep_volumes: a delete
    leaves its volumes attached, see _forget)."""
    with transaction.atomic():
        # One statement locks the action and its instance (and reads, unlocked, what the audit row names).
        action = (InstanceAction.objects.select_for_update(of=("self", "instance"))
                  .select_related("instance__tenant", "user").filter(pk=action_id).first())
        if action is None or action.status in (ActionStatus.SUCCEEDED, ActionStatus.FAILED):
            return
        instance = action.instance
        fields = ["status", "status_changed_at", "task_state", "task_started_at", "status_reason"]
        set_status(instance, observed, Cause.ACTION, action=action)
        if observed == Status.DELETED:
            instance.deleted_at = timezone.now()
            fields.append("deleted_at")
            Snapshot.objects.filter(instance=instance).exclude(status=SnapshotStatus.DELETED).update(
                status=SnapshotStatus.DELETED, deleted_at=instance.deleted_at)
            if not keep_volumes:
                volumes.release_all(instance)
        elif action.operation == Operation.SNAPSHOT:
            Snapshot.objects.filter(pk=action.snapshot_id, status=SnapshotStatus.CREATING).update(
                status=SnapshotStatus.AVAILABLE, taken_at=timezone.now())
        elif action.operation == Operation.UNSNAPSHOT:  # (one never taken was never billed: taken_at stays empty)
            Snapshot.objects.filter(pk=action.snapshot_id).exclude(status=SnapshotStatus.DELETED).update(
                status=SnapshotStatus.DELETED, deleted_at=timezone.now())
        volumes.settle(action.volume_id)
        if action.operation == Operation.MIGRATE and action.target_host_id:  # it runs there now, with its volumes
            record_moved(instance, action.target_host)
            fields += ["host", "status_changed_at"]
        if action.operation == Operation.BACKUP:
            Backup.objects.filter(pk=action.backup_id, status=BackupStatus.CREATING).update(
                status=BackupStatus.AVAILABLE, taken_at=timezone.now())
            backups.prune(instance.pk)
        if action.resize and action.resize["to"] != action.resize["from"]:  # a resize, or a rebuild on a larger disk
            InstanceSize.objects.create(instance=instance, at=timezone.now(), **action.resize["to"])
        instance.task_state, instance.task_started_at, instance.status_reason = None, None, ""
        instance.save(update_fields=fields)
        action.status, action.finished_at = ActionStatus.SUCCEEDED, timezone.now()
        action.save(update_fields=["status", "finished_at"])
        audit.operation_finished(action=action, instance=instance)
        publish_on_commit(instance)


def record_moved(instance: Instance, host: Host) -> None:
    """Inside the caller's transaction, the instance's row locked: its domain is on the host now (a migration),
    with its volumes. What hosts said of it before this moment is stale from now on."""
    instance.host, instance.status_changed_at = host, timezone.now()
    Instance.objects.filter(pk=instance.pk).update(host=host, status_changed_at=instance.status_changed_at)
    Volume.objects.filter(instance=instance).update(host=host, pool=host.storage_pool)


def move_to(instance_id: int, host_id: int) -> None:
    """A migration's guest runs on the host now: the instance (and its volumes) are recorded there at once."""
    with transaction.atomic():
        instance = Instance.objects.select_for_update().filter(pk=instance_id).first()
        host = Host.objects.filter(pk=host_id).first()
        if instance is not None and host is not None and instance.host_id != host_id:
            record_moved(instance, host)
            publish_on_commit(instance)


def fail_action(action_id: int, *, error: str, observed: str | None = None) -> None:
    """The operation failed: keep the reason on the action and free the instance.

    observed is the status read back from the host after the failure; None when the
    host could not tell, in which case the status stays as it was. A failed create
    leaves the instance in error so that it can be retried or deleted.
    """
    with transaction.atomic():
        # One statement locks the action and its instance (and reads, unlocked, what the audit row names).
        action = (InstanceAction.objects.select_for_update(of=("self", "instance"))
                  .select_related("instance__tenant", "user").filter(pk=action_id).first())
        if action is None or action.status in (ActionStatus.SUCCEEDED, ActionStatus.FAILED):
            return
        instance = action.instance
        if observed is None and action.operation == Operation.CREATE:
            observed = Status.ERROR
        if action.operation == Operation.RESIZE and action.resize:  # the size it still has
            Instance.objects.filter(pk=instance.pk).update(**action.resize["from"])
        if action.operation == Operation.CAPTURE and action.image_id:  # the image will not come
            image_services.fail_image(image_id=action.image_id, reason=f"the disk could not be copied: {error}")
        if action.operation == Operation.CLONE and action.target_id:  # the clone's create waited for the copy
            waiting = InstanceAction.objects.filter(instance_id=action.target_id, operation=Operation.CREATE,
                                                    status=ActionStatus.PENDING).values_list("pk", flat=True).first()
            if waiting is not None:
                fail_action(waiting, error=f"its disk could not be copied from '{instance.name}': {error}")
        if action.operation == Operation.BACKUP:  # not stored: kept to show why until deleted
            Backup.objects.filter(pk=action.backup_id, status=BackupStatus.CREATING).update(
                status=BackupStatus.ERROR, error=error[:2000])
        if action.operation == Operation.SNAPSHOT:  # never taken: not billed, kept to show why until deleted
            Snapshot.objects.filter(pk=action.snapshot_id, status=SnapshotStatus.CREATING).update(
                status=SnapshotStatus.ERROR, error=error[:2000])
        volumes.settle(action.volume_id, error=error)
        if observed is not None:
            set_status(instance, observed, Cause.ACTION, action=action, detail=error)
        instance.task_state, instance.task_started_at = None, None
        instance.status_reason = f"{action.get_operation_display()} failed: {error}"[:2000]
        instance.save(update_fields=["status", "status_changed_at", "task_state", "task_started_at", "status_reason"])
        action.status, action.error, action.finished_at = ActionStatus.FAILED, error[:4000], timezone.now()
        action.save(update_fields=["status", "error", "finished_at"])
        audit.operation_finished(action=action, instance=instance, error=error)
        backup = action.operation == Operation.BACKUP
        notify(kind=Kind.BACKUP_FAILED if backup else Kind.ACTION_FAILED, tenant_id=instance.tenant_id,
               title=f"{action.get_operation_display()} of {instance.name} failed", body=error[:4000],
               link=f"/instances/{instance.pk}/",
               data={"instance": instance.pk, "action": action.pk, "operation": action.operation})
        publish_on_commit(instance)


# --- observed states ---------------------------------------------------------


def record_status(*, instance_id: int, status: str, cause: str, observed_at: datetime, detail: str = "",
                  host_id: int | None = None) -> bool:
    """Record a status observed on the host at observed_at (event or reconcile); True if it changed.

    An observation older than the instance's last recorded change is stale (say, a
    reconcile snapshot taken just before a task finished) and is ignored. The change is
    dated when it was observed, not when it is recorded, so that two events recorded in a
    burst (stopped, then undefined) both apply.
    """
    with transaction.atomic():
        instance = Instance.objects.select_for_update().filter(pk=instance_id).first()
        if instance is None or instance.status in (Status.DELETED, Status.PENDING):
            return False  # gone, or its create task owns the first status
        if host_id is not None and instance.host_id != host_id:
            return False  # seen on a host it has left (a migration finished meanwhile)
        if instance.task_state in (TaskState.DELETING, TaskState.CREATING, TaskState.REBUILDING,
                                   TaskState.REVERTING, TaskState.MIGRATING):
            return False  # the operation undefines, replaces or moves the domain on purpose: its end says how it is
        if instance.status_changed_at and instance.status_changed_at > observed_at:
            return False
        before = instance.status
        if not set_status(instance, status, cause, detail=detail, at=observed_at):
            return False
        # Told: what no operation of the panel explains (one in flight is told by its own end), and not a host gone
        # silent and back (told as such, not once per instance).
        if not instance.task_state and Status.UNKNOWN not in (before, status):
            _tell_changed(instance, before, status, cause, detail)
        fields = ["status", "status_changed_at"]
        if status not in (Status.ERROR, Status.MISSING) and instance.status_reason and not instance.task_state:
            instance.status_reason = ""
            fields.append("status_reason")
        elif status in (Status.ERROR, Status.MISSING):
            instance.status_reason = detail
            fields.append("status_reason")
        instance.save(update_fields=fields)
        publish_on_commit(instance)
    return True


def _tell_changed(instance: Instance, before: str, status: str, cause: str, detail: str) -> None:
    """A change the panel did not make (seen through an event or a reconcile): told to the tenant."""
    crashed = status == Status.CRASHED
    notify(kind=Kind.INSTANCE_CRASHED if crashed else Kind.INSTANCE_CHANGED, tenant_id=instance.tenant_id,
           title=f"{instance.name} crashed" if crashed else
           f"{instance.name} is {Status(status).label.lower()} (was {Status(before).label.lower()})",
           body=detail or f"Seen by {Cause(cause).label.lower()}, not asked for through CloudPanel.",
           link=f"/instances/{instance.pk}/", data={"instance": instance.pk, "from": before, "to": status})


def record_domain_event(*, host: Host, domain_uuid: str, status: str | None, event: str,
                        observed_at: datetime) -> bool:
    """A lifecycle event from the host: status None means the domain is gone."""
    instance_id = (
        Instance.objects.filter(host=host, uuid=domain_uuid).live().values_list("pk", flat=True).first()
    )
    if instance_id is None:
        return False
    if status is None:
        return record_status(instance_id=instance_id, status=Status.MISSING, cause=Cause.EVENT,
                             observed_at=observed_at, detail=f"the domain was {event} on the host outside CloudPanel",
                             host_id=host.pk)
    return record_status(instance_id=instance_id, status=status, cause=Cause.EVENT, observed_at=observed_at,
                         detail=f"libvirt: {event}", host_id=host.pk)


def reconcile_host_states(*, host: Host, states: dict[str, str], observed_at: datetime) -> int:
    """Compare the host's domains (uuid → status, read at observed_at) with our instances.

    Returns how many instances changed.
    """
    changed = 0
    rows = (
        Instance.objects.filter(host=host, task_state__isnull=True)
        .exclude(status__in=[Status.DELETED, Status.PENDING])
        .values_list("pk", "uuid", "status")
    )
    for pk, domain_uuid, status in rows:
        observed = states.get(str(domain_uuid))
        if observed is None:
            if status not in (Status.ERROR, Status.MISSING):  # (an instance in error may never have been defined)
                changed += record_status(instance_id=pk, status=Status.MISSING, cause=Cause.RECONCILE,
                                         observed_at=observed_at, host_id=host.pk,
                                         detail="the domain no longer exists on the host (removed outside CloudPanel)")
        elif observed != status:
            detail = "its host answers again" if status == Status.UNKNOWN else ""
            changed += record_status(instance_id=pk, status=observed, cause=Cause.RECONCILE, observed_at=observed_at,
                                     detail=detail, host_id=host.pk)
    return changed


# What an instance may be when its host goes silent (one mid-operation waits for the operation's end first).
_SEEN = (Status.RUNNING, Status.PAUSED, Status.SUSPENDED, Status.STOPPED, Status.CRASHED)


def mark_unknown(*, host: Host, last_seen_at: datetime | None) -> int:
    """The host went silent: its instances are unknown (neither running nor stopped) from the moment it last
    answered, so that metering stops there; reconciliation says what they are once it answers again. Returns how
    many changed."""
    changed = 0
    seen = last_seen_at.strftime("%Y-%m-%d %H:%M:%S UTC") if last_seen_at else "never"
    rows = Instance.objects.filter(host=host, task_state__isnull=True, status__in=_SEEN)
    for pk in rows.values_list("pk", flat=True):
        with transaction.atomic():
            instance = Instance.objects.select_for_update().filter(pk=pk, task_state__isnull=True,
                                                                   status__in=_SEEN).first()
            if instance is None:
                continue
            at = max(filter(None, (last_seen_at, instance.status_changed_at)), default=timezone.now())
            reason = f"host '{host.name}' does not answer (last seen {seen}): what the instance does is not known"
            set_status(instance, Status.UNKNOWN, Cause.RECONCILE, detail=reason, at=at)
            instance.status_reason = reason
            instance.save(update_fields=["status", "status_changed_at", "status_reason"])
            publish_on_commit(instance)
            changed += 1
    return changed


def expire_stuck_tasks(*, host: Host, older_than: datetime) -> int:
    """Put instances whose operation has been in flight since before older_than into error."""
    expired = 0
    stuck = Instance.objects.filter(host=host, task_state__isnull=False, task_started_at__lt=older_than)
    for pk in stuck.values_list("pk", flat=True):
        with transaction.atomic():
            instance = Instance.objects.select_for_update().filter(
                pk=pk, task_state__isnull=False, task_started_at__lt=older_than
            ).first()
            if instance is None:
                continue
            taken = InstanceAction.objects.filter(instance=instance, status=ActionStatus.RUNNING).exists()
            reason = (f"{instance.get_task_state_display()} did not finish in time; "
                      + ("the host did not answer" if taken else "no worker took it (is the worker running?)"))
            set_status(instance, Status.ERROR, Cause.TIMEOUT, detail=reason)
            instance.task_state, instance.task_started_at, instance.status_reason = None, None, reason
            instance.save(
                update_fields=["status", "status_changed_at", "task_state", "task_started_at", "status_reason"]
            )
            stuck_actions = InstanceAction.objects.filter(
                Q(status=ActionStatus.PENDING) | Q(status=ActionStatus.RUNNING), instance=instance
            ).select_related("user")
            for stuck_action in stuck_actions:
                audit.operation_finished(action=stuck_action, instance=instance, error=reason)
                volumes.settle(stuck_action.volume_id, error=reason)
                Backup.objects.filter(pk=stuck_action.backup_id, status=BackupStatus.CREATING).update(
                    status=BackupStatus.ERROR, error=reason)
            stuck_actions.update(status=ActionStatus.FAILED, error=reason, finished_at=timezone.now())
            publish_on_commit(instance)
            expired += 1
    return expired
