from django.urls import path

from networks import views

urlpatterns = [
    path("", views.network_list, name="network-list"),
    path("<int:pk>/", views.network_detail, name="network-detail"),
    path("<int:pk>/delete/", views.network_delete, name="network-delete"),
    path("<int:pk>/reserved/<int:range_pk>/delete/", views.network_unreserve, name="network-unreserve"),
    path("security-groups/", views.security_group_list, name="security-group-list"),
    path("security-groups/<int:pk>/", views.security_group_detail, name="security-group-detail"),
    path("security-groups/<int:pk>/delete/", views.security_group_delete, name="security-group-delete"),
    path("security-groups/<int:pk>/rules/<int:rule_pk>/delete/", views.security_rule_delete,
         name="security-rule-delete"),
]
