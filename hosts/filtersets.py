import django_filters

from hosts.models import Host


class HostFilterSet(django_filters.FilterSet):
    class Meta:
        model = Host
        fields = ["state", "technology", "enabled"]
