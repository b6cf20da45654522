from django.urls import path

from tenants import views

urlpatterns = [
    path("tenants/", views.tenant_list, name="tenant-list"),
    path("tenants/switch/", views.tenant_switch, name="tenant-switch"),
    path("tenants/<int:pk>/", views.tenant_detail, name="tenant-detail"),
    path("tenants/<int:pk>/quota/", views.tenant_quota, name="tenant-quota"),
    path("tenants/<int:pk>/members/", views.member_add, name="member-add"),
    path("members/<int:pk>/", views.member_update, name="member-update"),
    path("members/<int:pk>/remove/", views.member_remove, name="member-remove"),
    path("tokens/", views.token_list, name="token-list"),
    path("tokens/<int:pk>/revoke/", views.token_revoke, name="token-revoke"),
    path("audit/", views.audit_list, name="audit-list"),
    path("audit/export.csv", views.audit_export, name="audit-export"),
]
