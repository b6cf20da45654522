"""Streamed responses that stay streamed under ASGI.

Django serves a StreamingHttpResponse built on a plain iterator to an ASGI server by
first gathering the whole iterator into a list; a multi-GiB image or a long CSV export
would sit in the web process's memory. Under ASGI the parts are therefore handed over
one at a time from an async iterator; under WSGI the plain iterator streams as it is.
"""

from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse

_END = object()


def _one_at_a_time(parts: Iterator) -> AsyncIterator:
    # Same thread as the view (thread_sensitive): iterators over querysets use its database connection.
    advance = sync_to_async(lambda: next(parts, _END), thread_sensitive=True)

    async def stream():
        while (part := await advance()) is not _END:
            yield part

    return stream()


def streamed(request: HttpRequest, parts: Iterator, **kwargs) -> StreamingHttpResponse:
    """A StreamingHttpResponse of parts that never holds them all, whichever server runs the view."""
    underlying = getattr(request, "_request", request)  # a DRF request wraps Django's
    content = _one_at_a_time(parts) if isinstance(underlying, ASGIRequest) else parts
    return StreamingHttpResponse(content, **kwargs)


def file_blocks(path, block: int = 1 << 20) -> Iterator[bytes]:
    """A file's bytes in blocks, closed once read."""
    with open(path, "rb") as source:
        while data := source.read(block):
            yield data
