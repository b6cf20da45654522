"""The one helper through which every query of tenant data is scoped.

Every request acts in a scope: the user, their roles, and the tenant it acts in. A
non-admin always acts in exactly one of their tenants: the token's, the one asked for
(the `tenant` parameter of the API), or the one chosen in the page header. A platform
admin acts across all tenants unless a token, parameter or the header names one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db import models

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
    from django.http import HttpRequest

    from tenants.models import Tenant

SESSION_TENANT = "cloudpanel_tenant"
OPERATOR_ROLES = ("admin", "member")


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
    tenant: Tenant | None
    roles: dict[int, str] = field(default_factory=dict)
    tenants: tuple[Tenant, ...] = ()

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

    def _in_scope(self, tenant_id: int) -> bool:
        ids = self.tenant_ids
        return ids is None or tenant_id in ids


def resolve_scope(user: AbstractBaseUser | AnonymousUser, *, bound: int | None = None,
                  requested: int | str | None = None, strict: bool = True) -> Scope:
    """The scope of a user acting through a token bound to `bound`, asking for `requested`.

    A tenant asked for that is not the user's raises NoSuchTenant when strict (the API);
    otherwise (a stale choice kept in a session) the default tenant is used.
    """
    from tenants.models import Membership, Tenant

    if not user.is_authenticated or not user.is_active:
        return Scope(user=user, admin=False, tenant=None)
    admin = is_platform_admin(user)
    memberships = list(Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__name"))
    roles = {m.tenant_id: m.role for m in memberships}
    mine = {m.tenant_id: m.tenant for m in memberships}
    wanted = _as_id(requested)
    if requested not in (None, "") and wanted is None and strict:
        raise NoSuchTenant(requested)
    if bound is not None:
        if wanted is not None and wanted != bound:
            raise NoSuchTenant(requested)
        wanted = bound
    tenant = None
    if wanted is not None:
        tenant = mine.get(wanted)
        if tenant is None and admin:
            tenant = Tenant.objects.filter(pk=wanted).first()
        if tenant is None and (strict or bound is not None):
            raise NoSuchTenant(requested)
    if tenant is None and not admin and memberships:
        tenant = memberships[0].tenant
    return Scope(user=user, admin=admin, tenant=tenant, roles=roles, tenants=tuple(mine.values()))


def _as_id(value: int | str | None) -> int | None:
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def scope_of(request: HttpRequest) -> Scope:
    """The scope of a page request or a DRF request (cached on the underlying request)."""
    base = getattr(request, "_request", request)
    cached = getattr(base, "cloudpanel_scope", None)
    if cached is not None and cached.user is request.user:
        return cached
    token = getattr(request, "auth", None)
    bound = getattr(token, "tenant_id", None)
    param = request.query_params.get("tenant") if base is not request else None
    if token is not None or param is not None:  # the API: the token, else an explicit parameter
        scope = resolve_scope(request.user, bound=bound, requested=param)
    else:
        scope = resolve_scope(request.user, requested=request.session.get(SESSION_TENANT), strict=False)
    base.cloudpanel_scope = scope
    return scope


class TenantScopedQuerySet(models.QuerySet):
    """A queryset of rows that belong to a tenant through `tenant_field`."""

    tenant_field = "tenant"

    def in_scope(self, scope: Scope) -> TenantScopedQuerySet:
        """The rows of the scope's tenant (all of them for a platform admin acting across tenants)."""
        ids = scope.tenant_ids
        if ids is None:
            return self
        return self.filter(**{f"{self.tenant_field}__in": ids})
