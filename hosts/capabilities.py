"""What each technology can do: one table that placement, forms, services and the driver read.

A capability is listed here only when CloudPanel uses it; asking the table is how code
tells technologies apart (never by comparing with a technology by name).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hosts.choices import Technology


@dataclass(frozen=True)
class Capabilities:
    """One technology's row."""

    disk_volume: bool  # instances get disks from the host's storage pool, so they boot library disk images
    cdrom: bool  # a CD-ROM drive: ISO installs, media changes, cloud-init seeds
    kernel_boot: bool  # direct kernel boot (library boot kernels, or an admin's kernel path)
    host_disk: bool  # an admin may boot a disk by its path on the host
    host_template: bool  # runs a template from the host's own cache, named by an admin (OpenVZ)
    container_image: bool  # unpacks a library container image into a root filesystem of its own
    container_command: bool  # runs a command (its init) given with the instance
    networks: bool  # NICs on CloudPanel networks (with their firewall)
    stores_data: bool  # volumes hold real bytes (libvirt's test driver only pretends)
    signal_shutdown: bool  # a graceful shutdown signals init (there is no ACPI to press)
    console_flags: bool  # the console takes libvirt's safe/force flags (the LXC driver takes none)
    graphics: bool  # a VNC display with no network listener, reached through libvirt (virDomainOpenGraphicsFD)
    snapshots: bool  # snapshots inside the instance's qcow2 disk: with memory while it runs, disks alone when stopped
    volumes: bool = False  # volumes of the host's pool attached to its instances, or booted from
    disk_hotplug: bool = False  # volumes attached to and detached from a running guest (else while it is stopped)
    backups: bool = False  # backups of its disk: incremental (dirty bitmaps) while it runs, a full copy when stopped
    live_migration: bool = False  # a running guest moves to another host of the technology, its disks copied along
    cold_migration: bool = False  # a stopped one moves: its volumes copied through libvirt's streams, then defined


_VM = Capabilities(disk_volume=True, cdrom=False, kernel_boot=True, host_disk=True, host_template=False,
                   container_image=False, container_command=False, networks=True, stores_data=True,
                   signal_shutdown=False, console_flags=True, graphics=False,
                   snapshots=False)

TABLE: dict[Technology, Capabilities] = {
    Technology.QEMU: replace(_VM, cdrom=True, graphics=True, snapshots=True, volumes=True, disk_hotplug=True,
                               backups=True, live_migration=True, cold_migration=True),
    Technology.XEN: _VM,
    Technology.VBOX: replace(_VM, kernel_boot=False),
    Technology.TEST: replace(_VM, cdrom=True, stores_data=False, snapshots=True, volumes=True),
    Technology.LXC: Capabilities(
        disk_volume=False, cdrom=False, kernel_boot=False, host_disk=False, host_template=False,
        container_image=True, container_command=True, networks=True, stores_data=True, signal_shutdown=True,
        console_flags=False, graphics=False, snapshots=False),
    Technology.OPENVZ: Capabilities(
        disk_volume=False, cdrom=False, kernel_boot=False, host_disk=False, host_template=True,
        container_image=False, container_command=True, networks=False, stores_data=True, signal_shutdown=False,
        console_flags=True, graphics=False, snapshots=False),
}


def of(technology: str) -> Capabilities:
    """The row of a technology (given as a Technology or its value)."""
    return TABLE[Technology(technology)]
