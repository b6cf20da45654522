"""The guest architectures CloudPanel describes to QEMU: per architecture, how its guests are laid out.

A QEMU host offers the architectures it has emulators for (its capabilities say which); an
instance of one of them gets the layout below. An architecture with no row here is shown
on the host's page but not offered: nothing here would describe its guests.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    """How guests of one architecture are described."""

    machine: str  # the machine type used when an instance names none
    console: str  # the kernel's name for its first serial port (the default command line's console=)
    cdrom_bus: str  # where its CD-ROM drives go
    video: str  # the display's video card model
    acpi: bool  # ACPI (ARM and RISC-V machines have it only with UEFI firmware, which a kernel boot has not)
    tcg_cpu: str = ""  # the CPU model software emulation needs ("" = QEMU's default will do)
    kvm_cpu: str = ""  # the CPU mode KVM needs ("" = QEMU's default will do; ARM's virt machine has no default for it)
    usb: str = ""  # the USB controller its pointer (a tablet) needs, where the machine has none of its own
    live: bool = False  # a guest of it booted to a shell through the panel in the tests here


ARCHES: dict[str, Arch] = {
    "x86_64": Arch("pc", "ttyS0", "ide", "vga", acpi=True, live=True),
    "i686": Arch("pc", "ttyS0", "ide", "vga", acpi=True),
    # (without a named CPU, libvirt gives a TCG guest a 32-bit core and a 64-bit kernel stays silent)
    "aarch64": Arch("virt", "ttyAMA0", "scsi", "virtio", acpi=False, tcg_cpu="cortex-a57", kvm_cpu="host-passthrough",
                    live=True, usb="qemu-xhci"),
    "armv7l": Arch("virt", "ttyAMA0", "scsi", "virtio", acpi=False, tcg_cpu="cortex-a15", usb="qemu-xhci"),
    "ppc64": Arch("pseries", "hvc0", "scsi", "vga", acpi=False),
    "ppc64le": Arch("pseries", "hvc0", "scsi", "vga", acpi=False),
    "riscv64": Arch("virt", "ttyS0", "scsi", "virtio", acpi=False, usb="qemu-xhci"),
    "mips64el": Arch("malta", "ttyS0", "ide", "cirrus", acpi=False, usb="qemu-xhci"),
    "sparc64": Arch("sun4u", "ttyS0", "ide", "vga", acpi=False, usb="qemu-xhci"),
}
DEFAULT_ARCH = "x86_64"
ARCH_CHOICES = [(name, name) for name in ARCHES]


def of(arch: str) -> Arch:
    """The row of an architecture ("" = the default one)."""
    return ARCHES[arch or DEFAULT_ARCH]
