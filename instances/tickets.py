"""Single-use tickets to a graphical console: issued to a signed-in browser session, redeemed by its websocket."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from cloudpanel.exceptions import Conflict
from instances.choices import Status
from instances.models import DisplayTicket, Instance

LIFETIME = timedelta(seconds=60)
KEPT = timedelta(hours=1)  # used and expired tickets are purged this long after they expire


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def check_display(instance: Instance) -> None:
    """Conflict unless the instance has a display to open now: a graphical technology, and its guest running."""
    if instance.host is None or not instance.host.can.graphics:
        raise Conflict("This instance has no graphical console: only QEMU/KVM guests have one; use its serial "
                       "console.")
    if instance.status not in (Status.RUNNING, Status.PAUSED):
        raise Conflict(f"The instance is {instance.get_status_display().lower()}: its display shows only while "
                       "it runs.")


def issue(*, instance: Instance, user, session_key: str) -> tuple[str, datetime]:
    """A new ticket (shown once) and when it expires."""
    now = timezone.now()
    raw = secrets.token_urlsafe(32)
    DisplayTicket.objects.filter(expires_at__lt=now - KEPT).delete()
    ticket = DisplayTicket.objects.create(digest=_digest(raw), instance=instance, user=user,
                                          session_digest=_digest(session_key), expires_at=now + LIFETIME)
    return raw, ticket.expires_at


def redeem(raw: str, *, instance_id: int, user, session_key: str | None) -> str:
    """Use a ticket up; '' if it opens this instance's display for this user and session, else why not."""
    if not raw or len(raw) > 200:
        return "no ticket"
    with transaction.atomic():
        ticket = DisplayTicket.objects.select_for_update().filter(digest=_digest(raw)).first()
        if ticket is None:
            return "unknown ticket"
        if ticket.used_at is not None:
            return "the ticket was already used"
        if ticket.expires_at <= timezone.now():
            return "the ticket expired"
        if ticket.user_id != user.pk:
            return "the ticket is another user's"
        if ticket.instance_id != instance_id:
            return "the ticket is for another instance"
        if not session_key or not secrets.compare_digest(ticket.session_digest, _digest(session_key)):
            return "the ticket is another session's"
        ticket.used_at = timezone.now()
        ticket.save(update_fields=["used_at"])
    return ""
