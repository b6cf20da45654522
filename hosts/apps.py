from django.apps import AppConfig
from django.conf import settings


class HostsConfig(AppConfig):
    name = "hosts"

    def ready(self) -> None:
        from hosts import hypervisor

        hypervisor.reach_locally(settings.CLOUDPANEL_LOCAL_URIS)
