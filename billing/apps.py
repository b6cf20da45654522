from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        from billing import signals, views  # noqa: F401  (signals: the address meter's receivers)
        from tenants.views import register_tenant_panel

        register_tenant_panel(views.tenant_panel)
