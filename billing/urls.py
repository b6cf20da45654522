from django.urls import path

from billing import views

urlpatterns = [
    path("", views.usage, name="billing-usage"),
    path("invoices/", views.invoice_list, name="invoice-list"),
    path("invoices/run/", views.invoice_run, name="invoice-run"),
    path("invoices/archive/", views.invoice_archive, name="invoice-archive"),
    path("invoices/<int:pk>/", views.invoice_detail, name="invoice-detail"),
    path("invoices/<int:pk>/export/<str:kind>/", views.invoice_export, name="invoice-export"),
    path("invoices/<int:pk>/<str:change>/", views.invoice_change, name="invoice-change"),
    path("plans/", views.plan_list, name="plan-list"),
    path("plans/<int:pk>/", views.plan_detail, name="plan-detail"),
    path("tenants/<int:pk>/", views.tenant_billing, name="tenant-billing"),
    path("revenue/", views.revenue, name="billing-revenue"),
]
