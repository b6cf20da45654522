"""Charts over the API (an instance's for whoever sees the instance, a host's for platform admins), the hot spots
and alert rules."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from hosts.models import Host
from instances.models import Instance
from metrics import alerts, history
from metrics.choices import Range
from metrics.hot import Sort, hottest
from metrics.models import AlertRule
from metrics.serializers import (
    AlertRuleEnableSerializer,
    AlertRuleSerializer,
    AlertRuleWriteSerializer,
    ChartQuerySerializer,
    ChartSerializer,
    HotQuerySerializer,
    HotSpotsSerializer,
)
from tenants.scoping import scope_of
from tenants.viewsets import ScopedViewSetMixin, tenant_asked

MANAGERS = "Only platform admins and the tenant's admins make and change its alert rules."

RANGE = OpenApiParameter("range", enum=Range.values, default=Range.HOUR, description="How far back the chart goes")


def _range(request) -> Range:
    query = ChartQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    return Range(query.validated_data["range"])


class InstanceMetricsView(APIView):
    """An instance's CPU (% of its vCPUs), memory (bytes), disk and network I/O (bytes and requests per second),
    also after it was deleted, until its samples' retention ends; another tenant's instance is not found."""

    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=[RANGE], responses={200: ChartSerializer}, summary="An instance's resource use")
    def get(self, request, pk: int):
        chart = _range(request)
        instance = get_object_or_404(Instance.objects.in_scope(scope_of(request)), pk=pk)
        return Response(history.series("instance", instance.pk, chart))


class HostMetricsView(APIView):
    """A host's CPU (%), memory and storage pools (bytes) and the load of its instances (platform admins)."""

    permission_classes = [IsAdminUser]

    @extend_schema(parameters=[RANGE], responses={200: ChartSerializer}, summary="A host's resource use")
    def get(self, request, pk: int):
        chart = _range(request)
        host = get_object_or_404(Host, pk=pk)
        return Response(history.series("host", host.pk, chart))


class HotSpotsView(APIView):
    """The busiest instances the caller sees and, for platform admins, hosts, by their newest samples."""

    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=[HotQuerySerializer], responses={200: HotSpotsSerializer},
                   summary="The hottest hosts and instances now")
    def get(self, request):
        query = HotQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        found = hottest(scope=scope_of(request), sort=Sort(query.validated_data["by"]),
                        limit=query.validated_data["limit"])
        return Response(HotSpotsSerializer({"hosts": found.hosts, "instances": found.instances}).data)


class AlertRuleViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                       mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Alert rules: a measure above or below a threshold for a while, told through notifications. Everyone in a
    tenant sees its rules; its admins make and remove them; platform rules (hosts, every tenant) are platform
    admins'."""

    queryset = AlertRule.objects.none()
    serializer_class = AlertRuleSerializer
    audit_name = "alert_rule"

    def get_queryset(self):
        return AlertRule.objects.in_scope(self.scope).prefetch_related("states")

    def _require_manager(self, tenant_id: int | None) -> None:
        if not self.scope.manages(tenant_id):
            raise PermissionDenied(MANAGERS)

    @extend_schema(request=AlertRuleWriteSerializer, responses={201: AlertRuleSerializer})
    def create(self, request):
        data = AlertRuleWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        tenant = tenant_asked(self.scope, values.pop("tenant", None))
        self._require_manager(tenant.pk if tenant else None)
        rule = alerts.create_rule(scope=self.scope, user=request.user, tenant=tenant,
                                  instance_id=values.pop("instance", None), host_id=values.pop("host", None),
                                  **values)
        return Response(AlertRuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=AlertRuleEnableSerializer, responses={200: AlertRuleSerializer},
                   summary="Enable or disable a rule")
    def partial_update(self, request, pk=None):
        rule = self.get_object()
        self._require_manager(rule.tenant_id)
        data = AlertRuleEnableSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        alerts.set_enabled(rule=rule, enabled=data.validated_data["enabled"])
        return Response(AlertRuleSerializer(self.get_queryset().get(pk=rule.pk)).data)

    def perform_destroy(self, instance: AlertRule) -> None:
        self._require_manager(instance.tenant_id)
        instance.delete()
