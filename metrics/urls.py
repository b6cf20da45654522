from django.urls import path

from metrics import views

urlpatterns = [
    path("", views.hot_spots, name="hot-spots"),
]
