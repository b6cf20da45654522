"""A delivery's attempts, in a worker: take it, send it, record how it went; the sweep of those due."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from cloudpanel import outbound
from notifications.choices import DeliveryStatus
from notifications.models import Delivery, Notification
from notifications.sending import SendFailed, send

log = logging.getLogger(__name__)
CLAIM_SECONDS = 60  # a delivery a worker took and did not finish in this long is sent again (the worker died)
SWEEP_BATCH = 500


def retry_delays() -> list[float]:
    return settings.CLOUDPANEL_NOTIFY_RETRY_SECONDS


def attempt(delivery_id: int) -> None:
    """Take a due delivery (no other worker has it), make one attempt, and record how it went: delivered, a
    retry after the next back-off delay, or failed once every attempt did (or its subscription is disabled)."""
    now = timezone.now()
    taken = Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now).update(
        status=DeliveryStatus.SENDING, claimed_until=now + timedelta(seconds=CLAIM_SECONDS),
        attempts=F("attempts") + 1)
    if not taken:
        return
    delivery = Delivery.objects.select_related("subscription", "notification__tenant").get(pk=delivery_id)
    if not delivery.subscription.enabled:
        _record(delivery, error="not sent: the subscription is disabled", final=True)
        return
    try:
        code = send(delivery)
    except outbound.Unresolved as exc:  # (DNS may answer again: tried again like any failure)
        _record(delivery, error=str(exc))
    except outbound.UnsafeURL as exc:  # not a passing trouble: not tried again
        _record(delivery, error=f"refused: {exc}", final=True)
    except SendFailed as exc:
        _record(delivery, error=str(exc), code=exc.code)
    except Exception as exc:  # whatever else went wrong counts as a failed attempt, never a delivery stuck
        log.exception("delivery %s failed", delivery_id)
        _record(delivery, error=f"the attempt failed: {exc}")
    else:
        _record(delivery, code=code)


def _record(delivery: Delivery, *, error: str = "", code: int | None = None, final: bool = False) -> None:
    now = timezone.now()
    changes: dict = {"response_code": code, "error": error[:2000], "claimed_until": None}
    delays = retry_delays()
    if not error:
        changes.update(status=DeliveryStatus.DELIVERED, finished_at=now, next_attempt_at=None)
    elif final or delivery.attempts > len(delays):
        changes.update(status=DeliveryStatus.FAILED, finished_at=now, next_attempt_at=None)
    else:
        changes.update(status=DeliveryStatus.PENDING,
                       next_attempt_at=now + timedelta(seconds=delays[delivery.attempts - 1]))
    Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(**changes)


def due_deliveries(*, now: datetime | None = None) -> list[int]:
    """Deliveries to attempt now: waiting ones whose time came, and those a worker took and never finished (sent
    again, unless that was their last attempt)."""
    now = now or timezone.now()
    stopped = Delivery.objects.filter(status=DeliveryStatus.SENDING, claimed_until__lt=now)
    stopped.filter(attempts__gt=len(retry_delays())).update(
        status=DeliveryStatus.FAILED, finished_at=now, next_attempt_at=None, claimed_until=None,
        error="the worker sending its last attempt stopped")
    stopped.update(status=DeliveryStatus.PENDING, next_attempt_at=now, claimed_until=None,
                   error="the worker sending it stopped; sent again")
    return list(Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
                .order_by("next_attempt_at").values_list("pk", flat=True)[:SWEEP_BATCH])


def prune(*, now: datetime | None = None) -> int:
    """Drop notifications (and their deliveries) older than CLOUDPANEL_NOTIFY_KEEP_DAYS; how many."""
    now = now or timezone.now()
    old = Notification.objects.filter(created_at__lt=now - timedelta(days=settings.CLOUDPANEL_NOTIFY_KEEP_DAYS))
    return old.delete()[1].get("notifications.Notification", 0)
