"""The audit log: every state-changing request (refused ones too), how each operation ended, and console sessions.

The middleware writes one row per POST/PUT/PATCH/DELETE after the response, outside the
view's transaction, so a refusal or a rolled-back change is still recorded. Views and
viewsets add what only they know (the action's name, its object, the outcome) with note().
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from tenants.choices import AuditResult, Channel
from tenants.models import AuditEvent, Membership, Tenant

logger = logging.getLogger(__name__)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")
_NOTE = "cloudpanel_audit"
_SKIP = "cloudpanel_audit_skip"
_TYPE_NAMES = {"apitoken": "token", "membership": "member", "instanceaction": "action"}


def note(request: Any, *, action: str | None = None, target: models.Model | None = None,
         tenant: Tenant | None = None, result: str | None = None, detail: str | None = None,
         platform: bool = False) -> None:
    """Add to the audit row of this request: what it did, on which object, and how it went.

    platform marks a platform-level request (hosts, tenants): it is never filed under the
    tenant the admin happens to be acting for.
    """
    base = getattr(request, "_request", request)
    values = base.__dict__.setdefault(_NOTE, {})
    if action:
        values["action"] = action
    if platform:
        values["platform"] = True
    if target is not None:
        values["target_type"] = _TYPE_NAMES.get(target._meta.model_name, target._meta.model_name)
        values["target_id"] = str(target.pk)
        values["target_name"] = str(target)[:200]
        if isinstance(target, Tenant):
            values["tenant_id"], values["tenant_name"] = target.pk, target.name
        elif getattr(target, "tenant_id", None) is not None:
            values["tenant_id"] = target.tenant_id
            cached = target._state.fields_cache.get("tenant")
            if cached is not None:
                values["tenant_name"] = cached.name
    if tenant is not None:
        values["tenant_id"], values["tenant_name"] = tenant.pk, tenant.name
    if result:
        values["result"] = result
    if detail:
        values["detail"] = detail


def skip(request: Any) -> None:
    """This request needs no row of its own (say, a middle chunk of an upload whose first and last are kept)."""
    getattr(request, "_request", request).__dict__[_SKIP] = True


def refused(request: Any, reason: str, *, show: bool = True) -> None:
    """A page turned the request down: record the reason and, unless the page shows it itself, tell the user."""
    note(request, result=AuditResult.REFUSED, detail=reason)
    if show:
        messages.error(request, reason)


def _result_of(request: HttpRequest, response: HttpResponse, api: bool) -> str:
    if response.status_code >= 500:
        return AuditResult.FAILED
    if response.status_code >= 400:
        return AuditResult.REFUSED
    # A page that answers a POST with the form again (not a redirect) has refused its input.
    if not api and response.status_code == 200 and "html" in response.get("Content-Type", ""):
        return AuditResult.REFUSED
    return AuditResult.OK


def _detail_of(response: HttpResponse) -> str:
    data = getattr(response, "data", None)
    if response.status_code < 400 or data is None:
        return ""
    if isinstance(data, dict) and "detail" in data and len(data) == 1:
        return str(data["detail"])
    return str(data)[:2000]


def record_request(request: HttpRequest, response: HttpResponse, user_before: Any) -> AuditEvent | None:
    """Write the audit row of a state-changing request."""
    values = dict(request.__dict__.get(_NOTE, {}))
    platform = values.pop("platform", False)
    user = request.user if request.user.is_authenticated else user_before
    if not user.is_authenticated:
        user = None
    match = request.resolver_match
    api = request.path.startswith("/api/")
    action = values.pop("action", None) or (match.url_name if match and match.url_name else "request")
    tenant_id, tenant_name = values.pop("tenant_id", None), values.pop("tenant_name", "")
    scope = request.__dict__.get("cloudpanel_scope")
    # Nothing named: the request was about the tenant it acted in (say, another tenant's id, refused).
    if tenant_id is None and not values.get("target_id") and not platform and scope is not None and scope.tenant:
        tenant_id, tenant_name = scope.tenant.pk, scope.tenant.name
    if not values.get("target_id") and match:
        for key in ("pk", "instance_id"):
            if key in match.kwargs:
                values["target_id"] = str(match.kwargs[key])
                parts = (match.url_name or "").split("-")
                values.setdefault("target_type", parts[1 if api and len(parts) > 1 else 0][:40])
    detail = values.pop("detail", None) or _detail_of(response)
    username = ""
    if user is not None:
        username = user.get_username()
    elif match is not None and match.url_name == "login":
        # What an anonymous caller typed is a claim, not an identity: it goes in the detail.
        detail = f"user name given: {str(request.POST.get('username', ''))[:150]}"
    if tenant_id and not tenant_name:
        tenant_name = Tenant.objects.filter(pk=tenant_id).values_list("name", flat=True).first() or ""
    if scope is not None and scope.user == user:
        on_behalf = bool(scope.admin and tenant_id and tenant_id not in scope.roles)
    else:
        on_behalf = _on_behalf(user, tenant_id)
    result = values.pop("result", None) or _result_of(request, response, api)
    return AuditEvent.objects.create(
        user=user, username=username, tenant_id=tenant_id if tenant_name else None, tenant_name=tenant_name,
        on_behalf=on_behalf, channel=Channel.API if api else Channel.WEB, action=action[:60],
        method=request.method or "", path=request.path[:500], address=request.META.get("REMOTE_ADDR") or None,
        result=result, status_code=response.status_code, detail=detail[:2000], **values,
    )


class AuditMiddleware:
    """Records every state-changing request after its response is ready."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in SAFE_METHODS:
            return self.get_response(request)
        user_before = request.user
        user_before.is_authenticated  # noqa: B018 - resolve the lazy user before a logout clears it
        response = self.get_response(request)
        if request.__dict__.get(_SKIP) and response.status_code < 400:
            return response
        try:
            record_request(request, response, user_before)
        except Exception:  # noqa: BLE001 - the answer stands; the failure is logged loudly
            logger.exception("could not write the audit record of %s %s", request.method, request.path)
        return response


def console_opened(*, user: Any, instance: Any, address: str | None, action: str = "console.open") -> int:
    """A console socket (serial, or display.open: graphical) was accepted; returns the row to close when it ends."""
    return AuditEvent.objects.create(
        user=user, username=user.get_username(), tenant_id=instance["tenant_id"],
        tenant_name=instance["tenant__name"], on_behalf=_on_behalf(user, instance["tenant_id"]),
        channel=Channel.CONSOLE, action=action, target_type="instance", target_id=str(instance["pk"]),
        target_name=instance["name"], address=address, result=AuditResult.OK,
    ).pk


def console_closed(event_id: int, *, detail: str = "") -> None:
    AuditEvent.objects.filter(pk=event_id, ended_at__isnull=True).update(ended_at=timezone.now(), detail=detail)


_CONSOLE_REFUSALS = {4401: "not signed in", 4403: "the user's role only allows reading", 4404: "no such instance"}


def console_refused(*, user: Any, instance_id: int, address: str | None, code: int, path: str,
                    tenant: tuple[int, str] | None = None, name: str = "", action: str = "console.open",
                    detail: str = "") -> None:
    """A console socket closed before opening; tenant (id, name) and name only when the user may see the instance."""
    signed_in = user is not None and user.is_authenticated
    AuditEvent.objects.create(
        user=user if signed_in else None, username=user.get_username() if signed_in else "",
        tenant_id=tenant[0] if tenant else None, tenant_name=tenant[1] if tenant else "",
        channel=Channel.CONSOLE, action=action, target_type="instance", target_id=str(instance_id),
        target_name=name, address=address, result=AuditResult.REFUSED, status_code=code, path=path[:500],
        detail=detail or _CONSOLE_REFUSALS.get(code, ""),
    )


def _on_behalf(user: Any, tenant_id: int | None) -> bool:
    return bool(user is not None and user.is_staff and tenant_id is not None
                and not Membership.objects.filter(user=user, tenant_id=tenant_id).exists())


def operation_finished(*, action: Any, instance: Any, error: str = "") -> None:
    """How an operation ended in the worker (its request was recorded when it was accepted)."""
    user = action.user
    AuditEvent.objects.create(
        user=user, username=user.get_username() if user else "", tenant_id=instance.tenant_id,
        tenant_name=instance.tenant.name, on_behalf=_on_behalf(user, instance.tenant_id), channel=Channel.WORKER,
        action=f"instance.{action.operation}", target_type="instance", target_id=str(instance.pk),
        target_name=instance.name, result=AuditResult.FAILED if error else AuditResult.OK, detail=error[:2000],
    )
