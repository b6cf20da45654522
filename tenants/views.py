"""Self-service pages: tenants and their usage, members, API tokens and the audit log."""

from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import Resolver404, resolve, reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from cloudpanel.exceptions import DomainError
from cloudpanel.scoping import SESSION_TENANT, Need, Scope
from cloudpanel.streaming import streamed
from tenants import audit, services
from tenants.api import AUDITORS_ONLY
from tenants.choices import AuditResult, Role
from tenants.exports import audit_csv_rows
from tenants.filtersets import AuditFilterSet
from tenants.forms import MemberForm, QuotaForm, RoleForm, TenantForm, TokenForm
from tenants.models import APIToken, AuditEvent, Membership, Tenant
from tenants.pages import refuse, require
from tenants.quotas import RESOURCES, lines, quota_of, quotas_of, usage_of
from tenants.scoping import resolve_scope, scope_of


def _usage_rows(scope, tenants: list[Tenant]) -> list[tuple[Tenant, str, list]]:
    quotas, used = quotas_of(tenants), usage_of([t.pk for t in tenants])
    roles = dict(Role.choices)
    return [(t, roles.get(scope.role_in(t.pk), ""), lines(quotas[t.pk], used[t.pk])) for t in tenants]


def _errors(form) -> str:
    """A form's errors as one line, each with its field's label."""
    return "; ".join(f"{form.fields[k].label}: {' '.join(v)}" if k in form.fields else " ".join(v)
                     for k, v in form.errors.items())


@login_required
def tenant_list(request):
    scope = scope_of(request)
    form = TenantForm(request.POST or None)
    if request.method == "POST":
        audit.note(request, action="tenant.create", platform=True)
        require(request, scope, Need.ADMIN)
        if form.is_valid():
            try:
                tenant = services.create_tenant(name=form.cleaned_data["name"])
            except DomainError as exc:
                form.add_error("name", str(exc))
            else:
                audit.note(request, target=tenant)
                messages.success(request, f"Created tenant {tenant}.")
                return redirect("tenant-detail", pk=tenant.pk)
    tenants = list(Tenant.objects.all()) if scope.admin else list(scope.tenants)
    return render(request, "tenants/list.html", {"rows": _usage_rows(scope, tenants), "form": form})


# What apps above tenants show on a tenant's page (say, billing), registered in their AppConfig.ready: each
# renders its card for the request's scope.
TenantPanel = Callable[[HttpRequest, Scope, Tenant], str]
TENANT_PANELS: list[TenantPanel] = []


def register_tenant_panel(panel: TenantPanel) -> None:
    TENANT_PANELS.append(panel)


@login_required
def tenant_detail(request, pk: int):
    scope = scope_of(request)
    tenant = get_object_or_404(Tenant.objects.in_scope(scope), pk=pk)
    quota = quota_of(tenant)
    members = Membership.objects.filter(tenant=tenant).select_related("user").order_by("user__username")
    return render(request, "tenants/detail.html", {
        "panels": [panel(request, scope, tenant) for panel in TENANT_PANELS],
        "tenant": tenant, "lines": lines(quota, usage_of([tenant.pk])[tenant.pk]),
        "quota_form": QuotaForm(initial={r.key: getattr(quota, r.key) for r in RESOURCES}) if scope.admin else None,
        "members": members, "can_manage": scope.can_manage(tenant.pk), "member_form": MemberForm(),
        "roles": RoleForm.base_fields["role"].choices, "my_role": scope.role_in(tenant.pk),
    })


def _managed(request, queryset, pk: int, action: str):
    """The tenant or membership pk in the request's scope (else 404), which the user must manage (else 403)."""
    scope = scope_of(request)
    obj = get_object_or_404(queryset.in_scope(scope), pk=pk)
    audit.note(request, action=action, target=obj)
    require(request, scope, Need.MANAGE, obj.pk if isinstance(obj, Tenant) else obj.tenant_id)
    return obj


@login_required
@require_POST
def tenant_quota(request, pk: int):
    tenant = _managed(request, Tenant.objects.all(), pk, "tenant.quota")
    require(request, scope_of(request), Need.ADMIN, tenant.pk)
    form = QuotaForm(request.POST)
    if form.is_valid():
        services.set_quota(tenant=tenant, limits=form.cleaned_data)
        messages.success(request, f"Quota of {tenant} saved.")
    else:
        audit.refused(request, f"Quota not saved: {_errors(form)}")
    return redirect("tenant-detail", pk=tenant.pk)


@login_required
@require_POST
def member_add(request, pk: int):
    tenant = _managed(request, Tenant.objects.all(), pk, "member.create")
    form = MemberForm(request.POST)
    if form.is_valid():
        try:
            membership = services.add_member(tenant=tenant, user=form.cleaned_data["username"],
                                             role=form.cleaned_data["role"])
        except DomainError as exc:
            audit.refused(request, str(exc))
        else:
            audit.note(request, target=membership)
            messages.success(request, f"{membership.user} is now {membership.get_role_display().lower()}.")
    else:
        audit.refused(request, f"Member not added: {_errors(form)}")
    return redirect("tenant-detail", pk=tenant.pk)


@login_required
@require_POST
def member_update(request, pk: int):
    membership = _managed(request, Membership.objects.select_related("user", "tenant"), pk, "member.update")
    form = RoleForm(request.POST)
    try:
        if not form.is_valid():
            raise DomainError("choose a role")
        services.set_role(membership=membership, role=form.cleaned_data["role"])
    except DomainError as exc:
        audit.refused(request, str(exc))
    else:
        messages.success(request, f"{membership.user} is now {membership.get_role_display().lower()}.")
    return redirect("tenant-detail", pk=membership.tenant_id)


@login_required
@require_POST
def member_remove(request, pk: int):
    membership = _managed(request, Membership.objects.select_related("user", "tenant"), pk, "member.delete")
    try:
        services.remove_member(membership=membership)
    except DomainError as exc:
        audit.refused(request, str(exc))
    else:
        messages.success(request, f"{membership.user} left {membership.tenant}.")
    if membership.user_id == request.user.pk and not scope_of(request).admin:
        request.session.pop(SESSION_TENANT, None)
        return redirect("overview")
    return redirect("tenant-detail", pk=membership.tenant_id)


@login_required
@require_POST
def tenant_switch(request):
    """Act in another tenant (platform admins: on behalf of it, or across all with an empty choice)."""
    wanted = request.POST.get("tenant") or None
    audit.note(request, action="tenant.switch")
    scope = resolve_scope(request.user, requested=wanted, strict=False)
    if wanted is not None and (scope.tenant is None or str(scope.tenant.pk) != wanted):
        audit.refused(request, "No such tenant.")
    else:
        if scope.tenant is not None:
            audit.note(request, tenant=scope.tenant)
            request.session[SESSION_TENANT] = scope.tenant.pk
        else:
            request.session.pop(SESSION_TENANT, None)
    after = resolve_scope(request.user, requested=request.session.get(SESSION_TENANT), strict=False)
    return redirect(_page_after_switch(request.POST.get("next", ""), after))


# Pages that make sense in any tenant; from any other page (one object's, say) a switch lands on the overview.
_LIST_PAGES = {"overview", "instance-list", "action-list", "token-list", "tenant-list", "host-list"}


def _page_after_switch(target: str, scope) -> str:
    """Stay on a list page the new scope may see; otherwise go to the overview. Only local paths are followed."""
    path = urlsplit(target).path
    if not target or not url_has_allowed_host_and_scheme(target, allowed_hosts=None):
        return reverse("overview")
    try:
        name = resolve(path).url_name
    except Resolver404:
        return reverse("overview")
    return path if name in _LIST_PAGES or (name == "audit-list" and scope.manages_current) else reverse("overview")


@login_required
def token_list(request):
    scope = scope_of(request)
    tenants = Tenant.objects.in_scope(scope) if scope.admin else Tenant.objects.filter(
        pk__in=[scope.tenant.pk] if scope.tenant else [])
    form = TokenForm(request.POST or None, tenants=tenants, platform_wide=scope.admin,
                     initial={"tenant": scope.tenant.pk if scope.tenant else None})
    created = None
    if request.method == "POST":
        audit.note(request, action="token.create")
        if form.is_valid():
            days = form.cleaned_data["expires_in_days"]
            try:
                token, key = services.create_api_token(
                    user=request.user, name=form.cleaned_data["name"], tenant=form.cleaned_data["tenant"],
                    expires_at=timezone.now() + timedelta(days=days) if days else None,
                )
            except DomainError as exc:
                form.add_error(None, str(exc))
            else:
                # The key goes out in this answer only (not stored anywhere, not cached).
                audit.note(request, target=token, tenant=token.tenant, result=AuditResult.OK)
                created = {"token": token, "key": key}
                form = TokenForm(tenants=tenants, platform_wide=scope.admin,
                                 initial={"tenant": scope.tenant.pk if scope.tenant else None})
    page = Paginator(APIToken.objects.visible_in(scope), 50).get_page(request.GET.get("page"))
    response = render(request, "tenants/tokens.html", {"page": page, "form": form, "created": created})
    if created:
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def token_revoke(request, pk: int):
    scope = scope_of(request)
    token = get_object_or_404(APIToken.objects.visible_in(scope), pk=pk)
    audit.note(request, action="token.revoke", target=token, tenant=token.tenant)
    services.revoke_api_token(token=token)
    messages.success(request, f"Token {token.name} ({token.prefix}…) revoked.")
    return redirect("token-list")


def _audit_events(request):
    scope = scope_of(request)
    if not scope.manages_current:
        refuse(request, AUDITORS_ONLY)
    return AuditFilterSet(request.GET, queryset=AuditEvent.objects.in_scope(scope))


@login_required
def audit_list(request):
    filterset = _audit_events(request)
    events = filterset.qs if filterset.is_valid() else filterset.queryset.none()
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    return render(request, "tenants/audit.html", {"filter": filterset, "page": page})


@login_required
def audit_export(request):
    filterset = _audit_events(request)
    if not filterset.is_valid():
        reasons = "; ".join(f"{k}: {' '.join(v)}" for k, v in filterset.errors.items())
        return HttpResponseBadRequest(f"Invalid filter: {reasons}", content_type="text/plain")
    response = streamed(request, audit_csv_rows(filterset.qs), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="cloudpanel-audit.csv"'
    return response
