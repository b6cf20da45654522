"""Reaching a URL a user gave without letting it reach inside the platform: image imports, webhooks.

The worker making the request can reach the panel's own services, the hosts' management networks and cloud
metadata endpoints. So every hop (the first URL and each redirect) is resolved here, every address it resolves to
must be public (or in the admins' explicit allowlist), and the connection is made to the very address that was
checked: a second DNS answer cannot swap it.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from cloudpanel.exceptions import DomainError

REDIRECTS = (301, 302, 303, 307, 308)
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeURL(DomainError):
    """The URL is refused before anything connects to it; the message says why, without mapping the inside."""


class Unresolved(UnsafeURL):
    """Its host name did not resolve (now: DNS may answer later)."""


@dataclass(frozen=True)
class Target:
    """One hop, checked: where to connect and what to ask for."""

    scheme: str
    host: str
    port: int
    address: str
    path: str


@dataclass(frozen=True)
class Allowed:
    """An internal address an admin allowed (a mirror, a webhook receiver): a network, with an optional port."""

    network: Network
    port: int | None = None

    @classmethod
    def parse(cls, entry: str) -> Allowed:
        """'10.1.2.3', '10.0.0.0/8', '10.1.2.3:8080' or '[fd00::1]:8080'."""
        text, port = entry.strip(), None
        if text.startswith("["):
            text, _, rest = text[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else None
        elif text.count(":") == 1:
            text, _, port_text = text.partition(":")
            port = int(port_text)
        return cls(ipaddress.ip_network(text, strict=False), port)

    def admits(self, address: Address, port: int) -> bool:
        return address in self.network and (self.port is None or self.port == port)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")


def _public(address: Address) -> bool:
    """Global unicast, looking through the IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4); any other
    IPv6 address outside global unicast (2000::/3: IPv4-compatible, IPv4-translated, local NAT64 prefixes...) is
    not."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address.sixtofour is not None:
            address = address.sixtofour
        elif address in _NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        elif address not in _GLOBAL_UNICAST:
            return False
    return address.is_global and not address.is_multicast


def check(url: str, *, allow: Sequence[Allowed] = ()) -> Target:
    """The hop to make for url, or UnsafeURL saying why it is refused."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeURL(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL(f"only http and https URLs are allowed, not {parts.scheme or 'this'}")
    host = parts.hostname
    if not host:
        raise UnsafeURL("the URL has no host")
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolved(f"cannot resolve {host}: {exc}") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in answers]
    for address in addresses:
        if not _public(address) and not any(entry.admits(address, port) for entry in allow):
            # Which internal address a name has is not said: the message must not map the inside.
            raise UnsafeURL(f"{host} resolves to an internal address: refused "
                            "(an admin can allow an internal address explicitly)")
    path = parts.path or "/"
    return Target(parts.scheme, host, port, str(addresses[0]), path + (f"?{parts.query}" if parts.query else ""))


def open_socket(target: Target, timeout: float) -> socket.socket:
    """A connection to the checked address itself (TLS, with the name verified, for https)."""
    raw = socket.create_connection((target.address, target.port), timeout=timeout)
    if target.scheme != "https":
        return raw
    try:
        return ssl.create_default_context().wrap_socket(raw, server_hostname=target.host)
    except (OSError, ssl.SSLError):
        raw.close()
        raise


def connect(target: Target, timeout: float) -> http.client.HTTPConnection:
    """An HTTP connection over open_socket."""
    connection_class = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(target.host, target.port, timeout=timeout)
    connection.sock = open_socket(target, timeout)
    return connection
