"""Network endpoints: thin viewsets over networks.services."""

from django.db.models import Count
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from cloudpanel.exceptions import NotFound
from cloudpanel.scoping import Need
from networks import security, services
from networks.filtersets import PortFilterSet, SecurityRuleFilterSet, SubnetFilterSet
from networks.models import Network, Port, SecurityGroup, SecurityRule, Subnet
from networks.serializers import (
    NetworkCreateSerializer,
    NetworkSerializer,
    PortGroupsSerializer,
    PortSerializer,
    ReservedRangeSerializer,
    ReserveSerializer,
    SecurityGroupSerializer,
    SecurityGroupWriteSerializer,
    SecurityRuleCreateSerializer,
    SecurityRuleSerializer,
    SubnetSerializer,
)
from tenants import audit
from tenants.permissions import OPERATORS
from tenants.viewsets import ScopedViewSetMixin, resolve_tenant


class NetworkViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Shared networks and the tenant's own, with their subnets and where they run."""

    queryset = Network.objects.none()
    serializer_class = NetworkSerializer
    permission_classes = OPERATORS
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
            self.require(Need.CHANGE, None)  # a shared network is the platform's
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
        services.delete_network(network=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class SubnetViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The subnets of the networks you see, with their pools, reserved ranges and how many addresses are held."""

    queryset = Subnet.objects.none()
    serializer_class = SubnetSerializer
    permission_classes = OPERATORS
    audit_name = "subnet"
    filterset_class = SubnetFilterSet

    def get_queryset(self):
        return (Subnet.objects.filter(network__in=Network.objects.visible_to(self.scope))
                .annotate(allocated=Count("allocations")).prefetch_related("reserved__subnet"))

    def owner_of(self, obj: Subnet) -> int | None:
        return obj.network.tenant_id

    @extend_schema(request=ReserveSerializer, responses={201: ReservedRangeSerializer},
                   summary="Reserve a range of addresses")
    @action(detail=True, methods=["post"], url_path="reserved", url_name="reserve")
    def reserve(self, request, pk=None):
        subnet = self.get_object()
        data = ReserveSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reserved = services.reserve(subnet=subnet, first=data.validated_data["start"],
                                    last=data.validated_data["end"], reason=data.validated_data["reason"])
        return Response(ReservedRangeSerializer(reserved).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None}, summary="Release a reserved range")
    @action(detail=True, methods=["delete"], url_path=r"reserved/(?P<range_id>[0-9]+)", url_name="unreserve")
    def unreserve(self, request, pk=None, range_id=None):
        subnet = self.get_object()
        services.unreserve(reserved=get_object_or_404(subnet.reserved, pk=range_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class PortViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """NICs of your instances: their networks, MACs, addresses and security groups. NICs are plugged in and
    out through the instance (attach-nic, detach-nic); here their groups change."""

    queryset = Port.objects.none()
    serializer_class = PortSerializer
    permission_classes = OPERATORS

    def owner_of(self, obj: Port) -> int:
        return obj.instance.tenant_id
    audit_name = "port"
    filterset_class = PortFilterSet

    def get_queryset(self):
        ports = Port.objects.live()
        if self.scope.tenant_ids is not None:
            ports = ports.filter(instance__tenant_id__in=self.scope.tenant_ids)
        return ports.select_related("network", "instance").prefetch_related("addresses", "security_groups")

    @extend_schema(request=PortGroupsSerializer, responses={200: PortSerializer},
                   summary="Set the NIC's security groups")
    def partial_update(self, request, pk=None):
        port = self.get_object()
        data = PortGroupsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        wanted = set(data.validated_data["security_groups"])
        groups = list(SecurityGroup.objects.in_scope(self.scope).filter(pk__in=wanted,
                                                                        tenant_id=port.instance.tenant_id))
        if len(groups) != len(wanted):
            raise NotFound("No such security group.")
        security.set_port_groups(port=port, groups=groups)
        return Response(PortSerializer(self.get_queryset().get(pk=port.pk)).data)


class SecurityGroupViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                           viewsets.GenericViewSet):
    """Security groups: named sets of firewall rules for NICs, enforced on the hosts."""

    queryset = SecurityGroup.objects.none()
    serializer_class = SecurityGroupSerializer
    permission_classes = OPERATORS
    audit_name = "security_group"
    ordering_fields = ["name", "created_at"]

    def get_queryset(self):
        return SecurityGroup.objects.in_scope(self.scope).select_related("tenant").prefetch_related("rules")

    @extend_schema(request=SecurityGroupWriteSerializer, responses={201: SecurityGroupSerializer})
    def create(self, request):
        data = SecurityGroupWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tenant = resolve_tenant(self.scope, data.validated_data.get("tenant"))
        audit.note(request, tenant=tenant)
        group = security.create_group(user=request.user, tenant=tenant, name=data.validated_data["name"],
                                      description=data.validated_data["description"])
        audit.note(request, target=group)
        return Response(SecurityGroupSerializer(self.get_queryset().get(pk=group.pk)).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(request=SecurityGroupWriteSerializer, responses={200: SecurityGroupSerializer})
    def partial_update(self, request, pk=None):
        group = self.get_object()
        if not hasattr(request.data, "get"):
            raise ValidationError("The body must be an object with the fields to change.")
        data = SecurityGroupWriteSerializer(data={"name": request.data.get("name", group.name),
                                                  "description": request.data.get("description", group.description)})
        data.is_valid(raise_exception=True)
        security.rename_group(group=group, name=data.validated_data["name"],
                              description=data.validated_data["description"])
        return Response(SecurityGroupSerializer(self.get_queryset().get(pk=group.pk)).data)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        security.delete_group(group=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class SecurityRuleViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                          viewsets.GenericViewSet):
    """The rules of your security groups; a new or deleted rule reaches running instances at once."""

    queryset = SecurityRule.objects.none()
    serializer_class = SecurityRuleSerializer
    permission_classes = OPERATORS

    def owner_of(self, obj: SecurityRule) -> int:
        return obj.group.tenant_id
    audit_name = "security_rule"
    filterset_class = SecurityRuleFilterSet

    def get_queryset(self):
        return SecurityRule.objects.filter(group__in=SecurityGroup.objects.in_scope(self.scope))

    @extend_schema(request=SecurityRuleCreateSerializer, responses={201: SecurityRuleSerializer})
    def create(self, request):
        data = SecurityRuleCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        groups = SecurityGroup.objects.in_scope(self.scope)
        group = groups.filter(pk=values.pop("group")).first()
        if group is None:
            raise NotFound("No such security group.")
        audit.note(request, tenant=group.tenant, target=group)
        self.require(Need.CHANGE, group.tenant_id)
        if values["remote_group"] is not None:
            values["remote_group"] = groups.filter(pk=values["remote_group"], tenant_id=group.tenant_id).first()
            if values["remote_group"] is None:
                raise NotFound("No such security group.")
        rule = security.add_rule(group=group, **values)
        return Response(SecurityRuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        security.delete_rule(rule=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
