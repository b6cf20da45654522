from django.urls import path

from networks import views

urlpatterns = [
    path("", views.network_list, name="network-list"),
    path("topology/", views.topology, name="network-topology"),
    path("<int:pk>/", views.network_detail, name="network-detail"),
    path("<int:pk>/delete/", views.network_delete, name="network-delete"),
]
