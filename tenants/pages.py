"""Pages' writes: who may make them is checked once per view, and a refusal is recorded in one place.

Two kinds of write, as the API's permission classes have them (cloudpanel.scoping.Need):

- a form page (a list with its "add" form, an object's page with a form on it) checks with
  require() or require_create(): refused, it answers 403 with the reason;
- a button on an object (delete, an operation, a change of one field) is a view decorated
  with @object_write: the object is looked up in the user's scope (else 404), the write's
  need is checked against its owner, and a refusal or a DomainError goes back to the page
  the button was on, with the reason shown.

Either way the audit row of the request carries the action, the object and the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from cloudpanel.exceptions import DomainError
from cloudpanel.scoping import READ_ONLY, Need, Scope
from tenants import audit
from tenants.choices import AuditResult
from tenants.models import Tenant
from tenants.scoping import scope_of


def refuse(request: HttpRequest, reason: str) -> None:
    """Refuse a form page's write: recorded with its reason, answered 403."""
    audit.note(request, result=AuditResult.REFUSED, detail=reason)
    raise PermissionDenied(reason)


def require(request: HttpRequest, scope: Scope, need: Need, tenant_id: int | None = None) -> None:
    """A form page's write on what the tenant (None: the platform) owns: allowed, or refused."""
    if not scope.allows(need, tenant_id):
        refuse(request, scope.refusal(need, tenant_id))


def require_create(request: HttpRequest, scope: Scope) -> None:
    """A form page's "add": allowed to operators of the tenant acted in and platform admins, else refused."""
    if not scope.may_create:
        refuse(request, READ_ONLY)


def operated_tenants(scope: Scope) -> models.QuerySet:
    """The tenants a page's form may add to: every one in scope for a platform admin, else those the user
    operates."""
    tenants = Tenant.objects.in_scope(scope)
    return tenants if scope.admin else tenants.filter(pk__in=[t for t in scope.roles if scope.can_operate(t)])


def tenant_of(obj: models.Model) -> int | None:
    return obj.tenant_id


def object_write(queryset: Callable[[Scope], models.QuerySet], *, action: str, back: Callable[[Any], str],
                 need: Need = Need.CHANGE, owner: Callable[[Any], int | None] = tenant_of,
                 target: Callable[[Any], models.Model] = lambda obj: obj, platform: bool = False,
                 choices: Mapping[str, Collection[str]] | None = None):
    """A button's POST on one object: view(request, obj, **kwargs) runs once the object (by the pk in the URL,
    among queryset(scope)) is found and the write allowed; a refusal, or a DomainError it raises, goes back
    to back(obj) with the reason.

    action names the write in the audit log, formatted with the URL's other parts (say "instance.{operation}"),
    each of which must be one of its choices (else 404). Audited on target(obj), as the platform's business if
    platform (see audit.note)."""
    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @login_required
        @require_POST
        @wraps(view)
        def guarded(request: HttpRequest, pk: int, **kwargs: Any) -> HttpResponse:
            if any(kwargs[name] not in allowed for name, allowed in (choices or {}).items()):
                raise Http404("No such change.")
            scope = scope_of(request)
            obj = get_object_or_404(queryset(scope), pk=pk)
            audit.note(request, action=action.format(**kwargs), target=target(obj), platform=platform)
            tenant_id = owner(obj)
            if not scope.allows(need, tenant_id):
                audit.refused(request, scope.refusal(need, tenant_id))
                return redirect(back(obj))
            try:
                return view(request, obj, **kwargs)
            except DomainError as exc:
                audit.refused(request, str(exc))
                return redirect(back(obj))
        return guarded
    return decorate
