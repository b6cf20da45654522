"""Charts over the API: an instance's for whoever sees the instance, a host's for platform admins."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from hosts.models import Host
from instances.models import Instance
from metrics import history
from metrics.choices import Range
from metrics.hot import Sort, hottest
from metrics.serializers import ChartQuerySerializer, ChartSerializer, HotQuerySerializer, HotSpotsSerializer
from tenants.scoping import scope_of

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
