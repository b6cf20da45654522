import django_filters

from networks.models import Port, SecurityRule, Subnet

# Plain ids, not model choices: a choice field would look in every tenant's rows and answer differently
# for ids that exist elsewhere; the request's scope already limits the rows.


class SubnetFilterSet(django_filters.FilterSet):
    network = django_filters.NumberFilter(field_name="network_id")

    class Meta:
        model = Subnet
        fields = ["network", "version"]


class PortFilterSet(django_filters.FilterSet):
    network = django_filters.NumberFilter(field_name="network_id")
    instance = django_filters.NumberFilter(field_name="instance_id")

    class Meta:
        model = Port
        fields = ["network", "instance"]


class SecurityRuleFilterSet(django_filters.FilterSet):
    group = django_filters.NumberFilter(field_name="group_id")

    class Meta:
        model = SecurityRule
        fields = ["group", "direction"]
