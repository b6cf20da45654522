import django_filters

from instances.models import Instance, InstanceAction


class InstanceFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Instance
        fields = ["name", "status", "host", "tenant", "task_state"]


class ActionFilterSet(django_filters.FilterSet):
    class Meta:
        model = InstanceAction
        fields = ["instance", "operation", "status", "user"]
