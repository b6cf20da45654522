from datetime import UTC, timedelta

import django_filters
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField

from tenants.choices import AuditResult, Channel
from tenants.models import AuditEvent


class UTCDateTimeField(IsoDateTimeField):
    """An ISO 8601 time or a plain date, as UTC; with day_end, a plain date means the end of that day."""

    def __init__(self, *args, day_end: bool = False, **kwargs):
        self.day_end = day_end
        super().__init__(*args, **kwargs)

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            parsed = parsed.astimezone(UTC)
            if self.day_end and isinstance(value, str) and len(value.strip()) == 10:
                parsed += timedelta(days=1)
        except OverflowError:
            raise ValidationError("This time is out of range.") from None
        return parsed


class TimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField


class AuditFilterSet(django_filters.FilterSet):
    username = django_filters.CharFilter(lookup_expr="icontains", label="User")
    tenant = django_filters.NumberFilter(field_name="tenant_id")
    action = django_filters.CharFilter(lookup_expr="icontains")
    result = django_filters.ChoiceFilter(choices=AuditResult.choices)
    channel = django_filters.ChoiceFilter(choices=Channel.choices)
    since = TimeFilter(field_name="at", lookup_expr="gte")
    until = TimeFilter(field_name="at", lookup_expr="lt", day_end=True)

    class Meta:
        model = AuditEvent
        fields = ["username", "tenant", "action", "result", "channel", "target_type", "target_id", "on_behalf",
                  "since", "until"]
