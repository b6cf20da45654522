from django.db import models


class Kind(models.TextChoices):
    """What happened. Host events are the platform's; the others are a tenant's."""

    HOST_OFFLINE = "host.offline", "Host offline"
    HOST_ONLINE = "host.online", "Host back online"
    ACTION_FAILED = "action.failed", "Operation failed"
    INSTANCE_CRASHED = "instance.crashed", "Instance crashed"
    INSTANCE_CHANGED = "instance.changed", "Instance changed outside the panel"
    BACKUP_FAILED = "backup.failed", "Backup failed"
    QUOTA_WARNING = "quota.warning", "Quota 90 % used"
    QUOTA_REACHED = "quota.reached", "Quota used up"
    INVOICE_ISSUED = "invoice.issued", "Invoice issued"
    ALERT_FIRING = "alert.firing", "Alert firing"
    ALERT_RESOLVED = "alert.resolved", "Alert resolved"


PLATFORM_KINDS = frozenset({Kind.HOST_OFFLINE, Kind.HOST_ONLINE})
TENANT_KINDS = frozenset(set(Kind) - PLATFORM_KINDS)


class Channel(models.TextChoices):
    EMAIL = "email", "E-mail"
    WEBHOOK = "webhook", "Webhook"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Waiting"  # for its first attempt or a retry (next_attempt_at)
    SENDING = "sending", "Sending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"  # every attempt failed
