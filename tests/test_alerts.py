"""Alert rules: made and checked, evaluated over raw samples, told when they fire and when they resolve."""

from datetime import UTC, datetime, timedelta

import pytest

from cloudpanel.exceptions import NotFound
from cloudpanel.scoping import Scope
from instances.choices import Status
from metrics import alerts
from metrics.choices import Resolution
from metrics.models import AlertRule, AlertState, HostSample, InstanceSample
from notifications.choices import Kind
from notifications.models import Notification
from tenants.choices import Role
from tests.conftest import token_client
from tests.factories import make_instance, make_tenant, make_user

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def admin_scope(user=None) -> Scope:
    return Scope(user=user, admin=True, tenant=None)


def samples(instance, values, *, end=NOW, step=10):
    """Raw samples of CPU % ending at `end`, one every `step` seconds (the last value newest)."""
    InstanceSample.objects.bulk_create([
        InstanceSample(instance_id=instance.pk, resolution=Resolution.RAW, tenant_id=instance.tenant_id,
                       time=end - timedelta(seconds=step * (len(values) - 1 - i)), cpu=value,
                       memory_used=100, memory_total=1000) for i, value in enumerate(values)])


def rule_for(tenant, **fields) -> AlertRule:
    values = {"name": "busy", "target": "instance", "measure": "cpu", "comparison": "above", "threshold": 90,
              "seconds": 600}
    values.update(fields)
    return alerts.create_rule(scope=admin_scope(), user=None, tenant=tenant, **values)


def told(kind) -> list[Notification]:
    return list(Notification.objects.filter(kind=kind).order_by("pk"))


def test_cpu_above_90_for_10_minutes_fires_once_and_resolves(host, tenant):
    busy = make_instance(tenant=tenant, host=host, status=Status.RUNNING, name="busy-1")
    calm = make_instance(tenant=tenant, host=host, status=Status.RUNNING, name="calm-1")
    rule = rule_for(tenant)
    # Nine minutes of 95 %: not yet
    samples(busy, [95.0] * 55)
    samples(calm, [95.0] * 30 + [50.0] + [95.0] * 30)  # one sample under: it does not hold
    assert alerts.evaluate(now=NOW) == (0, 0)
    # Ten minutes and more: fires, for the busy one only, once
    samples(busy, [95.0] * 10, end=NOW + timedelta(seconds=100))
    later = NOW + timedelta(seconds=100)
    assert alerts.evaluate(now=later) == (1, 0)
    samples(busy, [97.0], end=later + timedelta(seconds=5))
    assert alerts.evaluate(now=later + timedelta(seconds=5)) == (0, 0)
    assert AlertState.objects.get(rule=rule).value == 97.0  # (what it is now, while it fires)
    (firing,) = told(Kind.ALERT_FIRING)
    assert firing.tenant == tenant and firing.title == "busy: instance busy-1: CPU above 90 % for 10 min"
    assert firing.link == f"/instances/{busy.pk}/" and "now 95.0" in firing.body
    assert AlertState.objects.get(rule=rule).object_id == busy.pk
    # The newest sample under the threshold: resolved, told once
    samples(busy, [40.0], end=later + timedelta(seconds=10))
    assert alerts.evaluate(now=later + timedelta(seconds=10)) == (0, 1)
    (resolved,) = told(Kind.ALERT_RESOLVED)
    assert resolved.title == "busy resolved: instance busy-1" and not AlertState.objects.exists()


def test_an_instance_sampled_no_more_resolves_its_alert(host, tenant):
    busy = make_instance(tenant=tenant, host=host, status=Status.RUNNING)
    rule_for(tenant, seconds=60)
    samples(busy, [99.0] * 7)
    assert alerts.evaluate(now=NOW) == (1, 0)
    # stopped: no samples in the window any more
    assert alerts.evaluate(now=NOW + timedelta(minutes=5)) == (0, 1)
    assert "no longer sampled" in told(Kind.ALERT_RESOLVED)[0].body


def test_a_tenants_rule_watches_its_own_instances_and_a_platform_rule_hosts(host, tenant):
    theirs = make_instance(tenant=make_tenant(), host=host, status=Status.RUNNING)
    rule_for(tenant, seconds=60)
    samples(theirs, [99.0] * 7)
    assert alerts.evaluate(now=NOW) == (0, 0)
    # A platform rule on hosts' memory below... and above
    HostSample.objects.bulk_create([HostSample(host_id=host.pk, resolution=Resolution.RAW, cpu=5.0,
                                               time=NOW - timedelta(seconds=10 * i), memory_used=950,
                                               memory_total=1000, running=1, vcpus=1) for i in range(8)])
    rule_for(None, name="host memory", target="host", measure="memory", threshold=90, seconds=60)
    assert alerts.evaluate(now=NOW) == (1, 0)
    (firing,) = told(Kind.ALERT_FIRING)
    assert firing.tenant is None and firing.title == f"host memory: host {host.name}: memory above 90 % for 1 min"


@pytest.mark.parametrize(("fields", "error"), [
    ({"target": "host"}, "hosts are watched by platform rules"),
    ({"measure": "pool"}, "storage pool use is a host's measure"),
    ({"threshold": 150}, "from 0 to 100"),
    ({"seconds": 30}, "a minute to 6 hours"),
    ({"seconds": 7 * 3600}, "a minute to 6 hours"),
    ({"target": "host", "measure": "disk", "tenant": None}, "an instance's measures"),
])
def test_rules_are_checked(tenant, fields, error):
    with pytest.raises(alerts.InvalidRule, match=error):
        rule_for(fields.pop("tenant", tenant), **fields)


def test_a_rule_names_only_an_instance_of_its_tenant(host, tenant):
    other = make_instance(tenant=make_tenant(), host=host)
    with pytest.raises(NotFound):
        rule_for(tenant, instance_id=other.pk)
    mine = make_instance(tenant=tenant, host=host)
    assert rule_for(tenant, instance_id=mine.pk).instance == mine


def test_the_api_lets_tenant_admins_make_rules_and_members_read_them(host, tenant, member_api, admin_api):
    boss = token_client(make_user(tenant=tenant, role=Role.ADMIN), tenant)
    body = {"name": "busy", "measure": "cpu", "threshold": 90, "seconds": 600}
    assert member_api.post("/api/v1/alert-rules/", body, format="json").status_code == 403
    made = boss.post("/api/v1/alert-rules/", body, format="json")
    assert made.status_code == 201 and made.json()["condition"] == "CPU above 90 % for 10 min"
    rule_id = made.json()["id"]
    assert [r["id"] for r in member_api.get("/api/v1/alert-rules/").json()["results"]] == [rule_id]
    assert member_api.patch(f"/api/v1/alert-rules/{rule_id}/", {"enabled": False}, format="json").status_code == 403
    assert boss.patch(f"/api/v1/alert-rules/{rule_id}/", {"enabled": False}, format="json").json()["enabled"] is False
    refused = boss.post("/api/v1/alert-rules/", {**body, "target": "host"}, format="json")
    assert refused.status_code == 400 and "platform rules" in refused.json()["detail"]
    assert boss.post("/api/v1/alert-rules/", {**body, "seconds": 5}, format="json").status_code == 400
    other = make_tenant()
    assert boss.post("/api/v1/alert-rules/", {**body, "tenant": other.pk}, format="json").status_code == 404
    # platform rules are platform admins'
    assert boss.post("/api/v1/alert-rules/", {**body, "tenant": None}, format="json").status_code == 201  # (its own)
    platform = admin_api.post("/api/v1/alert-rules/", {**body, "target": "host", "host": host.pk}, format="json")
    assert platform.status_code == 201 and platform.json()["tenant"] is None
    assert member_api.get(f"/api/v1/alert-rules/{platform.json()['id']}/").status_code == 404
    assert boss.delete(f"/api/v1/alert-rules/{rule_id}/").status_code == 204


def test_the_page_makes_and_lists_rules(host, tenant, member, client):
    boss = make_user(tenant=tenant, role=Role.ADMIN)
    make_instance(tenant=tenant, host=host, name="web-1")
    client.force_login(member)
    assert 'id="alert-form"' not in client.get("/alerts/").content.decode()
    assert client.post("/alerts/", {"name": "x"}).status_code == 403
    client.force_login(boss)
    answer = client.post("/alerts/", {"name": "busy", "tenant": tenant.pk, "measure": "cpu", "comparison": "above",
                                      "threshold": "90", "minutes": "10"})
    assert answer.status_code == 302
    rule = AlertRule.objects.get(name="busy")
    page = client.get("/alerts/").content.decode()
    assert "CPU above 90 % for 10 min" in page and tenant.name in page
    refused = client.post("/alerts/", {"name": "bad", "tenant": tenant.pk, "measure": "pool", "comparison": "above",
                                       "threshold": "90", "minutes": "10"})
    assert refused.status_code == 200 and "a host&#x27;s measure" in refused.content.decode()
    client.post(f"/alerts/{rule.pk}/disable/")
    assert not AlertRule.objects.get(pk=rule.pk).enabled
    client.post(f"/alerts/{rule.pk}/delete/")
    assert not AlertRule.objects.exists()


def test_a_tenant_has_at_most_100_rules(tenant):
    AlertRule.objects.bulk_create([AlertRule(tenant=tenant, name=f"r{n}", measure="cpu", threshold=90, seconds=60)
                                   for n in range(alerts.MAX_RULES)])
    with pytest.raises(alerts.InvalidRule, match="at most 100 alert rules"):
        rule_for(tenant)
    assert rule_for(make_tenant()).name == "busy"  # (another tenant's own hundred)
