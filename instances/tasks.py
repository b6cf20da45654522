"""Thin, idempotent tasks: one per operation, each taking an InstanceAction id."""

from __future__ import annotations

import functools
import io
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from celery import shared_task
from django.conf import settings
from django.db import transaction

from cloudpanel import tasking
from cloudpanel.exceptions import DomainError
from hosts import hypervisor
from hosts.models import Host
from hosts.tasks import reconcile_host
from images import cloudinit, distribution, rootfs
from images import tasks as image_tasks
from images.choices import DiskFormat
from instances import backups, boot, definition, disk_jobs, migration_jobs, services, volumes
from instances.choices import ActionStatus, BootSource, Operation, Status
from instances.host_steps import HostSide
from instances.models import Instance, InstanceAction, Leftover, Snapshot, Volume
from networks import firewall, provisioning
from networks.choices import NetworkKind
from networks.models import Port

log = logging.getLogger(__name__)


def enqueue(action: InstanceAction) -> None:
    """Queue the task of an action, on its host's worker, once the surrounding transaction commits; should the
    queue not take it then, the action fails with the reason (its instance is not left busy)."""
    tasking.enqueue(TASKS[Operation(action.operation)], action.pk, host_id=action.instance.host_id,
                    on_lost=lambda reason: services.fail_action(action.pk, error=reason))


def enqueue_volume(volume: Volume) -> None:
    """Queue the volume's own operation on its host's worker once the transaction commits; should the queue not take
    it then, the operation fails with the reason (the volume is not left busy)."""
    tasking.enqueue(run_volume_task, volume.pk, host_id=volume.host_id,
                    on_lost=lambda reason: volumes.fail(volume.pk, reason))


def _heartbeat(instance: Instance) -> Callable[[], bool]:
    """Tells a long step (a copy, an unpack) whether the instance's operation is still in flight, and restarts
    its timeout if so."""
    return functools.partial(services.keep_alive, instance_id=instance.pk)


def _image_disks(instance: Instance, host: Host) -> dict[str, str | bool]:
    """The disks of an instance booted from a library image: an overlay of the host's cached copy, or for
    an ISO an empty disk with the ISO in the CD-ROM drive."""
    image = instance.image
    if image is None:
        raise hypervisor.HypervisorError("the instance's image was deleted before it could be created")
    base = distribution.ensure_copy(image=image, host=host,
                                    heartbeat=_heartbeat(instance))
    if image.disk_format == DiskFormat.ISO:
        disk = hypervisor.create_volume(host.uri, host.storage_pool, instance.volume_name, instance.disk_gib)
        return {"disk_path": disk, "boot_cdrom": True}
    overlay = hypervisor.create_volume(host.uri, host.storage_pool, instance.volume_name, instance.disk_gib,
                                       backing=hypervisor.Backing(base.path, image.disk_format))
    return {"boot_disk": overlay}


def _nic_configs(instance: Instance) -> list[cloudinit.NicConfig]:
    """The guest's view of its NICs: IPv4 by DHCP where CloudPanel pins the address, static on bridged
    networks; IPv6 always static (DHCPv6 cannot pin an address to a MAC), its route by router advertisement."""
    configs = []
    for port in instance.ports.select_related("network").prefetch_related("addresses__subnet"):
        addresses = sorted(port.addresses.all(), key=lambda a: a.subnet.version)
        v4 = [a for a in addresses if a.subnet.version == 4]
        cidrs = {a.subnet.version: f"{a.address}/{a.subnet.ip_network.prefixlen}" for a in addresses}
        if port.network.kind in (NetworkKind.BRIDGE, NetworkKind.VLAN):
            configs.append(cloudinit.NicConfig(
                mac=port.mac, dhcp4=False, static=tuple(cidrs.values()), gateway=v4[0].subnet.gateway if v4 else "",
                dns=tuple(s for s in port.network.dns_servers.split(",") if s)))
        else:
            configs.append(cloudinit.NicConfig(mac=port.mac, static=(cidrs[6],) if 6 in cidrs else ()))
    return configs


def _seed(instance: Instance, host: Host) -> str:
    """Build the instance's NoCloud seed and send it to the host's pool."""
    seed = cloudinit.build_seed(meta=cloudinit.meta_data(instance_id=str(instance.uuid), hostname=instance.name),
                                user=instance.user_data, network=cloudinit.network_config(_nic_configs(instance)))
    return hypervisor.upload_volume(host.uri, host.storage_pool, instance.seed_volume_name, size=len(seed),
                                    read=io.BytesIO(seed).read)


def _boot_kernel(instance: Instance, host: Host) -> dict[str, str]:
    """The kernel and initrd of the instance's boot kernel, from their verified copies on the host; or a platform
    admin's paths on the host."""
    beat = _heartbeat(instance)  # copies may take a while
    chosen = instance.boot_kernel
    if chosen is None:
        if instance.boot_source == BootSource.KERNEL and not instance.kernel:
            raise hypervisor.HypervisorError("the instance's boot kernel was deleted before it could be created")
        return {"kernel": instance.kernel, "initrd": instance.initrd, "cmdline": instance.cmdline}
    kernel = distribution.ensure_copy(image=chosen.kernel, host=host, heartbeat=beat).path
    initrd = distribution.ensure_copy(image=chosen.initrd, host=host, heartbeat=beat).path if chosen.initrd else ""
    return {"kernel": kernel, "initrd": initrd, "cmdline": instance.cmdline or chosen.cmdline}


def _root_dir(instance: Instance) -> Path:
    """The container's home on the host: its tree, and nothing else."""
    return Path(settings.CLOUDPANEL_CONTAINER_DIR) / instance.root_dir_name


def _container_root(instance: Instance, host: Host) -> dict[str, object]:
    """Unpack the container image into the container's own tree on the host (its copy in the host's pool, read
    through libvirt), owned by the tenant's uid range; a tree left by an earlier attempt is made again."""
    if urlsplit(host.uri).netloc:
        raise hypervisor.HypervisorError("containers are unpacked by the host's own worker: register the LXC host "
                                         "as lxc:/// and run its worker on it")
    image = instance.image
    if image is None:
        raise hypervisor.HypervisorError("the instance's container image was deleted before it could be created")
    copy = distribution.ensure_copy(image=image, host=host,
                                    heartbeat=_heartbeat(instance))
    owner = boot.container_owner(instance.tenant_id)
    home = _root_dir(instance)
    rootfs.remove_tree(home)
    home.parent.mkdir(mode=0o711, parents=True, exist_ok=True)  # entered on the way to a tree, never listed
    with hypervisor.reading_volume(host.uri, copy.pool, copy.volume) as read:
        root = rootfs.unpack(read, home, owner=owner, max_bytes=settings.CLOUDPANEL_ROOTFS_MAX_GIB << 30,
                             beat=_heartbeat(instance))
    return {"root_dir": str(root), "idmap": hypervisor.IdMap(target=owner),
            "init_env": tuple(sorted(instance.init_env.items()))}


def _do_create(action: InstanceAction) -> str:
    instance = action.instance
    try:
        return _create(instance, instance.host, start=action.start)
    except BaseException:
        if instance.boot_source == BootSource.CONTAINER:
            # A failed create keeps no tree (its retry unpacks it again), nor one a delete already missed.
            rootfs.remove_tree(_root_dir(instance))
        raise


def _create(instance: Instance, host: Host, *, start: bool) -> str:
    # A platform admin's paths on the host, checked again against what the host allows now.
    boot.check_host_paths(boot.Boot(source=instance.boot_source, kernel=instance.kernel, initrd=instance.initrd,
                                    boot_disk=instance.boot_disk), host)
    disks: dict[str, object] = {"boot_disk": instance.boot_disk}
    if instance.restored_from_id is not None:  # its disk is the backup's, put in place first (its timeout held off)
        with tasking.lease(_heartbeat(instance), every=settings.CLOUDPANEL_LEASE_SECONDS / 3):
            restored = disk_jobs.restore_disk(instance.restored_from, host, instance.volume_name, instance.disk_gib)
        if instance.boot_source == BootSource.IMAGE:
            disks = {"boot_disk": restored}
    elif instance.boot_source == BootSource.IMAGE:
        disks = _image_disks(instance, host)
    if host.can.volumes:
        disks.update(disk_jobs.volume_disks(instance, host))
    if instance.boot_source == BootSource.CONTAINER:
        disks.update(_container_root(instance, host), boot_disk="")
    elif instance.boot_kernel_id or instance.kernel or instance.boot_source == BootSource.KERNEL:
        disks.update(_boot_kernel(instance, host))
    if instance.boot_source != BootSource.IMAGE and instance.disk_gib and host.can.disk_volume:
        disks["disk_path"] = hypervisor.create_volume(host.uri, host.storage_pool, instance.volume_name,
                                                      instance.disk_gib)
    if instance.cdrom is not None:
        disks["cdrom_path"] = distribution.ensure_copy(
            image=instance.cdrom, host=host, heartbeat=_heartbeat(instance)).path
    if instance.user_data:
        disks["seed_path"] = _seed(instance, host)
    if not services.keep_alive(instance_id=instance.pk):
        # The create outlived its timeout meanwhile and was marked failed: do not start an untracked guest.
        raise hypervisor.HypervisorError("the create took longer than the operation timeout; retry it")
    networks = {port.pk: provisioning.ensure_on_host(network=port.network, host=host)
                for port in instance.ports.select_related("network")}
    # The NICs' rows stay locked until the domain runs, so that a security group change waits for it. A
    # failure is raised once the lock is let go, so that what it recorded (a filter that failed on the
    # host) is kept.
    with transaction.atomic():
        ports = list(instance.ports.select_for_update(of=("self",)))
        try:
            nics = tuple(hypervisor.Nic(networks[port.pk], port.mac, firewall.prepare(port, host)) for port in ports)
            spec = hypervisor.DomainSpec(
                name=instance.domain_name, title=instance.name, uuid=str(instance.uuid), vcpus=instance.vcpus,
                memory_mib=instance.memory_mib, init=instance.init, cdrom_drive=instance.cdrom_drive,
                accelerator=hypervisor.Accelerator(host.accelerator), nics=nics,
                **definition.guest_fields(instance, host), **disks,
            )
            state = hypervisor.define(host.uri, spec, technology=hypervisor.Technology(host.technology),
                                      kvm_available=definition.kvm(instance, host), start=start)
            failure = None
        except hypervisor.HypervisorError as exc:
            state, failure = "", exc
    if failure is not None:
        raise failure
    return state


def _do_rebuild(action: InstanceAction) -> str:
    """Replace the domain and its disks (its NICs and their addresses stay the instance's), then define it again
    from the instance's image: started if it ran."""
    instance, host = action.instance, action.instance.host
    hypervisor.undefine(host.uri, str(instance.uuid))
    hypervisor.delete_volume(host.uri, host.storage_pool, instance.volume_name)
    hypervisor.delete_volume(host.uri, host.storage_pool, instance.seed_volume_name)
    return _create(instance, host, start=action.start)  # (whether it ran when the rebuild was asked for)


def _drop_checkpoints(instance: Instance, host: Host) -> None:
    """Before a snapshot's work or a disk's growth: the last backup's checkpoint goes (its bitmap would refuse them,
    and a snapshot's revert takes the disk back behind it); the next backup is full."""
    if host.can.backups:
        hypervisor.drop_checkpoints(host.uri, str(instance.uuid))


def _before_stop(instance: Instance, host: Host) -> None:
    """The panel stops the guest: its checkpoint goes while libvirt can still delete it (a stopped disk that keeps
    one refuses snapshots and resizes); best effort, nothing stops a force off."""
    try:
        _drop_checkpoints(instance, host)
    except hypervisor.HypervisorError as exc:
        log.warning("instance %s: its checkpoints stay: %s", instance.pk, exc)


def _do_poweroff(action: InstanceAction) -> str:
    instance, host = action.instance, action.instance.host
    _before_stop(instance, host)
    return hypervisor.power_off(host.uri, str(instance.uuid))


def _do_shutdown(action: InstanceAction) -> str:
    instance, host = action.instance, action.instance.host
    _before_stop(instance, host)
    hypervisor.shutdown(host.uri, str(instance.uuid))
    deadline = time.monotonic() + settings.CLOUDPANEL_SHUTDOWN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        current = hypervisor.state(host.uri, str(instance.uuid))
        if current == hypervisor.PowerState.STOPPED:
            return current
        time.sleep(0.25)
    if action.force:
        return hypervisor.power_off(host.uri, str(instance.uuid))
    raise hypervisor.HypervisorError(
        f"the guest did not power off within {settings.CLOUDPANEL_SHUTDOWN_TIMEOUT_SECONDS} s; use Force off"
    )


def _do_delete(action: InstanceAction) -> str:
    instance, host = action.instance, action.instance.host
    hypervisor.undefine(host.uri, str(instance.uuid))
    if instance.disk_gib and host.can.disk_volume:
        hypervisor.delete_volume(host.uri, host.storage_pool, instance.volume_name)
    if instance.user_data:
        hypervisor.delete_volume(host.uri, host.storage_pool, instance.seed_volume_name)
    if instance.boot_source == BootSource.CONTAINER:
        rootfs.remove_tree(_root_dir(instance))
    provisioning.release_ports(ports=list(instance.ports.select_related("network")), host=host)
    return Status.DELETED


def remove_forgotten(host: Host) -> None:
    """Guests deleted from the panel alone while their host did not answer, now that it answers: their domains,
    disks, seeds and trees, their NICs (pins, filters, addresses) removed, then their volumes let go of. One the
    host refuses is tried again at its next reconcile."""
    for instance in services.forgotten_leftovers(host):
        try:
            hypervisor.undefine(host.uri, str(instance.uuid))
            for name in (instance.volume_name, instance.seed_volume_name):
                hypervisor.delete_volume(host.uri, host.storage_pool, name)
            if instance.boot_source == BootSource.CONTAINER:
                rootfs.remove_tree(_root_dir(instance))
            provisioning.release_ports(ports=list(instance.ports.select_related("network")), host=host)
        except hypervisor.HypervisorError as exc:
            log.warning("instance %s, deleted while %s did not answer, is still there: %s", instance.pk, host.name,
                        exc)
            continue
        services.forgotten_removed(instance)


def _shares_storage(host: Host, pool: str, other: Host) -> bool:
    """Whether the host's pool is the other host's storage: a marker made here, looked for there (by the other
    host's worker, with per-host workers)."""
    with hypervisor.pool_marker(host.uri, pool) as marker:
        return HostSide(None, other)("holds", pool=other.storage_pool, name=marker,
                                     patience=settings.CLOUDPANEL_LEASE_SECONDS)["held"]


def remove_leftovers(host: Host) -> None:
    """What instances evacuated from the host (or whose migration to it failed) left there, now that it answers and
    is reconciled: their domains (stopped first), disks and seeds (unless its pool is the storage of the instance's
    new host: then they are its own), their NICs' pins and filters and the networks nobody else there uses. What the
    host refuses is tried again at its next reconcile."""
    for leftover in Leftover.objects.filter(host=host).select_related("instance__host"):
        instance, now_on = leftover.instance, leftover.instance.host
        if instance.host_id != host.pk:  # (one placed back meanwhile owns what is there)
            try:
                hypervisor.undefine(host.uri, str(instance.uuid))
                if now_on is None or not _shares_storage(host, leftover.pool, now_on):
                    for name in (instance.volume_name, instance.seed_volume_name):
                        hypervisor.delete_volume(host.uri, leftover.pool, name)
                provisioning.forget_nics(records=leftover.nics, host=host, instance_id=instance.pk)
            except hypervisor.HypervisorError as exc:
                log.warning("instance %s, evacuated from %s, is still there: %s", instance.pk, host.name, exc)
                continue
        leftover.delete()


def _state_after_failure(action: InstanceAction, host: Host) -> str | None:
    """What to show after a failed operation: None keeps the last known status.

    A failed create is an error whatever libvirt holds, so that it can be retried.
    """
    if action.operation == Operation.CREATE:
        return None
    # (where the instance is now: a migration may have moved it before it failed; with per-host workers that host is
    # its own worker's to read, and its next reconcile tells)
    now_on = Host.objects.filter(instances__pk=action.instance_id).first() or host
    if now_on != host and settings.CLOUDPANEL_HOST_QUEUES:
        return None
    host = now_on
    try:
        return hypervisor.state(host.uri, str(action.instance.uuid))
    except hypervisor.DomainNotFound:
        return Status.ERROR
    except hypervisor.HypervisorError:
        return None  # the host cannot tell


def _on_domain(call: Callable[[str, str], str]) -> Callable[[InstanceAction], str]:
    """The work of an operation that is one hypervisor call on the instance's domain."""
    return lambda action: call(action.instance.host.uri, str(action.instance.uuid))


def _renew(action_id: int, instance_id: int, copying: bool) -> bool:
    """The lease's beat: the action's worker is alive; for a copy that takes as long as the disk is large, its
    instance's operation timeout starts over too (a copy of a large disk is slow, not stuck)."""
    alive = services.renew_lease(action_id)
    if alive and copying:
        services.keep_alive(instance_id=instance_id)
    return alive


def _run(action_id: int, work: Callable[[InstanceAction], str], *, copying: bool = False) -> None:
    """Claim the action and do its work under a lease renewed by this worker, then report how it went (copying: the
    work copies a whole disk, see _renew)."""
    action = services.begin_action(action_id)
    if action is None:
        return
    host = action.instance.host
    try:
        with tasking.lease(functools.partial(_renew, action_id, action.instance_id, copying),
                           every=settings.CLOUDPANEL_LEASE_SECONDS / 3):
            observed = work(action)
    except (hypervisor.HypervisorError, DomainError) as exc:  # domain errors: say, an image that failed to copy
        tasking.persist(services.fail_action, action_id, error=str(exc), observed=_state_after_failure(action, host))
        return
    except Exception as exc:  # anything unforeseen still ends the operation, with its reason
        log.exception("action %s: unexpected failure", action_id)
        tasking.persist(services.fail_action, action_id, error=f"an unexpected error stopped the operation: {exc}",
                        observed=_state_after_failure(action, host))
        return
    tasking.persist(services.finish_action, action_id, observed=observed)


@tasking.task
def create_instance(action_id: int) -> None:
    _run(action_id, _do_create)


@tasking.task
def start_instance(action_id: int) -> None:
    _run(action_id, _on_domain(hypervisor.start))


@tasking.task
def shutdown_instance(action_id: int) -> None:
    _run(action_id, _do_shutdown)


@tasking.task
def poweroff_instance(action_id: int) -> None:
    _run(action_id, _do_poweroff)


@tasking.task
def reboot_instance(action_id: int) -> None:
    _run(action_id, _on_domain(hypervisor.reboot))


@tasking.task
def suspend_instance(action_id: int) -> None:
    _run(action_id, _on_domain(hypervisor.suspend))


@tasking.task
def resume_instance(action_id: int) -> None:
    _run(action_id, _on_domain(hypervisor.resume))


@tasking.task
def delete_instance(action_id: int) -> None:
    _run(action_id, _do_delete)


@tasking.task
def change_media(action_id: int) -> None:
    def work(action: InstanceAction) -> str:
        instance, host = action.instance, action.instance.host
        path = distribution.ensure_copy(
            image=action.image, host=host, heartbeat=_heartbeat(instance),
        ).path if action.image else ""
        hypervisor.change_media(host.uri, str(instance.uuid), path)
        services.record_media(instance_id=instance.pk, image_id=action.image_id)
        return hypervisor.state(host.uri, str(instance.uuid))

    _run(action_id, work)


@tasking.task
def attach_nic(action_id: int) -> None:
    def work(action: InstanceAction) -> str:
        instance, host, port = action.instance, action.instance.host, action.port
        if port is None:
            raise hypervisor.HypervisorError("the NIC was removed before it could be plugged in")
        try:
            name = provisioning.ensure_on_host(network=port.network, host=host)
            with transaction.atomic():  # the NIC's row lock: a group change waits until it is plugged in
                Port.objects.select_for_update().get(pk=port.pk)
                nic = hypervisor.Nic(name, port.mac, firewall.prepare(port, host))
                hypervisor.attach_interface(host.uri, str(instance.uuid), nic)
        except Exception:
            provisioning.release_ports(ports=[port], host=host)  # its addresses are free again
            raise
        return hypervisor.state(host.uri, str(instance.uuid))

    _run(action_id, work)


@tasking.task
def detach_nic(action_id: int) -> None:
    def work(action: InstanceAction) -> str:
        instance, host, port = action.instance, action.instance.host, action.port
        if port is not None:  # already gone: done
            nic = hypervisor.Nic(port.network.libvirt_name, port.mac)
            hypervisor.detach_interface(host.uri, str(instance.uuid), nic)
            provisioning.release_ports(ports=[port], host=host)
        return hypervisor.state(host.uri, str(instance.uuid))

    _run(action_id, work)


def _snapshot_of(action: InstanceAction):
    if action.snapshot is None:
        raise hypervisor.HypervisorError("the snapshot's record was removed")
    return action.snapshot


@tasking.task
def capture_disk(action_id: int) -> None:
    def work(action: InstanceAction) -> str:
        instance, host, image = action.instance, action.instance.host, action.image
        if image is None:
            raise hypervisor.HypervisorError("the image was deleted before the disk was copied")
        hypervisor.clone_volume(host.uri, host.storage_pool, instance.volume_name, image.capture_volume,
                                instance.disk_gib)
        tasking.enqueue(image_tasks.capture_image, image.pk, host_id=host.pk)
        return hypervisor.state(host.uri, str(instance.uuid))

    _run(action_id, work, copying=True)


@tasking.task
def clone_instance(action_id: int) -> None:
    def work(action: InstanceAction) -> str:
        instance, host, clone = action.instance, action.instance.host, action.target
        if clone is None or clone.status == Status.DELETED:
            raise hypervisor.HypervisorError("the clone was deleted before its disk was copied")
        # The clone's create waits meanwhile: its timeout restarts while the copy goes on.
        with tasking.lease(functools.partial(services.keep_alive, instance_id=clone.pk),
                           every=settings.CLOUDPANEL_LEASE_SECONDS / 3):
            hypervisor.delete_volume(host.uri, host.storage_pool, clone.volume_name)  # (a copy an attempt left)
            hypervisor.clone_volume(host.uri, host.storage_pool, instance.volume_name, clone.volume_name,
                                    clone.disk_gib)
        waiting = InstanceAction.objects.filter(instance=clone, operation=Operation.CREATE,
                                                status=ActionStatus.PENDING).select_related("instance").first()
        if waiting is not None:
            enqueue(waiting)
        return hypervisor.state(host.uri, str(instance.uuid))

    _run(action_id, work, copying=True)


@tasking.task
def backup_instance(action_id: int) -> None:
    _run(action_id, disk_jobs.back_up, copying=True)


@tasking.task
def restore_instance(action_id: int) -> None:
    _run(action_id, disk_jobs.restore, copying=True)


@shared_task
def run_scheduled_backups() -> None:
    """The beat's minute: back up the instances whose schedule is due."""
    backups.run_due()


def _do_migrate(action: InstanceAction) -> str:
    """Move the domain to the action's target host (live if it runs, else cold), then clean the source up. A run
    again after its worker died finds where the domain is and carries on from there; a failed one leaves the guest
    on the source and takes back what it made on the target. What is done on the target is the target's own
    worker's with per-host workers (instances.host_steps, instances.migration_jobs)."""
    instance, source, target = action.instance, action.instance.host, action.target_host
    if target is None:
        raise hypervisor.HypervisorError("the target host was removed")
    uuid, beat, report = str(instance.uuid), _heartbeat(instance), migration_jobs.Reporter(action)
    there = HostSide(action, target)
    while hypervisor.migrating(source.uri, uuid):  # an earlier attempt's migration, still under way: let it end
        if not report({"phase": "waiting for an earlier attempt"}):
            hypervisor.abort_job(source.uri, uuid)
        time.sleep(1)
    moving, state = None, None
    if hypervisor.defined(source.uri, uuid):
        state = hypervisor.state(source.uri, uuid)
        live = state in (Status.RUNNING, Status.PAUSED)
        migration_jobs.check(there, instance, source, live=live)
        _drop_checkpoints(instance, source)
        moving = migration_jobs.plan(instance, source, target)
        try:
            migration_jobs.prepare(there, instance, source, moving, live=live)
            if live:
                hypervisor.migrate_live(source.uri, uuid, target_uri=target.uri, paths=moving.paths,
                                        copy=[disk.device for disk in moving.disks], watch=report.live,
                                        bandwidth_mib=settings.CLOUDPANEL_MIGRATION_BANDWIDTH_MIB)
            else:
                migration_jobs.copy_disks(there, source, target, moving, beat=beat, report=report)
                migration_jobs.move_definition(there, source, instance, moving)
        except Exception:
            if not migration_jobs.abandon(there, instance, moving):
                raise
    elif not (found := there("look"))["defined"]:
        raise hypervisor.DomainNotFound("the domain is on neither host")
    else:
        state = found["state"]
    # It runs there now: recorded before anything else may fail, so that it is never shown on the host it left.
    tasking.persist(services.move_to, instance.pk, target.pk)
    report({"phase": "cleaning up the source"}, now=True)
    migration_jobs.leave_source(instance, source, moving)
    return state  # (a live move keeps it running or paused, a cold one stopped; the target's reconcile tells)


@tasking.task
def migrate_instance(action_id: int) -> None:
    _run(action_id, _do_migrate, copying=True)


@tasking.task
def rename_instance(action_id: int) -> None:
    def work(action: InstanceAction) -> str:
        instance, host = action.instance, action.instance.host
        try:
            hypervisor.set_title(host.uri, str(instance.uuid), instance.name)
        except hypervisor.DomainNotFound:  # never defined (a failed create): its retry takes the name
            return instance.status
        return hypervisor.state(host.uri, str(instance.uuid))

    _run(action_id, work)


@tasking.task
def rebuild_instance(action_id: int) -> None:
    _run(action_id, _do_rebuild)


@tasking.task
def resize_instance(action_id: int) -> None:
    def work(action: InstanceAction) -> str:
        instance, host = action.instance, action.instance.host
        before, after = action.resize["from"], action.resize["to"]
        uuid = str(instance.uuid)
        cpu_or_ram = (after["vcpus"], after["memory_mib"]) != (before["vcpus"], before["memory_mib"])
        if cpu_or_ram:
            hypervisor.set_size(host.uri, uuid, vcpus=after["vcpus"], memory_mib=after["memory_mib"])
        if after["disk_gib"] > before["disk_gib"]:
            try:
                _drop_checkpoints(instance, host)
                hypervisor.grow_disk(host.uri, uuid, pool=host.storage_pool, volume=instance.volume_name,
                                     size_gib=after["disk_gib"])
            except hypervisor.HypervisorError:
                if cpu_or_ram:  # all or nothing: the old size is what the panel keeps on failure
                    hypervisor.set_size(host.uri, uuid, vcpus=before["vcpus"], memory_mib=before["memory_mib"])
                raise
        return hypervisor.state(host.uri, uuid)

    _run(action_id, work)


@tasking.task
def take_snapshot(action_id: int) -> None:
    def work(action: InstanceAction) -> str:
        instance, host, snapshot = action.instance, action.instance.host, _snapshot_of(action)
        _drop_checkpoints(instance, host)
        memory = hypervisor.create_snapshot(host.uri, str(instance.uuid), snapshot.libvirt_name,
                                            snapshot.description)
        if memory != snapshot.memory:  # the guest stopped or started meanwhile: bill what was taken
            Snapshot.objects.filter(pk=snapshot.pk).update(memory=memory, size_gib=Snapshot.billed_gib(
                disk_gib=snapshot.disk_gib, memory_mib=snapshot.memory_mib, memory=memory))
        return hypervisor.state(host.uri, str(instance.uuid))

    _run(action_id, work)


@tasking.task
def revert_snapshot(action_id: int) -> None:
    def work(action: InstanceAction) -> str:
        instance, host = action.instance, action.instance.host
        _drop_checkpoints(instance, host)
        return hypervisor.revert_snapshot(host.uri, str(instance.uuid), _snapshot_of(action).libvirt_name)

    _run(action_id, work)


@tasking.task
def delete_snapshot(action_id: int) -> None:
    def work(action: InstanceAction) -> str:
        instance, host = action.instance, action.instance.host
        _drop_checkpoints(instance, host)
        hypervisor.delete_snapshot(host.uri, str(instance.uuid), _snapshot_of(action).libvirt_name)
        return hypervisor.state(host.uri, str(instance.uuid))

    _run(action_id, work)


def _volume_disk(action: InstanceAction) -> tuple[Instance, Host, Volume, str]:
    """An instance action's volume, and its path on the instance's host."""
    instance, host, volume = action.instance, action.instance.host, action.volume
    if volume is None:
        raise hypervisor.HypervisorError("the volume's record was removed")
    return instance, host, volume, disk_jobs.volume_path(volume, host)


@tasking.task
def attach_volume(action_id: int) -> None:
    def work(action: InstanceAction) -> str:
        instance, host, volume, path = _volume_disk(action)
        hypervisor.attach_disk(host.uri, str(instance.uuid), path, volume.device)
        return hypervisor.state(host.uri, str(instance.uuid))

    _run(action_id, work)


@tasking.task
def detach_volume(action_id: int) -> None:
    def work(action: InstanceAction) -> str:
        instance, host, _volume, path = _volume_disk(action)
        hypervisor.detach_disk(host.uri, str(instance.uuid), path)
        return hypervisor.state(host.uri, str(instance.uuid))

    _run(action_id, work)


@tasking.task
def extend_volume(action_id: int) -> None:
    def work(action: InstanceAction) -> str:
        instance, host, volume, _path = _volume_disk(action)
        try:
            hypervisor.grow_disk(host.uri, str(instance.uuid), pool=volume.pool, volume=volume.volume_name,
                                 size_gib=volume.size_gib)
        except hypervisor.DomainNotFound:  # (never defined: a failed create) the volume alone
            hypervisor.grow_disk(host.uri, None, pool=volume.pool, volume=volume.volume_name, size_gib=volume.size_gib)
            return instance.status
        return hypervisor.state(host.uri, str(instance.uuid))

    _run(action_id, work)


@tasking.task
def run_volume_task(volume_id: int) -> None:
    """Claim the volume's own operation and do it under a lease renewed by this worker, then report how it went."""
    volume = volumes.begin(volume_id)
    if volume is None:
        return
    try:
        with tasking.lease(functools.partial(volumes.renew, volume_id), every=settings.CLOUDPANEL_LEASE_SECONDS / 3):
            disk_jobs.volume_work(volume)
    except (hypervisor.HypervisorError, DomainError) as exc:
        tasking.persist(volumes.fail, volume_id, str(exc))
        return
    except Exception as exc:
        log.exception("volume %s: unexpected failure", volume_id)
        tasking.persist(volumes.fail, volume_id, f"an unexpected error stopped the operation: {exc}")
        return
    tasking.persist(volumes.finish, volume_id)


@shared_task
def recover_lost_actions() -> None:
    """The sweep (beat, every third of the lease): operations whose worker died are run again or failed; their hosts
    read at once. Not retried: the next tick is the retry."""
    lease = timedelta(seconds=settings.CLOUDPANEL_LEASE_SECONDS)
    for host_id in services.recover_lost_actions(lease=lease):
        tasking.enqueue(reconcile_host, host_id, host_id=host_id)
    volumes.recover_lost(lease=lease, timeout=timedelta(seconds=settings.CLOUDPANEL_TASK_TIMEOUT_SECONDS))


TASKS = {
    Operation.CREATE: create_instance,
    Operation.MEDIA: change_media,
    Operation.ATTACH_NIC: attach_nic,
    Operation.DETACH_NIC: detach_nic,
    Operation.SNAPSHOT: take_snapshot,
    Operation.REVERT: revert_snapshot,
    Operation.UNSNAPSHOT: delete_snapshot,
    Operation.RESIZE: resize_instance,
    Operation.REBUILD: rebuild_instance,
    Operation.RENAME: rename_instance,
    Operation.CAPTURE: capture_disk,
    Operation.CLONE: clone_instance,
    Operation.BACKUP: backup_instance,
    Operation.RESTORE: restore_instance,
    Operation.ATTACH_VOLUME: attach_volume,
    Operation.DETACH_VOLUME: detach_volume,
    Operation.EXTEND_VOLUME: extend_volume,
    Operation.MIGRATE: migrate_instance,
    Operation.START: start_instance,
    Operation.SHUTDOWN: shutdown_instance,
    Operation.POWEROFF: poweroff_instance,
    Operation.REBOOT: reboot_instance,
    Operation.SUSPEND: suspend_instance,
    Operation.RESUME: resume_instance,
    Operation.DELETE: delete_instance,
}
