from rest_framework import serializers

from notifications.choices import Channel, Kind
from notifications.models import Delivery, Notification, Subscription


class NotificationSerializer(serializers.ModelSerializer):
    tenant_name = serializers.CharField(source="tenant.name", read_only=True, default=None)

    class Meta:
        model = Notification
        fields = ["id", "kind", "tenant", "tenant_name", "title", "body", "link", "data", "created_at"]


class UnreadSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    read_until = serializers.DateTimeField()


class SubscriptionSerializer(serializers.ModelSerializer):
    """A subscription; `secret` signs its webhooks (X-CloudPanel-Signature), shown to those who manage it."""

    class Meta:
        model = Subscription
        fields = ["id", "tenant", "name", "channel", "kinds", "email", "url", "secret", "enabled", "created_at"]


class SubscriptionWriteSerializer(serializers.Serializer):
    tenant = serializers.IntegerField(required=False, allow_null=True,
                                      help_text="The tenant whose events it hears of; none (platform admins): "
                                                "platform events and every tenant's")
    name = serializers.CharField(max_length=100)
    channel = serializers.ChoiceField(choices=Channel.choices)
    kinds = serializers.ListField(child=serializers.ChoiceField(choices=Kind.choices), required=False, default=list,
                                  max_length=len(Kind.choices), help_text="Empty: every kind it may hear of")
    email = serializers.EmailField(required=False, default="", allow_blank=True)
    url = serializers.URLField(required=False, default="", allow_blank=True, max_length=500)
    enabled = serializers.BooleanField(required=False, default=True)


class DeliverySerializer(serializers.ModelSerializer):
    notification_title = serializers.CharField(source="notification.title", read_only=True)
    kind = serializers.CharField(source="notification.kind", read_only=True)

    class Meta:
        model = Delivery
        fields = ["id", "notification", "kind", "notification_title", "status", "attempts", "response_code", "error",
                  "next_attempt_at", "created_at", "finished_at"]
