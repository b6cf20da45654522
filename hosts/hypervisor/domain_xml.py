"""Domain and volume XML: one pure builder per technology, from a DomainSpec, with ElementTree.

No libvirt here: the builders are testable anywhere and their output is checked
against libvirt's own schema in the tests. Text and attributes are escaped by the
XML library, so no field of a spec can alter the document's structure.
"""

from __future__ import annotations

import shlex
import xml.etree.ElementTree as ET
from collections.abc import Callable

from cloudpanel.exceptions import DomainError
from hosts import architectures
from hosts.choices import Accelerator, CpuMode, Technology
from hosts.specs import Backing, DomainSpec, Nic


class UnsafeDefinition(DomainError):
    """The spec asks for a definition that would give a guest the host: it is never built."""


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _common(spec: DomainSpec, domain_type: str) -> ET.Element:
    root = ET.Element("domain", type=domain_type)
    _sub(root, "name", spec.name)
    _sub(root, "uuid", spec.uuid)
    if spec.title:
        _sub(root, "title", spec.title)
    _sub(root, "memory", str(spec.memory_mib), unit="MiB")
    _sub(root, "vcpu", str(spec.vcpus))
    return root


def _disk(devices: ET.Element, path: str, target: str, bus: str, driver: str | None, fmt: str = "qcow2") -> None:
    disk = _sub(devices, "disk", type="file", device="disk")
    if driver:
        _sub(disk, "driver", name=driver, type=fmt)
    _sub(disk, "source", file=path)
    _sub(disk, "target", dev=target, bus=bus)


def disk_xml(path: str, target: str) -> str:
    """A volume's qcow2 disk on the virtio bus at target (also the device of a hot-plug)."""
    holder = ET.Element("devices")
    _disk(holder, path, target, "virtio", "qemu")
    return ET.tostring(holder[0], encoding="unicode")


def interface_xml(nic: Nic, model: str | None = "virtio") -> ET.Element:
    """A NIC on a libvirt network (also the device of a hot-plug)."""
    interface = ET.Element("interface", type="network")
    _sub(interface, "mac", address=nic.mac)
    _sub(interface, "source", network=nic.network)
    if model:
        _sub(interface, "model", type=model)
    if nic.filter:
        _sub(interface, "filterref", filter=nic.filter)
    return interface


def _nics(devices: ET.Element, spec: DomainSpec, model: str | None = "virtio") -> None:
    for nic in spec.nics:
        devices.append(interface_xml(nic, model))


def _cdrom(devices: ET.Element, path: str, target: str, bus: str) -> None:
    """A read-only CD-ROM drive; without a path it is empty, ready for media to be inserted."""
    cdrom = _sub(devices, "disk", type="file", device="cdrom")
    _sub(cdrom, "driver", name="qemu", type="raw")
    if path:
        _sub(cdrom, "source", file=path)
    _sub(cdrom, "target", dev=target, bus=bus)
    _sub(cdrom, "readonly")


_DRIVES = {"ide": ("hdc", "hdd"), "scsi": ("sdc", "sdd")}  # a bus's (media drive, seed drive)


def media_drive(arch: str) -> tuple[str, str]:
    """Where a guest of the architecture has its media drive: (target, bus)."""
    bus = architectures.of(arch if arch in architectures.ARCHES else "").cdrom_bus
    return _DRIVES[bus][0], bus


def cdrom_xml(path: str, arch: str = "") -> str:
    """The media drive as a device update: with path, that ISO inserted; without, the drive emptied."""
    holder = ET.Element("devices")
    _cdrom(holder, path, *media_drive(arch))
    return ET.tostring(holder[0], encoding="unicode")


def _serial_console(devices: ET.Element, target_type: str = "serial") -> None:
    if target_type == "serial":
        serial = _sub(devices, "serial", type="pty")
        _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type=target_type, port="0")


def _display(devices: ET.Element, video: str = "vga") -> None:
    """A VNC display with no listener at all (reached only through libvirt) that every viewer shares, a video card
    and a tablet for the pointer (absolute coordinates, so a browser's mouse lands where it points)."""
    _sub(devices, "input", type="tablet", bus="usb")
    graphics = _sub(devices, "graphics", type="vnc", sharePolicy="force-shared")  # no viewer shuts the others out
    _sub(graphics, "listen", type="none")
    card = _sub(devices, "video")
    _sub(card, "model", type=video)


def _cpu(root: ET.Element, spec: DomainSpec, fallback: str) -> None:
    """The guest's CPU: the mode asked for, else the architecture's need under its accelerator (a mode, or a model
    name), else QEMU's own."""
    mode = CpuMode(spec.cpu_mode)
    if mode in (CpuMode.PASSTHROUGH, CpuMode.HOST_MODEL):
        _sub(root, "cpu", mode=mode.value)
    elif mode == CpuMode.CUSTOM:
        cpu = _sub(root, "cpu", mode="custom", match="exact")
        _sub(cpu, "model", spec.cpu_model, fallback="forbid")
    elif fallback in (CpuMode.PASSTHROUGH, CpuMode.HOST_MODEL):
        _sub(root, "cpu", mode=fallback)
    elif fallback:
        cpu = _sub(root, "cpu", mode="custom", match="exact")
        _sub(cpu, "model", fallback, fallback="allow")


def build_qemu(spec: DomainSpec, kvm_available: bool) -> ET.Element:
    """QEMU/KVM: KVM when asked (or on auto when the host offers it for the guest's architecture: kvm_available),
    else TCG; laid out for its architecture."""
    use_kvm = spec.accelerator == Accelerator.KVM or (
        spec.accelerator == Accelerator.AUTO and kvm_available
    )
    arch_name = spec.arch or architectures.DEFAULT_ARCH
    if arch_name not in architectures.ARCHES:
        raise DomainError(f"CloudPanel does not describe {arch_name} guests "
                          f"(it does: {', '.join(architectures.ARCHES)})")
    arch = architectures.of(arch_name)
    root = _common(spec, "kvm" if use_kvm else "qemu")
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch=arch_name, machine=spec.machine or arch.machine)
    if spec.kernel:
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", spec.initrd)
        default = f"console=tty0 console={arch.console}" if arch.acpi else f"console={arch.console}"
        _sub(os_el, "cmdline", spec.cmdline or default)
    else:
        if spec.boot_cdrom:
            _sub(os_el, "boot", dev="cdrom")
        _sub(os_el, "boot", dev="hd")
    if arch.acpi:
        features = _sub(root, "features")
        _sub(features, "acpi")
    _cpu(root, spec, arch.kvm_cpu if use_kvm else arch.tcg_cpu)
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    if spec.boot_disk:
        _disk(devices, spec.boot_disk, "vda", "virtio", "qemu")
    if spec.disk_path:
        _disk(devices, spec.disk_path, "vdb" if spec.boot_disk else "vda", "virtio", "qemu")
    for path, target in spec.volumes:
        _disk(devices, path, target, "virtio", "qemu")
    drives = _DRIVES[arch.cdrom_bus]
    if spec.cdrom_path or spec.cdrom_drive:
        _cdrom(devices, spec.cdrom_path, drives[0], arch.cdrom_bus)
    if spec.seed_path:
        _cdrom(devices, spec.seed_path, drives[1], arch.cdrom_bus)
    _nics(devices, spec)
    _serial_console(devices)
    if arch.usb:
        _sub(devices, "controller", type="usb", model=arch.usb)
    _display(devices, arch.video)
    return root


def build_xen(spec: DomainSpec) -> ET.Element:
    """Xen paravirtualised guest (direct kernel boot) or HVM guest (disk boot)."""
    root = _common(spec, "xen")
    os_el = _sub(root, "os")
    devices_console = "xen"
    if spec.kernel:
        _sub(os_el, "type", "linux")
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", spec.initrd)
        _sub(os_el, "cmdline", spec.cmdline or "console=hvc0")
    else:
        _sub(os_el, "type", "hvm")
        _sub(os_el, "boot", dev="hd")
        devices_console = "serial"
    devices = _sub(root, "devices")
    for index, path in enumerate(p for p in (spec.boot_disk, spec.disk_path) if p):
        _disk(devices, path, f"xvd{'ab'[index]}", "xen", "qemu")  # (qcow2, like every disk the panel makes)
    _nics(devices, spec, None)
    _serial_console(devices, devices_console)
    return root


def _init(os_el: ET.Element, command: str) -> None:
    """A container's init: the program, then each argument as libvirt wants them (shell-style quoting)."""
    program, *args = shlex.split(command) or ["/sbin/init"]
    _sub(os_el, "init", program)
    for arg in args:
        _sub(os_el, "initarg", arg)


CPU_PERIOD_US = 100_000


def build_lxc(spec: DomainSpec) -> ET.Element:
    """LXC: an application container runs one command, a system container its image's /sbin/init, always in its
    own root filesystem and user namespace (container root is an unprivileged host uid) and network namespace."""
    root_dir = spec.root_dir.rstrip("/")
    if not root_dir.startswith("/") or spec.idmap is None or spec.idmap.target <= 0 or spec.idmap.count <= 0:
        raise UnsafeDefinition("an LXC container needs its own root filesystem and a user-namespace mapping")
    root = _common(spec, "lxc")
    cputune = _sub(root, "cputune")  # its vCPUs' worth of CPU time, at most (its memory is capped by <memory>)
    _sub(cputune, "period", str(CPU_PERIOD_US))
    _sub(cputune, "quota", str(spec.vcpus * CPU_PERIOD_US))
    os_el = _sub(root, "os")
    _sub(os_el, "type", "exe")
    _init(os_el, spec.init)
    for name, value in spec.init_env:
        _sub(os_el, "initenv", value, name=name)
    features = _sub(root, "features")
    _sub(features, "privnet")  # its own network namespace (which libvirt also needs for a user namespace)
    idmap = _sub(root, "idmap")
    for kind in ("uid", "gid"):
        _sub(idmap, kind, start="0", target=str(spec.idmap.target), count=str(spec.idmap.count))
    devices = _sub(root, "devices")
    fs = _sub(devices, "filesystem", type="mount", accessmode="passthrough")
    _sub(fs, "source", dir=root_dir)
    _sub(fs, "target", dir="/")
    _nics(devices, spec, None)
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="lxc", port="0")
    return root


def build_openvz(spec: DomainSpec) -> ET.Element:
    """OpenVZ container from the host's OS template named by the instance."""
    if not spec.boot_disk:
        raise DomainError("an OpenVZ container needs an OS template of its host")
    root = _common(spec, "openvz")
    os_el = _sub(root, "os")
    _sub(os_el, "type", "exe")
    _init(os_el, spec.init)
    devices = _sub(root, "devices")
    fs = _sub(devices, "filesystem", type="template")
    _sub(fs, "source", name=spec.boot_disk)
    _sub(fs, "target", dir="/")
    return root


def build_vbox(spec: DomainSpec) -> ET.Element:
    """VirtualBox VM booting its disk."""
    root = _common(spec, "vbox")
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm")
    _sub(os_el, "boot", dev="hd")
    devices = _sub(root, "devices")
    for index, path in enumerate(p for p in (spec.boot_disk, spec.disk_path) if p):
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "source", file=path)
        _sub(disk, "target", dev=f"hd{'ab'[index]}", bus="sata")
    _nics(devices, spec, None)
    return root


def _host_disks(devices: ET.Element, spec: DomainSpec, targets: str, bus: str, driver: str | None = None,
                fmt: str = "raw") -> None:
    """The disks an admin named on the host (its boot disk, then its data disk) as targets[0], targets[1]."""
    for target, path in zip(targets.split(), (p for p in (spec.boot_disk, spec.disk_path) if p), strict=False):
        _disk(devices, path, target, bus, driver, fmt)


def _vm(spec: DomainSpec, domain_type: str, **os_type: str) -> tuple[ET.Element, ET.Element, ET.Element]:
    """A fully virtualised guest of a remote hypervisor's: the domain, its <os> and its <devices>."""
    root = _common(spec, domain_type)
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", **os_type)
    return root, os_el, _sub(root, "devices")


def build_vmware(spec: DomainSpec) -> ET.Element:
    """VMware ESXi or vCenter: a VM booting a VMDK of a datastore ('[datastore1] vm/disk.vmdk')."""
    root, _os, devices = _vm(spec, "vmware", arch=spec.arch or architectures.DEFAULT_ARCH)
    _host_disks(devices, spec, "sda sdb", "scsi")
    _sub(devices, "controller", type="scsi", index="0", model="lsilogic")
    return root


def build_hyperv(spec: DomainSpec) -> ET.Element:
    """Microsoft Hyper-V: a VM booting a VHDX on the Hyper-V host."""
    root, _os, devices = _vm(spec, "hyperv")
    _host_disks(devices, spec, "hda hdb", "ide")
    return root


def build_bhyve(spec: DomainSpec) -> ET.Element:
    """bhyve (FreeBSD): a VM booting a raw disk image through its UEFI firmware, its console a null-modem pair."""
    root, os_el, devices = _vm(spec, "bhyve")
    _sub(os_el, "loader", "/usr/local/share/uefi-firmware/BHYVE_UEFI.fd", readonly="yes", type="pflash")
    _host_disks(devices, spec, "hda hdb", "sata", "file")
    console = _sub(devices, "console", type="nmdm")
    _sub(console, "source", master=f"/dev/nmdm{spec.uuid}A", slave=f"/dev/nmdm{spec.uuid}B")
    return root


def build_vz(spec: DomainSpec) -> ET.Element:
    """Virtuozzo: a VM booting a ploop disk."""
    root, _os, devices = _vm(spec, "vz")
    _host_disks(devices, spec, "sda sdb", "scsi", "vz", "ploop")
    return root


def build_ch(spec: DomainSpec) -> ET.Element:
    """Cloud Hypervisor: a kernel (or its hypervisor-fw firmware) and raw virtio disks, a serial console."""
    if not spec.kernel:
        raise DomainError("a Cloud Hypervisor guest needs a kernel or firmware to boot")
    root = _common(spec, "kvm")  # (libvirt's Cloud Hypervisor driver runs KVM domains)
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm")
    _sub(os_el, "kernel", spec.kernel)
    if spec.initrd:
        _sub(os_el, "initrd", spec.initrd)
    _sub(os_el, "cmdline", spec.cmdline or "console=ttyS0")
    devices = _sub(root, "devices")
    _host_disks(devices, spec, "vda vdb", "virtio", "qemu")
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    return root


def build_test(spec: DomainSpec) -> ET.Element:
    """libvirt's test driver accepts a plain HVM description."""
    root = _common(spec, "test")
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm")
    devices = _sub(root, "devices")
    for path in (spec.boot_disk, spec.disk_path):
        if path:
            _disk(devices, path, "vdb" if devices.find("disk") is not None else "vda", "virtio", None)
    for path, target in spec.volumes:
        _disk(devices, path, target, "virtio", None)
    for path, target in zip((spec.cdrom_path, spec.seed_path), _DRIVES["ide"], strict=True):
        if path:
            _cdrom(devices, path, target, "ide")
    _nics(devices, spec, None)
    return root


def domain_xml(technology: Technology, spec: DomainSpec, *, kvm_available: bool = False) -> str:
    """The domain XML for a spec on a host of the given technology."""
    builders: dict[Technology, Callable[[DomainSpec], ET.Element]] = {
        Technology.QEMU: lambda s: build_qemu(s, kvm_available),
        Technology.XEN: build_xen,
        Technology.LXC: build_lxc,
        Technology.OPENVZ: build_openvz,
        Technology.VBOX: build_vbox,
        Technology.VMWARE: build_vmware,
        Technology.HYPERV: build_hyperv,
        Technology.BHYVE: build_bhyve,
        Technology.VZ: build_vz,
        Technology.CH: build_ch,
        Technology.TEST: build_test,
    }
    return ET.tostring(builders[Technology(technology)](spec), encoding="unicode")


def readable_domain_xml(technology: Technology, spec: DomainSpec, *, kvm_available: bool = False) -> str:
    """The same domain XML, indented for people to read (a plan shows it)."""
    root = ET.fromstring(domain_xml(technology, spec, kvm_available=kvm_available))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def snapshot_xml(name: str, description: str) -> str:
    """A snapshot of the domain as it is: its disks, and its memory if it runs (libvirt's default, internal to the
    qcow2 disks)."""
    root = ET.Element("domainsnapshot")
    _sub(root, "name", name)
    if description:
        _sub(root, "description", description)
    return ET.tostring(root, encoding="unicode")


def backup_xml(disks: list[str], target: str, incremental: str = "") -> str:
    """A push-mode backup of the domain's first disk (vda) into the qcow2 file at target (made beforehand), only
    what changed since the checkpoint `incremental` if given; the domain's other disks (disks) take no part."""
    root = ET.Element("domainbackup", mode="push")
    if incremental:
        _sub(root, "incremental", incremental)
    listed = _sub(root, "disks")
    for name in disks:
        if name != BACKED_UP:
            _sub(listed, "disk", name=name, backup="no")
            continue
        disk = _sub(listed, "disk", name=name, backup="yes", type="file")
        _sub(disk, "target", file=target)
        _sub(disk, "driver", type="qcow2")
    return ET.tostring(root, encoding="unicode")


def checkpoint_xml(name: str, disks: list[str]) -> str:
    """A checkpoint (a dirty bitmap) of the domain's first disk, from which the next backup is incremental."""
    root = ET.Element("domaincheckpoint")
    _sub(root, "name", name)
    listed = _sub(root, "disks")
    for disk in disks:
        _sub(listed, "disk", name=disk, checkpoint="bitmap" if disk == BACKED_UP else "no")
    return ET.tostring(root, encoding="unicode")


BACKED_UP = "vda"


def _volume(name: str, capacity: str, unit: str, fmt: str) -> ET.Element:
    vol = ET.Element("volume")
    _sub(vol, "name", name)
    _sub(vol, "capacity", capacity, unit=unit)
    _sub(vol, "allocation", "0")
    target = _sub(vol, "target")
    _sub(target, "format", type=fmt)
    if fmt == "qcow2":
        _sub(target, "compat", "1.1")  # (v3: it holds the dirty bitmaps of incremental backups)
    return vol


def volume_xml(name: str, size_gib: int, *, backing: Backing | None = None) -> str:
    """A sparse qcow2 storage volume of the given capacity, copy-on-write over backing if given."""
    vol = _volume(name, str(size_gib), "GiB", "qcow2")
    if backing is not None:
        store = _sub(vol, "backingStore")
        _sub(store, "path", backing.path)
        _sub(store, "format", type=backing.format)
    return ET.tostring(vol, encoding="unicode")


def raw_volume_xml(name: str, size: int) -> str:
    """A raw volume of exactly size bytes, to be filled by an upload (it holds an image's bytes as they are)."""
    return ET.tostring(_volume(name, str(size), "bytes", "raw"), encoding="unicode")
