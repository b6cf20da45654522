from rest_framework import serializers

from tenants.choices import Role
from tenants.models import APIToken, AuditEvent, Membership, Quota, Tenant
from tenants.quotas import RESOURCES


class QuotaSerializer(serializers.ModelSerializer):
    """Limits; null is unlimited."""

    class Meta:
        model = Quota
        fields = [r.key for r in RESOURCES]
        extra_kwargs = {r.key: {"allow_null": True, "required": False, "min_value": 0} for r in RESOURCES}


class TenantSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()
    quota = serializers.SerializerMethodField()
    usage = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = ["id", "name", "created_at", "role", "quota", "usage"]
        read_only_fields = fields

    def get_role(self, tenant: Tenant) -> str | None:
        return self.context["scope"].role_in(tenant.pk)

    def get_quota(self, tenant: Tenant) -> dict[str, int | None]:
        return QuotaSerializer(self.context["quotas"][tenant.pk]).data

    def get_usage(self, tenant: Tenant) -> dict[str, float]:
        """Use in each limit's unit: image storage in GiB, to the hundredth; the others whole."""
        return self.context["usage"][tenant.pk]


class TenantCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    tenant_name = serializers.CharField(source="tenant.name", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "tenant", "tenant_name", "user", "username", "role"]
        read_only_fields = fields


class MembershipCreateSerializer(serializers.Serializer):
    tenant = serializers.IntegerField(required=False)
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)


class RoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class APITokenSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    state = serializers.CharField(read_only=True)

    class Meta:
        model = APIToken
        fields = ["id", "name", "prefix", "user", "username", "tenant", "state", "created_at", "expires_at",
                  "revoked_at", "last_used_at"]
        read_only_fields = fields


class APITokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    tenant = serializers.IntegerField(required=False, allow_null=True)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class NewAPITokenSerializer(APITokenSerializer):
    """A token as created: the only time its key is shown."""

    key = serializers.CharField(read_only=True)

    class Meta(APITokenSerializer.Meta):
        fields = [*APITokenSerializer.Meta.fields, "key"]
        read_only_fields = fields


class AuditEventSerializer(serializers.ModelSerializer):
    duration_seconds = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = ["id", "at", "user", "username", "tenant", "tenant_name", "on_behalf", "channel", "action", "method",
                  "path", "target_type", "target_id", "target_name", "address", "result", "status_code", "detail",
                  "ended_at", "duration_seconds"]
        read_only_fields = fields

    def get_duration_seconds(self, event: AuditEvent) -> float | None:
        return round(event.duration.total_seconds(), 1) if event.duration is not None else None
