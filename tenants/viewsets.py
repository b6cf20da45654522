"""The base of viewsets over tenant data: the request's scope, the tenant a request body names, and the audit
note of what they act on."""

from rest_framework.exceptions import PermissionDenied, ValidationError

from cloudpanel.exceptions import NotFound
from cloudpanel.scoping import READ_ONLY, Scope
from tenants import audit
from tenants.models import Tenant
from tenants.scoping import scope_of


def tenant_asked(scope: Scope, tenant_id: int | None):
    """The tenant named in a request body (another tenant's id reads as no such tenant), else the scope's
    (None when an admin acts across tenants)."""
    if tenant_id is None:
        return scope.tenant
    tenant = Tenant.objects.in_scope(scope).filter(pk=tenant_id).first()
    if tenant is None:
        raise NotFound("No such tenant.")
    return tenant


def resolve_tenant(scope: Scope, tenant_id: int | None):
    """The tenant a new resource goes to: the one asked for, else the scope's; the user must operate there."""
    tenant = tenant_asked(scope, tenant_id)
    if tenant is None:
        raise ValidationError({"tenant": ["Say which tenant the resource belongs to."]})
    if not scope.can_operate(tenant.pk):
        raise PermissionDenied(READ_ONLY)
    return tenant


class ScopedViewSetMixin:
    """Viewsets over tenant data: the request's scope, and the audit note of what they act on."""

    audit_name = ""
    platform_level = False  # requests about the platform (hosts, tenants), never filed under a tenant

    @property
    def scope(self) -> Scope:
        return scope_of(self.request)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if request.method not in audit.SAFE_METHODS:
            verb = {"create": "create", "destroy": "delete", "partial_update": "update", "update": "update"}.get(
                self.action, (self.action or "").removeprefix("op_"))
            audit.note(request, action=f"{self.audit_name}.{verb}", platform=self.platform_level)

    def get_object(self):
        obj = super().get_object()
        if self.request.method not in audit.SAFE_METHODS:
            audit.note(self.request, target=obj)
        return obj
