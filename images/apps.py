from django.apps import AppConfig


class ImagesConfig(AppConfig):
    name = "images"

    def ready(self) -> None:
        from images.models import Image
        from tenants.quotas import register_counter

        register_counter(Image.objects.quota_usage, ("image_gib",))
