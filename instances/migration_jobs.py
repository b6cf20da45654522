"""The worker's steps of a migration (instances.migration): the target made ready, the move, the source left clean.

Each file the domain names is accounted for before anything moves: the library copies it uses (its image, ISO,
boot kernel) are copied to the target as library copies; its own writable disks (its disk, its volumes) are made
there to be filled by the migration; its cloud-init seed is copied; a platform admin's path on the host must be
allowed on the target too. A file the panel cannot account for refuses the migration with its path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from hosts import hypervisor
from hosts.models import Host
from images import distribution
from images.models import Image, ImageCopy
from instances import events
from instances.models import Instance, InstanceAction, Volume
from networks import provisioning

log = logging.getLogger(__name__)
PROGRESS_EVERY = 1.0  # seconds between progress reports stored (and pushed to pages)


@dataclass
class Plan:
    """Where each of the domain's files will be on the target, and which disks the move copies."""

    paths: dict[str, str] = field(default_factory=dict)
    disks: list[hypervisor.DomainFile] = field(default_factory=list)  # its own, written to: copied
    small: list[hypervisor.DomainFile] = field(default_factory=list)  # its seed: copied before the move
    formats: dict[str, str] = field(default_factory=dict)  # the library copies' formats, by their source path


def _own_volumes(instance: Instance) -> set[str]:
    return {instance.volume_name} | {v.volume_name for v in Volume.objects.filter(instance=instance)}


def _library_image(volume: str) -> Image | None:
    if not volume.startswith(ImageCopy.VOLUME_PREFIX):
        return None
    try:
        return Image.objects.filter(uuid=volume.removeprefix(ImageCopy.VOLUME_PREFIX)).first()
    except ValidationError:  # a name of the panel's shape, not of its making
        return None


def plan(instance: Instance, source: Host, target: Host, beat: Callable[[], object]) -> Plan:
    """Account for every file of the domain, copying the library's to the target (see the module's docstring)."""
    files = hypervisor.domain_files(source.uri, str(instance.uuid))
    if hypervisor.shares_storage(source.uri, source.storage_pool, target.uri, target.storage_pool):
        raise hypervisor.HypervisorError(f"{source.name} and {target.name} share their storage pool: a migration "
                                         "that keeps the disks where they are is not supported yet")
    result = Plan()
    own = _own_volumes(instance)
    for item in files:
        if item.pool and item.volume in own:
            result.disks.append(item)
        elif item.pool and item.volume == instance.seed_volume_name:
            result.small.append(item)
        elif item.pool and (image := _library_image(item.volume)) is not None:
            result.paths[item.path] = distribution.ensure_copy(image=image, host=target, heartbeat=beat).path
            result.formats[item.path] = image.disk_format
        elif not item.pool and any(item.path.startswith(d + "/") for d in target.allowed_dirs):
            result.paths[item.path] = item.path  # a platform admin's file, which the target allows too
        else:
            raise hypervisor.HypervisorError(f"the domain's {item.role} {item.path} is not a file the panel can "
                                             f"bring to {target.name}")
    for disk in result.disks:
        if disk.backing and disk.backing not in result.paths and (image := _library_image(disk.backing_volume)):
            result.paths[disk.backing] = distribution.ensure_copy(image=image, host=target, heartbeat=beat).path
            result.formats[disk.backing] = image.disk_format
        if disk.backing and disk.backing not in result.paths:
            raise hypervisor.HypervisorError(f"the disk {disk.device} is an overlay of {disk.backing}, which is not "
                                             f"a library copy the panel can bring to {target.name}")
    return result


def _target_path(target: Host, name: str) -> str:
    path = hypervisor.volume_path(target.uri, target.storage_pool, name)
    if path is None:
        raise hypervisor.HypervisorError(f"the volume {name} did not appear in the pool of {target.name}")
    return path


def prepare(instance: Instance, source: Host, target: Host, moving: Plan, *, live: bool,
            beat: Callable[[], object]) -> None:
    """Make the target ready: the seed copied, the writable disks made empty there for a live move (over the
    target's copy of their image), the NICs' networks, addresses and filters set up."""
    for item in moving.small:
        moving.paths[item.path] = hypervisor.copy_volume(source.uri, item.pool, item.volume, target_uri=target.uri,
                                                         target_pool=target.storage_pool, beat=beat)
    if live:
        for disk in moving.disks:
            if disk.capacity % (1 << 30):
                raise hypervisor.HypervisorError(f"the disk {disk.device} is not a whole number of GiB")
            hypervisor.delete_volume(target.uri, target.storage_pool, disk.volume)  # (one an attempt left)
            backing = None
            if disk.backing:
                backing = hypervisor.Backing(moving.paths[disk.backing], moving.formats[disk.backing])
            moving.paths[disk.path] = hypervisor.create_volume(target.uri, target.storage_pool, disk.volume,
                                                               disk.capacity >> 30, backing=backing)
    provisioning.bring_ports(ports=list(instance.ports.select_related("network", "instance")), host=target)


def copy_disks(source: Host, target: Host, moving: Plan, *, beat: Callable[[], object], report: Reporter) -> None:
    """A cold move: each writable disk copied to the target as it is (snapshots and all). An overlay's file names
    its image's copy by path, so that copy must sit at the same path on the target."""
    for number, disk in enumerate(moving.disks, start=1):
        if disk.backing and moving.paths[disk.backing] != disk.backing:
            raise hypervisor.HypervisorError(
                f"the disk {disk.device} is an overlay of {disk.backing}, whose copy sits at "
                f"{moving.paths[disk.backing]} on {target.name}: a cold migration moves the disk's file as it is, "
                "so the two hosts' pools must be at the same path")
        if not report({"phase": "copying", "disk": disk.device, "disk_number": number, "disks": len(moving.disks)}):
            raise hypervisor.HypervisorError("the migration was cancelled: the instance stays on its host")
        moving.paths[disk.path] = hypervisor.copy_volume(source.uri, disk.pool, disk.volume, target_uri=target.uri,
                                                         target_pool=target.storage_pool, beat=beat)
    if not report({"phase": "defining it on the target"}, now=True):
        raise hypervisor.HypervisorError("the migration was cancelled: the instance stays on its host")


def abandon(instance: Instance, target: Host, moving: Plan) -> bool:
    """A move failed (or was cancelled): True if the domain went to the target after all; else (the guest stayed on
    the source) what the move made on the target goes again, as far as the target answers (its library copies stay,
    as on any host), and False."""
    try:
        where = hypervisor.where(instance.host.uri, target.uri, str(instance.uuid))
        if where == (False, True):
            return True
        if hypervisor.migrating(instance.host.uri, str(instance.uuid)):
            log.warning("instance %s: its migration still runs; what it made on %s stays", instance.pk, target.name)
            return False
        if where == (True, True) and hypervisor.state(target.uri, str(instance.uuid)) == hypervisor.PowerState.STOPPED:
            hypervisor.undefine(target.uri, str(instance.uuid))  # a cold move's definition, its source still there
        for item in (*moving.disks, *moving.small):
            hypervisor.delete_volume(target.uri, target.storage_pool, item.volume)
        provisioning.leave_host(ports=list(instance.ports.select_related("network")), host=target,
                                instance_id=instance.pk)
    except hypervisor.HypervisorError as exc:
        log.warning("instance %s: what its migration made on %s stays there: %s", instance.pk, target.name, exc)
    return False


def leave_source(instance: Instance, source: Host, moving: Plan | None) -> None:
    """Once the guest is on the target: the files the move copied, and its NICs' pins and filters, gone from the
    source; best effort (what the source does not let go of is logged, the guest runs on the target either way).
    moving: the plan the move followed (None: a run again after it, which finds the instance's own files)."""
    names = {(item.pool, item.volume) for item in (*moving.disks, *moving.small)} if moving is not None else {
        (source.storage_pool, name) for name in (*_own_volumes(instance), instance.seed_volume_name)}
    try:
        for pool, name in sorted(names):
            hypervisor.delete_volume(source.uri, pool, name)
        provisioning.leave_host(ports=list(instance.ports.select_related("network")), host=source,
                                instance_id=instance.pk)
    except hypervisor.HypervisorError as exc:
        log.warning("instance %s moved, but %s keeps some of what it had: %s", instance.pk, source.name, exc)


class Reporter:
    """Stores the migration's progress on its action (at most every PROGRESS_EVERY seconds) and pushes it to the
    instance's pages; tells the migration whether to go on (False once someone cancelled it)."""

    def __init__(self, action: InstanceAction) -> None:
        self.action_id, self.instance_id, self.last = action.pk, action.instance_id, 0.0
        self.cancelled, self.state = False, dict(action.progress or {})

    def __call__(self, progress: dict, *, now: bool = False) -> bool:
        """Take the latest figures (kept with the earlier ones: the last of each is shown); now: store them at once."""
        self.state.update(progress)
        moment = time.monotonic()
        if now or moment - self.last >= PROGRESS_EVERY:
            self.last = moment
            self.state["at"] = timezone.now().isoformat()
            with transaction.atomic():
                InstanceAction.objects.filter(pk=self.action_id).update(progress=self.state)
                instance = Instance.objects.filter(pk=self.instance_id).first()
                if instance is not None:
                    events.publish_on_commit(instance)
            self.cancelled = InstanceAction.objects.filter(pk=self.action_id, cancel_requested=True).exists()
        return not self.cancelled

    def live(self, progress: hypervisor.MigrationProgress) -> bool:
        return self(progress.as_dict() | {"phase": "copying its memory and disks"})
