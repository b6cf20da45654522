import django_filters

from instances.models import Backup, Instance, InstanceAction, Volume


class InstanceFilterSet(django_filters.FilterSet):
    # Plain ids, not model choices: a choice field would list every tenant's rows and answer
    # differently for ids that exist elsewhere; the request's scope already limits the rows.
    name = django_filters.CharFilter(lookup_expr="icontains")
    host = django_filters.NumberFilter(field_name="host_id")
    tenant = django_filters.NumberFilter(field_name="tenant_id")

    class Meta:
        model = Instance
        fields = ["name", "status", "host", "tenant", "task_state"]


class ActionFilterSet(django_filters.FilterSet):
    instance = django_filters.NumberFilter(field_name="instance_id")
    user = django_filters.NumberFilter(field_name="user_id")

    class Meta:
        model = InstanceAction
        fields = ["instance", "operation", "status", "user"]


class VolumeFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    host = django_filters.NumberFilter(field_name="host_id")
    tenant = django_filters.NumberFilter(field_name="tenant_id")
    instance = django_filters.NumberFilter(field_name="instance_id")

    class Meta:
        model = Volume
        fields = ["name", "status", "host", "tenant", "instance"]


class BackupFilterSet(django_filters.FilterSet):
    instance = django_filters.NumberFilter(field_name="instance_id")

    class Meta:
        model = Backup
        fields = ["instance", "status"]
