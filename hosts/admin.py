from django.contrib import admin

from hosts.models import Host


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["name", "uri", "technology", "state", "enabled", "last_seen_at"]
    list_filter = ["state", "technology", "enabled"]
    # (what a probe found is the host's to say; settings go through the host's page, which checks them)
    readonly_fields = ["technology", "state", "last_error", "last_seen_at", "pools", "arch", "guests", "domain_caps",
                       "missing", "cpu_mode", "cpu_model", "os_templates", "allowed_paths"]
