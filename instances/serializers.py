from django.db.models import F, QuerySet
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from hosts.choices import CpuMode
from hosts.models import Host
from instances.boot import ENV_NAME, MAX_ENV
from instances.choices import CREATABLE, BootSource, GroupPolicy, MaintenancePolicy
from instances.lifecycle import allowed_operations
from instances.models import (
    MAX_VOLUME_GIB,
    Backup,
    Instance,
    InstanceAction,
    InstanceStateChange,
    ServerGroup,
    Snapshot,
    Volume,
)
from networks.serializers import NicRequestSerializer, NicSerializer, nic_rows

# The model fields InstanceSerializer writes as they are stored, and the related names it adds.
_PLAIN = ("id", "name", "tenant", "host", "vcpus", "memory_mib", "disk_gib", "boot_source", "boot_kernel", "kernel",
          "initrd", "cmdline", "boot_disk", "init", "init_env", "image", "template", "cdrom", "cdrom_drive", "status",
          "task_state", "status_reason", "on_host_maintenance", "host_tags", "server_group", "arch", "machine",
          "cpu_mode", "cpu_model")
_NAMES = {"host_name": F("host__name"), "tenant_name": F("tenant__name"), "image_name": F("image__name"),
          "boot_kernel_name": F("boot_kernel__name")}


def _hide_host_paths(data: dict) -> None:
    """What a platform admin's host paths are, for anyone else: only whether there is one."""
    for field in ("kernel", "initrd", "boot_disk"):
        data[field] = "(on the host)" if data[field] else ""


class ActionSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", default=None, allow_null=True, read_only=True)
    instance_name = serializers.CharField(source="instance.name", read_only=True)

    class Meta:
        model = InstanceAction
        fields = ["id", "instance", "instance_name", "operation", "status", "error", "user", "created_at",
                  "started_at", "finished_at", "volume", "target_host", "progress", "cancel_requested"]
        read_only_fields = fields


class InstanceSerializer(serializers.ModelSerializer):
    host_name = serializers.CharField(source="host.name", default=None, allow_null=True, read_only=True)
    tenant_name = serializers.CharField(source="tenant.name", read_only=True)
    image_name = serializers.CharField(source="image.name", default=None, allow_null=True, read_only=True)
    boot_kernel_name = serializers.CharField(source="boot_kernel.name", default=None, allow_null=True, read_only=True)
    nics = NicSerializer(source="ports", many=True, read_only=True)
    host_tags = serializers.SerializerMethodField()
    operations = serializers.SerializerMethodField()

    class Meta:
        model = Instance
        fields = [
            "id", "uuid", "name", "tenant", "tenant_name", "host", "host_name", "vcpus", "memory_mib", "disk_gib",
            "boot_source", "boot_kernel", "boot_kernel_name", "kernel", "initrd", "cmdline", "boot_disk", "init",
            "init_env", "image", "image_name", "template",
            "cdrom", "cdrom_drive", "nics", "status", "task_state",
            "status_reason", "operations", "on_host_maintenance", "host_tags", "server_group", "arch", "machine",
            "cpu_mode", "cpu_model", "created_at", "deleted_at",
        ]
        read_only_fields = fields

    def get_host_tags(self, instance: Instance) -> list[str]:
        return instance.host_tags.split()

    def get_operations(self, instance: Instance) -> list[str]:
        return allowed_operations(instance.status, instance.task_state)

    def to_representation(self, instance: Instance) -> dict:
        """Paths on a host (a platform admin's boot) are the platform's business, not its tenants'."""
        data = super().to_representation(instance)
        scope = self.context.get("scope")
        if scope is None or not scope.admin:
            _hide_host_paths(data)
        return data


def instance_values(instances: QuerySet) -> QuerySet:
    """The rows instance_rows writes: the instances' fields with the related names joined in."""
    return instances.values(*_PLAIN, "uuid", "created_at", "deleted_at", **_NAMES)


def instance_rows(rows: list[dict], admin: bool) -> list[dict]:
    """InstanceSerializer's output for a page of instance_values rows, written without model objects (and three
    queries for the page's NICs, however many)."""
    nics = nic_rows([row["id"] for row in rows])
    when = serializers.DateTimeField()
    out = []
    for row in rows:
        data = {field: row[field] for field in InstanceSerializer.Meta.fields if field in row}
        data["uuid"] = str(row["uuid"])
        data["nics"] = nics[row["id"]]
        data["operations"] = allowed_operations(row["status"], row["task_state"])
        data["host_tags"] = row["host_tags"].split()
        data["created_at"] = when.to_representation(row["created_at"])
        data["deleted_at"] = when.to_representation(row["deleted_at"]) if row["deleted_at"] else None
        if not admin:
            _hide_host_paths(data)
        out.append({field: data[field] for field in InstanceSerializer.Meta.fields})
    return out


class StateChangeSerializer(serializers.ModelSerializer):
    class Meta:
        model = InstanceStateChange
        fields = ["from_status", "to_status", "at", "cause", "action", "detail"]
        read_only_fields = fields


class DetachSerializer(serializers.Serializer):
    port = serializers.IntegerField(help_text="The id of one of the instance's NICs.")


class ResizeSerializer(serializers.Serializer):
    """The new size: only what is given changes."""

    vcpus = serializers.IntegerField(min_value=1, max_value=256, required=False)
    memory_mib = serializers.IntegerField(min_value=16, max_value=4 * 1024 * 1024, required=False)
    disk_gib = serializers.IntegerField(min_value=0, max_value=64 * 1024, required=False,
                                        help_text="Grow only: a disk never shrinks.")


class SaveImageSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255, help_text="The new private image's name.")


class ServerGroupSerializer(serializers.ModelSerializer):
    tenant_name = serializers.CharField(source="tenant.name", read_only=True)
    members = serializers.SerializerMethodField(help_text="Its instances (not deleted): id, name and host.")

    class Meta:
        model = ServerGroup
        fields = ["id", "name", "policy", "tenant", "tenant_name", "members", "created_at"]
        read_only_fields = fields

    def get_members(self, group: ServerGroup) -> list[dict]:
        return [{"id": pk, "name": name, "host": host} for pk, name, host in
                group.instances.live().order_by("name").values_list("pk", "name", "host__name")]


class ServerGroupWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    policy = serializers.ChoiceField(choices=GroupPolicy.choices)
    tenant = serializers.IntegerField(required=False)


class MaintenancePolicySerializer(serializers.Serializer):
    policy = serializers.ChoiceField(choices=MaintenancePolicy.choices)


class MaintenanceRequestSerializer(serializers.Serializer):
    """Enter maintenance (true) or leave it (false)."""

    enter = serializers.BooleanField()


class MaintenanceStepSerializer(serializers.Serializer):
    """What becomes of one instance of a host going into maintenance."""

    instance = serializers.IntegerField(source="instance.pk")
    instance_name = serializers.CharField(source="instance.name")
    status = serializers.CharField(source="instance.status")
    policy = serializers.CharField(source="instance.on_host_maintenance")
    action = serializers.CharField()
    target_host = serializers.IntegerField(source="target.pk", default=None, allow_null=True)
    target_host_name = serializers.CharField(source="target.name", default=None, allow_null=True)
    reason = serializers.CharField()
    outcome = serializers.CharField()
    placement = serializers.JSONField(allow_null=True, help_text="For a move: placement's decision, every other "
                                      "host kept or dropped and why.")


class EvacuationRequestSerializer(serializers.Serializer):
    """Evacuate the host: its instances rebuilt elsewhere where they can be."""

    host_is_off = serializers.BooleanField(default=False, help_text="True: the host is powered down or fenced (a "
                                           "guest rebuilt elsewhere while its old copy runs would run twice); a plan "
                                           "(?dry_run=1) needs no word on it.")


class EvacuationStepSerializer(serializers.Serializer):
    """What becomes of one instance of a host that is evacuated."""

    instance = serializers.IntegerField(source="instance.pk")
    instance_name = serializers.CharField(source="instance.name")
    status = serializers.CharField(source="instance.status")
    action = serializers.CharField(help_text="from backup, from image, boot again, or stays")
    reason = serializers.CharField(help_text="Why it stays, or what its rebuild loses.")
    backup = serializers.IntegerField(source="backup.pk", default=None, allow_null=True)
    target_host = serializers.IntegerField(source="target.pk", default=None, allow_null=True)
    target_host_name = serializers.CharField(source="target.name", default=None, allow_null=True)
    start = serializers.BooleanField(help_text="Started on its new host (it ran when its host went silent).")
    placement = serializers.JSONField(allow_null=True)
    outcome = serializers.CharField()


class PlanSerializer(serializers.Serializer):
    """What a create, resize or migration would do (a dry run): nothing is created or held."""

    operation = serializers.CharField()
    instance = serializers.CharField(help_text="The instance's name.")
    host = serializers.CharField(allow_null=True, help_text="The host it would be on.")
    host_id = serializers.IntegerField(allow_null=True)
    placement = serializers.JSONField(allow_null=True, help_text="Placement's decision: every host, kept (with its "
                                      "score) or dropped (with the reason), best first; platform admins only.")
    definition = serializers.CharField(help_text="The domain definition the host would get (platform admins; \"\" "
                                       "for others).")
    diff = serializers.CharField(help_text="For a change: a unified diff between the definitions the panel builds for "
                                 "it now and after (platform admins).")
    changes = serializers.ListField(child=serializers.CharField())
    quota = serializers.SerializerMethodField()
    price = serializers.SerializerMethodField()

    @extend_schema_field({"type": "array", "items": {"type": "object", "properties": {
        "resource": {"type": "string"}, "label": {"type": "string"}, "used": {"type": "string"},
        "after": {"type": "string"}, "limit": {"type": "integer", "nullable": True}}}})
    def get_quota(self, plan) -> list[dict]:
        return [vars(effect) for effect in plan.quota]

    @extend_schema_field({"type": "object", "nullable": True, "properties": {
        "currency": {"type": "string"}, "per_month": {"type": "string"},
        "before": {"type": "string", "nullable": True}}})
    def get_price(self, plan) -> dict | None:
        price = plan.price
        if price is None:
            return None
        return {"currency": price.currency, "per_month": str(price.per_month),
                "before": None if price.before is None else str(price.before)}


class MigrateSerializer(serializers.Serializer):
    """Where to: a host's id, or none for the host placement picks."""

    host = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**31 - 1)


class RenameSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=300)


class RebuildSerializer(serializers.Serializer):
    """What to reinstall from: an image, or a template (its image and cloud-init)."""

    image = serializers.IntegerField(required=False, allow_null=True)
    template = serializers.IntegerField(required=False, allow_null=True)
    ssh_keys = serializers.CharField(required=False, allow_blank=True, default="", max_length=20000)
    password = serializers.CharField(required=False, allow_blank=True, default="", max_length=200, write_only=True)


class SnapshotSerializer(serializers.ModelSerializer):
    kind = serializers.SerializerMethodField()

    class Meta:
        model = Snapshot
        fields = ["id", "name", "description", "memory", "kind", "size_gib", "status", "error", "created_at",
                  "taken_at"]

    def get_kind(self, obj: Snapshot) -> str:
        return "disks and memory" if obj.memory else "disks"


class SnapshotRequestSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    memory = serializers.BooleanField(required=False, allow_null=True, default=None,
                                      help_text="Keep the memory too: by default while it runs (then it must), "
                                                "never while it is stopped.")


class DisplayTicketSerializer(serializers.Serializer):
    ticket = serializers.CharField(help_text="Single use, for this browser session; shown once.")
    expires_at = serializers.DateTimeField()
    url = serializers.CharField(help_text="The websocket to open with it (noVNC speaks RFB over it).")


class MediaSerializer(serializers.Serializer):
    image = serializers.IntegerField(allow_null=True, help_text="An ISO image to insert; null ejects.")


class InstanceCreateSerializer(serializers.Serializer):
    """What a create request may carry; the tenant and host are checked by the view."""

    name = serializers.CharField(max_length=300)
    tenant = serializers.IntegerField(required=False)
    host = serializers.PrimaryKeyRelatedField(queryset=Host.objects.all(), required=False, allow_null=True)
    vcpus = serializers.IntegerField(min_value=1, max_value=256, required=False,
                                     help_text="Required unless a template gives it.")
    memory_mib = serializers.IntegerField(min_value=16, max_value=4 * 1024 * 1024, required=False,
                                          help_text="Required unless a template gives it.")
    disk_gib = serializers.IntegerField(min_value=0, max_value=64 * 1024, required=False,
                                        help_text="For an image: at least its size (the default).")
    image = serializers.IntegerField(required=False, help_text="Boot this library image (boot_source image), or "
                                                               "run this container image (boot_source container).")
    boot_kernel = serializers.IntegerField(required=False, help_text="Boot this kernel (and its initrd) from the "
                                                                     "library (boot_source kernel, or with an image).")
    template = serializers.IntegerField(required=False, help_text="Create from this template.")
    ssh_keys = serializers.CharField(max_length=20000, required=False, allow_blank=True, default="",
                                     help_text="OpenSSH public keys, one per line, given through cloud-init.")
    password = serializers.CharField(max_length=200, required=False, allow_blank=True, default="",
                                     write_only=True, help_text="Root password; only its hash reaches the guest.")
    networks = NicRequestSerializer(many=True, required=False, help_text="A NIC on each network, in order.")
    boot_source = serializers.ChoiceField(choices=CREATABLE, default=BootSource.KERNEL)
    kernel = serializers.CharField(max_length=500, required=False, allow_blank=True, default="",
                                   help_text="Platform admins: a kernel's path under a directory the host allows.")
    initrd = serializers.CharField(max_length=500, required=False, allow_blank=True, default="",
                                   help_text="Platform admins: an initrd's path under a directory the host allows.")
    cmdline = serializers.CharField(max_length=500, required=False, allow_blank=True, default="",
                                    help_text="The kernel command line (default: the boot kernel's).")
    boot_disk = serializers.CharField(max_length=500, required=False, allow_blank=True, default="",
                                      help_text="Platform admins: a disk's path under a directory the host allows "
                                                "(on OpenVZ, a template of the host's cache).")
    init = serializers.CharField(max_length=500, required=False, allow_blank=True, default="",
                                 help_text="A container's program and arguments inside its image (default: its "
                                           "/sbin/init, a system container).")
    env = serializers.DictField(child=serializers.CharField(max_length=4096, allow_blank=True, trim_whitespace=False),
                                required=False, default=dict, help_text="A container's environment variables.")
    start = serializers.BooleanField(default=True, help_text="Start it once created; false: define it and leave it "
                                                             "stopped.")
    cdrom_drive = serializers.BooleanField(default=False, help_text="QEMU/KVM: a CD-ROM drive, to insert ISOs "
                                                                    "while it runs (an ISO boot has one anyway).")
    volume = serializers.IntegerField(required=False, help_text="Boot from this volume of the tenant's "
                                                                "(boot_source volume): the instance is made on its "
                                                                "host.")
    server_group = serializers.IntegerField(required=False, allow_null=True,
                                            help_text="Place it with this server group of the tenant's: together "
                                                      "on one host (affinity) or apart (anti-affinity).")
    host_tags = serializers.ListField(child=serializers.CharField(max_length=32), max_length=32, required=False,
                                      default=list, help_text="Tags its host must carry (\"ssd\"): placement "
                                                              "drops hosts that lack one.")
    arch = serializers.CharField(max_length=20, required=False, allow_blank=True, default="",
                                 help_text="QEMU/KVM: the guest's architecture (e.g. aarch64, emulated where the host "
                                           "is not one); default: its boot kernel's or image's, else its host's own.")
    machine = serializers.CharField(max_length=64, required=False, allow_blank=True, default="",
                                    help_text="QEMU/KVM: a machine type its host offers for the architecture "
                                              "(default: pc on x86, virt on ARM).")
    cpu_mode = serializers.ChoiceField(choices=CpuMode.choices, required=False, allow_blank=True, default="",
                                       help_text="QEMU/KVM: its CPU (default: its host's setting); host-passthrough is "
                                                 "platform admins'.")
    cpu_model = serializers.CharField(max_length=64, required=False, allow_blank=True, default="",
                                      help_text="With cpu_mode custom: a CPU model its host offers.")

    def validate_env(self, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_ENV or not all(ENV_NAME.fullmatch(name) for name in value):
            raise serializers.ValidationError(f"At most {MAX_ENV} variables, each named with letters, digits and _, "
                                              "not starting with a digit.")
        return value


class AdoptSerializer(serializers.Serializer):
    """A domain made outside the panel (an unmanaged one of GET /hosts/{id}/domains/), put under a tenant."""

    domain = serializers.IntegerField(help_text="The host domain's id.")
    tenant = serializers.IntegerField()
    name = serializers.CharField(max_length=63, help_text="The instance's name in the tenant.")


class VolumeSerializer(serializers.ModelSerializer):
    host_name = serializers.CharField(source="host.name", default=None, allow_null=True, read_only=True)
    instance_name = serializers.CharField(source="instance.name", default=None, allow_null=True, read_only=True)

    class Meta:
        model = Volume
        fields = ["id", "uuid", "name", "description", "tenant", "host", "host_name", "size_gib", "image",
                  "image_name", "status", "task_state", "error", "instance", "instance_name", "device", "boot",
                  "created_at", "ready_at"]
        read_only_fields = fields


class VolumeCreateSerializer(serializers.Serializer):
    """A new volume: empty (give its size) or from a library disk image (at least the image's size)."""

    name = serializers.CharField(max_length=300)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    size_gib = serializers.IntegerField(min_value=1, max_value=MAX_VOLUME_GIB, required=False, allow_null=True)
    image = serializers.IntegerField(required=False, allow_null=True, help_text="Copy this library disk image.")
    instance = serializers.IntegerField(required=False, allow_null=True,
                                        help_text="Make it on this instance's host, to attach it there.")
    tenant = serializers.IntegerField(required=False)
    host = serializers.PrimaryKeyRelatedField(queryset=Host.objects.all(), required=False, allow_null=True,
                                              help_text="Platform admins: the host to make it on.")


class VolumeExtendSerializer(serializers.Serializer):
    size_gib = serializers.IntegerField(min_value=1, max_value=MAX_VOLUME_GIB, help_text="Grow only: never shrinks.")


class VolumeAttachSerializer(serializers.Serializer):
    instance = serializers.IntegerField(help_text="An instance of the volume's tenant on its host.")


class BackupSerializer(serializers.ModelSerializer):
    kind = serializers.SerializerMethodField()

    class Meta:
        model = Backup
        fields = ["id", "uuid", "tenant", "instance", "instance_name", "name", "scheduled", "kind", "parent", "status",
                  "error", "stored_bytes", "billed_gib", "disk_gib", "quiesced", "created_at", "taken_at"]
        read_only_fields = fields

    def get_kind(self, obj: Backup) -> str:
        return "incremental" if obj.parent_id else "full"


class BackupRequestSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63, required=False, allow_blank=True, default="")


class BackupScheduleSerializer(serializers.Serializer):
    every_hours = serializers.IntegerField(min_value=0, max_value=24 * 366, help_text="0: no schedule.")
    keep = serializers.IntegerField(min_value=1, max_value=1000, default=7,
                                    help_text="How many of its scheduled backups to keep (the newest).")


class RestoreSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=300, required=False, allow_blank=True, default="",
                                 help_text="Into a new instance of this name; empty: over the backup's instance.")
