"""Sending one delivery: an e-mail through Django's mail backend, or a webhook POST signed with HMAC-SHA256.

A webhook's URL is checked like an image import's (public addresses only, or one the admins allow in
CLOUDPANEL_WEBHOOK_ALLOW), at every attempt, and the request goes to the very address checked. The attempt, from
connecting to the status line (resolving the name aside), takes at most CLOUDPANEL_WEBHOOK_TIMEOUT_SECONDS: a
receiver that hangs holds one worker thread that long, never more. Redirects are not followed. Only the status
line is read.

The signature: header `X-CloudPanel-Signature: t=<unix time>,v1=<hex>`, where hex is HMAC-SHA256 with the
subscription's secret of `<unix time>.<body>`; receivers recompute it and reject old times (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import ssl
import time
from urllib.parse import quote

from django.conf import settings
from django.core.mail import send_mail

from cloudpanel import outbound
from cloudpanel.exceptions import DomainError
from notifications.choices import Channel
from notifications.models import Delivery, Notification, Subscription

STATUS = re.compile(rb"[1-5][0-9][0-9]")  # an HTTP status code


class SendFailed(DomainError):
    """This attempt did not get through; the message says why (code: the HTTP status, if one came)."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


def allowlist() -> list[outbound.Allowed]:
    return [outbound.Allowed.parse(entry) for entry in settings.CLOUDPANEL_WEBHOOK_ALLOW]


def payload(notification: Notification) -> dict:
    """What a webhook receives (and what the e-mail says)."""
    link = f"{settings.CLOUDPANEL_PANEL_URL.rstrip('/')}{notification.link}" if notification.link else ""
    return {"id": notification.pk, "kind": notification.kind, "title": notification.title, "body": notification.body,
            "link": link, "tenant": notification.tenant.name if notification.tenant_id else None,
            "tenant_id": notification.tenant_id, "data": notification.data,
            "created_at": notification.created_at.isoformat()}


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def send(delivery: Delivery) -> int | None:
    """Make one attempt; the HTTP status a webhook answered (None for e-mail), or SendFailed."""
    subscription, notification = delivery.subscription, delivery.notification
    data = payload(notification)
    if subscription.channel == Channel.EMAIL:
        text = "\n\n".join(part for part in (data["body"], data["link"]) if part)
        try:
            send_mail(f"[CloudPanel] {notification.title}", text or notification.title, None, [subscription.email])
        except (OSError, ValueError) as exc:
            raise SendFailed(f"the mail server did not take it: {exc}") from None
        return None
    return _post(subscription, delivery, json.dumps(data, separators=(",", ":")).encode())


def _post(subscription: Subscription, delivery: Delivery, body: bytes) -> int:
    timeout = settings.CLOUDPANEL_WEBHOOK_TIMEOUT_SECONDS
    deadline = time.monotonic() + timeout
    target = outbound.check(subscription.url, allow=allowlist())  # (UnsafeURL: refused, said as such)
    default_port = 443 if target.scheme == "https" else 80
    name = target.host.encode("idna").decode("ascii") if not target.host.isascii() else target.host
    host = f"[{name}]" if ":" in name else name
    path = quote(target.path, safe="/?&=%:@!$'()*+,;~-._")  # (as sent on the wire: ASCII)
    timestamp = int(time.time())
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}{'' if target.port == default_port else f':{target.port}'}"
            f"\r\nUser-Agent: CloudPanel webhook\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
            f"X-CloudPanel-Event: {delivery.notification.kind}\r\nX-CloudPanel-Delivery: {delivery.pk}\r\n"
            f"X-CloudPanel-Signature: {signature(subscription.secret, timestamp, body)}\r\n\r\n")
    try:
        sock = outbound.open_socket(target, max(0.01, deadline - time.monotonic()))
    except TimeoutError:
        raise SendFailed(f"{target.host} did not accept a connection within {timeout:g} s") from None
    except (OSError, ssl.SSLError) as exc:
        raise SendFailed(f"could not connect to {target.host}: {exc}") from None
    try:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        sock.sendall(head.encode("ascii") + body)
        answer = b""
        while b"\r\n" not in answer and len(answer) < 8192:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(8192 - len(answer))
            if not chunk:
                break
            answer += chunk
    except TimeoutError:
        raise SendFailed(f"{target.host} did not answer within {timeout:g} s") from None
    except (OSError, ssl.SSLError) as exc:
        raise SendFailed(f"the request to {target.host} failed: {exc}") from None
    finally:
        sock.close()
    parts = answer.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not STATUS.fullmatch(parts[1]):
        raise SendFailed(f"{target.host} did not answer in HTTP")
    code = int(parts[1])
    if 300 <= code < 400:
        raise SendFailed(f"{target.host} answered {code}: redirects are not followed", code)
    if not 200 <= code < 300:
        raise SendFailed(f"{target.host} answered {code}", code)
    return code
