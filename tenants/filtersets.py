import django_filters

from tenants.choices import AuditResult, Channel
from tenants.models import AuditEvent


class AuditFilterSet(django_filters.FilterSet):
    username = django_filters.CharFilter(lookup_expr="icontains", label="User")
    action = django_filters.CharFilter(lookup_expr="icontains")
    result = django_filters.ChoiceFilter(choices=AuditResult.choices)
    channel = django_filters.ChoiceFilter(choices=Channel.choices)
    since = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["username", "tenant", "action", "result", "channel", "target_type", "target_id", "on_behalf",
                  "since", "until"]
