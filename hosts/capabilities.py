"""What each technology can do: one table that placement, forms, services and the driver read.

A capability is listed here only when CloudPanel uses it; asking the table is how code
tells technologies apart (never by comparing with a technology by name).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hosts import paths
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
    serial_console: bool = True  # libvirt opens its console as a stream (virDomainOpenConsole), shown in the browser
    events: bool = True  # its driver pushes domain lifecycle events (else the periodic reconcile alone sees changes)
    library: bool = True  # library objects reach it as copies in its storage pool (libvirt's volume upload)
    storage_pools: bool = True  # its driver has storage pools (a probe lists them; disks are made in them)
    architectures: bool = False  # guests of other architectures (QEMU's emulators), CPU models and machine types
    proven: str = "definitions against libvirt's schema"  # what the tests show: "live" (real guests here), or else
    operator: str = ""  # what an operator provides that the panel does not (credentials, templates, disks)
    path_style: str = paths.POSIX  # how its host names files (hosts.paths): admins' disk and kernel paths


_VM = Capabilities(disk_volume=True, cdrom=False, kernel_boot=True, host_disk=True, host_template=False,
                   container_image=False, container_command=False, networks=True, stores_data=True,
                   signal_shutdown=False, console_flags=True, graphics=False,
                   snapshots=False)
# Hypervisors reached through a remote management API: the panel defines, runs and watches their guests, which boot
# disks already on the host (an admin names them); their networks and storage stay the host's own.
_REMOTE = replace(_VM, disk_volume=False, kernel_boot=False, networks=False, library=False, serial_console=False,
                  events=False,
                  proven="definitions against libvirt's schema; registration, and a failed probe's reason")

TABLE: dict[Technology, Capabilities] = {
    Technology.QEMU: replace(_VM, cdrom=True, graphics=True, snapshots=True, volumes=True, disk_hotplug=True,
                               backups=True, live_migration=True, cold_migration=True, architectures=True,
                               proven="live"),
    Technology.XEN: replace(_VM, operator="a Xen host with libvirt's libxl driver (xen:///system); its disks use "
                                          "QEMU's qdisk back end (qcow2)"),
    Technology.VBOX: replace(_VM, disk_volume=False, kernel_boot=False, library=False, storage_pools=False,
                             networks=False, serial_console=False,
                             operator="VirtualBox on the host (vbox:///session as the user owning the VMs), and its "
                                      "disks (VDI, VMDK, VHD) under a directory the host allows"),
    Technology.TEST: replace(_VM, cdrom=True, stores_data=False, snapshots=True, volumes=True,
                             proven="stands in for a hypervisor in most of the suite; it runs nothing (its disks and "
                                    "consoles are pretend)"),
    Technology.LXC: Capabilities(
        disk_volume=False, cdrom=False, kernel_boot=False, host_disk=False, host_template=False,
        container_image=True, container_command=True, networks=True, stores_data=True, signal_shutdown=True,
        console_flags=False, graphics=False, snapshots=False, library=False, proven="live"),
    Technology.OPENVZ: Capabilities(
        disk_volume=False, cdrom=False, kernel_boot=False, host_disk=False, host_template=True,
        container_image=False, container_command=True, networks=False, stores_data=True, signal_shutdown=False,
        console_flags=True, graphics=False, snapshots=False, serial_console=False, library=False,
        storage_pools=False, events=False,
        operator="OS templates in the host's template cache (/vz/template/cache), named on the host's page"),
    Technology.VMWARE: replace(_REMOTE, path_style=paths.DATASTORE,
                               operator="the ESXi or vCenter address and credentials (libvirt's auth.conf), and "
                                        "disks in its datastores ('[datastore1] vm/disk.vmdk')"),
    Technology.HYPERV: replace(_REMOTE, storage_pools=False, path_style=paths.WINDOWS,
                               operator="WinRM enabled on the Hyper-V host, its credentials (libvirt's auth.conf), a "
                                        "libvirt built with the hyperv driver, and its disks (VHDX) on the host"),
    Technology.BHYVE: replace(_REMOTE, serial_console=True, events=True,
                              operator="a FreeBSD host running libvirtd with bhyve's UEFI firmware (bhyve-firmware, "
                                       "/usr/local/share/uefi-firmware/BHYVE_UEFI.fd), and raw disk images under a "
                                       "directory it allows"),
    Technology.VZ: replace(_REMOTE, events=True,
                           operator="a Virtuozzo host running libvirtd, and its disks (ploop) under a directory it "
                                    "allows"),
    Technology.CH: replace(_REMOTE, kernel_boot=True, serial_console=True,
                           operator="a host running libvirtd with Cloud Hypervisor, a kernel or firmware "
                                    "(hypervisor-fw) and raw disks under a directory it allows"),
}


def of(technology: str) -> Capabilities:
    """The row of a technology (given as a Technology or its value)."""
    return TABLE[Technology(technology)]


# What the technologies page and the README's table show of each row, in this order (lifecycle and the periodic
# reconcile work for every technology libvirt drives).
FEATURES: tuple[tuple[str, str], ...] = (
    ("events", "State events"),
    ("disk_volume", "Library disk images"),
    ("kernel_boot", "Kernel boot"),
    ("container_image", "Container images"),
    ("host_disk", "Disks on the host"),
    ("host_template", "OS templates"),
    ("cdrom", "ISO installs and cloud-init"),
    ("serial_console", "Serial console"),
    ("graphics", "Graphical console"),
    ("snapshots", "Snapshots"),
    ("volumes", "Volumes"),
    ("backups", "Backups"),
    ("live_migration", "Live migration"),
    ("cold_migration", "Cold migration"),
    ("networks", "Networks and firewall"),
    ("architectures", "Other architectures and CPU models"),
)


def features(technology: str) -> list[tuple[str, bool]]:
    """The row's features as (label, whether it has it)."""
    row = of(technology)
    return [(label, bool(getattr(row, name))) for name, label in FEATURES]
