
from django.core.validators import ProhibitNullCharactersValidator
from rest_framework import serializers

from cloudpanel.text import CONTROL
from hosts.architectures import ARCH_CHOICES, DEFAULT_ARCH
from images.choices import OsType, SourceFormat, Visibility
from images.models import BootKernel, Image, ImageCopy, Template


class CopySerializer(serializers.ModelSerializer):
    host_name = serializers.CharField(source="host.name", read_only=True)

    class Meta:
        model = ImageCopy
        fields = ["host", "host_name", "status", "error", "verified_at"]
        read_only_fields = fields


class ImageSerializer(serializers.ModelSerializer):
    tenant_name = serializers.CharField(source="tenant.name", default=None, allow_null=True, read_only=True)
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True, read_only=True)
    progress = serializers.IntegerField(read_only=True, allow_null=True)
    copies = CopySerializer(many=True, read_only=True)
    source_url = serializers.CharField(read_only=True, help_text="The URL it was imported from (empty: uploaded).")
    source_format = serializers.ChoiceField(choices=[("", "not inspected yet"), *SourceFormat.choices],
                                            read_only=True, help_text="The format it arrived in.")
    declared_format = serializers.ChoiceField(choices=[("", "none declared"), *SourceFormat.choices],
                                              read_only=True, help_text="The format its uploader declared.")

    class Meta:
        model = Image
        fields = [
            "id", "uuid", "name", "tenant", "tenant_name", "visibility", "status", "status_reason", "os_type", "arch",
            "min_disk_gib", "min_memory_mib", "filename", "source_url", "declared_format", "expected_checksum",
            "source_format", "disk_format", "received_bytes", "expected_bytes", "progress", "size", "virtual_size",
            "sha256", "copies", "created_by", "created_at", "updated_at",
        ]
        read_only_fields = fields

    def to_representation(self, image: Image) -> dict:
        """Where a platform image came from, who made it and why a host copy failed are for admins."""
        data = super().to_representation(image)
        scope = self.context.get("scope")
        if scope is not None and not scope.admin:
            for copy in data["copies"]:
                copy["error"] = ""
            if image.tenant_id not in (scope.tenant_ids or []):
                data.update(source_url="", filename="", created_by=None)
        return data


class ImageCreateSerializer(serializers.Serializer):
    """An upload (give size, then PUT the bytes to /data/) or an import (give url)."""

    name = serializers.CharField(max_length=255)
    tenant = serializers.IntegerField(required=False, help_text="Defaults to the tenant you act in.")
    visibility = serializers.ChoiceField(choices=Visibility.choices, default=Visibility.PRIVATE,
                                         help_text="Public images are a platform admin's.")
    os_type = serializers.ChoiceField(choices=OsType.choices, default=OsType.LINUX)
    arch = serializers.ChoiceField(choices=ARCH_CHOICES, default=DEFAULT_ARCH,
                                   help_text="What its guests are: its instances go to hosts that run them.")
    min_disk_gib = serializers.IntegerField(min_value=0, max_value=65536, default=0)
    min_memory_mib = serializers.IntegerField(min_value=0, max_value=4 * 1024 * 1024, default=0)
    declared_format = serializers.ChoiceField(choices=SourceFormat.choices, required=False, allow_blank=True,
                                              default="", help_text="Refused if the file turns out otherwise.")
    checksum = serializers.CharField(max_length=140, required=False, allow_blank=True, default="",
                                     help_text="sha256:<hex> or sha512:<hex>, verified before publication.")
    size = serializers.IntegerField(min_value=1, required=False, help_text="Upload: the file's size in bytes.")
    filename = serializers.CharField(max_length=4096, required=False, allow_blank=True, default="",
                                     trim_whitespace=False)
    url = serializers.URLField(max_length=2000, required=False, help_text="Import: http or https only.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A file name is only shown (cleaned of control characters): NUL bytes are dropped, not refused.
        self.fields["filename"].validators = [v for v in self.fields["filename"].validators
                                              if not isinstance(v, ProhibitNullCharactersValidator)]

    def validate_name(self, value: str) -> str:
        if CONTROL.search(value):
            raise serializers.ValidationError("The name cannot hold control characters.")
        return value

    def validate(self, data: dict) -> dict:
        if ("size" in data) == ("url" in data):
            raise serializers.ValidationError("Give either size (an upload) or url (an import).")
        return data


class TemplateSerializer(serializers.ModelSerializer):
    tenant_name = serializers.CharField(source="tenant.name", default=None, allow_null=True, read_only=True)
    image_name = serializers.CharField(source="image.name", read_only=True)

    class Meta:
        model = Template
        fields = ["id", "name", "description", "tenant", "tenant_name", "visibility", "image", "image_name", "vcpus",
                  "memory_mib", "disk_gib", "user_data", "script", "created_at"]
        read_only_fields = ["id", "tenant", "tenant_name", "visibility", "image", "image_name", "created_at"]


class TemplateCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    tenant = serializers.IntegerField(required=False, help_text="Defaults to the tenant you act in.")
    visibility = serializers.ChoiceField(choices=Visibility.choices, default=Visibility.PRIVATE)
    image = serializers.IntegerField()
    vcpus = serializers.IntegerField(min_value=1, max_value=256, default=1)
    memory_mib = serializers.IntegerField(min_value=16, max_value=4 * 1024 * 1024, default=512)
    disk_gib = serializers.IntegerField(min_value=1, max_value=64 * 1024, default=10)
    user_data = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False,
                                      help_text="#cloud-config YAML.")
    script = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False,
                                   help_text="A shell script run once at first boot.")

    def validate_name(self, value: str) -> str:
        if CONTROL.search(value):
            raise serializers.ValidationError("The name cannot hold control characters.")
        return value


class BootKernelSerializer(serializers.ModelSerializer):
    tenant_name = serializers.CharField(source="tenant.name", default=None, allow_null=True, read_only=True)
    kernel_name = serializers.CharField(source="kernel.name", read_only=True)
    initrd_name = serializers.CharField(source="initrd.name", default=None, allow_null=True, read_only=True)

    class Meta:
        model = BootKernel
        fields = ["id", "name", "description", "tenant", "tenant_name", "visibility", "kernel", "kernel_name",
                  "initrd", "initrd_name", "cmdline", "arch", "created_at"]
        read_only_fields = fields


class BootKernelCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    tenant = serializers.IntegerField(required=False, help_text="Defaults to the tenant you act in.")
    visibility = serializers.ChoiceField(choices=Visibility.choices, default=Visibility.PRIVATE)
    kernel = serializers.IntegerField(help_text="An image uploaded with the kernel format.")
    initrd = serializers.IntegerField(required=False, allow_null=True, default=None,
                                      help_text="An image uploaded with the initrd format.")
    cmdline = serializers.CharField(max_length=500, required=False, allow_blank=True, default="",
                                    trim_whitespace=False,
                                    help_text="Default: the architecture's serial console (console=ttyS0, ttyAMA0…).")
    arch = serializers.ChoiceField(choices=ARCH_CHOICES, default=DEFAULT_ARCH,
                                   help_text="The architecture it runs on: its instances are guests of it.")

    def validate_name(self, value: str) -> str:
        if CONTROL.search(value):
            raise serializers.ValidationError("The name cannot hold control characters.")
        return value
