"""Notifications: what happened (the panel's list), who wants to hear of it, and each sending."""

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from cloudpanel.scoping import Scope, TenantScopedQuerySet
from notifications.choices import Channel, DeliveryStatus, Kind


class Notification(models.Model):
    """An event people may want to hear of: a tenant's, or the platform's (no tenant; platform admins only)."""

    kind = models.CharField(max_length=20, choices=Kind.choices)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, null=True, blank=True,
                               related_name="notifications")
    title = models.CharField(max_length=300)
    body = models.TextField(blank=True)
    link = models.CharField(max_length=300, blank=True)  # the panel's page about it
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return self.title


class SubscriptionQuerySet(TenantScopedQuerySet):
    def managed_by(self, scope: Scope) -> "SubscriptionQuerySet":
        """What the scope may see and change: a platform admin's every subscription, a tenant admin's their
        tenant's (a subscription's webhook secret is in it)."""
        ids = scope.managed_tenant_ids
        return self if ids is None else self.filter(tenant_id__in=ids)


class Subscription(models.Model):
    """Who hears of which events, and how: by e-mail or a signed webhook. A tenant's hears of that tenant's events;
    the platform's (no tenant, platform admins) of platform events and every tenant's."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, null=True, blank=True,
                               related_name="subscriptions")
    name = models.CharField(max_length=100)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    kinds = models.JSONField(default=list, blank=True)  # empty: every kind it may hear of
    email = models.EmailField(blank=True)
    url = models.URLField(max_length=500, blank=True)
    secret = models.CharField(max_length=64, blank=True, default="")  # signs each webhook body (HMAC-SHA256)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = SubscriptionQuerySet.as_manager()

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def new_secret() -> str:
        return secrets.token_hex(32)

    @property
    def target(self) -> str:
        return self.email if self.channel == Channel.EMAIL else self.url

    def hears(self, kind: str) -> bool:
        return not self.kinds or kind in self.kinds


class Delivery(models.Model):
    """One notification sent to one subscription: its attempts and how the last one went."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="deliveries")
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)  # a worker is sending it until then
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["subscription", "notification"], name="one_delivery_each")]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="deliveries_due")]

    def __str__(self) -> str:
        return f"{self.notification} → {self.subscription}"


class Inbox(models.Model):
    """Where a user has read their notification list up to."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="inbox")
    read_until = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.user} read until {self.read_until:%Y-%m-%d %H:%M}"


class QuotaLevel(models.Model):
    """How full a tenant's quota of one resource was last told (0, 90 or 100 %), so each crossing is told once."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    resource = models.CharField(max_length=20)
    level = models.PositiveSmallIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "resource"], name="one_quota_level_each")]

    def __str__(self) -> str:
        return f"{self.resource} of tenant {self.tenant_id} at {self.level} %"
