"""Tenant, membership, quota and token changes."""

from __future__ import annotations

import secrets
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from cloudpanel.exceptions import NotFound
from tenants.choices import Role
from tenants.exceptions import InvalidMembership, InvalidTenant, InvalidToken
from tenants.models import APIToken, Membership, Quota, Tenant
from tenants.quotas import RESOURCES, default_limits, lock_tenant, quota_of


def create_tenant(*, name: str) -> Tenant:
    """A new tenant, with the default quota from the settings."""
    name = name.strip()
    if not name:
        raise InvalidTenant("a tenant needs a name")
    try:
        with transaction.atomic():
            tenant = Tenant.objects.create(name=name[:100])
            Quota.objects.create(tenant=tenant, **default_limits())
    except IntegrityError:
        raise InvalidTenant(f"a tenant named '{name}' already exists") from None
    return tenant


@transaction.atomic
def set_quota(*, tenant: Tenant, limits: dict[str, int | None]) -> Quota:
    """Set a tenant's limits. Lowering one below current use keeps what exists and refuses new requests."""
    lock_tenant(tenant.pk)
    quota = quota_of(tenant)
    for resource in RESOURCES:
        if resource.key in limits:
            setattr(quota, resource.key, limits[resource.key])
    quota.save()
    return quota


@transaction.atomic
def add_member(*, tenant: Tenant, user: AbstractBaseUser, role: str = Role.MEMBER) -> Membership:
    """Give a user a role in a tenant (or change it)."""
    if role not in Role.values:
        raise InvalidMembership(f"unknown role '{role}'")
    lock_tenant(tenant.pk)
    existing = Membership.objects.filter(tenant=tenant, user=user).first()
    if existing is not None:
        return set_role(membership=existing, role=role)
    return Membership.objects.create(tenant=tenant, user=user, role=role)


def _keep_an_admin(membership: Membership) -> None:
    """Refuse a change that would leave a tenant that has admins with none (call with the tenant locked)."""
    if membership.role != Role.ADMIN:
        return
    others = Membership.objects.filter(tenant_id=membership.tenant_id, role=Role.ADMIN)
    if not others.exclude(pk=membership.pk).exists():
        raise InvalidMembership(f"{membership.user} is the last admin of {membership.tenant}; "
                                "make someone else an admin first")


@transaction.atomic
def set_role(*, membership: Membership, role: str) -> Membership:
    """Change a member's role."""
    if role not in Role.values:
        raise InvalidMembership(f"unknown role '{role}'")
    lock_tenant(membership.tenant_id)
    membership.refresh_from_db(fields=["role"])
    if role != Role.ADMIN:
        _keep_an_admin(membership)
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def remove_member(*, membership: Membership) -> None:
    """Take a user out of a tenant; their tokens for it stop working at once."""
    lock_tenant(membership.tenant_id)
    membership.refresh_from_db(fields=["role"])
    _keep_an_admin(membership)
    APIToken.objects.filter(user_id=membership.user_id, tenant_id=membership.tenant_id,
                            revoked_at__isnull=True).update(revoked_at=timezone.now())
    membership.delete()


def create_api_token(*, user: AbstractBaseUser, name: str, tenant: Tenant | None,
                     expires_at: datetime | None = None) -> tuple[APIToken, str]:
    """Create a token for a user in one of their tenants; returns the row and the key, which is never stored."""
    name = name.strip()
    if not name:
        raise InvalidToken("give the token a name")
    if tenant is None and not user.is_staff:
        raise InvalidToken("a token is bound to one of your tenants")
    if tenant is not None and not user.is_staff and not Membership.objects.filter(user=user, tenant=tenant).exists():
        raise NotFound("no such tenant")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidToken("the expiry must be in the future")
    key = secrets.token_hex(20)
    token = APIToken.objects.create(user=user, tenant=tenant, name=name[:100], digest=APIToken.digest_of(key),
                                    prefix=key[:8], expires_at=expires_at)
    return token, key


def revoke_api_token(*, token: APIToken) -> APIToken:
    """Stop a token from working; the row stays for the record."""
    APIToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db(fields=["revoked_at"])
    return token
