"""The one helper through which every query of tenant data is scoped: what a scope is, and the queryset
every tenant-owned model uses. Which scope a request acts in is the tenants app's business
(tenants/scoping.py), as it knows tenants and memberships.

Every request acts in a scope: the user, their roles, and the tenant it acts in. A
non-admin always acts in exactly one of their tenants: the token's, the one asked for
(the `tenant` parameter of the API), or the one chosen in the page header. A platform
admin acts across all tenants unless a token, parameter or the header names one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db import models

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

SESSION_TENANT = "cloudpanel_tenant"
OPERATOR_ROLES = ("admin", "member")
READ_ONLY = "Your role in this tenant only allows reading."
ADMINS_ONLY = "Only platform admins may do this."
MANAGERS_ONLY = "Only the tenant's admins may do this."


class Need(enum.Enum):
    """What a write needs of the scope, for the tenant owning what it writes."""

    CHANGE = "change"  # an operator of the owning tenant; for a platform object (no tenant), a platform admin
    MANAGE = "manage"  # an admin of the owning tenant
    ADMIN = "admin"  # a platform admin


class NoSuchTenant(LookupError):
    """A tenant was asked for that does not exist or is not the user's (both look the same)."""


def is_platform_admin(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Platform admins see and operate every tenant's objects."""
    return bool(user.is_authenticated and user.is_active and user.is_staff)


@dataclass(frozen=True)
class Scope:
    """Who is asking and in which tenant; answers what they may see and do."""

    user: AbstractBaseUser | AnonymousUser
    admin: bool
    tenant: models.Model | None  # a tenants.Tenant: this module sits below the apps and names none of them
    roles: dict[int, str] = field(default_factory=dict)
    tenants: tuple[models.Model, ...] = ()

    @property
    def tenant_ids(self) -> list[int] | None:
        """The tenants whose rows are visible; None means all of them."""
        if self.tenant is not None:
            return [self.tenant.pk]
        return None if self.admin else []

    @property
    def manages_current(self) -> bool:
        """Platform admins, and the admins of the tenant acted in: they see its tokens and audit log."""
        return self.admin or (self.tenant is not None and self.roles.get(self.tenant.pk) == "admin")

    @property
    def managed_tenant_ids(self) -> list[int] | None:
        """The tenants whose members and settings (subscriptions, alert rules) the user manages here; None: every
        one and the platform's (a platform admin acting across tenants)."""
        ids = self.tenant_ids
        return None if ids is None else [t for t in ids if self.can_manage(t)]

    def manages(self, tenant_id: int | None) -> bool:
        """Manage what a tenant owns (None: the platform, platform admins only)."""
        return self.admin if tenant_id is None else self.can_manage(tenant_id)

    def role_in(self, tenant_id: int) -> str | None:
        return self.roles.get(tenant_id)

    def can_operate(self, tenant_id: int) -> bool:
        """Create and change resources of the tenant (viewers only read)."""
        return self._in_scope(tenant_id) and (self.admin or self.roles.get(tenant_id) in OPERATOR_ROLES)

    def can_change(self, tenant_id: int | None) -> bool:
        """Change an object that is a tenant's (its operators may) or the platform's (tenant None: admins only),
        such as a shared network or a public image."""
        return self.admin if tenant_id is None else self.can_operate(tenant_id)

    def can_manage(self, tenant_id: int) -> bool:
        """Manage the tenant's members and see its tokens and audit log."""
        return self._in_scope(tenant_id) and (self.admin or self.roles.get(tenant_id) == "admin")

    @property
    def may_create(self) -> bool:
        """Create objects in the tenant acted in (a platform admin: in any)."""
        return self.admin or (self.tenant is not None and self.can_operate(self.tenant.pk))

    def allows(self, need: Need, tenant_id: int | None) -> bool:
        """Whether a write that needs this, on an object of the tenant (None: the platform's), is allowed."""
        if need == Need.ADMIN:
            return self.admin
        if need == Need.MANAGE:
            return tenant_id is not None and self.can_manage(tenant_id)
        return self.can_change(tenant_id)

    def refusal(self, need: Need, tenant_id: int | None) -> str:
        """Why such a write is refused."""
        if need == Need.ADMIN or tenant_id is None:
            return ADMINS_ONLY
        return MANAGERS_ONLY if need == Need.MANAGE else READ_ONLY

    def _in_scope(self, tenant_id: int) -> bool:
        ids = self.tenant_ids
        return ids is None or tenant_id in ids


class TenantScopedQuerySet(models.QuerySet):
    """A queryset of rows that belong to a tenant through `tenant_field`."""

    tenant_field = "tenant"

    def in_scope(self, scope: Scope) -> TenantScopedQuerySet:
        """The rows of the scope's tenant (all of them for a platform admin acting across tenants)."""
        ids = scope.tenant_ids
        if ids is None:
            return self
        return self.filter(**{f"{self.tenant_field}__in": ids})
