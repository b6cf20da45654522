from django.contrib import admin

from hosts.models import Host


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["name", "uri", "technology", "state", "enabled", "last_seen_at"]
    list_filter = ["state", "technology", "enabled"]
    readonly_fields = ["state", "last_error", "last_seen_at", "pools"]
