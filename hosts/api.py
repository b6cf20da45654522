"""Host endpoints: platform admins only; what hosts offer guests: anyone signed in."""

from django.db.models import Exists, OuterRef
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from cloudpanel.scoping import is_platform_admin
from hosts import guests, services
from hosts.choices import CpuMode, HostState
from hosts.filtersets import HostFilterSet
from hosts.models import Host
from hosts.serializers import HostDomainSerializer, HostInputSerializer, HostSerializer, HostUpdateSerializer
from tenants import audit
from tenants.viewsets import ScopedViewSetMixin


class HostViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Register, inspect, enable/disable, re-probe and remove hypervisor hosts."""

    queryset = Host.objects.all()
    serializer_class = HostSerializer
    permission_classes = [IsAdminUser]
    audit_name = "host"
    platform_level = True
    filterset_class = HostFilterSet
    ordering_fields = ["name", "state", "created_at"]

    @extend_schema(request=HostInputSerializer, responses={201: HostSerializer})
    def create(self, request):
        data = HostInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        host = services.register_host(**data.validated_data)
        audit.note(request, target=host)
        return Response(HostSerializer(host).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=HostUpdateSerializer, responses={200: HostSerializer})
    def partial_update(self, request, pk=None):
        host = self.get_object()
        data = HostUpdateSerializer(
            data={"name": host.name, "accelerator": host.accelerator, "storage_pool": host.storage_pool,
                  **request.data}
        )
        data.is_valid(raise_exception=True)
        services.update_host(host=host, **data.validated_data)
        return Response(HostSerializer(host).data)

    def destroy(self, request, pk=None):
        services.delete_host(host=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={200: HostSerializer})
    @action(detail=True, methods=["post"])
    def enable(self, request, pk=None):
        host = services.set_enabled(host=self.get_object(), enabled=True)
        return Response(HostSerializer(host).data)

    @extend_schema(request=None, responses={200: HostSerializer})
    @action(detail=True, methods=["post"])
    def disable(self, request, pk=None):
        host = services.set_enabled(host=self.get_object(), enabled=False)
        return Response(HostSerializer(host).data)

    @extend_schema(request=None, responses={202: None})
    @action(detail=True, methods=["post"])
    def probe(self, request, pk=None):
        services.request_probe(host=self.get_object())
        return Response(status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: HostDomainSerializer(many=True)},
                   summary="Every domain on the host, as the last reconcile or event saw it")
    @action(detail=True, methods=["get"])
    def domains(self, request, pk=None):
        host = self.get_object()
        instances = host.instances.filter(uuid=OuterRef("uuid"))
        found = host.domains.annotate(managed=Exists(instances))
        return Response(HostDomainSerializer(found, many=True).data)


class GuestOffersSerializer(serializers.Serializer):
    architectures = serializers.ListField(child=serializers.CharField())
    machines = serializers.ListField(child=serializers.CharField())
    cpu_models = serializers.ListField(child=serializers.CharField())
    cpu_modes = serializers.ListField(child=serializers.CharField())


class GuestOffersView(APIView):
    """What an instance may ask of its guest: the architectures, machine types and CPU models the online hosts offer
    (any of them; a create names one and is placed where it is offered), and the CPU modes the caller may choose."""

    @extend_schema(responses={200: GuestOffersSerializer})
    def get(self, request):
        offered = guests.offers(list(Host.objects.filter(enabled=True, state=HostState.ONLINE)))
        modes = [m for m in CpuMode.values if m and (m != CpuMode.PASSTHROUGH or is_platform_admin(request.user))]
        return Response({"architectures": offered.arches, "machines": offered.machines,
                         "cpu_models": offered.cpu_models, "cpu_modes": modes})
