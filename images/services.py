"""Every change to an image goes through here.

Web side: creating an upload or an import, receiving upload chunks into the store,
deleting. Worker side (images/tasks.py): progress, publication once inspected, failure.
The store is the web tier's: worker-side services never touch its files.
"""

from __future__ import annotations

import re
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from cloudpanel.exceptions import NotFound
from cloudpanel.scoping import READ_ONLY, Scope
from cloudpanel.tasking import enqueue
from cloudpanel.text import CONTROL
from hosts import architectures
from hosts.architectures import ARCHES, DEFAULT_ARCH
from hosts.models import Host
from images import bootfiles, cloudinit, events, fetch, store
from images.choices import IN_TRANSIT, DiskFormat, ImageStatus, Visibility
from images.exceptions import ImageInUse, ImageNotReady, ReadOnly, UnsafeImage, UploadOutOfOrder
from images.models import BootKernel, Image, Template, usable_by
from tenants import quotas
from tenants.models import Tenant

_CHECKSUM = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")


def clean_filename(name: str) -> str:
    """An upload's file name, for display only: its last path part, without control characters, at most 255."""
    name = CONTROL.sub("", name.replace("\\", "/").rsplit("/", 1)[-1])
    return name[:255]


def clean_checksum(value: str) -> str:
    """'sha256:<hex>' or 'sha512:<hex>', lower case; a bare hex digest is taken by its length."""
    value = value.strip().lower()
    if value and ":" not in value:
        value = {64: "sha256:", 128: "sha512:"}.get(len(value), "") + value
    if value and not _CHECKSUM.match(value):
        raise UnsafeImage("the checksum must be sha256:<64 hex digits> or sha512:<128 hex digits>")
    return value


def _new_image(*, user: AbstractBaseUser | None, tenant: Tenant | None, visibility: str, **fields) -> Image:
    if tenant is None and visibility != Visibility.PUBLIC:
        raise UnsafeImage("an image without a tenant must be public")
    return Image(tenant=tenant, visibility=visibility, created_by=user, **fields)


def _arch(arch: str) -> str:
    if arch not in ARCHES:
        raise UnsafeImage(f"unknown architecture {arch[:40]!r} (one of: {', '.join(ARCHES)})")
    return arch


@transaction.atomic
def create_upload(*, user: AbstractBaseUser | None, tenant: Tenant | None, name: str, size: int,
                  visibility: str = Visibility.PRIVATE, filename: str = "", declared_format: str = "",
                  expected_checksum: str = "", os_type: str = "linux", min_disk_gib: int = 0,
                  min_memory_mib: int = 0, arch: str = DEFAULT_ARCH) -> Image:
    """Accept an upload of size bytes: the image waits for its chunks (images/store.py)."""
    if size <= 0:
        raise UnsafeImage("the upload must announce its size in bytes")
    if size > settings.CLOUDPANEL_IMAGE_MAX_DOWNLOAD_GIB << 30:
        raise UnsafeImage(f"the image is larger than the {settings.CLOUDPANEL_IMAGE_MAX_DOWNLOAD_GIB} GiB allowed")
    image = _new_image(user=user, tenant=tenant, visibility=visibility, name=name, status=ImageStatus.UPLOADING,
                       filename=clean_filename(filename), declared_format=declared_format,
                       expected_checksum=clean_checksum(expected_checksum), os_type=os_type,
                       min_disk_gib=min_disk_gib, min_memory_mib=min_memory_mib, expected_bytes=size,
                       arch=_arch(arch))
    if tenant is not None:
        quotas.check(tenant=tenant, request={"image_gib": size})
    image.save()
    events.publish_on_commit(image)
    return image


@transaction.atomic
def create_import(*, user: AbstractBaseUser | None, tenant: Tenant | None, name: str, url: str,
                  visibility: str = Visibility.PRIVATE, declared_format: str = "", expected_checksum: str = "",
                  os_type: str = "linux", min_disk_gib: int = 0, min_memory_mib: int = 0,
                  arch: str = DEFAULT_ARCH) -> Image:
    """Accept an import by URL: checked now (scheme, addresses), downloaded by a worker."""
    from images import tasks

    fetch.check(url, allow=import_allowlist())
    image = _new_image(user=user, tenant=tenant, visibility=visibility, name=name, status=ImageStatus.IMPORTING,
                       source_url=url, declared_format=declared_format,
                       expected_checksum=clean_checksum(expected_checksum), os_type=os_type,
                       min_disk_gib=min_disk_gib, min_memory_mib=min_memory_mib, arch=_arch(arch))
    if tenant is not None:
        quotas.check(tenant=tenant, request={"image_gib": 1})  # the size is checked again once known
    image.save()
    events.publish_on_commit(image)
    enqueue(tasks.import_image, image.pk)
    return image


@transaction.atomic
def create_capture(*, user: AbstractBaseUser | None, tenant: Tenant, name: str, host: Host, size_gib: int,
                   os_type: str = "linux", min_memory_mib: int = 0, arch: str = DEFAULT_ARCH) -> Image:
    """Accept an instance's disk as a new private image of its tenant: the worker copies it to the image's
    capture_volume on the host, then has it read, inspected like any upload, and stored
    (images.tasks.capture_image)."""
    image = _new_image(user=user, tenant=tenant, visibility=Visibility.PRIVATE, name=name,
                       status=ImageStatus.IMPORTING, capture_host=host, os_type=os_type, arch=_arch(arch),
                       min_disk_gib=size_gib, min_memory_mib=min_memory_mib, expected_bytes=size_gib << 30)
    image.capture_volume = f"cp-capture-{image.uuid}.qcow2"
    try:
        image.clean_fields(exclude=[f.name for f in Image._meta.fields if f.name != "name"])
    except ValidationError as exc:
        raise UnsafeImage("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None
    quotas.check(tenant=tenant, request={"image_gib": size_gib << 30})  # at most the disk's size; checked again
    image.save()
    events.publish_on_commit(image)
    return image


def import_allowlist() -> list[fetch.Allowed]:
    return [fetch.Allowed.parse(entry) for entry in settings.CLOUDPANEL_IMPORT_ALLOW]


def receive_chunk(*, image: Image, start: int, length: int, total: int | None, stream: BinaryIO) -> Image:
    """Write one chunk of an upload; the last one hands the image to a worker for inspection.

    The chunk must start where the upload stands (a resumed upload asks for the image to learn
    where); a chunk that arrives short is dropped whole, so the upload can resume from its start.
    """
    if image.status != ImageStatus.UPLOADING:
        raise ImageNotReady(f"the image is {image.get_status_display().lower()}, not waiting for an upload")
    if total is not None and total != image.expected_bytes:
        raise UnsafeImage(f"the upload was announced with {image.expected_bytes} bytes, not {total}")
    if length <= 0 or start + length > (image.expected_bytes or 0):
        raise UnsafeImage(f"the chunk must lie within the {image.expected_bytes} bytes announced")
    with store.locked_upload(image.uuid) as part:
        # Where the upload stands, read under the lock: a chunk another request committed counts.
        current = Image.objects.filter(pk=image.pk).values_list("status", "received_bytes").first()
        if current is None or current[0] != ImageStatus.UPLOADING:
            raise ImageNotReady("the image is not waiting for an upload any more")
        if start != current[1]:
            raise UploadOutOfOrder(f"the upload stands at byte {current[1]}; send from there")
        store.write_at(part, offset=start, length=length, stream=stream)
        done = start + length
        with transaction.atomic():
            claimed = Image.objects.filter(pk=image.pk, status=ImageStatus.UPLOADING, received_bytes=start)
            if not claimed.update(received_bytes=done, updated_at=timezone.now()):
                if not Image.objects.filter(pk=image.pk).exists():
                    store.remove(image.uuid)  # deleted while this chunk was written
                raise UploadOutOfOrder("the upload changed meanwhile; ask where it stands and resume")
            image.received_bytes = done
            if done == image.expected_bytes:
                _start_inspection(image)
            events.publish_on_commit(image)
    return image


def _start_inspection(image: Image) -> None:
    from images import tasks

    image.size = store.complete(image.uuid)
    image.status = ImageStatus.INSPECTING
    image.save(update_fields=["size", "status", "updated_at"])
    enqueue(tasks.inspect_image, image.pk)


def record_progress(*, image_id: int, received: int, expected: int | None) -> None:
    """A worker's progress through a download (shown as a bar)."""
    Image.objects.filter(pk=image_id, status__in=IN_TRANSIT).update(received_bytes=received, expected_bytes=expected,
                                                                     updated_at=timezone.now())
    image = Image.objects.filter(pk=image_id).first()
    if image is not None:
        events.publish(image)


@transaction.atomic
def check_stored_size(*, image_id: int, size: int) -> None:
    """Before a worker stores what it imported or converted: refused if it takes the tenant over quota."""
    image = Image.objects.select_related("tenant").get(pk=image_id)
    if image.tenant is not None:
        quotas.check(tenant=image.tenant, request={"image_gib": size}, excluding_image=image.pk)


@transaction.atomic
def publish_image(*, image_id: int, source_format: str, disk_format: str, size: int, virtual_size: int,
                  sha256: str) -> bool:
    """Inspection passed: the image is available. False if it was deleted or failed meanwhile."""
    image = Image.objects.select_for_update().filter(pk=image_id, status__in=IN_TRANSIT).first()
    if image is None:
        return False
    image.source_format, image.disk_format, image.size = source_format, disk_format, size
    image.virtual_size, image.sha256 = virtual_size, sha256
    image.status, image.status_reason = ImageStatus.AVAILABLE, ""
    image.save(update_fields=["source_format", "disk_format", "size", "virtual_size", "sha256", "status",
                              "status_reason", "updated_at"])
    events.publish_on_commit(image)
    return True


@transaction.atomic
def fail_image(*, image_id: int, reason: str) -> None:
    """The upload, import or inspection failed: the image shows why and keeps no bytes (the caller drops them)."""
    image = Image.objects.select_for_update().filter(pk=image_id, status__in=IN_TRANSIT).first()
    if image is None:
        return
    image.status, image.status_reason, image.size = ImageStatus.ERROR, reason[:2000], None
    image.save(update_fields=["status", "status_reason", "size", "updated_at"])
    events.publish_on_commit(image)


def delete_image(*, image: Image) -> None:
    """Remove an image from the library, its bytes and every host's copy; refused while anything uses it."""
    from images import tasks

    with transaction.atomic():
        image = Image.objects.select_for_update().get(pk=image.pk)
        users = [f"instance {name}" for name in image.instances.live().values_list("name", flat=True)[:20]]
        users += [f"instance {name} (CD-ROM)" for name in
                  image.cdrom_instances.live().values_list("name", flat=True)[:20]]
        users += [f"template {name}" for name in image.templates.values_list("name", flat=True)[:20]]
        users += [f"volume {name}" for name in
                  image.volumes.exclude(status="deleted").values_list("name", flat=True)[:20]]
        users += [f"boot kernel {name}" for name in BootKernel.objects.filter(
            Q(kernel=image) | Q(initrd=image)).values_list("name", flat=True)[:20]]
        pending = image.media_actions.in_flight()
        users += [f"a pending CD-ROM change of {name}" for name in
                  pending.filter(operation="media").values_list("instance__name", flat=True)[:20]]
        users += [f"the copy of {name}'s disk it is made from" for name in
                  pending.filter(operation="capture").values_list("instance__name", flat=True)[:20]]
        if users:
            raise ImageInUse(f"{image.name} is in use by {', '.join(users)}; delete those first.")
        copies = list(image.copies.values_list("host_id", "pool", "volume"))
        if image.capture_volume and image.capture_host is not None:  # a disk's copy being read (gone once stored)
            copies.append((image.capture_host_id, image.capture_host.storage_pool, image.capture_volume))
        image.delete()
        events.publish_deleted_on_commit(image)
        for host_id, pool, volume in copies:
            enqueue(tasks.delete_copy, host_id, pool, volume, host_id=host_id)
    store.remove(image.uuid)


def request_copy(*, image: Image, host: Host) -> None:
    """Queue a copy of the image to the host's pool (it is also copied on first use there)."""
    from images import tasks

    if image.status != ImageStatus.AVAILABLE:
        raise ImageNotReady(f"the image is {image.get_status_display().lower()}; only available images are copied")
    if not host.can.library:
        raise ImageNotReady(f"{host.get_technology_display()} hosts take no library copies: their driver has no "
                            "storage volumes to upload into")
    enqueue(tasks.copy_image, image.pk, host.pk, host_id=host.pk)


def owner_for(scope: Scope, *, visibility: str, tenant: Tenant | None) -> Tenant | None:
    """Who a new image or template belongs to: public ones to the platform (admins only), private ones to a tenant."""
    if visibility == Visibility.PUBLIC:
        if not scope.admin:
            raise ReadOnly("Only platform admins publish public images and templates.")
        return None
    if tenant is None:
        raise UnsafeImage("Say which tenant the image belongs to.")
    if not scope.can_operate(tenant.pk):
        raise ReadOnly(READ_ONLY)
    return tenant


def _check_template(*, image: Image, user_data: str, vcpus: int, memory_mib: int, disk_gib: int) -> None:
    if image.status != ImageStatus.AVAILABLE:
        raise ImageNotReady(f"the image {image.name} is {image.get_status_display().lower()}, not available")
    if image.disk_format not in (DiskFormat.QCOW2, DiskFormat.RAW):
        raise UnsafeImage(f"a template boots a disk image (qcow2 or raw); {image.name} is "
                          f"{image.get_disk_format_display()}")
    if memory_mib < image.min_memory_mib:
        raise UnsafeImage(f"{image.name} needs at least {image.min_memory_mib} MiB of RAM")
    needed = max(image.min_disk_gib, -(-(image.virtual_size or 0) // (1 << 30)))
    if disk_gib < needed:
        raise UnsafeImage(f"{image.name} needs a disk of at least {needed} GiB")
    cloudinit.parse_cloud_config(user_data)


def create_template(*, user: AbstractBaseUser | None, tenant: Tenant | None, visibility: str, image: Image,
                    name: str, description: str = "", vcpus: int = 1, memory_mib: int = 512, disk_gib: int = 10,
                    user_data: str = "", script: str = "") -> Template:
    """A template over an available disk image; its user-data must be a #cloud-config mapping."""
    if not usable_by(image, tenant.pk if tenant else None):
        raise NotFound("no such image")
    if visibility == Visibility.PUBLIC and image.visibility != Visibility.PUBLIC:
        raise UnsafeImage("a public template needs a public image")
    _check_template(image=image, user_data=user_data, vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib)
    return Template.objects.create(tenant=tenant, visibility=visibility, image=image, name=name,
                                   description=description, vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib,
                                   user_data=user_data, script=script, created_by=user)


def update_template(*, template: Template, **changes) -> Template:
    """Change a template's size, user-data or script (instances made from it keep what they were given)."""
    for key, value in changes.items():
        setattr(template, key, value)
    _check_template(image=template.image, user_data=template.user_data, vcpus=template.vcpus,
                    memory_mib=template.memory_mib, disk_gib=template.disk_gib)
    template.save()
    return template


def delete_template(*, template: Template) -> None:
    """Remove a template; instances made from it keep their image and user-data."""
    template.delete()


def _boot_part(image: Image | None, *, tenant: Tenant | None, visibility: str, wanted: str, label: str) -> None:
    if image is None:
        return
    if not usable_by(image, tenant.pk if tenant else None):
        raise NotFound("no such image")
    if image.disk_format != wanted:
        raise UnsafeImage(f"{image.name} is not {label} (upload it with that format)")
    if image.status != ImageStatus.AVAILABLE:
        raise ImageNotReady(f"the image {image.name} is {image.get_status_display().lower()}, not available")
    if visibility == Visibility.PUBLIC and image.visibility != Visibility.PUBLIC:
        raise UnsafeImage("a public boot kernel needs public images")


def create_boot_kernel(*, user: AbstractBaseUser | None, tenant: Tenant | None, visibility: str, name: str,
                       kernel: Image, initrd: Image | None = None, cmdline: str = "",
                       description: str = "", arch: str = DEFAULT_ARCH) -> BootKernel:
    """A boot kernel from a kernel image, an optional initrd image, a default command line, and the architecture it
    runs on (its instances are guests of it; an empty command line: the architecture's serial console)."""
    _arch(arch)
    _boot_part(kernel, tenant=tenant, visibility=visibility, wanted=DiskFormat.KERNEL, label="a Linux kernel")
    _boot_part(initrd, tenant=tenant, visibility=visibility, wanted=DiskFormat.INITRD, label="an initrd")
    stored = store.data_path(kernel.uuid)
    runs = bootfiles.kernel_arches(stored) if stored.exists() else ()
    if runs and arch not in runs:
        raise UnsafeImage(f"the kernel {kernel.name} is for {' or '.join(runs)}, not {arch}")
    cmdline = cmdline or f"console={architectures.of(arch).console}"
    if CONTROL.search(cmdline):
        raise UnsafeImage("the command line cannot hold control characters")
    return BootKernel.objects.create(tenant=tenant, visibility=visibility, name=name, kernel=kernel, initrd=initrd,
                                     cmdline=cmdline, description=description, created_by=user, arch=arch)


@transaction.atomic
def delete_boot_kernel(*, boot_kernel: BootKernel) -> None:
    """Remove a boot kernel (its images stay in the library); refused while instances boot it."""
    boot_kernel = BootKernel.objects.select_for_update().get(pk=boot_kernel.pk)
    users = list(boot_kernel.instances.live().values_list("name", flat=True)[:20])
    if users:
        raise ImageInUse(f"{boot_kernel.name} boots instance {', '.join(users)}; delete those first.")
    boot_kernel.delete()
