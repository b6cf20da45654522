"""Instances, the operations requested on them, and their state history."""

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce

from cloudpanel.scoping import TenantScopedQuerySet
from hosts.choices import CpuMode
from instances.choices import (
    ActionStatus,
    BackupStatus,
    BootSource,
    Cause,
    GroupPolicy,
    MaintenancePolicy,
    Operation,
    SnapshotStatus,
    Status,
    TaskState,
    VolumeStatus,
    VolumeTask,
)
from instances.exceptions import InvalidInstance

NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    "Use letters, digits, dots, dashes and underscores, starting with a letter or digit.",
)


def check_name(name: str) -> str:
    """A name of the panel's (an instance's, a backup's): at most 63 letters, digits, dots, dashes and underscores."""
    name = name.strip()
    try:
        if len(name) > 63:
            raise ValidationError("Use at most 63 characters.")
        NAME_VALIDATOR(name)
    except ValidationError as exc:
        raise InvalidInstance(f"name: {' '.join(exc.messages)}") from None
    return name


def check_fields(obj: models.Model, *, exclude: list[str]) -> None:
    """The model's own bounds on the object's fields (but those excluded), refused as one reason naming each."""
    try:
        obj.clean_fields(exclude=exclude)
    except ValidationError as exc:
        raise InvalidInstance("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None


class ServerGroup(models.Model):
    """A tenant's set of instances placed together on one host (affinity) or each on another (anti-affinity)."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="server_groups")
    name = models.CharField(max_length=63, validators=[NAME_VALIDATOR])
    policy = models.CharField(max_length=13, choices=GroupPolicy.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="server_group_name_unique")]

    def __str__(self) -> str:
        return self.name


class InstanceQuerySet(TenantScopedQuerySet):
    def live(self) -> "InstanceQuerySet":
        """Instances that still exist (not deleted)."""
        return self.exclude(status=Status.DELETED)

    def quota_usage(self, tenant_ids: list[int], _excluding_image: int | None = None) -> dict[int, dict[str, int]]:
        """Instances, vCPUs, RAM and disk of the tenants' live instances, for their quotas."""
        rows = (self.filter(tenant_id__in=tenant_ids).live().values("tenant_id")
                .annotate(instances=Count("id"), vcpus=Coalesce(Sum("vcpus"), 0),
                          memory_mib=Coalesce(Sum("memory_mib"), 0), disk_gib=Coalesce(Sum("disk_gib"), 0)))
        return {row.pop("tenant_id"): row for row in rows}


class Instance(models.Model):
    """A VM or container owned by a tenant, placed on a host."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=63, validators=[NAME_VALIDATOR])
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="instances")
    # Only deleted instances lose their host (when it is removed); their history stays.
    host = models.ForeignKey("hosts.Host", on_delete=models.PROTECT, related_name="instances", null=True, blank=True)
    vcpus = models.PositiveSmallIntegerField(validators=[MinValueValidator(1), MaxValueValidator(256)])
    memory_mib = models.PositiveIntegerField(validators=[MinValueValidator(16), MaxValueValidator(4 * 1024 * 1024)])
    disk_gib = models.PositiveIntegerField(default=0, validators=[MaxValueValidator(64 * 1024)])
    boot_source = models.CharField(max_length=10, choices=BootSource.choices, default=BootSource.KERNEL)
    kernel = models.CharField(max_length=500, blank=True)
    initrd = models.CharField(max_length=500, blank=True)
    cmdline = models.CharField(max_length=500, blank=True)
    boot_disk = models.CharField(max_length=500, blank=True)
    # A container's program and arguments inside its own root filesystem (empty: the image's /sbin/init).
    init = models.CharField(max_length=500, blank=True)
    init_env = models.JSONField(default=dict, blank=True)
    # Booted through a kernel (and initrd) from the library; kernel/initrd above are platform admins' host paths.
    boot_kernel = models.ForeignKey("images.BootKernel", on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="instances")
    # Booted from a library image: a copy-on-write overlay of the host's cached copy (an ISO: a CD-ROM); for a
    # container, the root filesystem archive unpacked into its own directory on the host.
    image = models.ForeignKey("images.Image", on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="instances")
    template = models.ForeignKey("images.Template", on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="instances")
    # The ISO in the CD-ROM drive, inserted and ejected while the instance runs.
    cdrom = models.ForeignKey("images.Image", on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="cdrom_instances")
    # Whether it has a CD-ROM drive (QEMU/KVM): asked for, or given by an ISO boot or an ISO inserted while stopped.
    # A guest without one boots without probing it; an IDE drive cannot be plugged into a running guest.
    cdrom_drive = models.BooleanField(default=False)
    # What its guest is (QEMU/KVM; see hosts.guests): its architecture (set at placement), machine type ("" = the
    # architecture's usual one) and CPU ("" = its host's setting).
    arch = models.CharField(max_length=20, blank=True)
    machine = models.CharField(max_length=64, blank=True)
    cpu_mode = models.CharField(max_length=16, choices=CpuMode.choices, blank=True, default=CpuMode.DEFAULT)
    cpu_model = models.CharField(max_length=64, blank=True)
    # cloud-init user-data for the NoCloud seed attached at creation (empty: no seed).
    # Whether its image was licensed when it was made: what the licence meter bills, whatever becomes of the image.
    licensed = models.BooleanField(default=False)
    user_data = models.TextField(blank=True)
    # Made from a backup: its disk is the backup's, restored by its create.
    restored_from = models.ForeignKey("Backup", on_delete=models.SET_NULL, null=True, blank=True,
                                      related_name="restores")
    # Backed up every so many hours (0: not on a schedule), keeping the newest backup_keep of those.
    backup_every_hours = models.PositiveIntegerField(default=0, validators=[MaxValueValidator(24 * 366)])
    backup_keep = models.PositiveSmallIntegerField(default=7, validators=[MinValueValidator(1),
                                                                          MaxValueValidator(1000)])
    backup_next_at = models.DateTimeField(null=True, blank=True)
    # Placed together with the group's other instances, or each apart (instances.groups).
    server_group = models.ForeignKey(ServerGroup, on_delete=models.PROTECT, null=True, blank=True,
                                     related_name="instances")
    # Tags its host must carry (hosts.placement), space-separated; and the last placement decision, host by host.
    host_tags = models.CharField(max_length=500, blank=True)
    placement = models.JSONField(null=True, blank=True)
    # Deleted from the panel alone while its host did not answer: its guest, disks, addresses and volumes are let go
    # of once the host answers again (instances.services.forgotten_leftovers).
    forgotten_at = models.DateTimeField(null=True, blank=True)
    # What becomes of it when its host goes into maintenance (instances.maintenance).
    on_host_maintenance = models.CharField(max_length=10, choices=MaintenancePolicy.choices,
                                           default=MaintenancePolicy.MIGRATE)
    # A clone: the instance whose disk its own was copied from (its create waits for the copy).
    cloned_from = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="clones")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    # NULL means idle: compare-and-set claims filter on task_state IS NULL.
    task_state = models.CharField(max_length=15, choices=TaskState.choices, null=True, blank=True)  # noqa: DJ001
    task_started_at = models.DateTimeField(null=True, blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    status_reason = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = InstanceQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"], condition=~models.Q(status="deleted"), name="instance_name_unique_live"
            )
        ]
        indexes = [
            models.Index(fields=["host", "status"]),
            models.Index(fields=["status"]),
            models.Index(fields=["-created_at", "-id"], name="instance_newest_first"),
            # A tenant's list, newest first, without scanning other tenants' rows.
            models.Index(fields=["tenant", "-created_at", "-id"], name="instance_tenant_newest"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def domain_name(self) -> str:
        """The libvirt domain name: unique per host, whatever tenants call their instances."""
        return f"cp-{self.uuid}"

    @property
    def volume_name(self) -> str:
        return f"cp-{self.uuid}.qcow2"

    @property
    def root_dir_name(self) -> str:
        """A container's home on its host: a directory of this name in the host's container directory, holding
        its own root filesystem."""
        return f"cp-{self.uuid}"

    @property
    def seed_volume_name(self) -> str:
        return f"cp-{self.uuid}-seed.iso"


class InstanceChildQuerySet(TenantScopedQuerySet):
    """Rows that belong to a tenant through their instance."""

    tenant_field = "instance__tenant"


class InstanceActionQuerySet(InstanceChildQuerySet):
    def in_flight(self) -> "InstanceActionQuerySet":
        """Operations asked for that have not finished."""
        return self.filter(status__in=(ActionStatus.PENDING, ActionStatus.RUNNING))


class InstanceAction(models.Model):
    """One requested operation on an instance: who asked, and how it went."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="actions")
    operation = models.CharField(max_length=10, choices=Operation.choices)
    status = models.CharField(max_length=10, choices=ActionStatus.choices, default=ActionStatus.PENDING)
    # A media change: the ISO to insert (none: eject).
    image = models.ForeignKey("images.Image", on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="media_actions")
    # A NIC plugged or unplugged.
    port = models.ForeignKey("networks.Port", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    error = models.TextField(blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # While it runs, its worker renews this lease (instances.tasks): a lease left to expire means the worker died.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)  # how many times a worker began it
    start = models.BooleanField(default=True)  # a create: start the instance once defined (else it stays stopped)
    # A resize: the sizes before and after, {"from": {...}, "to": {...}} (vcpus, memory_mib, disk_gib).
    resize = models.JSONField(null=True, blank=True)
    # A snapshot taken, reverted to or deleted.
    snapshot = models.ForeignKey("Snapshot", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # A clone of the instance: the new instance its disk is copied to.
    target = models.ForeignKey(Instance, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # A backup taken, or restored over the instance.
    backup = models.ForeignKey("Backup", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # A volume attached, detached or extended.
    volume = models.ForeignKey("Volume", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # A migration: the host it goes to, how far it is (instances.migration_jobs), and whether it was cancelled.
    target_host = models.ForeignKey("hosts.Host", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    progress = models.JSONField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # A shut-down that forces the guest off once the shut-down timeout has passed (its host going into maintenance).
    force = models.BooleanField(default=False)

    objects = InstanceActionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"{self.operation} {self.instance_id} ({self.status})"

    @property
    def percent(self) -> int | None:
        """How far a migration has come, in percent, from its progress (None while it does not say)."""
        progress = self.progress or {}
        if progress.get("phase") == "copying" and progress.get("disks"):
            return int(100 * (progress["disk_number"] - 1) / progress["disks"])
        total, remaining = progress.get("data_total"), progress.get("data_remaining")
        if not total or remaining is None:
            return None
        return max(0, min(100, int(100 * (total - remaining) / total)))


class InstanceStateChange(models.Model):
    """One transition of an instance's status, with when and why: what billing meters from."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="state_changes")
    from_status = models.CharField(max_length=10, choices=Status.choices)
    to_status = models.CharField(max_length=10, choices=Status.choices)
    at = models.DateTimeField(db_index=True)
    cause = models.CharField(max_length=10, choices=Cause.choices)
    action = models.ForeignKey(InstanceAction, on_delete=models.SET_NULL, null=True, blank=True)
    detail = models.TextField(blank=True)

    objects = InstanceChildQuerySet.as_manager()

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.instance_id}: {self.from_status} → {self.to_status} at {self.at:%Y-%m-%d %H:%M:%S}"


class InstanceSize(models.Model):
    """The instance's size from `at` on, written when a resize takes effect (with its size before, the first
    time): what billing prices each part of a month at."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="sizes")
    at = models.DateTimeField()
    vcpus = models.PositiveSmallIntegerField()
    memory_mib = models.PositiveIntegerField()
    disk_gib = models.PositiveIntegerField()

    objects = InstanceChildQuerySet.as_manager()

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.instance_id}: {self.vcpus} vCPU, {self.memory_mib} MiB, {self.disk_gib} GiB from {self.at}"


class SnapshotQuerySet(InstanceChildQuerySet):
    def live(self) -> "SnapshotQuerySet":
        return self.exclude(status=SnapshotStatus.DELETED)

    def pool_usage(self, host_ids: list[int]) -> dict[int, int]:
        """GiB the hosts' pools hold for snapshots (every one not deleted, at its billed size), for capacity."""
        rows = (self.filter(instance__host_id__in=host_ids).live().values("instance__host_id")
                .annotate(gib=Sum("size_gib")))
        return {row["instance__host_id"]: row["gib"] or 0 for row in rows}

    def quota_usage(self, tenant_ids: list[int], _excluding_image: int | None = None) -> dict[int, dict[str, int]]:
        """Snapshots the tenants hold (every one not deleted), for their quotas."""
        rows = (self.filter(instance__tenant_id__in=tenant_ids).live().values("instance__tenant_id")
                .annotate(snapshots=Count("id")))
        return {row["instance__tenant_id"]: {"snapshots": row["snapshots"]} for row in rows}


class Snapshot(models.Model):
    """A snapshot of an instance: its disks, and its memory if it ran, kept inside its qcow2 disk on the host.

    Billed per GiB-month of size_gib (its disk's size, plus its memory rounded up to GiB) from when it was
    taken until it is deleted. What the guest had plugged in is kept, so that a revert never brings back NICs or
    media the panel no longer knows.
    """

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="snapshots")
    name = models.CharField(max_length=63, validators=[NAME_VALIDATOR])
    description = models.CharField(max_length=500, blank=True)
    memory = models.BooleanField(default=False)
    size_gib = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=SnapshotStatus.choices, default=SnapshotStatus.CREATING)
    error = models.TextField(blank=True)
    macs = models.JSONField(default=list, blank=True)  # its NICs when taken
    # Its instance's size when taken: a revert brings that definition back, so it must still be the size.
    vcpus = models.PositiveSmallIntegerField(default=0)
    memory_mib = models.PositiveIntegerField(default=0)
    disk_gib = models.PositiveIntegerField(default=0)
    cdrom = models.ForeignKey("images.Image", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    taken_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = SnapshotQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "name"], condition=~models.Q(status="deleted"),
                                    name="snapshot_name_unique_live")
        ]

    def __str__(self) -> str:
        return f"{self.name} of {self.instance_id}"

    @property
    def libvirt_name(self) -> str:
        """Its name on the host: unique, whatever tenants call it."""
        return f"cp-snapshot-{self.pk}"

    @staticmethod
    def billed_gib(*, disk_gib: int, memory_mib: int, memory: bool) -> int:
        """What a snapshot is billed at: its disk's size, plus its memory rounded up to a GiB if it holds it."""
        return disk_gib + (-(-memory_mib // 1024) if memory else 0)


class VolumeQuerySet(TenantScopedQuerySet):
    def live(self) -> "VolumeQuerySet":
        return self.exclude(status=VolumeStatus.DELETED)

    def pool_usage(self, host_ids: list[int]) -> dict[int, int]:
        """GiB the hosts' pools hold for volumes (every one not deleted), for capacity."""
        rows = self.filter(host_id__in=host_ids).live().values("host_id").annotate(gib=Sum("size_gib"))
        return {row["host_id"]: row["gib"] or 0 for row in rows}

    def quota_usage(self, tenant_ids: list[int], _excluding_image: int | None = None) -> dict[int, dict[str, int]]:
        """Volumes the tenants hold and their GiB (every one not deleted), for their quotas."""
        rows = (self.filter(tenant_id__in=tenant_ids).live().values("tenant_id")
                .annotate(volumes=Count("id"), volume_gib=Coalesce(Sum("size_gib"), 0)))
        return {row.pop("tenant_id"): row for row in rows}


MAX_VOLUME_GIB = 64 * 1024


class Volume(models.Model):
    """A disk of a tenant's own in its host's storage pool, made empty or from a library image: attached to one
    instance of that host at a time (hot-plugged where the technology can), extended, or booted from.

    Billed per GiB-month from when it is made on its host until it is deleted, at each size it had (sizes).
    """

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=63, validators=[NAME_VALIDATOR])
    description = models.CharField(max_length=500, blank=True)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="volumes")
    host = models.ForeignKey("hosts.Host", on_delete=models.PROTECT, related_name="volumes", null=True, blank=True)
    pool = models.CharField(max_length=100, blank=True)  # the host's storage pool it was made in
    size_gib = models.PositiveIntegerField(validators=[MinValueValidator(1), MaxValueValidator(MAX_VOLUME_GIB)])
    # Made from a library image: a copy-on-write overlay of its copy on the host (so the image stays while it does).
    image = models.ForeignKey("images.Image", on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="volumes")
    image_name = models.CharField(max_length=255, blank=True)  # the image it was made from, as it was called
    status = models.CharField(max_length=10, choices=VolumeStatus.choices, default=VolumeStatus.CREATING)
    # Its own operation in flight (NULL: idle); claimed by its worker with a lease, like an instance's action.
    task_state = models.CharField(max_length=10, choices=VolumeTask.choices, null=True, blank=True)  # noqa: DJ001
    task_started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    size_before = models.PositiveIntegerField(null=True, blank=True)  # an extend in flight: the size to go back to
    instance = models.ForeignKey(Instance, on_delete=models.SET_NULL, null=True, blank=True, related_name="volumes")
    device = models.CharField(max_length=8, blank=True)  # its target on the instance (vda when booted from)
    boot = models.BooleanField(default=False)  # the instance boots from it: it stays until the instance goes
    error = models.TextField(blank=True)
    # [[ISO time, GiB], ...]: each size it had from when it had it, for billing.
    sizes = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = VolumeQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], condition=~models.Q(status="deleted"),
                                    name="volume_name_unique_live"),
            models.UniqueConstraint(fields=["instance", "device"], condition=models.Q(instance__isnull=False),
                                    name="volume_device_unique"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def volume_name(self) -> str:
        """Its name in the host's pool: unique, whatever tenants call it."""
        return f"cp-volume-{self.uuid}.qcow2"


class BackupQuerySet(TenantScopedQuerySet):
    def live(self) -> "BackupQuerySet":
        return self.exclude(status=BackupStatus.DELETED)


class Backup(models.Model):
    """A copy of an instance's disk in the panel's backup store: full, or incremental over its parent (the blocks
    that changed since). It outlives its instance (restored into a new one), and is billed per GiB-month of what
    it stores, from when it was taken until it is deleted."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="backups")
    instance = models.ForeignKey(Instance, on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="backups")
    instance_name = models.CharField(max_length=63)
    name = models.CharField(max_length=63, blank=True)
    scheduled = models.BooleanField(default=False)  # taken by the instance's schedule (its retention applies)
    parent = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="children")
    status = models.CharField(max_length=10, choices=BackupStatus.choices, default=BackupStatus.CREATING)
    error = models.TextField(blank=True)
    stored_bytes = models.PositiveBigIntegerField(default=0)
    # What a restore makes: the instance's size and boot when it was taken.
    vcpus = models.PositiveSmallIntegerField(default=1)
    memory_mib = models.PositiveIntegerField(default=0)
    disk_gib = models.PositiveIntegerField(default=0)
    boot_source = models.CharField(max_length=10, choices=BootSource.choices, default=BootSource.IMAGE)
    boot_kernel = models.ForeignKey("images.BootKernel", on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+")
    image = models.ForeignKey("images.Image", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    cmdline = models.CharField(max_length=500, blank=True)
    licensed = models.BooleanField(default=False)  # its instance's licence: what a restore bills, whatever the image
    quiesced = models.BooleanField(default=False)  # its guest's file systems were frozen for it (an agent)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    taken_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = BackupQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"backup {self.pk} of {self.instance_name}"

    @property
    def checkpoint(self) -> str:
        """The checkpoint on its instance's domain that the next backup is incremental from."""
        return f"cp-backup-{self.pk}"

    @property
    def file_name(self) -> str:
        return f"{self.uuid}.qcow2"

    @property
    def billed_gib(self) -> int:
        """What it stores, rounded up to a GiB (at least one)."""
        return max(1, -(-self.stored_bytes // (1 << 30)))


class DisplayTicket(models.Model):
    """A single-use pass to an instance's graphical console, for one user in one browser session.

    Only SHA-256 digests are stored: of the ticket, and of the session it was issued to.
    """

    digest = models.CharField(max_length=64, unique=True)
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    session_digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"display ticket for {self.instance_id} ({'used' if self.used_at else 'unused'})"


class Leftover(models.Model):
    """What an instance evacuated from a host that did not answer left there (its domain, disk and seed, its NICs'
    pins and filters), to remove once that host answers again (instances.tasks.remove_leftovers)."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="leftovers")
    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="leftovers")
    pool = models.CharField(max_length=100)  # the host's storage pool its disk and seed are in
    nics = models.JSONField(default=list, blank=True)  # its NICs there (networks.provisioning.nic_records)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["instance", "host"], name="leftover_once_per_host")]

    def __str__(self) -> str:
        return f"{self.instance} left on {self.host}"


class HostStep(models.Model):
    """A step of an operation run by another host's worker than the operation's own (a migration's target side,
    instances.host_steps): its request, then its outcome, read by the operation's worker."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    action = models.ForeignKey(InstanceAction, on_delete=models.CASCADE, null=True, blank=True,
                               related_name="host_steps")
    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=40)
    args = models.JSONField(default=dict, blank=True)
    attempt = models.PositiveIntegerField(default=0)  # the action's attempt it belongs to
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    take_by = models.DateTimeField()  # not run if taken later (the database's clock)
    beat_at = models.DateTimeField(null=True, blank=True)  # its worker's last renewal, while it runs
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} on {self.host}"
