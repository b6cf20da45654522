from django.urls import path

from notifications import views

urlpatterns = [
    path("", views.notification_list, name="notification-list"),
    path("subscriptions/", views.subscription_list, name="subscription-list"),
    path("subscriptions/<int:pk>/", views.subscription_detail, name="subscription-detail"),
    path("subscriptions/<int:pk>/<str:change>/", views.subscription_change, name="subscription-change"),
]
