from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from billing.api import InvoiceViewSet, RatePlanViewSet, RevenueViewSet, TenantBillingViewSet, UsageViewSet
from cloudpanel.api import router
from hosts.api import GuestOffersView, HostViewSet
from images.api import BootKernelViewSet, ImageViewSet, TemplateViewSet
from instances.api import (
    ActionViewSet,
    BackupViewSet,
    HostEvacuationView,
    HostMaintenanceView,
    InstanceViewSet,
    ServerGroupViewSet,
    VolumeViewSet,
)
from instances.views import host_evacuation, host_maintenance, overview, volume_change, volume_list
from metrics.api import AlertRuleViewSet, HostMetricsView, HotSpotsView, InstanceMetricsView
from metrics.prometheus import scrape
from metrics.views import alert_change, alert_list, hot_spots
from networks.api import NetworkViewSet, PortViewSet, SecurityGroupViewSet, SecurityRuleViewSet, SubnetViewSet
from notifications.api import NotificationViewSet, SubscriptionViewSet
from tenants.api import APITokenViewSet, AuditViewSet, MembershipViewSet, TenantViewSet

router.register("hosts", HostViewSet, basename="api-host")
router.register("instances", InstanceViewSet, basename="api-instance")
router.register("actions", ActionViewSet, basename="api-action")
router.register("volumes", VolumeViewSet, basename="api-volume")
router.register("backups", BackupViewSet, basename="api-backup")
router.register("server-groups", ServerGroupViewSet, basename="api-server-group")
router.register("images", ImageViewSet, basename="api-image")
router.register("templates", TemplateViewSet, basename="api-template")
router.register("boot-kernels", BootKernelViewSet, basename="api-boot-kernel")
router.register("networks", NetworkViewSet, basename="api-network")
router.register("subnets", SubnetViewSet, basename="api-subnet")
router.register("ports", PortViewSet, basename="api-port")
router.register("security-groups", SecurityGroupViewSet, basename="api-security-group")
router.register("security-group-rules", SecurityRuleViewSet, basename="api-security-rule")
router.register("tenants", TenantViewSet, basename="api-tenant")
router.register("members", MembershipViewSet, basename="api-member")
router.register("tokens", APITokenViewSet, basename="api-token")
router.register("audit", AuditViewSet, basename="api-audit")
router.register("plans", RatePlanViewSet, basename="api-plan")
router.register("invoices", InvoiceViewSet, basename="api-invoice")
router.register("usage", UsageViewSet, basename="api-usage")
router.register("revenue", RevenueViewSet, basename="api-revenue")
router.register("notifications", NotificationViewSet, basename="api-notification")
router.register("subscriptions", SubscriptionViewSet, basename="api-subscription")
router.register("alert-rules", AlertRuleViewSet, basename="api-alert-rule")

urlpatterns = [
    path("", overview, name="overview"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("hosts/<int:pk>/maintenance/", host_maintenance, name="host-maintenance"),
    path("hosts/<int:pk>/evacuate/", host_evacuation, name="host-evacuation"),
    path("hosts/", include("hosts.urls")),
    path("instances/", include("instances.urls")),
    path("volumes/", volume_list, name="volume-list"),
    path("volumes/<int:pk>/<str:change>/", volume_change, name="volume-change"),
    path("images/", include("images.urls")),
    path("networks/", include("networks.urls")),
    path("billing/", include("billing.urls")),
    path("hot-spots/", hot_spots, name="hot-spots"),
    path("alerts/", alert_list, name="alert-list"),
    path("alerts/<int:pk>/<str:change>/", alert_change, name="alert-change"),
    path("notifications/", include("notifications.urls")),
    path("metrics", scrape, name="prometheus"),
    path("", include("tenants.urls")),
    path("api/v1/guests/", GuestOffersView.as_view(), name="api-guests"),
    path("api/v1/tenants/<int:pk>/billing/", TenantBillingViewSet.as_view({"get": "billing", "put": "billing"}),
         name="api-tenant-billing"),
    path("api/v1/instances/<int:pk>/metrics/", InstanceMetricsView.as_view(), name="api-instance-metrics"),
    path("api/v1/hosts/<int:pk>/metrics/", HostMetricsView.as_view(), name="api-host-metrics"),
    path("api/v1/hot-spots/", HotSpotsView.as_view(), name="api-hot-spots"),
    path("api/v1/hosts/<int:pk>/maintenance/", HostMaintenanceView.as_view(), name="api-host-maintenance"),
    path("api/v1/hosts/<int:pk>/evacuate/", HostEvacuationView.as_view(), name="api-host-evacuation"),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
]
