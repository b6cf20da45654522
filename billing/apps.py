from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        from billing import costs, signals, views  # noqa: F401  (signals: the address meter's receivers)
        from instances.plans import register_pricer
        from tenants.views import register_tenant_panel

        register_tenant_panel(views.tenant_panel)
        register_pricer(costs.monthly_price)
