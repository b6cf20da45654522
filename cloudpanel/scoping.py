"""The one helper through which every query of tenant data is scoped."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


def is_platform_admin(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Platform admins see and operate every tenant's objects."""
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def tenant_ids_of(user: AbstractBaseUser | AnonymousUser) -> list[int]:
    """The tenants a user is a member of."""
    if not user.is_authenticated:
        return []
    from tenants.models import Membership

    return list(Membership.objects.filter(user=user).values_list("tenant_id", flat=True))


class TenantScopedQuerySet(models.QuerySet):
    """A queryset of rows that belong to a tenant through `tenant_field`."""

    tenant_field = "tenant"

    def visible_to(self, user: AbstractBaseUser | AnonymousUser) -> TenantScopedQuerySet:
        """Everything for platform admins; the user's tenants' rows for others; nothing for anonymous."""
        if is_platform_admin(user):
            return self
        if not user.is_authenticated:
            return self.none()
        return self.filter(**{f"{self.tenant_field}__memberships__user": user})


def operable_tenant_ids(user: AbstractBaseUser | AnonymousUser) -> list[int]:
    """The tenants in which the user may create and operate resources (viewers only read)."""
    if not user.is_authenticated:
        return []
    from tenants.choices import Role
    from tenants.models import Membership

    return list(
        Membership.objects.filter(user=user, role__in=[Role.ADMIN, Role.MEMBER]).values_list("tenant_id", flat=True)
    )


def can_operate(user: AbstractBaseUser | AnonymousUser, tenant_id: int) -> bool:
    """Whether the user may change resources of this tenant."""
    return is_platform_admin(user) or tenant_id in operable_tenant_ids(user)
