"""Tenant, membership and token changes."""

import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from tenants.choices import Role
from tenants.models import APIToken, Membership, Tenant


def create_api_token(*, user: AbstractBaseUser, name: str) -> tuple[APIToken, str]:
    """Create a token for a user; returns the row and the key, which is never stored."""
    key = secrets.token_hex(20)
    token = APIToken.objects.create(user=user, name=name, digest=APIToken.digest_of(key), prefix=key[:8])
    return token, key


@transaction.atomic
def add_member(*, tenant: Tenant, user: AbstractBaseUser, role: str = Role.MEMBER) -> Membership:
    """Give a user a role in a tenant (or change it)."""
    membership, _ = Membership.objects.update_or_create(tenant=tenant, user=user, defaults={"role": role})
    return membership
