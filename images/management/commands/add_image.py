"""Put a file from the panel's own disk into the library, inspected here: for operators and the demo."""

from __future__ import annotations

import hashlib
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from cloudpanel.exceptions import DomainError
from hosts.architectures import ARCHES, DEFAULT_ARCH
from images import processing, services, store
from images.choices import ImageStatus, SourceFormat, Visibility
from images.models import Image
from tenants.models import Tenant


def add_file(path: Path, *, name: str, declared_format: str = "", tenant: Tenant | None = None,
             min_memory_mib: int = 0, arch: str = DEFAULT_ARCH) -> Image:
    """The library's image of that file: the one already there with the same name, owner and bytes, or a new one
    (public without a tenant), stored and inspected as an upload would be. Raises DomainError if refused."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(1 << 20):
            digest.update(block)
    same = Image.objects.filter(Q(tenant=tenant) if tenant else Q(tenant__isnull=True), name=name, arch=arch,
                                declared_format=declared_format, sha256=digest.hexdigest(),
                                status=ImageStatus.AVAILABLE).first()
    if same is not None:
        if min_memory_mib and same.min_memory_mib != min_memory_mib:
            same.min_memory_mib = min_memory_mib
            same.save(update_fields=["min_memory_mib"])
        return same
    size = path.stat().st_size
    image = services.create_upload(user=None, tenant=tenant, name=name, size=size, filename=path.name,
                                   visibility=Visibility.PRIVATE if tenant else Visibility.PUBLIC,
                                   declared_format=declared_format, min_memory_mib=min_memory_mib, arch=arch)
    try:
        with path.open("rb") as source:
            store.replace(image.uuid, length=size, stream=source)
        with processing.scratch() as workdir:
            result = processing.inspect(image, store.data_path(image.uuid), digest.hexdigest(), Path(workdir))
            if result.changed:
                with result.path.open("rb") as converted:
                    size = store.replace(image.uuid, length=result.path.stat().st_size, stream=converted)
        services.publish_image(image_id=image.pk, source_format=result.source_format,
                               disk_format=result.disk_format, size=size, virtual_size=result.virtual_size,
                               sha256=result.sha256)
    except Exception as exc:  # refused or not: the image says why, and keeps no bytes
        services.fail_image(image_id=image.pk, reason=str(exc))
        store.remove(image.uuid)
        raise
    image.refresh_from_db()
    return image


class Command(BaseCommand):
    help = "Add a file on this machine to the image library (public unless --tenant), inspected as uploads are."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--name", required=True)
        parser.add_argument("--format", default="", choices=["", *SourceFormat.values],
                            help="the declared format (kernel, initrd and tar must be declared)")
        parser.add_argument("--tenant", help="the owning tenant's name (default: a public image)")
        parser.add_argument("--min-memory-mib", type=int, default=0,
                            help="the least RAM a guest of it boots in (creates asking less are refused)")
        parser.add_argument("--arch", default=DEFAULT_ARCH, choices=list(ARCHES),
                            help="what its guests are (default: %(default)s)")

    def handle(self, *args, path: Path, name: str, format: str, tenant: str | None, min_memory_mib: int, arch: str,
               **options):
        owner = None
        if tenant:
            owner = Tenant.objects.filter(name=tenant).first()
            if owner is None:
                raise CommandError(f"no tenant named {tenant}")
        if not path.is_file():
            raise CommandError(f"{path} is not a file")
        try:
            if min_memory_mib < 0:
                raise CommandError("--min-memory-mib is 0 or more")
            image = add_file(path, name=name, declared_format=format, tenant=owner, min_memory_mib=min_memory_mib,
                             arch=arch)
        except DomainError as exc:
            raise CommandError(f"refused: {exc}") from None
        self.stdout.write(f"{image.pk} {image.name}: {image.get_disk_format_display()}, {image.size} bytes")
