from rest_framework import serializers

from hosts.choices import Accelerator, CpuMode
from hosts.models import Host, HostDomain


class HostSerializer(serializers.ModelSerializer):
    class Meta:
        model = Host
        fields = [
            "id", "name", "uri", "technology", "accelerator", "storage_pool", "allowed_paths", "tags", "enabled",
            "maintenance", "state",
            "last_error", "last_seen_at", "hostname", "hypervisor_type", "hypervisor_version", "libvirt_version",
            "cpus", "memory_mib", "kvm_available", "pools", "arch", "guests", "domain_caps", "missing", "cpu_mode",
            "cpu_model", "os_templates", "created_at",
        ]
        read_only_fields = fields


class HostInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    uri = serializers.CharField(max_length=500)
    accelerator = serializers.ChoiceField(choices=Accelerator.choices, default=Accelerator.AUTO)
    storage_pool = serializers.CharField(max_length=100, default="default", allow_blank=True)


class HostUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    accelerator = serializers.ChoiceField(choices=Accelerator.choices)
    storage_pool = serializers.CharField(max_length=100, allow_blank=True)
    allowed_paths = serializers.CharField(max_length=10000, allow_blank=True, required=False, trim_whitespace=False,
                                          help_text="Directories, one per line, under which platform admins may "
                                                    "boot kernels, initrds and disks by path (none by default).")
    tags = serializers.CharField(max_length=500, allow_blank=True, required=False,
                                 help_text="Words instances may require of their host (\"ssd gpu\"), space-separated.")
    cpu_mode = serializers.ChoiceField(choices=CpuMode.choices, allow_blank=True, required=False,
                                       help_text="QEMU/KVM: its instances' CPU unless they choose one.")
    cpu_model = serializers.CharField(max_length=64, allow_blank=True, required=False,
                                      help_text="With cpu_mode custom: a model its domain capabilities list.")
    os_templates = serializers.CharField(max_length=10000, allow_blank=True, required=False,
                                         help_text="OpenVZ: OS templates of its cache instances may be made from, "
                                                   "one per line.")


class HostDomainSerializer(serializers.ModelSerializer):
    managed = serializers.BooleanField(read_only=True, help_text="Whether the panel made it (one of its instances, "
                                                                 "live or deleted); platform admins may adopt the "
                                                                 "others.")

    class Meta:
        model = HostDomain
        fields = ["id", "uuid", "name", "state", "vcpus", "memory_mib", "seen_at", "managed"]
        read_only_fields = fields
