"""Dry runs: a create, resize, migration or drain shows its plan (host and why, definition, quota, price) and
creates, changes and holds nothing."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import services as billing_services
from hosts.models import Host
from instances.models import Instance, InstanceAction
from networks import services as network_services
from networks.models import Allocation, Port
from tenants.models import AuditEvent, Quota
from tests.conftest import token_client
from tests.factories import make_boot_kernel, make_host, make_instance, make_tenant, make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hosts(db):
    """Two test-driver hosts: one with room for a single 3 GiB instance, one with less."""
    return (make_host(name="roomy", memory_mib=4096, cpus=4),
            make_host(uri="test+unix:///default", name="tight", memory_mib=2048, cpus=2))


def _priced(tenant):
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    plan = billing_services.create_plan(
        name=f"plan-{tenant.pk}", currency="EUR", effective_from=hour - timedelta(days=40),
        vcpu_hour="0.01", ram_gib_hour="0.005", disk_gib_month="0.10", snapshot_gib_month="0.05",
        volume_gib_month="0.08", backup_gib_month="0.03", licence_hour="0", address_hour="0.002")
    billing_services.set_tenant_billing(tenant=tenant, plan=plan, tax_rate="0.2")


def _hours_this_month() -> Decimal:
    now = timezone.now()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return Decimal(int((end - start).total_seconds()) // 3600)


def _rows():
    return (Instance.objects.count(), InstanceAction.objects.count(), Port.objects.count(),
            Allocation.objects.count())


def test_a_create_plan_names_the_host_and_why_the_definition_quota_and_price_and_holds_nothing(hosts, tenant):
    roomy, _tight = hosts
    member = make_user(tenant=tenant, role="admin")
    _priced(tenant)
    Quota.objects.update_or_create(tenant=tenant, defaults={"instances": 1, "memory_mib": 3072})
    network = network_services.create_network(tenant=None, name="public", kind="nat", cidr="10.77.0.0/24", user=None)
    kernel = make_boot_kernel(*hosts)
    api = token_client(member, tenant)
    body = {"name": "web", "vcpus": 2, "memory_mib": 3072, "disk_gib": 4, "boot_kernel": kernel.pk,
            "networks": [{"network": network.pk}]}
    before, audited = _rows(), AuditEvent.objects.count()
    for _ in range(25):  # many plans hold nothing: the one real create after them still fits everything
        answer = api.post("/api/v1/instances/?dry_run=1", body, format="json")
        assert answer.status_code == 200, answer.content
    assert _rows() == before and AuditEvent.objects.count() == audited
    plan = answer.json()
    assert (plan["operation"], plan["instance"], plan["host"]) == ("create", "web", "roomy")
    # (other hosts, and the host's paths, pools and uid ranges, are the platform's business)
    assert (plan["placement"], plan["definition"], plan["diff"]) == (None, "", "")
    admin = token_client(make_user(staff=True))
    as_admin = admin.post("/api/v1/instances/", {**body, "tenant": tenant.pk, "dry_run": True}, format="json")
    assert as_admin.status_code == 200 and _rows() == before  # (in the body too)
    verdicts = {v["host"]: v for v in as_admin.json()["placement"]["hosts"]}
    assert verdicts["roomy"]["kept"]
    assert verdicts["tight"]["reason"] == "3072 MiB of RAM exceed host 'tight' (2048 MiB)"
    definition = as_admin.json()["definition"]
    assert "<vcpu>2</vcpu>" in definition and '<memory unit="MiB">3072</memory>' in definition
    # its disk: a volume of the host's pool (whose path this host's probe did not read: named by the pool)
    assert "[pool default-pool]/cp-" in definition
    assert '<source network="' in definition and as_admin.json()["diff"] == ""
    quota = {q["resource"]: q for q in plan["quota"]}
    assert (quota["instances"]["used"], quota["instances"]["after"], quota["instances"]["limit"]) == ("0", "1", 1)
    assert (quota["memory_mib"]["after"], quota["public_addresses"]["after"]) == ("3072", "1")
    hours = _hours_this_month()
    expected = (2 * Decimal("0.01") + 3 * Decimal("0.005") + Decimal("0.002")) * hours + 4 * Decimal("0.10")
    assert plan["price"] == {"currency": "EUR", "per_month": str(expected.quantize(Decimal("0.01"))),
                             "before": None}
    created = api.post("/api/v1/instances/", body, format="json")
    assert created.status_code == 202, created.content
    assert Instance.objects.get(pk=created.json()["instance"]).host == roomy
    # the next plan is refused as the real create would be: over quota, with the reason
    audited = AuditEvent.objects.count()
    refused = api.post("/api/v1/instances/?dry_run=1", {**body, "name": "web-2"}, format="json")
    assert refused.status_code == 409 and "quota" in refused.json()["detail"].lower()
    assert AuditEvent.objects.count() == audited + 1  # (a refusal is kept, plan or not)


def test_a_dry_run_flag_that_is_not_yes_or_no_is_refused(hosts, tenant, member):
    api = token_client(member, tenant)
    answer = api.post("/api/v1/instances/?dry_run=maybe", {"name": "x"}, format="json")
    assert answer.status_code == 400 and "dry_run" in answer.json()


def test_a_resize_plan_shows_the_definition_diff_quota_and_both_prices_and_changes_nothing(hosts, tenant):
    roomy, _tight = hosts
    member = make_user(tenant=tenant, role="admin")
    _priced(tenant)
    instance = make_instance(tenant=tenant, host=roomy, vcpus=1, memory_mib=1024, disk_gib=2, boot_source="kernel",
                             boot_kernel=make_boot_kernel(roomy))
    api = token_client(member, tenant)
    answer = api.post(f"/api/v1/instances/{instance.pk}/resize/?dry_run=1", {"vcpus": 2, "memory_mib": 2048},
                      format="json")
    assert answer.status_code == 200, answer.content
    plan = answer.json()
    assert plan["diff"] == ""  # (a platform admin's to see)
    admin = token_client(make_user(staff=True))
    diff = admin.post(f"/api/v1/instances/{instance.pk}/resize/?dry_run=1", {"vcpus": 2, "memory_mib": 2048},
                      format="json").json()["diff"]
    assert "-  <vcpu>1</vcpu>" in diff and "+  <vcpu>2</vcpu>" in diff
    assert plan["changes"][:2] == ["vCPUs: 1 → 2", "RAM (MiB): 1024 → 2048"]
    assert {q["resource"]: (q["used"], q["after"]) for q in plan["quota"]} == {
        "vcpus": ("1", "2"), "memory_mib": ("1024", "2048")}
    hours = _hours_this_month()
    assert Decimal(plan["price"]["before"]) == ((Decimal("0.01") + Decimal("0.005")) * hours
                                                + 2 * Decimal("0.10")).quantize(Decimal("0.01"))
    assert Decimal(plan["price"]["per_month"]) > Decimal(plan["price"]["before"])
    instance.refresh_from_db()
    assert (instance.vcpus, instance.memory_mib, instance.task_state, instance.sizes.count()) == (1, 1024, None, 0)
    assert not instance.actions.exists()
    # refused as the resize itself would be, with its reason
    grown = api.post(f"/api/v1/instances/{instance.pk}/resize/?dry_run=1", {"memory_mib": 8192}, format="json")
    assert grown.status_code == 409 and "MiB of RAM exceed host 'roomy'" in grown.json()["detail"]
    # another tenant's instance is no such thing, dry run or not
    stranger = token_client(make_user(tenant=make_tenant(), role="admin"))
    assert stranger.post(f"/api/v1/instances/{instance.pk}/resize/?dry_run=1", {"vcpus": 2},
                         format="json").status_code == 404


def test_migration_and_drain_plans_show_where_each_goes_and_change_nothing(tenant, admin_user):
    source = make_host(uri="qemu+tcp://192.0.2.1/system", name="qa", storage_pool="default",
                       pools=[{"name": "default", "path": "/srv/qa-images"}])
    make_host(uri="qemu+tcp://192.0.2.2/system", name="qb", storage_pool="default",
                       pools=[{"name": "default", "path": "/srv/qb-images"}])
    make_host(uri="lxc+tcp://192.0.2.3/", name="qc")
    instance = make_instance(tenant=tenant, host=source, disk_gib=2, boot_source="kernel", memory_mib=512,
                             boot_kernel=make_boot_kernel())
    api = token_client(admin_user)
    answer = api.post(f"/api/v1/instances/{instance.pk}/migrate/?dry_run=1", {}, format="json")
    assert answer.status_code == 200, answer.content
    plan = answer.json()
    assert (plan["operation"], plan["host"]) == ("migrate", "qb")
    assert "-      <source file=\"/srv/qa-images/cp-" in plan["diff"]
    assert "+      <source file=\"/srv/qb-images/cp-" in plan["diff"]
    assert "+    <kernel>/srv/qb-images/cloudpanel-image-" in plan["diff"]  # the boot kernel's copy to be made there
    assert plan["changes"] == ["cold migration from qa to qb: its disks and snapshots are copied, then it is "
                               "defined there"]
    assert plan["quota"] == []
    instance.refresh_from_db()
    assert (instance.host, instance.task_state, instance.placement) == (source, None, None)
    assert not instance.actions.exists()
    member = token_client(make_user(tenant=tenant, role="admin"), tenant)
    assert member.post(f"/api/v1/instances/{instance.pk}/migrate/?dry_run=1", {},
                       format="json").status_code == 403
    # the drain: each instance with the host it would go to, every other host with its verdict
    drain = api.post(f"/api/v1/hosts/{source.pk}/maintenance/?dry_run=1", {"enter": True}, format="json")
    assert drain.status_code == 200, drain.content
    (step,) = drain.json()
    assert (step["instance_name"], step["action"], step["target_host_name"]) == (instance.name, "migrate cold", "qb")
    assert [v["host"] for v in step["placement"]["hosts"]] == ["qb"]
    assert not Host.objects.get(pk=source.pk).maintenance and not instance.actions.exists()


def test_the_pages_preview_a_create_and_a_resize_then_do_it_as_shown(hosts, tenant, client):
    roomy, _tight = hosts
    member = make_user(tenant=tenant, role="admin")
    kernel = make_boot_kernel(*hosts)
    client.force_login(member)
    form = {"name": "paged", "tenant": tenant.pk, "vcpus": 1, "memory_mib": 256, "disk_gib": 1,
            "boot_source": "kernel", "boot_kernel": kernel.pk, "leave_stopped": "on"}
    before = _rows()
    shown = client.post("/instances/new/", {**form, "dry_run": "1"})
    assert shown.status_code == 200 and _rows() == before
    page = shown.content.decode()
    assert 'id="plan"' in page and 'id="plan-host">roomy<' in page
    assert 'value="paged"' in page  # the form keeps what was typed, to create it next
    assert "Score (MiB of RAM left)" not in page and 'id="plan-definition"' not in page  # (platform admins')
    # a refused plan is the form's error, as the create's would be
    refused = client.post("/instances/new/", {**form, "memory_mib": 9000, "dry_run": "1"})
    assert refused.status_code == 200 and "no host can take it" in refused.content.decode() and _rows() == before
    assert client.post("/instances/new/", form).status_code == 302
    instance = Instance.objects.get(name="paged")
    assert (instance.status, instance.task_state) == ("stopped", None)
    previewed = client.post(f"/instances/{instance.pk}/resize/", {"vcpus": 2, "memory_mib": 512, "disk_gib": 1,
                                                                  "dry_run": "1"})
    assert previewed.status_code == 200
    page = previewed.content.decode()
    assert "Resize now" in page and "Quota" in page
    assert '<input type="hidden" name="vcpus" value="2">' in page
    instance.refresh_from_db()
    assert (instance.vcpus, instance.memory_mib, instance.task_state) == (1, 256, None)
    assert client.post(f"/instances/{instance.pk}/resize/", {"vcpus": 2, "memory_mib": 512,
                                                             "disk_gib": 1}).status_code == 302
    instance.refresh_from_db()
    assert (instance.vcpus, instance.memory_mib) == (2, 512)


@pytest.mark.browser
def test_an_admin_previews_a_create_and_a_resize_in_the_browser_then_does_them(hosts, tenant, panel):
    from playwright.sync_api import expect, sync_playwright

    from tests.test_browser import CHROMIUM_ARGS, SCREENSHOTS, sign_in

    roomy, tight = hosts
    kernel = make_boot_kernel(*hosts)
    admin = make_user(staff=True, password="s3cret-pass")
    dead = make_host(uri="test:///dead", name="dead", state="offline", enabled=False)
    make_instance(tenant=tenant, host=dead, status="unknown", name="stranded", boot_kernel=kernel,
                  boot_source="kernel")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = sign_in(browser.new_context(viewport={"width": 1280, "height": 1000}), panel.url, admin.username)
        page.goto(f"{panel.url}/instances/new/")
        page.select_option("#id_tenant", str(tenant.pk))
        page.select_option("#id_boot_source", "kernel")
        page.select_option("#id_boot_kernel", str(kernel.pk))
        page.fill("#id_name", "previewed")
        page.fill("#id_vcpus", "2")
        page.fill("#id_memory_mib", "3072")
        page.check("#id_leave_stopped")
        page.get_by_role("button", name="Preview plan").click()
        # the plan: the host, every other host's verdict, the definition; the form keeps what was typed
        expect(page.locator("#plan-host")).to_have_text("roomy")
        expect(page.locator("#plan table").last).to_contain_text("3072 MiB of RAM exceed host 'tight'")
        expect(page.locator("#id_name")).to_have_value("previewed")
        page.screenshot(path=SCREENSHOTS / "plan-create.png", full_page=True)
        page.get_by_role("button", name="Create").click()
        expect(page.locator("#instance-status")).to_have_text("Stopped", timeout=15000)
        page.locator("#size summary").click()
        page.fill('#resize-form input[name="memory_mib"]', "2048")
        page.locator("#resize-form").get_by_role("button", name="Preview").click()
        expect(page.locator("#plan-diff")).to_contain_text('+  <memory unit="MiB">2048</memory>')
        page.screenshot(path=SCREENSHOTS / "plan-resize.png", full_page=True)
        page.get_by_role("button", name="Resize now").click()
        expect(page.locator("#size")).to_contain_text("2048 MiB", timeout=15000)
        # a host that is down: its evacuation page says what becomes of each instance
        page.goto(f"{panel.url}/hosts/{dead.pk}/evacuate/")
        expect(page.locator("#evacuation-plan")).to_contain_text("stranded")
        expect(page.locator("#evacuation-plan")).to_contain_text("Booted again on roomy")
        page.screenshot(path=SCREENSHOTS / "evacuation.png", full_page=True)
        browser.close()
