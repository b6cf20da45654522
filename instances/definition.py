"""The domain definition an instance would get on a host, worked out without touching the host: for plans.

The worker writes the real one (tasks._create) once it has made the disks and copies the paths come from; here each
path is where that work puts it: a volume of the host's pool (by the path its last probe read, else named by the
pool), a library object's copy there (the path of a copy already made), the container's own directory.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from django.conf import settings

from hosts import guests, hypervisor
from hosts.models import Host
from images import rootfs
from images.choices import DiskFormat
from images.models import Image, ImageCopy
from instances import boot
from instances.choices import BootSource
from instances.models import Instance, Volume


def _pool_dir(host: Host, pool: str) -> str:
    return next((p["path"] for p in host.pools if p.get("name") == pool and p.get("path")), f"[pool {pool}]")


def _in_pool(host: Host, volume: str, pool: str = "") -> str:
    return f"{_pool_dir(host, pool or host.storage_pool)}/{volume}"


def _copy(image: Image, host: Host) -> str:
    made = ImageCopy.objects.filter(image=image, host=host).exclude(path="").values_list("path", flat=True).first()
    return made or _in_pool(host, ImageCopy.volume_name(image))


def _disks(instance: Instance, host: Host) -> dict[str, object]:
    """The disks, as tasks._create lays them out."""
    disks: dict[str, object] = {"boot_disk": instance.boot_disk}
    image = instance.image
    if instance.boot_source == BootSource.IMAGE:
        if image is not None and image.disk_format == DiskFormat.ISO and instance.restored_from_id is None:
            disks = {"boot_disk": "", "disk_path": _in_pool(host, instance.volume_name), "boot_cdrom": True}
        else:
            disks["boot_disk"] = _in_pool(host, instance.volume_name)
    if host.can.volumes:
        disks["volumes"] = ()
        for volume in Volume.objects.live().filter(instance=instance).order_by("device"):
            path = _in_pool(host, volume.volume_name, volume.pool)
            if volume.boot:
                disks["boot_disk"] = path
            else:
                disks["volumes"] += ((path, volume.device),)
    if instance.boot_source == BootSource.CONTAINER:
        disks.update(boot_disk="", root_dir=str(Path(settings.CLOUDPANEL_CONTAINER_DIR) / instance.root_dir_name
                                                / rootfs.ROOT),
                     idmap=hypervisor.IdMap(target=boot.container_owner(instance.tenant_id)),
                     init_env=tuple(sorted(instance.init_env.items())))
    elif instance.boot_kernel is not None:
        chosen = instance.boot_kernel
        disks.update(kernel=_copy(chosen.kernel, host), initrd=_copy(chosen.initrd, host) if chosen.initrd else "",
                     cmdline=instance.cmdline or chosen.cmdline)
    elif instance.kernel:
        disks.update(kernel=instance.kernel, initrd=instance.initrd, cmdline=instance.cmdline)
    if instance.boot_source != BootSource.IMAGE and instance.disk_gib and host.can.disk_volume:
        disks["disk_path"] = _in_pool(host, instance.volume_name)
    if instance.cdrom is not None:
        disks["cdrom_path"] = _copy(instance.cdrom, host)
    if instance.user_data:
        disks["seed_path"] = _in_pool(host, instance.seed_volume_name)
    return disks


def guest_of(instance: Instance) -> guests.Guest:
    """What the instance's guest is (one from before architectures were recorded: its host's)."""
    arch = instance.arch or (guests.default_arch(instance.host) if instance.host is not None else "")
    return guests.Guest(arch=arch, machine=instance.machine, cpu_mode=instance.cpu_mode,
                        cpu_model=instance.cpu_model, vcpus=instance.vcpus, made=True)


def guest_fields(instance: Instance, host: Host) -> dict[str, str]:
    """The DomainSpec's fields of its guest on the host: its architecture, machine type and CPU (its own, fixed when
    it was made: a host's default CPU is for instances made later)."""
    return {"arch": guests.arch_for(host, guest_of(instance)), "machine": instance.machine,
            "cpu_mode": instance.cpu_mode, "cpu_model": instance.cpu_model}


def kvm(instance: Instance, host: Host) -> bool:
    """Whether the instance's guest runs under KVM on the host."""
    return guests.uses_kvm(host, guests.arch_for(host, guest_of(instance)))


def spec(instance: Instance, host: Host) -> hypervisor.DomainSpec:
    """What the worker would define for the instance on the host (the size its row holds)."""
    nics = tuple(hypervisor.Nic(port.network.libvirt_name, port.mac,
                                port.filter_name if port.security_groups.all() else "")
                 for port in instance.ports.select_related("network").prefetch_related("security_groups")
                 .order_by("position"))
    return hypervisor.DomainSpec(
        name=instance.domain_name, title=instance.name, uuid=str(instance.uuid), vcpus=instance.vcpus,
        memory_mib=instance.memory_mib, init=instance.init, cdrom_drive=instance.cdrom_drive,
        accelerator=hypervisor.Accelerator(host.accelerator), nics=nics, **guest_fields(instance, host),
        **_disks(instance, host))


def text(instance: Instance, host: Host) -> str:
    """The definition, as XML indented for reading."""
    return hypervisor.readable_domain_xml(hypervisor.Technology(host.technology), spec(instance, host),
                                          kvm_available=kvm(instance, host))


def diff(before: str, after: str, *, was: str, becomes: str) -> str:
    """A unified diff of two definitions ("" when they are alike)."""
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile=was, tofile=becomes))
