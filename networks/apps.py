from django.apps import AppConfig


class NetworksConfig(AppConfig):
    name = "networks"

    def ready(self) -> None:
        from networks.models import Network
        from tenants.quotas import register_counter

        register_counter(Network.objects.quota_usage, ("networks", "public_addresses"))
