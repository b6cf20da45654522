"""Notifications: events from where they happen, the list, subscriptions, signed webhooks with retries, e-mail."""

import hashlib
import hmac
import json
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import transaction
from django.utils import timezone

from billing import invoicing
from billing.models import Invoice
from hosts import hypervisor
from hosts import services as host_services
from hosts.choices import HostState
from instances import services as instance_services
from instances.choices import ActionStatus, Cause, Operation, Status
from instances.models import InstanceAction
from notifications import delivery, services
from notifications.choices import DeliveryStatus, Kind
from notifications.models import Delivery, Notification, Subscription
from tenants.choices import Role
from tenants.models import Quota
from tests.conftest import token_client
from tests.factories import make_instance, make_tenant, make_user

pytestmark = pytest.mark.django_db
SENDING = pytest.mark.django_db(transaction=True)  # deliveries run as the notifying transaction commits


class Receiver:
    """A webhook receiver on loopback: answers `status` (after `delay` s), or redirects; keeps what it got."""

    def __init__(self, status: int = 200, delay: float = 0.0, location: str = ""):
        self.status, self.delay, self.location, self.got = status, delay, location, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append((dict(self.headers), body))
                time.sleep(outer.delay)
                self.send_response(outer.status)
                if outer.location:
                    self.send_header("Location", outer.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers(settings):
    settings.CLOUDPANEL_WEBHOOK_ALLOW = ["127.0.0.1"]
    made = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def webhook(tenant, url, **fields) -> Subscription:
    return services.create_subscription(user=None, tenant=tenant, name=fields.pop("name", "hook"),
                                        channel="webhook", url=url, kinds=fields.pop("kinds", []), **fields)


def sent(kind=Kind.ACTION_FAILED, tenant=None, title="web-1: Reboot failed") -> Notification:
    """A notification as a service sends it (its deliveries run as its transaction commits, in tests that commit)."""
    with transaction.atomic():
        return services.notify(kind=kind, tenant_id=tenant.pk if tenant else None, title=title, body="why",
                               link="/instances/1/", data={"instance": 1})


@SENDING
def test_a_tenants_event_reaches_its_subscriptions_and_the_platforms_signed(tenant, receivers):
    ours, platform, theirs = receivers(), receivers(), receivers()
    mine = webhook(tenant, ours.url)
    webhook(None, platform.url, name="ops")
    webhook(make_tenant(), theirs.url, name="not ours")
    webhook(tenant, ours.url, name="crashes only", kinds=[Kind.INSTANCE_CRASHED])
    Subscription.objects.create(tenant=tenant, name="off", channel="webhook", url=ours.url, enabled=False)
    # When one of the tenant's operations fails
    note = services.notify(kind=Kind.ACTION_FAILED, tenant_id=tenant.pk, title="web-1: Reboot failed",
                           body="the guest did not answer", link="/instances/7/", data={"instance": 7})
    # Then its subscription and the platform's got it once each, and no one else
    assert len(ours.got) == 1 and len(platform.got) == 1 and theirs.got == []
    headers, body = ours.got[0]
    payload = json.loads(body)
    assert payload["kind"] == "action.failed" and payload["tenant"] == tenant.name and payload["id"] == note.pk
    assert payload["link"].endswith("/instances/7/") and payload["data"] == {"instance": 7}
    assert headers["X-CloudPanel-Event"] == "action.failed" and headers["Content-Type"] == "application/json"
    # signed: HMAC-SHA256 with the subscription's secret over "<time>.<body>"
    stamp, digest = (part.split("=", 1)[1] for part in headers["X-CloudPanel-Signature"].split(","))
    assert abs(int(stamp) - time.time()) < 60
    assert hmac.compare_digest(digest, hmac.new(mine.secret.encode(), f"{stamp}.".encode() + body,
                                                hashlib.sha256).hexdigest())
    # and each delivery is in its subscription's log
    row = Delivery.objects.get(subscription=mine)
    assert (row.status, row.attempts, row.response_code, row.error) == (DeliveryStatus.DELIVERED, 1, 200, "")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://localhost:8000/", "http://[::1]/", "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.5/", "http://192.168.1.1/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "ftp://example.org/",
    "http://[fe80::1]/", "http://[::127.0.0.1]/", "http://[64:ff9b:1::a00:1]/", "http://[::ffff:0:7f00:1]/"])
def test_a_webhook_to_an_internal_address_is_refused_like_an_import(tenant, url):
    with pytest.raises(services.InvalidSubscription, match="refused"):
        webhook(tenant, url)
    assert not Subscription.objects.exists()


@SENDING
def test_a_receiver_answering_500_is_retried_with_back_off_then_given_up(tenant, receivers, settings):
    settings.CLOUDPANEL_NOTIFY_RETRY_SECONDS = [30, 120]
    failing = receivers(status=500)
    subscription = webhook(tenant, failing.url)
    with transaction.atomic():
        services.notify(kind=Kind.BACKUP_FAILED, tenant_id=tenant.pk, title="backup failed")
    row = Delivery.objects.get(subscription=subscription)
    assert (row.status, row.attempts, row.response_code) == (DeliveryStatus.PENDING, 1, 500)
    assert "answered 500" in row.error
    assert timedelta(seconds=25) < row.next_attempt_at - timezone.now() <= timedelta(seconds=30)
    # Not before its time; then again after 30 s and 120 s, and then no more
    assert delivery.due_deliveries() == []
    for attempts, later in ((2, 31), (3, 31 + 121)):
        due = delivery.due_deliveries(now=timezone.now() + timedelta(seconds=later))
        assert due == [row.pk]
        Delivery.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
        delivery.attempt(row.pk)
        assert Delivery.objects.get(pk=row.pk).attempts == attempts
    row.refresh_from_db()
    assert row.status == DeliveryStatus.FAILED and row.finished_at and len(failing.got) == 3
    assert delivery.due_deliveries(now=timezone.now() + timedelta(days=1)) == []


@SENDING
def test_a_receiver_that_hangs_costs_one_bounded_attempt_and_holds_no_one_else(tenant, receivers, settings):
    settings.CLOUDPANEL_WEBHOOK_TIMEOUT_SECONDS = 0.5
    hanging, quick = receivers(delay=30), receivers()
    slow = webhook(tenant, hanging.url, name="a slow one")
    fast = webhook(tenant, quick.url, name="a quick one")
    started = time.monotonic()
    with transaction.atomic():
        services.notify(kind=Kind.ACTION_FAILED, tenant_id=tenant.pk, title="x")
    assert time.monotonic() - started < 3
    hung = Delivery.objects.get(subscription=slow)
    assert hung.status == DeliveryStatus.PENDING and "did not answer within 0.5 s" in hung.error
    assert hung.response_code is None
    assert Delivery.objects.get(subscription=fast).status == DeliveryStatus.DELIVERED and len(quick.got) == 1


@SENDING
def test_a_redirect_is_not_followed(tenant, receivers):
    elsewhere = receivers()
    redirecting = receivers(status=302, location=elsewhere.url)
    subscription = webhook(tenant, redirecting.url)
    with transaction.atomic():
        services.notify(kind=Kind.ACTION_FAILED, tenant_id=tenant.pk, title="x")
    row = Delivery.objects.get(subscription=subscription)
    assert "redirects are not followed" in row.error and row.response_code == 302 and elsewhere.got == []


@SENDING
def test_an_address_that_turned_internal_is_refused_at_delivery_and_not_retried(tenant, receivers, settings):
    subscription = webhook(tenant, receivers().url)
    settings.CLOUDPANEL_WEBHOOK_ALLOW = []  # (as a name that resolves elsewhere now would be)
    with transaction.atomic():
        services.notify(kind=Kind.ACTION_FAILED, tenant_id=tenant.pk, title="x")
    row = Delivery.objects.get(subscription=subscription)
    assert row.status == DeliveryStatus.FAILED and row.error.startswith("refused:") and row.attempts == 1


@SENDING
def test_an_answer_that_is_not_http_a_name_that_does_not_resolve_and_a_disabled_subscription(tenant, receivers):
    # A receiver answering a status line that is no HTTP status: a failed attempt, retried, not a delivery stuck
    garbage = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=lambda: _answer(garbage.accept()[0], b"HTTP/1.1 99999 what\r\n\r\n"),
                     daemon=True).start()
    odd = webhook(tenant, f"http://127.0.0.1:{garbage.getsockname()[1]}/")
    unresolved = webhook(tenant, receivers().url, name="renamed")
    Subscription.objects.filter(pk=unresolved.pk).update(url="http://no-such-host.invalid/hook")
    off = webhook(tenant, receivers().url, name="off")
    services.set_enabled(subscription=off, enabled=False)
    note = Notification.objects.create(kind=Kind.ACTION_FAILED, tenant=tenant, title="x")
    rows = {s: Delivery.objects.create(subscription=s, notification=note, next_attempt_at=timezone.now())
            for s in (odd, unresolved, off)}
    for row in rows.values():
        delivery.attempt(row.pk)
    for row in rows.values():
        row.refresh_from_db()
    garbage.close()
    assert (rows[odd].status, rows[odd].error) == (DeliveryStatus.PENDING, "127.0.0.1 did not answer in HTTP")
    assert rows[unresolved].status == DeliveryStatus.PENDING and "cannot resolve" in rows[unresolved].error
    assert (rows[off].status, rows[off].error) == (DeliveryStatus.FAILED, "not sent: the subscription is disabled")


def _answer(connection, reply: bytes) -> None:
    connection.recv(65536)
    connection.sendall(reply)
    connection.close()


@SENDING
def test_a_delivery_whose_worker_died_or_was_never_queued_is_sent_by_the_sweep(tenant, receivers):
    receiver = receivers()
    subscription = webhook(tenant, receiver.url)
    note = Notification.objects.create(kind=Kind.ACTION_FAILED, tenant=tenant, title="x")
    never_queued = Delivery.objects.create(subscription=subscription, notification=note,
                                           next_attempt_at=timezone.now())
    other = Notification.objects.create(kind=Kind.ACTION_FAILED, tenant=tenant, title="y")
    died = Delivery.objects.create(subscription=subscription, notification=other, status=DeliveryStatus.SENDING,
                                   attempts=1, claimed_until=timezone.now() - timedelta(seconds=1))
    from notifications.tasks import send_due

    send_due()
    assert {d.status for d in Delivery.objects.filter(pk__in=[never_queued.pk, died.pk])} == {
        DeliveryStatus.DELIVERED}
    assert Delivery.objects.get(pk=died.pk).attempts == 2 and len(receiver.got) == 2


@SENDING
def test_an_email_subscription_gets_a_mail(tenant, mailoutbox):
    services.create_subscription(user=None, tenant=tenant, name="ops", channel="email", email="ops@example.org",
                                 kinds=[])
    with transaction.atomic():
        services.notify(kind=Kind.QUOTA_WARNING, tenant_id=tenant.pk, title="vCPUs quota 90 % used",
                        body="9 of 10 are in use.", link=f"/tenants/{tenant.pk}/")
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["ops@example.org"]
    assert mailoutbox[0].subject == "[CloudPanel] vCPUs quota 90 % used"
    assert "9 of 10 are in use." in mailoutbox[0].body and f"/tenants/{tenant.pk}/" in mailoutbox[0].body


def test_subscriptions_are_checked(tenant):
    with pytest.raises(services.InvalidSubscription, match="host.offline"):
        services.create_subscription(user=None, tenant=tenant, name="x", channel="email", email="a@example.org",
                                     kinds=[Kind.HOST_OFFLINE])
    with pytest.raises(services.InvalidSubscription, match="needs an address"):
        services.create_subscription(user=None, tenant=tenant, name="x", channel="email", kinds=[])
    with pytest.raises(services.InvalidSubscription, match="needs a URL"):
        services.create_subscription(user=None, tenant=tenant, name="x", channel="webhook", kinds=[])


# --- where events come from ----------------------------------------------------------------------------------


def kinds_of(tenant=None) -> list[str]:
    return list(Notification.objects.filter(tenant=tenant).order_by("pk").values_list("kind", flat=True))


def test_a_host_going_offline_and_back_is_told_to_the_platform(host, settings):
    host_services.record_failure(host_id=host.pk, error=hypervisor.HypervisorUnavailable("connection refused"))
    host_services.record_failure(host_id=host.pk, error=hypervisor.HypervisorUnavailable("connection refused"))
    host_services.record_seen(host_id=host.pk)
    host_services.record_seen(host_id=host.pk)
    assert kinds_of() == [Kind.HOST_OFFLINE, Kind.HOST_ONLINE]
    offline = Notification.objects.filter(kind=Kind.HOST_OFFLINE).get()
    assert offline.title == f"Host {host.name} is offline" and "connection refused" in offline.body
    # A host not heard from for too long
    type(host).objects.filter(pk=host.pk).update(last_seen_at=timezone.now() - timedelta(hours=1))
    host_services.lost_hosts()
    host_services.lost_hosts()
    assert kinds_of() == [Kind.HOST_OFFLINE, Kind.HOST_ONLINE, Kind.HOST_OFFLINE]
    assert type(host).objects.get(pk=host.pk).state == HostState.OFFLINE


def test_failed_operations_crashes_and_changes_outside_the_panel_are_told_to_the_tenant(host, tenant):
    instance = make_instance(tenant=tenant, host=host, status=Status.RUNNING)
    action = InstanceAction.objects.create(instance=instance, operation=Operation.REBOOT,
                                           status=ActionStatus.RUNNING)
    instance_services.fail_action(action.pk, error="the guest did not answer")
    backup = InstanceAction.objects.create(instance=instance, operation=Operation.BACKUP, status=ActionStatus.RUNNING)
    instance_services.fail_action(backup.pk, error="no space left")
    now = timezone.now()
    instance_services.record_status(instance_id=instance.pk, status=Status.CRASHED, cause=Cause.EVENT,
                                    observed_at=now + timedelta(seconds=1))
    instance_services.record_status(instance_id=instance.pk, status=Status.STOPPED, cause=Cause.RECONCILE,
                                    observed_at=now + timedelta(seconds=2))
    instance_services.record_status(instance_id=instance.pk, status=Status.UNKNOWN, cause=Cause.RECONCILE,
                                    observed_at=now + timedelta(seconds=3))
    # An operation in flight explains what its host says meanwhile: nothing is told of it
    type(instance).objects.filter(pk=instance.pk).update(task_state="starting")
    instance_services.record_status(instance_id=instance.pk, status=Status.RUNNING, cause=Cause.EVENT,
                                    observed_at=now + timedelta(seconds=4))
    assert kinds_of(tenant) == [Kind.ACTION_FAILED, Kind.BACKUP_FAILED, Kind.INSTANCE_CRASHED,
                                Kind.INSTANCE_CHANGED]
    changed = Notification.objects.get(kind=Kind.INSTANCE_CHANGED)
    assert changed.title == f"{instance.name} is stopped (was crashed)" and changed.link == f"/instances/{instance.pk}/"
    assert Notification.objects.get(kind=Kind.ACTION_FAILED).body == "the guest did not answer"


def test_an_issued_invoice_is_told_to_its_tenant(tenant):
    now = timezone.now()
    invoice = Invoice.objects.create(tenant=tenant, currency="EUR", period_start=now, period_end=now,
                                     tax_rate="0", total="12.34")
    invoicing.issue(invoice=invoice)
    told = Notification.objects.get(tenant=tenant)
    assert told.kind == Kind.INVOICE_ISSUED and "12.34 EUR" in told.title


def test_quota_crossings_are_told_once_each(host, tenant):
    Quota.objects.update_or_create(tenant=tenant, defaults={"instances": 10, "vcpus": None})
    for _ in range(9):
        make_instance(tenant=tenant, host=host)
    assert services.check_quotas() == 1 and services.check_quotas() == 0
    make_instance(tenant=tenant, host=host)
    assert services.check_quotas() == 1
    assert kinds_of(tenant) == [Kind.QUOTA_WARNING, Kind.QUOTA_REACHED]
    assert Notification.objects.filter(tenant=tenant).order_by("pk").last().title.endswith("Instances quota 100 % used")


# --- the API and the pages -----------------------------------------------------------------------------------


def test_the_list_is_scoped_and_counts_what_is_unread(host, tenant, member, member_api, admin_api):
    mine = sent(tenant=tenant, title="ours")
    theirs = sent(tenant=make_tenant(), title="theirs")
    sent(kind=Kind.HOST_OFFLINE, title="platform")
    assert [n["title"] for n in member_api.get("/api/v1/notifications/").json()["results"]] == ["ours"]
    assert member_api.get(f"/api/v1/notifications/{theirs.pk}/").status_code == 404
    assert member_api.get(f"/api/v1/notifications/{mine.pk}/").json()["kind"] == "action.failed"
    assert {n["title"] for n in admin_api.get("/api/v1/notifications/").json()["results"]} == {
        "ours", "theirs", "platform"}
    assert member_api.get("/api/v1/notifications/unread/").json()["count"] == 1
    assert member_api.post("/api/v1/notifications/read/").json()["count"] == 0
    assert member_api.get("/api/v1/notifications/unread/").json()["count"] == 0
    assert admin_api.get("/api/v1/notifications/unread/").json()["count"] == 3


def test_subscriptions_are_managed_by_the_tenants_admins_and_platform_admins(tenant, member_api, admin_api, settings):
    settings.CLOUDPANEL_WEBHOOK_ALLOW = ["127.0.0.1"]
    boss = token_client(make_user(tenant=tenant, role=Role.ADMIN), tenant)
    body = {"name": "ops", "channel": "webhook", "url": "http://127.0.0.1:9/hook", "kinds": ["action.failed"]}
    assert member_api.post("/api/v1/subscriptions/", body, format="json").status_code == 403
    made = boss.post("/api/v1/subscriptions/", body, format="json")
    assert made.status_code == 201 and made.json()["tenant"] == tenant.pk and len(made.json()["secret"]) == 64
    pk = made.json()["id"]
    # a member sees none of them (their secrets are in them), another tenant's admin not this one
    assert member_api.get("/api/v1/subscriptions/").json()["results"] == []
    other = make_tenant()
    stranger = token_client(make_user(tenant=other, role=Role.ADMIN), other)
    assert stranger.get(f"/api/v1/subscriptions/{pk}/").status_code == 404
    assert stranger.delete(f"/api/v1/subscriptions/{pk}/").status_code == 404
    assert boss.post("/api/v1/subscriptions/", {**body, "tenant": other.pk}, format="json").status_code == 404
    # a tenant's admin can't subscribe to the platform or its host events
    assert boss.post("/api/v1/subscriptions/", {**body, "kinds": ["host.offline"]},
                     format="json").json()["detail"].startswith("host.offline")
    assert admin_api.post("/api/v1/subscriptions/", {**body, "kinds": ["host.offline"]}, format="json").json()[
        "tenant"] is None
    refused = boss.post("/api/v1/subscriptions/", {**body, "url": "http://169.254.169.254/"}, format="json")
    assert refused.status_code == 400 and "internal address" in refused.json()["detail"]
    assert boss.post("/api/v1/subscriptions/", {**body, "kinds": ["nonsense"]}, format="json").status_code == 400
    # changed and read back with its log; deleted
    assert boss.patch(f"/api/v1/subscriptions/{pk}/", {"enabled": False}, format="json").json()["enabled"] is False
    assert boss.get(f"/api/v1/subscriptions/{pk}/deliveries/").json()["results"] == []
    assert boss.delete(f"/api/v1/subscriptions/{pk}/").status_code == 204


def test_the_pages_list_notifications_and_make_subscriptions(tenant, member, admin_user, client, settings):
    sent(tenant=tenant, title="web-1: Reboot failed")
    client.force_login(member)
    page = client.get("/notifications/").content.decode()
    assert "web-1: Reboot failed" in page and "data-unread-row" in page
    client.post("/notifications/")
    assert "data-unread-row" not in client.get("/notifications/").content.decode()
    assert 'id="subscription-form"' not in client.get("/notifications/subscriptions/").content.decode()
    assert client.post("/notifications/subscriptions/", {"name": "x", "channel": "email",
                                                          "email": "a@example.org"}).status_code == 403
    client.force_login(admin_user)
    answer = client.post("/notifications/subscriptions/", {"name": "ops mail", "channel": "email",
                                                            "email": "ops@example.org", "kinds": ["host.offline"]})
    subscription = Subscription.objects.get(name="ops mail")
    assert answer.status_code == 302 and subscription.tenant is None and subscription.kinds == ["host.offline"]
    refused = client.post("/notifications/subscriptions/", {"name": "bad", "channel": "webhook",
                                                             "url": "http://10.1.1.1/"})
    assert refused.status_code == 200 and "internal address" in refused.content.decode()
    assert "ops@example.org" in client.get(f"/notifications/subscriptions/{subscription.pk}/").content.decode()
    client.post(f"/notifications/subscriptions/{subscription.pk}/disable/")
    assert not Subscription.objects.get(pk=subscription.pk).enabled
    client.post(f"/notifications/subscriptions/{subscription.pk}/delete/")
    assert not Subscription.objects.exists()


@SENDING
def test_every_page_of_those_who_may_read_it_hears_of_a_new_notification(host, tenant, member, admin_user):
    from asgiref.sync import async_to_sync
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from cloudpanel.asgi import application

    instance = make_instance(tenant=tenant, host=host)
    stranger = make_user(tenant=make_tenant())
    headers = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]

    @async_to_sync
    async def scenario():
        sockets = []
        for path, user in ((f"/ws/instances/{instance.pk}/status/", member), ("/ws/status/", admin_user),
                           ("/ws/status/", stranger)):
            socket_ = WebsocketCommunicator(application, path, headers=headers)
            socket_.scope["user"] = user
            assert (await socket_.connect())[0]
            sockets.append(socket_)
        await database_sync_to_async(sent)(tenant=tenant, title="web-1: Reboot failed")
        heard = [await s.receive_json_from(timeout=5) for s in sockets[:2]]
        assert await sockets[2].receive_nothing(timeout=0.5)
        for s in sockets:
            await s.disconnect()
        return heard

    for event in scenario():
        assert event["type"] == "notification" and event["title"] == "web-1: Reboot failed"


def test_notifications_are_kept_90_days_with_their_deliveries(tenant):
    subscription = services.create_subscription(user=None, tenant=tenant, name="ops", channel="email",
                                                email="ops@example.org", kinds=[])
    old = Notification.objects.create(kind=Kind.ACTION_FAILED, tenant=tenant, title="old",
                                      created_at=timezone.now() - timedelta(days=91))
    Delivery.objects.create(subscription=subscription, notification=old, status=DeliveryStatus.DELIVERED)
    Notification.objects.create(kind=Kind.ACTION_FAILED, tenant=tenant, title="recent",
                                created_at=timezone.now() - timedelta(days=89))
    assert delivery.prune() == 1
    assert list(Notification.objects.values_list("title", flat=True)) == ["recent"]
    assert not Delivery.objects.exists()
