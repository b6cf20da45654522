import django_filters

from images.choices import DiskFormat, ImageStatus, Visibility
from images.models import Image


class ImageFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    status = django_filters.ChoiceFilter(choices=ImageStatus.choices)
    visibility = django_filters.ChoiceFilter(choices=Visibility.choices)
    disk_format = django_filters.ChoiceFilter(choices=DiskFormat.choices)
    tenant = django_filters.NumberFilter(field_name="tenant_id")

    class Meta:
        model = Image
        fields = ["name", "status", "visibility", "disk_format", "tenant"]
