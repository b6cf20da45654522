"""A cap on request bodies, applied before Django reads (and spools to disk) a single byte.

Django's ASGI handler stores a whole request body in a temporary file before any view or
middleware runs, so a size check in a view comes too late. Image data (uploads and the
workers' transfers) may be as large as an image; every other request is small.
"""

import re

from django.conf import settings

_IMAGE_DATA = re.compile(r"^/(api/v1/images/\d+/data|images/transfer/[^/]+)/$")


def is_image_data(path: str) -> bool:
    """An image upload's data, or a worker's transfer of an image's bytes."""
    return _IMAGE_DATA.match(path) is not None


def limit_for(path: str) -> int:
    if is_image_data(path):
        return settings.CLOUDPANEL_IMAGE_MAX_DOWNLOAD_GIB << 30
    return settings.CLOUDPANEL_MAX_REQUEST_BYTES


class BodyLimit:
    """ASGI middleware: 413 for a body over the limit, whether it announces its length or not."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = limit_for(scope["path"])
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > limit:
            return await self._refuse(send, limit)
        seen, refused = 0, False

        async def counted():
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit and not refused:  # a chunked body that keeps coming
                    refused = True
                    await self._refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        return await self.app(scope, counted, send)

    @staticmethod
    async def _refuse(send, limit: int) -> None:
        body = f"The request body is over the {limit} bytes allowed here.".encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
