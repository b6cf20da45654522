"""The image library: disk images and ISOs, public or private to a tenant."""

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q, Sum
from django.db.models.functions import Coalesce, Greatest

from cloudpanel.scoping import Scope, TenantScopedQuerySet
from hosts.architectures import ARCH_CHOICES, DEFAULT_ARCH
from images.choices import CopyStatus, DiskFormat, ImageStatus, OsType, SourceFormat, Visibility


def usable_by(obj: "Image | Template | BootKernel", tenant_id: int | None) -> bool:
    """Whether a tenant may use a library object: a public one, or its own (None: the platform, which may use
    any)."""
    return tenant_id is None or obj.visibility == Visibility.PUBLIC or obj.tenant_id == tenant_id


class ImageQuerySet(TenantScopedQuerySet):
    def visible_to(self, scope: Scope) -> "ImageQuerySet":
        """Public images plus the scope's own: what a tenant may list and boot from."""
        ids = scope.tenant_ids
        if ids is None:
            return self.all()
        return self.filter(Q(visibility=Visibility.PUBLIC) | Q(tenant_id__in=ids))

    def quota_usage(self, tenant_ids: list[int], excluding_image: int | None = None) -> dict[int, dict[str, int]]:
        """Bytes of the tenants' images, for their quotas: an image takes its stored size, or while it comes in,
        what it announced or has received so far; a failed one keeps no bytes."""
        rows = (self.filter(tenant_id__in=tenant_ids).exclude(pk=excluding_image)
                .exclude(status=ImageStatus.ERROR).values("tenant_id")
                .annotate(bytes=Sum(Coalesce("size", Greatest(Coalesce("expected_bytes", 0), "received_bytes")))))
        return {row["tenant_id"]: {"image_gib": row["bytes"] or 0} for row in rows}


class Image(models.Model):
    """An image in the library. Its bytes live in the panel's image store under `uuid`, never a given name."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=255)
    # None: a platform image (public, managed by platform admins).
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="images", null=True,
                               blank=True)
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.PRIVATE)
    status = models.CharField(max_length=12, choices=ImageStatus.choices, default=ImageStatus.UPLOADING)
    status_reason = models.TextField(blank=True)
    os_type = models.CharField(max_length=10, choices=OsType.choices, default=OsType.LINUX)
    # What its guests are (a disk image's instances, a container image's; ISOs and initrds: what they are for).
    arch = models.CharField(max_length=20, choices=ARCH_CHOICES, default=DEFAULT_ARCH)
    licensed = models.BooleanField(default=False, help_text="Instances from it pay their rate plan's licence "
                                                            "price for every hour they run.")
    min_disk_gib = models.PositiveIntegerField(default=0)
    min_memory_mib = models.PositiveIntegerField(default=0)
    # Where the bytes came from: an upload's file name (shown, never used as a path) or a URL.
    filename = models.CharField(max_length=255, blank=True)
    source_url = models.URLField(max_length=2000, blank=True)
    # An instance's disk saved as an image: its standalone copy in the host's pool, read (then removed) by a worker.
    capture_host = models.ForeignKey("hosts.Host", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    capture_volume = models.CharField(max_length=255, blank=True)
    declared_format = models.CharField(max_length=10, choices=SourceFormat.choices, blank=True)
    expected_checksum = models.CharField(max_length=140, blank=True)  # "sha256:<hex>" or "sha512:<hex>"
    source_format = models.CharField(max_length=10, choices=SourceFormat.choices, blank=True)
    disk_format = models.CharField(max_length=10, choices=DiskFormat.choices, blank=True)
    # Bytes received so far (upload or download) out of expected_bytes (None: not known yet).
    received_bytes = models.BigIntegerField(default=0)
    expected_bytes = models.BigIntegerField(null=True, blank=True)
    size = models.BigIntegerField(null=True, blank=True)  # stored bytes
    virtual_size = models.BigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ImageQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["tenant", "status"], name="image_tenant_status")]
        constraints = [
            models.CheckConstraint(condition=Q(tenant__isnull=False) | Q(visibility=Visibility.PUBLIC),
                                   name="image_platform_images_are_public"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def progress(self) -> int | None:
        """Percent of the bytes received, while they are coming in."""
        if self.status not in (ImageStatus.UPLOADING, ImageStatus.IMPORTING) or not self.expected_bytes:
            return None
        return min(100, int(100 * self.received_bytes / self.expected_bytes))


class ImageCopy(models.Model):
    """An image's cached copy in a host's storage pool, verified against the image's sha256."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="copies")
    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="image_copies")
    status = models.CharField(max_length=10, choices=CopyStatus.choices, default=CopyStatus.COPYING)
    pool = models.CharField(max_length=100)
    volume = models.CharField(max_length=100)
    path = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host__name"]
        constraints = [models.UniqueConstraint(fields=["image", "host"], name="image_copy_once_per_host")]

    def __str__(self) -> str:
        return f"{self.image} on {self.host}"

    VOLUME_PREFIX = "cloudpanel-image-"

    @staticmethod
    def volume_name(image: Image) -> str:
        return f"{ImageCopy.VOLUME_PREFIX}{image.uuid}"


class LibraryObject(models.Model):
    """What templates and boot kernels share: a name, an owner (a tenant, or none for the platform's public ones)
    and who made them."""

    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="%(class)ss", null=True,
                               blank=True)
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.PRIVATE)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ImageQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(tenant__isnull=False) | Q(visibility=Visibility.PUBLIC),
                                   name="%(class)s_platform_ones_are_public"),
        ]

    def __str__(self) -> str:
        return self.name


class Template(LibraryObject):
    """A ready-made instance, in the spirit of a Vagrant box: an image, a default size, cloud-init
    user-data and a provisioning script run at first boot."""

    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="templates")
    vcpus = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1), MaxValueValidator(256)])
    memory_mib = models.PositiveIntegerField(default=512, validators=[MinValueValidator(16)])
    disk_gib = models.PositiveIntegerField(default=10, validators=[MaxValueValidator(64 * 1024)])
    user_data = models.TextField(blank=True, help_text="#cloud-config YAML, merged with the instance's own settings.")
    script = models.TextField(blank=True, help_text="A shell script run once at first boot.")


class BootKernel(LibraryObject):
    """A Linux kernel, an optional initrd and a default command line, all from the library: what tenants boot
    directly instead of paths on a host. Its files are copied to hosts like any image."""

    kernel = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="kernel_of")
    initrd = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="initrd_of", null=True, blank=True)
    cmdline = models.CharField(max_length=500, blank=True, default="console=ttyS0",
                               help_text="The kernel command line unless an instance gives its own.")
    arch = models.CharField(max_length=20, choices=ARCH_CHOICES, default=DEFAULT_ARCH,
                            help_text="The architecture it runs on: its instances are guests of it.")
