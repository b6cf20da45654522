"""What an instance boots: checked when it is asked for, again against the host it is placed on.

Tenants boot only objects of the library they may see: disk images and ISOs, boot kernels
(kernel + initrd + command line) and container images (root-filesystem archives, which
LXC containers unpack into a tree of their own). Paths on a host (a kernel, an initrd, a
disk; an OpenVZ template's name) are for platform admins only, and only under the
directories an admin allows on that host: none by default.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from django.conf import settings

from cloudpanel.exceptions import NotFound
from cloudpanel.text import CONTROL
from hosts import capabilities, paths
from hosts.capabilities import Capabilities
from hosts.choices import Technology
from hosts.models import Host
from hosts.specs import ID_RANGE
from images.choices import DiskFormat, ImageStatus
from images.models import BootKernel, Image, usable_by
from instances.choices import BootSource
from instances.exceptions import InvalidInstance

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")  # whole names only (fullmatch)
MAX_ENV = 64
MAX_ENV_VALUE = 4096
HOST_PATHS = (("kernel", "kernel"), ("initrd", "initrd"), ("boot_disk", "boot disk"))
ADMIN_ONLY = "only platform admins boot from paths on a host; choose a boot kernel, an image or a container " \
             "image from the library"


def runs(source: str, can: Capabilities, *, needs_cdrom: bool = False, library: bool = False) -> bool:
    """Whether a technology that can this runs the boot source (an image boot may need a CD-ROM drive too; a boot
    kernel from the library, copies of it)."""
    return {
        BootSource.IMAGE: can.disk_volume and (can.cdrom or not needs_cdrom),
        BootSource.KERNEL: can.kernel_boot and (can.library or not library),
        BootSource.CONTAINER: can.container_image,
        BootSource.VOLUME: can.volumes and (can.cdrom or not needs_cdrom),
        BootSource.DISK: can.host_disk or can.host_template,
    }[BootSource(source)]


@dataclass(frozen=True)
class Boot:
    """What a create asks to boot."""

    source: str
    kernel: str = ""
    initrd: str = ""
    boot_disk: str = ""
    cmdline: str = ""
    init: str = ""
    init_env: Mapping[str, str] = field(default_factory=dict)
    image: Image | None = None
    boot_kernel: BootKernel | None = None

    @property
    def host_paths(self) -> list[tuple[str, str]]:
        """(label, value) of each host path given."""
        return [(label, getattr(self, name)) for name, label in HOST_PATHS if getattr(self, name)]


def _check_boot_kernel(boot_kernel: BootKernel, tenant_id: int) -> None:
    if not usable_by(boot_kernel, tenant_id):
        raise NotFound("no such boot kernel")
    for part in (boot_kernel.kernel, boot_kernel.initrd):
        if part is not None and part.status != ImageStatus.AVAILABLE:
            raise InvalidInstance(f"the boot kernel {boot_kernel.name} is not ready: {part.name} is "
                                  f"{part.get_status_display().lower()}")


def _check_env(env: Mapping[str, str]) -> None:
    if not isinstance(env, Mapping) or len(env) > MAX_ENV:
        raise InvalidInstance(f"give at most {MAX_ENV} environment variables, as names and values")
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            raise InvalidInstance(f"{ascii(name)[:50]} is not an environment variable name (letters, digits and _, "
                                  "not starting with a digit)")
        if not isinstance(value, str) or len(value) > MAX_ENV_VALUE or CONTROL.search(value):
            raise InvalidInstance(f"the value of {name} must be text of at most {MAX_ENV_VALUE} characters, "
                                  "without control characters")


def _check_init(init: str) -> None:
    """A container's program and arguments, a path inside its own root filesystem."""
    try:
        program = shlex.split(init)[0]
    except (ValueError, IndexError):
        raise InvalidInstance("the container command is not a valid command line (check its quotes)") from None
    if not program.startswith("/"):
        raise InvalidInstance("the container command must start with an absolute path inside the container")


def check_request(boot: Boot, *, tenant_id: int, admin: bool) -> None:
    """Refuse a boot the user may not ask for, before anything is stored or placed."""
    if (BootSource(boot.source) == BootSource.DISK or boot.host_paths) and not admin:
        raise InvalidInstance(ADMIN_ONLY)
    for label, value in (("kernel command line", boot.cmdline), ("container command", boot.init),
                         *boot.host_paths):
        if CONTROL.search(value):
            raise InvalidInstance(f"the {label} may not contain control characters")
    if boot.image is not None and not usable_by(boot.image, tenant_id):
        raise NotFound("no such image")
    if boot.boot_kernel is not None:
        _check_boot_kernel(boot.boot_kernel, tenant_id)
        if boot.kernel or boot.initrd:
            raise InvalidInstance("give a boot kernel or a kernel path on the host, not both")
    source = BootSource(boot.source)
    if source != BootSource.CONTAINER and boot.init_env:
        raise InvalidInstance("environment variables go with a container image")
    if source == BootSource.KERNEL and boot.boot_kernel is None and not boot.kernel:
        raise InvalidInstance("choose a boot kernel from the library")
    if source in (BootSource.KERNEL, BootSource.CONTAINER) and boot.boot_disk:
        raise InvalidInstance("a boot disk goes with the disk boot source")
    if source == BootSource.DISK and not boot.boot_disk:
        raise InvalidInstance("the boot disk is required for this boot source")
    if source == BootSource.CONTAINER:
        if boot.image is None:
            raise InvalidInstance("choose a container image from the library")
        if boot.image.status != ImageStatus.AVAILABLE:
            raise InvalidInstance(f"the image {boot.image.name} is {boot.image.get_status_display().lower()}, "
                                  "not available")
        if boot.image.disk_format != DiskFormat.ROOTFS:
            raise InvalidInstance(f"{boot.image.name} is not a container image")
        if boot.boot_kernel is not None or boot.kernel or boot.initrd:
            raise InvalidInstance("containers share their host's kernel: give no boot kernel")
        _check_env(boot.init_env)
    if boot.init:
        _check_init(boot.init)


def technologies_for(source: str, *, needs_cdrom: bool, library: bool = False) -> list[str]:
    """The technologies placement may pick for this boot source (library: it boots a library boot kernel)."""
    return [t for t in Technology if runs(source, capabilities.of(t), needs_cdrom=needs_cdrom, library=library)]


def check_host_paths(boot: Boot, host: Host) -> None:
    """Each host path must lie under a directory the host allows (compared in normal form, the host's own)."""
    allowed, style = host.allowed_dirs, host.can.path_style
    for label, value in boot.host_paths:
        if label == "boot disk" and host.can.host_template:
            continue  # the name of a template in the host's cache, checked below
        normal = paths.normal(style, value)
        if normal != value:
            raise InvalidInstance(f"the {label} must be an absolute, normalised path on the host (no '..'; e.g. "
                                  f"{paths.EXAMPLES[style]}/…)")
        if not any(paths.under(style, normal, directory) for directory in allowed):
            where = ", ".join(allowed) if allowed else "none: an admin sets them on the host's page"
            raise InvalidInstance(f"the {label} {value} is not under a directory {host.name} allows ({where})")


# What to do instead, where a technology cannot run a boot source.
_CANNOT = {
    Technology.LXC: "LXC hosts run containers: choose a container image",
    Technology.OPENVZ: "OpenVZ hosts run a template from the host's cache, which a platform admin names as the "
                       "boot disk",
    Technology.VBOX: "VirtualBox instances boot a disk on the host (VDI, VMDK, VHD), which a platform admin names",
}


def check_on_host(boot: Boot, host: Host, *, needs_cdrom: bool = False) -> None:
    """What the placed host's technology can boot, and the host's allowed directories."""
    technology, source, can = Technology(host.technology), BootSource(boot.source), host.can
    if source == BootSource.IMAGE:
        if not can.disk_volume:
            raise InvalidInstance(_CANNOT.get(technology, f"{technology.label} hosts do not boot library disk images: "
                                                          "a platform admin names a disk on the host"))
        if needs_cdrom and not can.cdrom:
            raise InvalidInstance("ISO installs and cloud-init seeds need a QEMU/KVM host")
        if (boot.kernel or boot.boot_kernel) and not can.kernel_boot:
            raise InvalidInstance(f"{technology.label} instances boot their disk, not a kernel")
    elif not runs(source, can, needs_cdrom=needs_cdrom):
        raise InvalidInstance(_CANNOT.get(technology, f"{technology.label} hosts cannot boot a {source.label.lower()}"))
    if can.host_template and boot.boot_disk not in host.template_list:
        offered = ", ".join(host.template_list) or "none yet: an admin lists them on the host's page"
        raise InvalidInstance(f"{boot.boot_disk[:100]!r} is not an OS template of {host.name} (it has: {offered})")
    if boot.boot_kernel is not None and not can.library:
        raise InvalidInstance(f"{technology.label} hosts take no library copies: a platform admin names a kernel on "
                              "the host instead")
    if boot.init and not can.container_command:
        raise InvalidInstance("a container command only applies to containers (LXC and OpenVZ hosts)")
    check_host_paths(boot, host)


def container_owner(tenant_id: int) -> int:
    """The host uid (and gid) of container root for the tenant's containers: a range of its own per tenant."""
    owner = settings.CLOUDPANEL_CONTAINER_ID_BASE + tenant_id * ID_RANGE
    if owner + ID_RANGE > 1 << 32:
        raise InvalidInstance("the host has no user-namespace range left for this tenant's containers")
    return owner
