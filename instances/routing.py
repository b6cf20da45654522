from django.urls import path

from instances.consumers import ConsoleConsumer, DisplayConsumer, StatusConsumer

websocket_urlpatterns = [
    path("ws/status/", StatusConsumer.as_asgi()),
    path("ws/instances/<int:instance_id>/status/", StatusConsumer.as_asgi()),
    path("ws/instances/<int:instance_id>/console/", ConsoleConsumer.as_asgi()),
    path("ws/instances/<int:instance_id>/display/", DisplayConsumer.as_asgi()),
]
