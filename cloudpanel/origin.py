"""Websockets open only from the panel's own pages: the Origin header must name the scheme, host and port the
socket was opened to (its Host header, over ws: for http and wss: for https), and that host must be allowed.

Channels' AllowedHostsOriginValidator compares host names only, so a page on another port of the same
host (another service, or a user's own server) could open a console. Behind a proxy that ends TLS,
the proxy must pass X-Forwarded-Proto (the server then sees the socket as wss:).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(value: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path or parts.query or parts.username:
        return None
    return parts.scheme, parts.hostname, port or _DEFAULT_PORTS[parts.scheme]


def same_origin(scope: dict) -> bool:
    """Whether the socket's Origin is the panel's own address, as the socket reached it."""
    headers = {name: value.decode("latin1") for name, value in scope.get("headers", [])}
    origin = _origin(headers.get(b"origin", ""))
    host, port = split_domain_port(headers.get(b"host", ""))
    if origin is None or not host or not validate_host(host, settings.ALLOWED_HOSTS):
        return False
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    return origin == (scheme, host.strip("[]"), int(port) if port.isdigit() else _DEFAULT_PORTS[scheme])


class SameOriginValidator:
    """ASGI middleware around the websocket router: a socket from anywhere else is refused before it opens."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if same_origin(scope):
            return await self.app(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
