"""Fetching a URL for an image import, every hop checked by cloudpanel.outbound (public addresses only, or an
internal mirror the admins allowed)."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Sequence
from urllib.parse import urljoin

from cloudpanel.outbound import REDIRECTS, Allowed, Target, UnsafeURL, connect
from cloudpanel.outbound import check as check_url
from images.exceptions import UnsafeImage

__all__ = ["Allowed", "check", "open_url"]


def check(url: str, *, allow: Sequence[Allowed] = ()) -> Target:
    """The first hop of an import, or UnsafeImage saying why it is refused."""
    try:
        return check_url(url, allow=allow)
    except UnsafeURL as exc:
        raise UnsafeImage(str(exc)) from None


def open_url(url: str, *, allow: Sequence[Allowed] = (), max_redirects: int = 5,
             timeout: float = 30.0) -> http.client.HTTPResponse:
    """GET url, following redirects, each hop checked; the caller reads (and closes) the response."""
    for _ in range(max_redirects + 1):
        target = check(url, allow=allow)
        try:
            connection = connect(target, timeout)
        except (OSError, ssl.SSLError) as exc:
            raise UnsafeImage(f"could not connect to {target.host}: {exc}") from None
        try:
            connection.request("GET", target.path, headers={"User-Agent": "CloudPanel image import"})
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise UnsafeImage(f"the download from {target.host} failed: {exc}") from None
        if response.status in REDIRECTS and response.getheader("Location"):
            url = urljoin(url, response.getheader("Location"))
            connection.close()
            continue
        if response.status != 200:
            connection.close()
            raise UnsafeImage(f"{target.host} answered {response.status} {response.reason}")
        return response
    raise UnsafeImage(f"more than {max_redirects} redirects")
