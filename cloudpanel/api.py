"""The API router, the scoped viewset base and the exception handler that turns domain errors into 4xx."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter
from rest_framework.views import exception_handler as drf_exception_handler

from cloudpanel.exceptions import Conflict, DomainError, Forbidden, NotFound
from cloudpanel.scoping import NoSuchTenant, Scope, scope_of
from tenants import audit

router = DefaultRouter()
READ_ONLY = "Your role in this tenant only allows reading."


def tenant_asked(scope: Scope, tenant_id: int | None):
    """The tenant named in a request body (another tenant's id reads as no such tenant), else the scope's
    (None when an admin acts across tenants)."""
    from tenants.models import Tenant

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


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, plus domain errors: not found 404, forbidden 403, conflicts 409, other refusals 400."""
    if isinstance(exc, NoSuchTenant):
        return Response({"detail": "No such tenant."}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, NotFound):
        return Response({"detail": str(exc)}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, Forbidden):
        return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
    if isinstance(exc, Conflict):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, DomainError):
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoValidationError):
        return Response({"detail": exc.messages}, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)
