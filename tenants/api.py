"""Tenant, membership, token and audit endpoints, all scoped like the pages."""

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from cloudpanel.exceptions import NotFound
from cloudpanel.scoping import Need
from cloudpanel.streaming import streamed
from tenants import audit, services
from tenants.exports import audit_csv_rows
from tenants.filtersets import AuditFilterSet
from tenants.models import APIToken, AuditEvent, Membership, Tenant
from tenants.quotas import quota_of, quotas_of, shown_usage, usage_of
from tenants.serializers import (
    APITokenCreateSerializer,
    APITokenSerializer,
    AuditEventSerializer,
    MembershipCreateSerializer,
    MembershipSerializer,
    NewAPITokenSerializer,
    QuotaSerializer,
    RoleSerializer,
    TenantCreateSerializer,
    TenantSerializer,
)
from tenants.viewsets import ScopedViewSetMixin

AUDITORS_ONLY = "Only platform admins and tenant admins see the audit log."


class TenantViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The tenants in scope, with the caller's role, the quota and current use."""

    queryset = Tenant.objects.none()  # the model, for the schema; requests use get_queryset()
    serializer_class = TenantSerializer
    audit_name = "tenant"

    def get_queryset(self):
        return Tenant.objects.in_scope(self.scope)

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["scope"] = self.scope
        return context

    def _serialize(self, tenants: list[Tenant], **kwargs):
        context = {**self.get_serializer_context(), "quotas": quotas_of(tenants),
                   "usage": {k: shown_usage(v) for k, v in usage_of([t.pk for t in tenants]).items()}}
        return TenantSerializer(tenants if kwargs.get("many") else tenants[0], context=context, **kwargs).data

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(self._serialize(list(page), many=True))

    def retrieve(self, request, pk=None):
        return Response(self._serialize([self.get_object()]))

    @extend_schema(request=TenantCreateSerializer, responses={201: TenantSerializer})
    def create(self, request):
        audit.note(request, platform=True)
        self.require(Need.ADMIN)
        data = TenantCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tenant = services.create_tenant(name=data.validated_data["name"])
        audit.note(request, target=tenant)
        return Response(self._serialize([tenant]), status=status.HTTP_201_CREATED)

    @extend_schema(request=QuotaSerializer, responses={200: QuotaSerializer})
    @action(detail=True, methods=["get", "put"])
    def quota(self, request, pk=None):
        tenant = self.get_object()
        if request.method == "GET":
            return Response(QuotaSerializer(quota_of(tenant)).data)
        self.require(Need.ADMIN)
        data = QuotaSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(QuotaSerializer(services.set_quota(tenant=tenant, limits=data.validated_data)).data)


class MembershipViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                        mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Members of the tenants in scope; their admins add, change and remove them."""

    queryset = Membership.objects.none()
    serializer_class = MembershipSerializer
    audit_name = "member"
    filterset_fields = ["tenant", "role"]

    def get_queryset(self):
        return Membership.objects.in_scope(self.scope).select_related("user", "tenant")

    @extend_schema(request=MembershipCreateSerializer, responses={201: MembershipSerializer})
    def create(self, request):
        data = MembershipCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tenant_id = data.validated_data.get("tenant") or (self.scope.tenant.pk if self.scope.tenant else None)
        tenant = Tenant.objects.in_scope(self.scope).filter(pk=tenant_id).first() if tenant_id else None
        if tenant is None:
            raise NotFound("No such tenant.")
        audit.note(request, tenant=tenant)
        # Before looking the user up: only those who may add members learn whether a name exists.
        self.require(Need.MANAGE, tenant.pk)
        user = get_user_model().objects.filter(username=data.validated_data["username"], is_active=True).first()
        if user is None:
            raise ValidationError({"username": ["No active user with this name."]})
        membership = services.add_member(tenant=tenant, user=user, role=data.validated_data["role"])
        audit.note(request, target=membership)
        return Response(MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=RoleSerializer, responses={200: MembershipSerializer})
    def partial_update(self, request, pk=None):
        membership = self.get_object()
        self.require(Need.MANAGE, membership.tenant_id)
        data = RoleSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.set_role(membership=membership, role=data.validated_data["role"])
        return Response(MembershipSerializer(membership).data)

    def destroy(self, request, pk=None):
        membership = self.get_object()
        self.require(Need.MANAGE, membership.tenant_id)
        services.remove_member(membership=membership)
        return Response(status=status.HTTP_204_NO_CONTENT)


class APITokenViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                      viewsets.GenericViewSet):
    """API tokens: the key is returned once, at creation; DELETE revokes."""

    queryset = APIToken.objects.none()
    serializer_class = APITokenSerializer
    audit_name = "token"

    def get_queryset(self):
        return APIToken.objects.visible_in(self.scope)

    @extend_schema(request=APITokenCreateSerializer, responses={201: NewAPITokenSerializer})
    def create(self, request):
        if isinstance(request.auth, APIToken):
            # Else a token could outlive its own expiry or revocation through the tokens it made.
            raise PermissionDenied("Tokens are created from a signed-in session, not with another token.")
        data = APITokenCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        tenant = self.scope.tenant
        if "tenant" in values:
            tenant = Tenant.objects.in_scope(self.scope).filter(pk=values["tenant"]).first() if values["tenant"] \
                else None
            if tenant is None and values["tenant"]:
                raise NotFound("No such tenant.")
            if tenant is None and not self.scope.admin:
                raise ValidationError({"tenant": ["A token is bound to one of your tenants."]})
        token, key = services.create_api_token(user=request.user, name=values["name"], tenant=tenant,
                                               expires_at=values.get("expires_at"))
        audit.note(request, target=token, tenant=tenant)
        token.key = key
        return Response(NewAPITokenSerializer(token).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, pk=None):
        token = self.get_object()  # only one's own tokens, or a tenant admin's tenant's, are found
        if token.tenant_id is not None:
            audit.note(request, tenant=token.tenant)
        services.revoke_api_token(token=token)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The audit log, newest first, filterable; /export/ streams the filtered rows as CSV."""

    queryset = AuditEvent.objects.none()
    serializer_class = AuditEventSerializer
    filterset_class = AuditFilterSet

    def get_queryset(self):
        if not self.scope.manages_current:
            raise PermissionDenied(AUDITORS_ONLY)
        return AuditEvent.objects.in_scope(self.scope)

    @extend_schema(responses={(200, "text/csv"): str})
    @action(detail=False, methods=["get"])
    def export(self, request):
        events = self.filter_queryset(self.get_queryset())
        response = streamed(request, audit_csv_rows(events), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="cloudpanel-audit.csv"'
        return response
