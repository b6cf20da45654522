"""Factory functions for test data (no JSON fixtures)."""

import hashlib
import io
import itertools
import socket
import time
import uuid

from django.contrib.auth import get_user_model

from hosts import hypervisor
from hosts.choices import HostState
from hosts.models import Host
from images.choices import CopyStatus, DiskFormat, ImageStatus, Visibility
from images.models import BootKernel, Image, ImageCopy
from instances.choices import Status
from instances.models import Instance
from tenants.choices import Role
from tenants.models import Tenant
from tenants.services import add_member

_seq = itertools.count(1)


def make_user(*, staff: bool = False, tenant: Tenant | None = None, role: str = Role.MEMBER, password: str = "pw"):
    user = get_user_model().objects.create_user(
        username=f"user{next(_seq)}-{uuid.uuid4().hex[:6]}", password=password, is_staff=staff
    )
    if tenant is not None:
        add_member(tenant=tenant, user=user, role=role)
    return user


def make_tenant(name: str | None = None) -> Tenant:
    return Tenant.objects.create(name=name or f"tenant-{next(_seq)}-{uuid.uuid4().hex[:6]}")


def make_host(*, uri: str | None = None, cpus: int = 16, memory_mib: int = 8192, **fields) -> Host:
    """An online host; the default URI is libvirt's per-process test driver."""
    uri = uri or "test:///default"
    defaults = {"name": f"host-{next(_seq)}", "technology": uri.split(":", 1)[0].split("+", 1)[0],
                "state": HostState.ONLINE, "cpus": cpus, "memory_mib": memory_mib, "storage_pool": "default-pool"}
    defaults.update(fields)
    return Host.objects.create(uri=uri, **defaults)


def make_instance(*, tenant: Tenant, host: Host, status: str = Status.STOPPED, **fields) -> Instance:
    defaults = {"name": f"vm-{next(_seq)}", "vcpus": 1, "memory_mib": 128}
    defaults.update(fields)
    return Instance.objects.create(tenant=tenant, host=host, status=status, **defaults)


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll until predicate() is true or the timeout passes; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def make_library_image(*, tenant: Tenant | None = None, disk_format: str = DiskFormat.QCOW2, name: str | None = None,
                       hosts: tuple[Host, ...] = (), data: bytes = b"cloudpanel test image", **fields) -> Image:
    """An available image of the library (public without a tenant), already copied to each of the test-driver
    hosts given, so that instances there boot it without fetching bytes from a panel."""
    image = Image.objects.create(
        name=name or f"{disk_format}-{next(_seq)}", tenant=tenant, disk_format=disk_format, source_format="raw",
        visibility=Visibility.PUBLIC if tenant is None else Visibility.PRIVATE, status=ImageStatus.AVAILABLE,
        size=len(data), virtual_size=fields.pop("virtual_size", len(data)), sha256=hashlib.sha256(data).hexdigest(),
        **fields)
    for host in hosts:
        volume = ImageCopy.volume_name(image)
        path = hypervisor.upload_volume(host.uri, host.storage_pool, volume, size=len(data), read=io.BytesIO(data).read)
        ImageCopy.objects.create(image=image, host=host, pool=host.storage_pool, volume=volume, path=path,
                                 status=CopyStatus.AVAILABLE)
    return image


def make_boot_kernel(*hosts: Host, tenant: Tenant | None = None, initrd: bool = True,
                     cmdline: str = "console=ttyS0") -> BootKernel:
    """A boot kernel of the library (public without a tenant), its files already on the test-driver hosts given."""
    kernel = make_library_image(tenant=tenant, disk_format=DiskFormat.KERNEL, hosts=hosts)
    ramdisk = make_library_image(tenant=tenant, disk_format=DiskFormat.INITRD, hosts=hosts) if initrd else None
    return BootKernel.objects.create(name=f"kernel-{next(_seq)}", tenant=tenant, kernel=kernel, initrd=ramdisk,
                                     cmdline=cmdline,
                                     visibility=Visibility.PUBLIC if tenant is None else Visibility.PRIVATE)
