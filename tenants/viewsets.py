"""The base of viewsets over tenant data: the request's scope, the tenant a request body names, and the audit
note of what they act on."""

from rest_framework.exceptions import PermissionDenied, ValidationError

from cloudpanel.exceptions import NotFound
from cloudpanel.scoping import READ_ONLY, Need, Scope
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
    audit_verb = ""  # an @action(audit_verb=...) whose audit name is not its method's

    @property
    def scope(self) -> Scope:
        return scope_of(self.request)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if request.method not in audit.SAFE_METHODS:
            verb = self.audit_verb or {"destroy": "delete", "partial_update": "update"}.get(self.action, self.action)
            audit.note(request, action=f"{self.audit_name}.{verb}", platform=self.platform_level)

    def require(self, need: Need, tenant_id: int | None = None) -> None:
        """A write outside an object's permission check (a create, a platform-wide change): allowed, or 403 with
        the reason (tenant_id: the tenant owning what is written; None: the platform)."""
        if not self.scope.allows(need, tenant_id):
            raise PermissionDenied(self.scope.refusal(need, tenant_id))

    def owner_of(self, obj) -> int | None:
        """The tenant that owns an object of this viewset (None: the platform), for tenants.permissions."""
        return obj.tenant_id

    def audit_target(self, obj):
        """What a change of the object is audited as acting on."""
        return obj

    def check_object_permissions(self, request, obj) -> None:
        if request.method not in audit.SAFE_METHODS:  # refused or not, the audit row names the object
            audit.note(request, target=self.audit_target(obj))
        super().check_object_permissions(request, obj)
