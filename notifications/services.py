"""Telling people: notify() records an event and queues its deliveries; subscriptions; the read marker; quotas.

notify() runs inside the caller's transaction, so an event is told only if the change it tells of commits, and
it never fails the caller: a delivery whose first attempt could not be queued is sent by the periodic sweep
(send_due), like every retry.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from cloudpanel import outbound
from cloudpanel.events import notification_group, publish
from cloudpanel.exceptions import DomainError
from cloudpanel.scoping import Scope
from notifications import tasks
from notifications.choices import PLATFORM_KINDS, TENANT_KINDS, Channel, Kind
from notifications.models import Delivery, Inbox, Notification, QuotaLevel, Subscription
from notifications.sending import allowlist
from tenants import quotas
from tenants.models import Tenant

log = logging.getLogger(__name__)


class InvalidSubscription(DomainError):
    """The subscription can't be kept as asked; the message says why."""


def notify(*, kind: Kind, tenant_id: int | None = None, title: str, body: str = "", link: str = "",
           data: dict | None = None) -> Notification | None:
    """Record an event (a tenant's, or the platform's with no tenant) and queue it to every subscription that
    hears of it; its pages hear of it once the caller's transaction commits. Never fails the caller: what could
    not be recorded is logged (and None returned)."""
    try:
        with transaction.atomic():  # (a savepoint: the caller's own writes stay whatever happens here)
            notification = Notification.objects.create(kind=kind, tenant_id=tenant_id, title=title[:300],
                                                       body=body, link=link[:300], data=data or {})
            listeners = Subscription.objects.filter(enabled=True).filter(
                Q(tenant__isnull=True) | Q(tenant_id=tenant_id) if tenant_id else Q(tenant__isnull=True))
            now = timezone.now()
            deliveries = Delivery.objects.bulk_create([
                Delivery(subscription=subscription, notification=notification, next_attempt_at=now)
                for subscription in listeners if subscription.hears(kind)])
    except DatabaseError:
        log.exception("the notification %r could not be recorded", title)
        return None
    ids = [delivery.pk for delivery in deliveries]
    event = {"type": "notification", "id": notification.pk, "kind": kind, "title": notification.title}
    groups = [notification_group(tenant_id), notification_group(None)] if tenant_id else [notification_group(None)]

    def committed() -> None:
        publish(groups, event)
        for delivery_id in ids:
            try:  # (not retried here: the sweep sends what could not be queued)
                tasks.deliver.apply_async((delivery_id,), retry=False)
            except Exception as exc:
                log.warning("delivery %s not queued (%s): the next sweep sends it", delivery_id, exc)
                return

    transaction.on_commit(committed)
    return notification


# --- subscriptions ---------------------------------------------------------------------------------------------


def _checked(*, tenant: Tenant | None, channel: str, kinds: list[str], email: str, url: str) -> dict:
    allowed = TENANT_KINDS if tenant is not None else PLATFORM_KINDS | TENANT_KINDS
    unknown = sorted(set(kinds) - allowed)
    if unknown:
        raise InvalidSubscription(f"{', '.join(unknown)}: not an event a "
                                  f"{'tenant' if tenant else 'platform'} subscription hears of")
    if channel == Channel.EMAIL:
        if not email:
            raise InvalidSubscription("an e-mail subscription needs an address")
        return {"email": email, "url": ""}
    if not url:
        raise InvalidSubscription("a webhook needs a URL")
    try:
        outbound.check(url, allow=allowlist())
    except outbound.UnsafeURL as exc:
        raise InvalidSubscription(f"the webhook URL is refused: {exc}") from None
    except ValueError as exc:
        raise InvalidSubscription(f"CLOUDPANEL_WEBHOOK_ALLOW is not valid ({exc}): ask a platform admin") from None
    return {"email": "", "url": url}


def create_subscription(*, user, tenant: Tenant | None, name: str, channel: str, kinds: list[str], email: str = "",
                        url: str = "", enabled: bool = True) -> Subscription:
    """A new subscription (a webhook gets a signing secret of its own)."""
    fields = _checked(tenant=tenant, channel=channel, kinds=kinds, email=email, url=url)
    return Subscription.objects.create(tenant=tenant, name=name, channel=channel, kinds=sorted(set(kinds)),
                                       secret=Subscription.new_secret() if channel == Channel.WEBHOOK else "",
                                       enabled=enabled, created_by=user, **fields)


def set_enabled(*, subscription: Subscription, enabled: bool) -> None:
    """Turn a subscription on or off (off: what waits to be sent to it is not sent)."""
    Subscription.objects.filter(pk=subscription.pk).update(enabled=enabled)


def update_subscription(*, subscription: Subscription, name: str, kinds: list[str], enabled: bool,
                        email: str = "", url: str = "") -> Subscription:
    fields = _checked(tenant=subscription.tenant, channel=subscription.channel, kinds=kinds, email=email, url=url)
    Subscription.objects.filter(pk=subscription.pk).update(name=name, kinds=sorted(set(kinds)), enabled=enabled,
                                                           **fields)
    subscription.refresh_from_db()
    return subscription


# --- the list in the panel -------------------------------------------------------------------------------------


def read_until(user) -> datetime:
    inbox = Inbox.objects.filter(user=user).values_list("read_until", flat=True).first()
    return inbox or user.date_joined


def unread_count(scope: Scope) -> int:
    return Notification.objects.in_scope(scope).filter(created_at__gt=read_until(scope.user)).count()


def mark_read(*, user, until: datetime | None = None) -> None:
    """Everything up to now (or `until`) is read."""
    Inbox.objects.update_or_create(user=user, defaults={"read_until": until or timezone.now()})


# --- quotas ------------------------------------------------------------------------------------------------------


def check_quotas() -> int:
    """Tell each tenant whose use of a limited resource crossed 90 % or 100 % of its quota since the last check,
    once per crossing (falling back below makes the next crossing told again). Returns how many were told."""
    tenants = list(Tenant.objects.all())
    limits, used = quotas.quotas_of(tenants), quotas.usage_of([t.pk for t in tenants])
    known = {(row.tenant_id, row.resource): row for row in QuotaLevel.objects.all()}
    told = 0
    for tenant in tenants:
        for line in quotas.lines(limits[tenant.pk], used[tenant.pk]):
            if not line.limit:  # (unlimited, or none allowed at all: nothing fills up)
                continue
            level = 100 if line.percent >= 100 else 90 if line.percent >= 90 else 0
            row = known.get((tenant.pk, line.resource.key))
            before = row.level if row is not None else 0
            if level == before:
                continue
            with transaction.atomic():
                QuotaLevel.objects.update_or_create(tenant=tenant, resource=line.resource.key,
                                                    defaults={"level": level})
                if level > before:
                    unit = f" {line.resource.unit}" if line.resource.unit else ""
                    notify(kind=Kind.QUOTA_REACHED if level == 100 else Kind.QUOTA_WARNING, tenant_id=tenant.pk,
                           title=f"{tenant.name}: {line.resource.label} quota {line.percent} % used",
                           body=f"{line.shown}{unit} of {line.limit}{unit} are in use.",
                           link=f"/tenants/{tenant.pk}/",
                           data={"resource": line.resource.key, "used": line.shown, "limit": line.limit})
                    told += 1
    return told
