"""ASGI entry point: HTTP through Django, websockets through Channels."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpanel.settings")
django.setup(set_prefix=False)

from cloudpanel.streambody import StreamingBodyHandler  # noqa: E402

django_asgi = StreamingBodyHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from cloudpanel.bodylimit import BodyLimit  # noqa: E402
from cloudpanel.origin import SameOriginValidator  # noqa: E402
from cloudpanel.telemetry import CountWebsockets  # noqa: E402
from instances.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": BodyLimit(django_asgi),
        "websocket": CountWebsockets(SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))),
    }
)
