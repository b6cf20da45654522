"""Tenants, their members and quotas, API tokens and the audit log."""

import hashlib

from django.conf import settings
from django.db import models
from django.utils import timezone

from cloudpanel.scoping import Scope, TenantScopedQuerySet
from tenants.choices import AuditResult, Channel, Role


class TenantQuerySet(TenantScopedQuerySet):
    tenant_field = "pk"

    def managed_in(self, scope: Scope) -> "TenantQuerySet":
        """The tenants the scope manages (Scope.managed_tenant_ids)."""
        ids = scope.managed_tenant_ids
        return self if ids is None else self.filter(pk__in=ids)


class Tenant(models.Model):
    """A project that owns instances, has members and quotas, and is billed."""

    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user's role in a tenant."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__name", "user__username"]
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"


class Quota(models.Model):
    """A tenant's limits; an empty limit is unlimited. Usage is counted from the live resources."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, primary_key=True, related_name="quota")
    instances = models.PositiveIntegerField(null=True, blank=True)
    vcpus = models.PositiveIntegerField(null=True, blank=True)
    memory_mib = models.PositiveIntegerField(null=True, blank=True)
    disk_gib = models.PositiveIntegerField(null=True, blank=True)
    snapshots = models.PositiveIntegerField(null=True, blank=True)
    volumes = models.PositiveIntegerField(null=True, blank=True)
    volume_gib = models.PositiveIntegerField(null=True, blank=True)
    image_gib = models.PositiveIntegerField(null=True, blank=True)
    networks = models.PositiveIntegerField(null=True, blank=True)
    public_addresses = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"quota of {self.tenant_id}"


class APITokenQuerySet(TenantScopedQuerySet):
    def visible_in(self, scope) -> "APITokenQuerySet":
        """A user's own tokens in the scope; platform admins and the tenant's admins see all of them."""
        tokens = self.in_scope(scope).select_related("user", "tenant")
        return tokens if scope.manages_current else tokens.filter(user=scope.user)


class APIToken(models.Model):
    """A user's API token, bound to one tenant; only its SHA-256 digest is stored, the key is shown once.

    Platform admins may also hold tokens bound to no tenant, which act across all of them.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_tokens", null=True, blank=True)
    name = models.CharField(max_length=100)
    digest = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = APITokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def digest_of(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"


class AuditEvent(models.Model):
    """One state-changing request, refused ones included, or one console session.

    Names are copied so the record outlives the user, tenant and object it mentions.
    """

    at = models.DateTimeField(default=timezone.now)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                             related_name="+")
    username = models.CharField(max_length=150, blank=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    tenant_name = models.CharField(max_length=100, blank=True)
    # A platform admin acting in a tenant they are not a member of.
    on_behalf = models.BooleanField(default=False)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    action = models.CharField(max_length=60)
    method = models.CharField(max_length=10, blank=True)
    path = models.CharField(max_length=500, blank=True)
    target_type = models.CharField(max_length=40, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_name = models.CharField(max_length=200, blank=True)
    address = models.GenericIPAddressField(null=True, blank=True)
    result = models.CharField(max_length=10, choices=AuditResult.choices)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    detail = models.TextField(blank=True)
    # Console sessions: when the socket closed.
    ended_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["-at", "-id"], name="audit_newest_first"),
            models.Index(fields=["tenant", "-at"], name="audit_tenant_newest"),
            models.Index(fields=["user", "-at"], name="audit_user_newest"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username or '-'} {self.action} {self.result}"

    @property
    def duration(self):
        return self.ended_at - self.at if self.ended_at else None
