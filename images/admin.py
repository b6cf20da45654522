from django.contrib import admin

from images.models import Image


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "visibility", "status", "disk_format", "size", "created_at"]
    list_filter = ["status", "visibility", "disk_format"]
    search_fields = ["name", "sha256"]
    readonly_fields = [f.name for f in Image._meta.fields]
