"""Moving image bytes between the panel's store and workers, over HTTP with signed URLs.

The panel signs a URL for one image and one operation (read, write or discard); a
worker uses it with nothing but `CLOUDPANEL_PANEL_URL` and the shared secret key, so the
worker can run next to a remote hypervisor host, without the panel's filesystem.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.urls import reverse

from images.exceptions import TransferFailed, UnsafeImage, UploadIncomplete

READ, WRITE, DISCARD = "read", "write", "discard"
_SALT = "images.transfer"
BLOCK = 1 << 20


def url_for(image_uuid: str, operation: str) -> str:
    """A URL that lets its bearer do one operation on one image's bytes, for a limited time."""
    token = signing.dumps({"image": str(image_uuid), "op": operation}, salt=_SALT)
    return settings.CLOUDPANEL_PANEL_URL.rstrip("/") + reverse("image-transfer", args=[token])


def verify(token: str, operation: str) -> str | None:
    """The image uuid a token grants the operation on, or None if it does not (forged, expired, other op)."""
    try:
        claim = signing.loads(token, salt=_SALT, max_age=settings.CLOUDPANEL_TRANSFER_MAX_AGE)
    except signing.BadSignature:
        return None
    return claim.get("image") if claim.get("op") == operation else None


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return kind(parts.hostname, parts.port, timeout=timeout, blocksize=BLOCK), path


def _failed(response: http.client.HTTPResponse, what: str) -> UploadIncomplete:
    reason = response.read(500).decode(errors="replace")
    kind = TransferFailed if response.status >= 500 else UploadIncomplete  # the panel's own failure may pass
    return kind(f"the panel refused to {what}: {response.status} {reason}")


def hashing_copy(response: http.client.HTTPResponse, destination: Path, *, algorithms: tuple[str, ...] = ("sha256",),
                 limit: int | None = None, progress: Callable[[int, int | None], None] | None = None,
                 seconds: float | None = None) -> tuple[dict[str, str], int]:
    """Write a response's body to destination, hashing it on the way; refused past limit bytes or, for a
    sender that drips, past the given seconds.

    Returns the hex digests by algorithm and the size. A full disk or a body cut short is an
    UploadIncomplete; the caller removes the partial file (it lives in a scratch directory).
    """
    total = int(response.getheader("Content-Length") or 0) or None
    if limit is not None and total is not None and total > limit:
        raise UnsafeImage(f"the image is {total} bytes, over the {limit} bytes allowed")
    hashers = {name: hashlib.new(name) for name in algorithms}
    done, deadline = 0, None if seconds is None else time.monotonic() + seconds
    try:
        with open(destination, "wb") as out:
            while block := response.read(BLOCK):
                done += len(block)
                if limit is not None and done > limit:
                    raise UnsafeImage(f"the image is over the {limit} bytes allowed")
                if deadline is not None and time.monotonic() > deadline:
                    raise UnsafeImage(f"the download took longer than the {seconds:.0f} s allowed")
                for hasher in hashers.values():
                    hasher.update(block)
                out.write(block)
                if progress:
                    progress(done, total)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UploadIncomplete("the worker's disk filled up while the image came in") from None
        raise UploadIncomplete(f"the transfer failed: {exc}") from None
    except http.client.HTTPException as exc:
        raise UploadIncomplete(f"the transfer failed: {exc!r}") from None
    if total is not None and done != total:
        raise UploadIncomplete(f"the transfer ended after {done} of {total} bytes")
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}, done


@contextmanager
def reading(url: str, *, timeout: float = 60.0) -> Iterator[http.client.HTTPResponse]:
    """An image's bytes from the panel, as a response to read from."""
    connection, path = _connection(url, timeout)
    try:
        try:
            connection.request("GET", path)
            response = connection.getresponse()
        except OSError as exc:
            raise TransferFailed(f"the panel could not be reached for the image: {exc}") from None
        if response.status != 200:
            raise _failed(response, "send the image")
        yield response
    finally:
        connection.close()


def download(url: str, destination: Path, *, algorithms: tuple[str, ...] = ("sha256",),
             timeout: float = 60.0) -> dict[str, str]:
    """Fetch an image's bytes from the panel into destination; returns their digests."""
    connection, path = _connection(url, timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        if response.status != 200:
            raise _failed(response, "send the image")
        return hashing_copy(response, destination, algorithms=algorithms)[0]
    except OSError as exc:
        raise TransferFailed(f"reading the image from the panel failed: {exc}") from None
    finally:
        connection.close()


def upload(url: str, source: Path) -> None:
    """Send a file to the panel as the image's new bytes.

    The panel answers once it has stored and synced them all, so the wait for its answer
    grows with the size (a minute plus a second per 16 MiB).
    """
    size = source.stat().st_size
    connection, path = _connection(url, 60.0 + size / (16 << 20))
    try:
        with open(source, "rb") as body:
            connection.request("PUT", path, body=body, headers={"Content-Length": str(size),
                                                               "Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        if response.status != 204:
            raise _failed(response, "store the image")
    except OSError as exc:
        raise TransferFailed(f"sending the image to the panel failed: {exc}") from None
    finally:
        connection.close()


def discard(url: str, *, timeout: float = 30.0) -> None:
    """Ask the panel to drop whatever bytes it holds for the image."""
    connection, path = _connection(url, timeout)
    try:
        connection.request("DELETE", path)
        response = connection.getresponse()
        if response.status != 204:
            raise _failed(response, "discard the image")
    except OSError as exc:
        raise UploadIncomplete(f"the panel could not be reached to discard the image: {exc}") from None
    finally:
        connection.close()
