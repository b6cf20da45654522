"""Which scope a request acts in: its user's memberships, and the tenant a token, parameter or the page
header names (what a scope is, and how querysets use it, is cloudpanel/scoping.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudpanel.scoping import SESSION_TENANT, NoSuchTenant, Scope, is_platform_admin
from tenants.models import Membership, Tenant

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
    from django.http import HttpRequest


def resolve_scope(user: AbstractBaseUser | AnonymousUser, *, bound: int | None = None,
                  requested: int | str | None = None, strict: bool = True,
                  memberships: list[Membership] | None = None) -> Scope:
    """The scope of a user acting through a token bound to `bound`, asking for `requested`.

    A tenant asked for that is not the user's raises NoSuchTenant when strict (the API);
    otherwise (a stale choice kept in a session) the default tenant is used. memberships: the user's, with their
    tenants, by tenant name, when already read.
    """
    if not user.is_authenticated or not user.is_active:
        return Scope(user=user, admin=False, tenant=None)
    admin = is_platform_admin(user)
    if memberships is None:
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
        scope = resolve_scope(request.user, bound=bound, requested=param,
                              memberships=getattr(token, "user_memberships", None))
    else:
        scope = resolve_scope(request.user, requested=request.session.get(SESSION_TENANT), strict=False)
    base.cloudpanel_scope = scope
    return scope
