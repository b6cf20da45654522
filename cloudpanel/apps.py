from django.apps import AppConfig


class CloudPanelConfig(AppConfig):
    name = "cloudpanel"
    verbose_name = "CloudPanel"
