"""Network endpoints: thin viewsets over networks.services."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from cloudpanel.api import ScopedViewSetMixin, resolve_tenant
from networks import services
from networks.models import Network
from networks.serializers import NetworkCreateSerializer, NetworkSerializer
from tenants import audit


class NetworkViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Shared networks and the tenant's own, with their subnets and where they run."""

    queryset = Network.objects.none()
    serializer_class = NetworkSerializer
    audit_name = "network"
    ordering_fields = ["name", "created_at"]

    def get_queryset(self):
        return (Network.objects.visible_to(self.scope).select_related("tenant")
                .prefetch_related("subnets", "on_hosts__host"))

    @extend_schema(request=NetworkCreateSerializer, responses={201: NetworkSerializer})
    def create(self, request):
        data = NetworkCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        shared, tenant_id = values.pop("shared"), values.pop("tenant", None)
        if shared:
            if not self.scope.admin:
                raise PermissionDenied("Only platform admins make shared networks.")
            tenant = None
        else:
            tenant = resolve_tenant(self.scope, tenant_id)
        audit.note(request, tenant=tenant)
        network = services.create_network(user=request.user, tenant=tenant, **values)
        audit.note(request, target=network)
        return Response(NetworkSerializer(self.get_queryset().get(pk=network.pk)).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        network = self.get_object()
        if not self.scope.can_change(network.tenant_id):
            raise PermissionDenied("Your role does not allow deleting this network.")
        services.delete_network(network=network)
        return Response(status=status.HTTP_204_NO_CONTENT)
