from django.urls import path

from hosts import views

urlpatterns = [
    path("", views.host_list, name="host-list"),
    path("technologies/", views.technologies, name="technologies"),
    path("<int:pk>/", views.host_detail, name="host-detail"),
    path("<int:pk>/<str:command>/", views.host_command, name="host-command"),
]
