"""The worker's steps of a migration (instances.migration): the target made ready, the move, the source left clean.

Each file the domain names is accounted for before anything moves: the library copies it uses (its image, ISO,
boot kernel) are copied to the target as library copies; its own writable disks (its disk, its volumes) are made
there to be filled by the migration; its cloud-init seed is copied; a platform admin's path on the host must be
allowed on the target too. A file the panel cannot account for refuses the migration with its path.

The source's worker runs the migration; what is done on the target (the steps marked host_steps.step) is done by
the target's own worker with per-host workers (instances.host_steps): the source's worker then never reaches the
target's libvirtd, and the source's libvirtd hands a running guest over to the target's itself. A stopped guest's
disks then travel through a file in the backup store (shared by the workers), not from libvirtd to libvirtd.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from hosts import hypervisor, paths
from hosts.models import Host
from images import distribution
from images.models import Image, ImageCopy
from instances import events, services
from instances.host_steps import HostSide, step
from instances.models import Instance, InstanceAction, Leftover, Volume
from networks import provisioning

log = logging.getLogger(__name__)
PROGRESS_EVERY = 1.0  # seconds between progress reports stored (and pushed to pages)
SEED_LIMIT = 16 << 20  # bytes: a seed is sent along with the step that puts it on the target


@dataclass
class Plan:
    """Where each of the domain's files will be on the target, and which disks the move copies."""

    paths: dict[str, str] = field(default_factory=dict)
    disks: list[hypervisor.DomainFile] = field(default_factory=list)  # its own, written to: copied
    small: list[hypervisor.DomainFile] = field(default_factory=list)  # its seed: copied before the move
    library: dict[str, str] = field(default_factory=dict)  # a library copy's path on the source → its image's UUID


def _own_volumes(instance: Instance) -> set[str]:
    return {instance.volume_name} | {v.volume_name for v in Volume.objects.filter(instance=instance)}


def _library_image(volume: str) -> Image | None:
    if not volume.startswith(ImageCopy.VOLUME_PREFIX):
        return None
    try:
        return Image.objects.filter(uuid=volume.removeprefix(ImageCopy.VOLUME_PREFIX)).first()
    except ValidationError:  # a name of the panel's shape, not of its making
        return None


def plan(instance: Instance, source: Host, target: Host) -> Plan:
    """Account for every file of the domain on the source (see the module's docstring)."""
    result = Plan()
    own = _own_volumes(instance)
    for item in hypervisor.domain_files(source.uri, str(instance.uuid)):
        if item.pool and item.volume in own:
            result.disks.append(item)
        elif item.pool and item.volume == instance.seed_volume_name:
            result.small.append(item)
        elif item.pool and (image := _library_image(item.volume)) is not None:
            result.library[item.path] = str(image.uuid)
        elif not item.pool and paths.normal(target.can.path_style, item.path) == item.path and any(
                paths.under(target.can.path_style, item.path, d) for d in target.allowed_dirs):
            result.paths[item.path] = item.path  # a platform admin's file, which the target allows too
        else:
            raise hypervisor.HypervisorError(f"the domain's {item.role} {item.path} is not a file the panel can "
                                             f"bring to {target.name}")
    for disk in result.disks:
        if disk.backing and disk.backing not in result.library and (image := _library_image(disk.backing_volume)):
            result.library[disk.backing] = str(image.uuid)
        if disk.backing and disk.backing not in result.library:
            raise hypervisor.HypervisorError(f"the disk {disk.device} is an overlay of {disk.backing}, which is not "
                                             f"a library copy the panel can bring to {target.name}")
    return result


def check(there: HostSide, instance: Instance, source: Host, *, live: bool) -> None:
    """Before anything is made on the target (check_target, on the target): that it can run the guest's CPU (a live
    move), and that its pool is not the source's own storage (a marker made in the source's pool is looked for
    there: what a failed move made on the target is removed by name, which must never be the source's files)."""
    cpu = hypervisor.guest_cpu(source.uri, str(instance.uuid)) if live else None
    with hypervisor.pool_marker(source.uri, source.storage_pool) as marker:
        there("check_target", cpu=asdict(cpu) if cpu else None, marker=marker, source=source.name)


@step
def check_target(action: InstanceAction, host: Host, *, cpu: dict | None, marker: str, source: str) -> dict:
    """On the target: see check."""
    if cpu and (refused := hypervisor.cpu_refusal(host.uri, hypervisor.GuestCpu(**cpu))):
        raise hypervisor.HypervisorError(refused)
    if hypervisor.holds_volume(host.uri, host.storage_pool, marker):
        raise hypervisor.HypervisorError(f"{source} and {host.name} share their storage pool: a migration that "
                                         "keeps the disks where they are is not supported yet")
    return {}


def prepare(there: HostSide, instance: Instance, source: Host, moving: Plan, *, live: bool) -> None:
    """Make the target ready (ready_target, on the target): the library copies, the seed (read here, sent along),
    the writable disks made empty there for a live move (over the target's copy of their image), the NICs'
    networks, addresses and filters."""
    seeds = []
    for item in moving.small:
        if item.capacity > SEED_LIMIT:
            raise hypervisor.HypervisorError(f"the seed {item.path} is larger than a seed can be")
        with hypervisor.reading_volume(source.uri, item.pool, item.volume) as read:
            seeds.append({"path": item.path, "volume": item.volume,
                          "data": base64.b64encode(read(SEED_LIMIT)).decode()})
    answer = there("ready_target", library=moving.library, seeds=seeds,
                   disks=[asdict(disk) for disk in moving.disks] if live else [])
    moving.paths.update(answer["paths"])


@step
def ready_target(action: InstanceAction, host: Host, *, library: dict[str, str], seeds: list[dict],
                 disks: list[dict]) -> dict:
    """On the target: see prepare. Returns each file's path there, by its path on the source."""
    instance = action.instance
    beat = functools.partial(services.keep_alive, instance_id=instance.pk)
    paths, formats = {}, {}
    for path, image_uuid in library.items():
        image = Image.objects.filter(uuid=image_uuid).first()
        if image is None:
            raise hypervisor.HypervisorError(f"the library image of {path} was deleted")
        paths[path] = distribution.ensure_copy(image=image, host=host, heartbeat=beat).path
        formats[path] = image.disk_format
    for seed in seeds:
        data = base64.b64decode(seed["data"])
        paths[seed["path"]] = hypervisor.upload_volume(host.uri, host.storage_pool, seed["volume"], size=len(data),
                                                       read=io.BytesIO(data).read)
    for disk in (hypervisor.DomainFile(**fields) for fields in disks):
        if disk.capacity % (1 << 30):
            raise hypervisor.HypervisorError(f"the disk {disk.device} is not a whole number of GiB")
        hypervisor.delete_volume(host.uri, host.storage_pool, disk.volume)  # (one an attempt left)
        backing = hypervisor.Backing(paths[disk.backing], formats[disk.backing]) if disk.backing else None
        paths[disk.path] = hypervisor.create_volume(host.uri, host.storage_pool, disk.volume, disk.capacity >> 30,
                                                    backing=backing)
    provisioning.bring_ports(ports=list(instance.ports.select_related("network", "instance")), host=host)
    return {"paths": paths}


def _transfer_file(action: InstanceAction, volume: str) -> Path:
    """Where a cold migration's disk waits between the two hosts' workers (in the backup store they share), for
    this attempt of the migration."""
    return Path(settings.CLOUDPANEL_BACKUP_DIR) / "migrations" / f"{action.pk}-{action.attempts}-{volume}"


def copy_disks(there: HostSide, source: Host, target: Host, moving: Plan, *, beat, report: Reporter) -> None:
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
        if not there.delegated:
            moving.paths[disk.path] = hypervisor.copy_volume(source.uri, disk.pool, disk.volume,
                                                             target_uri=target.uri, target_pool=target.storage_pool,
                                                             beat=beat)
            continue
        file = _transfer_file(there.action, disk.volume)
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            with (hypervisor.reading_volume(source.uri, disk.pool, disk.volume) as read,
                  open(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out):
                last = time.monotonic()
                while chunk := read(1 << 20):
                    out.write(chunk)
                    if time.monotonic() - last > 10:
                        beat()
                        last = time.monotonic()
            moving.paths[disk.path] = there("receive_disk", volume=disk.volume, size=file.stat().st_size)["path"]
        finally:
            file.unlink(missing_ok=True)
    if not report({"phase": "defining it on the target"}, now=True):
        raise hypervisor.HypervisorError("the migration was cancelled: the instance stays on its host")


@step
def receive_disk(action: InstanceAction, host: Host, *, volume: str, size: int) -> dict:
    """On the target: a cold move's disk, from the file the source's worker left in the backup store."""
    with open(_transfer_file(action, volume), "rb") as source:
        return {"path": hypervisor.upload_volume(host.uri, host.storage_pool, volume, size=size, read=source.read)}


def move_definition(there: HostSide, source: Host, instance: Instance, moving: Plan) -> None:
    """A cold move's last step: the definition (and its snapshots' records) defined on the target, then gone from
    the source."""
    moved = hypervisor.moved_definition(source.uri, str(instance.uuid), paths=moving.paths)
    there("define_on_target", xml=moved.xml, snapshots=moved.snapshots)
    hypervisor.undefine(source.uri, str(instance.uuid))


@step
def define_on_target(action: InstanceAction, host: Host, *, xml: str, snapshots: list) -> dict:
    hypervisor.define_moved(host.uri, hypervisor.MovedDefinition(xml, [(s, bool(c)) for s, c in snapshots]))
    return {}


@step
def look(action: InstanceAction, host: Host) -> dict:
    """Whether the instance's domain is defined on the host, and its state there."""
    domain_uuid = str(action.instance.uuid)
    if not hypervisor.defined(host.uri, domain_uuid):
        return {"defined": False, "state": None}
    return {"defined": True, "state": hypervisor.state(host.uri, domain_uuid)}


def abandon(there: HostSide, instance: Instance, moving: Plan) -> bool:
    """A move failed (or was cancelled): True if the domain went to the target after all (it is gone from the
    source, which a move is the only one to undefine it for); else (the guest stayed on the source) what the move
    made on the target goes again (clear_target, on the target; its library copies stay, as on any host), and
    False. When the target cannot do it now, it is recorded as the instance's leftover there, removed once the
    target's worker reconciles it (instances.tasks.remove_leftovers)."""
    source = instance.host
    try:
        if not hypervisor.defined(source.uri, str(instance.uuid)):
            return True
        if hypervisor.migrating(source.uri, str(instance.uuid)):
            log.warning("instance %s: its migration still runs; what it made on %s stays", instance.pk,
                        there.host.name)
            return False
    except hypervisor.HypervisorError as exc:
        log.warning("instance %s: its source does not say where it is (%s); the move counts as failed", instance.pk,
                    exc)
        return False
    volumes = [item.volume for item in (*moving.disks, *moving.small)]
    try:
        there("clear_target", volumes=volumes, patience=2 * settings.CLOUDPANEL_LEASE_SECONDS)
    except hypervisor.HypervisorError as exc:
        log.warning("instance %s: what its migration made on %s stays there until it is reconciled: %s",
                    instance.pk, there.host.name, exc)
        Leftover.objects.get_or_create(instance=instance, host=there.host, defaults={
            "pool": there.host.storage_pool, "nics": provisioning.nic_records(list(instance.ports.all()))})
    return False


@step
def clear_target(action: InstanceAction, host: Host, *, volumes: list[str]) -> dict:
    """On the target, after a move that failed with the guest still on the source: see abandon."""
    instance, domain_uuid = action.instance, str(action.instance.uuid)
    if hypervisor.defined(host.uri, domain_uuid) and hypervisor.state(host.uri, domain_uuid) == \
            hypervisor.PowerState.STOPPED:
        hypervisor.undefine(host.uri, domain_uuid)  # a cold move's definition, its source still there
    for volume in volumes:
        hypervisor.delete_volume(host.uri, host.storage_pool, volume)
    provisioning.leave_host(ports=list(instance.ports.select_related("network")), host=host,
                            instance_id=instance.pk)
    return {}


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
