from django.contrib import admin

from instances.models import Instance, InstanceAction, InstanceStateChange


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "host", "status", "task_state", "created_at"]
    list_filter = ["status", "host"]
    search_fields = ["name", "uuid"]


@admin.register(InstanceAction)
class InstanceActionAdmin(admin.ModelAdmin):
    list_display = ["instance", "operation", "status", "user", "created_at"]
    list_filter = ["operation", "status"]


@admin.register(InstanceStateChange)
class InstanceStateChangeAdmin(admin.ModelAdmin):
    list_display = ["instance", "from_status", "to_status", "at", "cause"]
