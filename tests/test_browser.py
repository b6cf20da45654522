"""In Debian's headless Chromium: sign in, create an instance of the tiny guest, watch it run, use its console."""

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect, sync_playwright

from billing import invoicing, metering
from billing import services as billing_services
from hosts.choices import HostState
from hosts.models import Host
from images import services as image_services
from images.management.commands.add_image import add_file
from instances.choices import Cause
from instances.choices import Status as InstanceStatus
from instances.models import Instance, InstanceStateChange
from tenants.choices import Role
from tenants.services import add_member, set_quota
from tests.conftest import CONTAINER_IMAGE, INSTALLER_ISO
from tests.factories import make_boot_kernel, make_host, make_instance, make_tenant, make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.qemu]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOTS = Path(os.environ.get("CLOUDPANEL_SCREENSHOTS", ROOT / "var" / "screenshots"))


def force_off_and_delete(page) -> None:
    """Force the instance off and delete it from its page, each status following without a reload."""
    page.get_by_role("button", name="Force off").click()
    expect(page.locator("#instance-status")).to_have_text("Stopped", timeout=30000)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page.locator("#instance-status")).to_have_text("Deleted", timeout=30000)


LIT_PIXELS = """() => {
  const canvas = document.querySelector("#display canvas");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] || data[i + 1] || data[i + 2]) lit++;
  return lit;
}"""


CHART_POINTS = """([name, least]) => {
  const chart = Chart.getChart(document.querySelector(`canvas[data-metric-chart="${name}"]`));
  return chart !== undefined && chart.data.datasets[0].data.filter((point) => point.y !== null).length >= least;
}"""


def screen_until(page, settled, typed: str, timeout: float = 60.0) -> int:
    """Type into the display (again every few seconds) until the count of lit pixels on its canvas settles."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page.keyboard.type(typed)
        for _ in range(10):
            time.sleep(0.3)
            lit = page.evaluate(LIT_PIXELS)
            if settled(lit):
                return lit
    raise AssertionError(f"the display never settled after typing {typed!r}: {lit} pixels lit")


def test_sign_in_create_watch_running_and_use_the_console(server, tenant, guest):
    # Given an admin, the local QEMU host (software emulation) and the tiny guest as the library's boot kernel
    image_services.create_boot_kernel(
        user=None, tenant=None, visibility="public", name="tiny guest",
        kernel=add_file(Path(guest["kernel"]), name="guest kernel", declared_format="kernel"),
        initrd=add_file(Path(guest["initrd"]), name="guest initrd", declared_format="initrd"))
    make_user(staff=True, tenant=tenant, password="s3cret-pass")
    admin = tenant.memberships.get().user
    host = make_host(uri="qemu:///system", name="local-qemu", accelerator="tcg", storage_pool="default",
                     state=HostState.NEW, cpus=0, memory_mib=0)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        # When they sign in
        page.goto(f"{server}/login/")
        page.fill("#id_username", admin.username)
        page.fill("#id_password", "s3cret-pass")
        page.click("button[type=submit]")
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        expect(page.locator("#live-indicator")).to_contain_text("live")
        # the listener probes the host; the overview shows it online without a reload
        expect(page.locator(f'[data-host-id="{host.pk}"] [data-field="host_state"]')).to_have_text(
            "Online", timeout=60000)
        page.screenshot(path=SCREENSHOTS / "overview.png", full_page=True)

        # And a second tab watches the instance list
        watcher = context.new_page()
        watcher.goto(f"{server}/instances/")
        expect(watcher.locator("#live-indicator")).to_contain_text("live")
        watcher.evaluate("window.notReloaded = true")

        # When they create an instance of the tiny guest (the form offers its boot kernel)
        page.goto(f"{server}/instances/new/")
        expect(page.locator("#id_boot_kernel option:checked")).to_have_text("tiny guest")
        page.fill("#id_name", "tiny-web")
        page.select_option("#id_host", str(host.pk))
        page.fill("#id_memory_mib", "256")
        page.screenshot(path=SCREENSHOTS / "instance-new.png", full_page=True)
        page.click("button[type=submit]")

        # Then the watching tab shows it running, without a reload
        row = watcher.locator("tr", has_text="tiny-web")
        expect(row.locator('[data-field="status"]')).to_have_text("Running", timeout=30000)
        assert watcher.evaluate("window.notReloaded") is True
        watcher.screenshot(path=SCREENSHOTS / "instance-list.png", full_page=True)

        # And the instance page's console answers a typed command
        expect(page.locator("#instance-status")).to_have_text("Running", timeout=30000)
        expect(page.locator("#console-state")).to_contain_text("Connected", timeout=15000)
        page.locator("#terminal").click()
        expect(page.locator("#terminal .xterm-rows")).to_contain_text("cloudpanel-guest:/#", timeout=60000)
        page.keyboard.type("echo cp-$((6*7))\n")
        expect(page.locator("#terminal .xterm-rows")).to_contain_text("cp-42", timeout=60000)
        # and its resource charts, empty when the page opened, grow live (sampled every 3 s here)
        page.wait_for_function(CHART_POINTS, arg=["cpu", 3], timeout=30000)
        page.wait_for_function(CHART_POINTS, arg=["memory", 3], timeout=5000)
        page.screenshot(path=SCREENSHOTS / "instance-detail.png", full_page=True)

        # And its graphical console (noVNC through a single-use ticket) shows the guest's screen and takes keys
        page.get_by_role("button", name="Connect", exact=True).last.click()
        expect(page.locator("#display-state")).to_contain_text("Connected", timeout=15000)
        expect(page.get_by_role("button", name="Send Ctrl+Alt+Del")).to_be_enabled()
        page.locator("#display canvas").click()
        cleared = screen_until(page, lambda lit: lit < 3000, "clear\n")
        screen_until(page, lambda lit: lit > cleared + 10000, "dmesg\n")
        page.screenshot(path=SCREENSHOTS / "instance-display.png", full_page=True)
        page.locator("#display-connect").click()
        expect(page.locator("#display-state")).to_contain_text("Disconnected")

        # And a snapshot taken from the page shows up once taken, then goes when deleted
        page.fill("#snapshot-form [name=name]", "before-upgrade")
        page.fill("#snapshot-form [name=description]", "taken from the page")
        page.get_by_role("button", name="Take a snapshot").click()
        taken = page.locator('[data-snapshot="before-upgrade"]')
        expect(taken).to_contain_text("Available", timeout=30000)
        expect(taken).to_contain_text("disks and memory")
        page.screenshot(path=SCREENSHOTS / "instance-snapshots.png", full_page=True)
        page.once("dialog", lambda dialog: dialog.accept())
        taken.get_by_role("button", name="Delete the snapshot before-upgrade").click()
        expect(page.locator("#snapshots")).to_contain_text("No snapshots.", timeout=30000)

        # When forced off from the page, the status follows
        force_off_and_delete(page)
        browser.close()
    # (outside Playwright's event loop, where the ORM may run)
    instance = Instance.objects.get(name="tiny-web")
    statuses = [c.to_status for c in instance.state_changes.all()]
    # (QEMU pauses the guest while it writes a snapshot's memory: libvirt reports it, the history keeps it)
    assert statuses[0] == "running" and statuses[-2:] == ["stopped", "deleted"], statuses
    assert statuses[1:-2] in ([], ["paused", "running"]), statuses


def sign_in(context, server, username):
    page = context.new_page()
    page.goto(f"{server}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "s3cret-pass")
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    return page


def test_a_member_starts_a_container_from_the_library_and_is_root_only_inside_it(server, tenant):
    # Given a member, the local LXC host and the busybox container image in the library
    image = add_file(CONTAINER_IMAGE, name="busybox", declared_format="tar")
    member = make_user(tenant=tenant, password="s3cret-pass")
    host = make_host(uri="lxc:///", name="local-lxc", storage_pool="default", state=HostState.NEW, cpus=0,
                     memory_mib=0)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + 90  # the listener's next sweep finds the new host and probes it
    while Host.objects.get(pk=host.pk).state != HostState.ONLINE and time.monotonic() < deadline:
        time.sleep(0.2)
    assert Host.objects.get(pk=host.pk).state == HostState.ONLINE, Host.objects.get(pk=host.pk).last_error
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = sign_in(browser.new_context(viewport={"width": 1400, "height": 1000}), server, member.username)
        # When they ask for a container of that image (the form offers no host paths to a member)
        page.goto(f"{server}/instances/new/")
        assert page.locator("#id_kernel, #id_boot_disk").count() == 0
        page.select_option("#id_boot_source", "container")
        page.fill("#id_name", "box")
        page.fill("#id_memory_mib", "64")
        page.select_option("#id_container_image", str(image.pk))
        page.screenshot(path=SCREENSHOTS / "container-new.png", full_page=True)
        page.click("#instance-form button[type=submit]")
        # Then it runs, and its console (LXC's, opened without flags) is a root shell in the image's own tree
        expect(page.locator("#instance-status")).to_have_text("Running", timeout=30000)
        expect(page.locator("#console-state")).to_contain_text("Connected", timeout=15000)
        page.locator("#terminal").click()
        page.keyboard.press("Enter")
        expect(page.locator("#terminal .xterm-rows")).to_contain_text("cloudpanel-container:/#", timeout=30000)
        page.keyboard.type("id -u; cat /etc/shadow; echo cp-$((6*7))\n")
        expect(page.locator("#terminal .xterm-rows")).to_contain_text("cp-42", timeout=30000)
        expect(page.locator("#terminal .xterm-rows")).to_contain_text("can't open '/etc/shadow'")
        page.screenshot(path=SCREENSHOTS / "container-console.png", full_page=True)
        force_off_and_delete(page)
        browser.close()
    instance = Instance.objects.get(name="box")
    assert instance.boot_source == "container" and instance.image == image and not instance.kernel


def test_the_console_connects_when_the_page_learns_the_guest_runs_from_a_refresh_alone(server, tenant):
    # Given a member on the page of a stopped instance, its live socket held by the test (no event reaches the page)
    import re

    member = make_user(tenant=tenant, password="s3cret-pass")
    unreachable = make_host(uri="qemu+unix:///system?socket=/nonexistent/sock")  # no sweep changes its instances
    instance = make_instance(tenant=tenant, host=unreachable)
    held = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = sign_in(browser.new_context(viewport={"width": 1400, "height": 1000}), server, member.username)
        page.route_web_socket(re.compile(r"/ws/instances/\d+/status/$"), lambda ws: held.append(ws))
        page.goto(f"{server}/instances/{instance.pk}/")
        expect(page.locator("#instance-status")).to_have_text("Stopped")
        page.wait_for_timeout(500)  # the refresh on the socket's opening has come and gone
        expect(page.locator("#console-state")).to_have_text("Not connected.")
        # When the guest runs and the page learns it only from the refresh that follows its socket's reopening
        with ThreadPoolExecutor(1) as outside:  # (Playwright's loop runs in this thread: the ORM stays out of it)
            outside.submit(Instance.objects.filter(pk=instance.pk).update, status=InstanceStatus.RUNNING).result()
        held[-1].close()
        expect(page.locator("#instance-status")).to_have_text("Running", timeout=10000)
        # Then the console connects by itself, as it does when an event says so
        expect(page.locator("#console-state")).not_to_have_text("Not connected.", timeout=5000)
        browser.close()


def test_tenant_self_service_quota_tokens_members_and_audit(server):
    # Given a tenant admin of acme (also a member of globex), a user to invite, and a platform admin
    acme, globex = make_tenant("acme"), make_tenant("globex")
    boss = make_user(tenant=acme, role=Role.ADMIN, password="s3cret-pass")
    add_member(tenant=globex, user=boss)
    newcomer = make_user()
    admin = make_user(staff=True, password="s3cret-pass")
    set_quota(tenant=acme, limits={"instances": 2, "vcpus": 4})
    make_boot_kernel(make_host(uri="test+unix:///default"))  # the create form offers it first
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = sign_in(context, server, boss.username)
        # When the tenant admin creates an instance, the tenant page's usage bars count it
        page.goto(f"{server}/instances/new/")
        page.fill("#id_name", "web-1")
        page.click("button[type=submit]")
        expect(page.locator("#instance-status")).to_have_text("Running", timeout=15000)
        page.get_by_role("link", name="Tenant", exact=True).click()
        usage = page.locator('.usage-line[data-resource="instances"]')
        expect(usage).to_contain_text("1 / 2")
        # And they add a member, who shows in the list
        page.fill("#id_username", newcomer.username)
        page.select_option('#member-form select[name="role"]', "viewer")
        page.locator("#member-form button").click()
        expect(page.locator("#members")).to_contain_text(newcomer.username)
        page.screenshot(path=SCREENSHOTS / "tenant-detail.png", full_page=True)
        # When they create an API token, its key is shown once
        page.get_by_role("link", name="Tokens").click()
        page.fill("#id_name", "deploy-script")
        page.locator("#token-form button").click()
        key = page.locator("#token-key").input_value()
        assert len(key) == 40
        page.screenshot(path=SCREENSHOTS / "tokens.png", full_page=True)
        page.goto(f"{server}/tokens/")
        expect(page.locator("#tokens")).to_contain_text("deploy-script")
        assert key not in page.content()
        # And the audit log shows what they did
        page.get_by_role("link", name="Audit").click()
        for action in ("instance.create", "member.create", "token.create"):
            expect(page.locator("#audit-table")).to_contain_text(action)
        page.screenshot(path=SCREENSHOTS / "audit.png", full_page=True)
        # When they switch to globex in the header, acme's instance is out of sight
        with page.expect_navigation():
            page.select_option("#tenant-select", str(globex.pk))
        expect(page.locator("#tenant-select")).to_have_value(str(globex.pk))
        page.goto(f"{server}/instances/")
        expect(page.locator("#instance-table")).to_contain_text("No instances.")

        # When a platform admin lowers acme's quota below its use, the bar shows it over quota
        admin_page = sign_in(browser.new_context(viewport={"width": 1400, "height": 1000}), server, admin.username)
        admin_page.get_by_role("link", name="Tenants").click()
        admin_page.screenshot(path=SCREENSHOTS / "tenant-list.png", full_page=True)
        admin_page.get_by_role("link", name="acme").click()
        admin_page.fill("#id_instances", "0")
        admin_page.locator("#quota-form button").click()
        expect(admin_page.locator('.usage-line[data-resource="instances"] .text-danger')).to_contain_text("1 / 0")
        admin_page.screenshot(path=SCREENSHOTS / "tenant-quota.png", full_page=True)
        browser.close()


def test_upload_an_image_from_the_browser_through_a_dropped_connection(server, tmp_path):
    # Given a tenant member, a host, and a 3 MiB disk image (three 1 MiB chunks)
    tenant = make_tenant("imaging")
    host = make_host()
    member = make_user(tenant=tenant, password="s3cret-pass")
    data = os.urandom(3 << 20)
    disk = tmp_path / "appliance.img"
    disk.write_bytes(data)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = sign_in(browser.new_context(viewport={"width": 1400, "height": 1000}), server, member.username)
        # and a network that drops the second chunk the first time it is sent
        dropped = []

        def flaky(route):
            if route.request.headers.get("content-range", "").startswith("bytes 1048576-") and not dropped:
                dropped.append(route.request.url)
                route.abort("connectionreset")
            else:
                route.continue_()

        page.route("**/api/v1/images/*/data/", flaky)
        # When they upload it from the library page
        page.get_by_role("link", name="Images").click()
        page.get_by_role("link", name="Upload").click()
        page.set_input_files("#id_file", str(disk))
        page.fill("#id_name", "appliance")
        page.fill("#id_min_disk_gib", "1")
        page.click("#upload-start")
        # Then the page says the connection dropped and resumes by itself
        expect(page.locator("#upload-state")).to_contain_text("Resuming in", timeout=10000)
        page.screenshot(path=SCREENSHOTS / "image-upload.png", full_page=True)
        # and lands on the image, inspected and available, with the file's checksum
        page.wait_for_url("**/images/*/", timeout=30000)
        expect(page.locator("#image-status")).to_contain_text("Available", timeout=15000)
        expect(page.locator("#image-details")).to_contain_text(hashlib.sha256(data).hexdigest())
        assert dropped
        page.screenshot(path=SCREENSHOTS / "image-detail.png", full_page=True)
        # When they make a template of it and launch an instance from the template
        page.get_by_role("link", name="Images").click()
        expect(page.locator("#image-table")).to_contain_text("appliance")
        page.get_by_role("link", name="Templates").click()
        page.fill("#id_name", "appliance-small")
        page.select_option("#id_image", label="appliance")
        page.fill("#id_memory_mib", "128")
        page.fill("#id_disk_gib", "2")
        page.fill("#id_user_data", "#cloud-config\npackages: [htop]\n")
        page.fill("#id_script", "echo provisioned")
        page.click("#template-form button[type=submit]")
        expect(page.locator("#template-table")).to_contain_text("appliance-small")
        page.screenshot(path=SCREENSHOTS / "templates.png", full_page=True)
        page.get_by_role("link", name="Launch").click()
        expect(page.locator("#id_boot_source")).to_have_value("image")
        page.fill("#id_name", "from-template")
        page.fill("#id_ssh_keys", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKx4 me@laptop")
        page.click("#instance-form button[type=submit]")
        # Then the instance runs with the template's size, booted from the image with a seed
        expect(page.locator("#instance-status")).to_have_text("Running", timeout=20000)
        expect(page.locator("main")).to_contain_text("from template appliance-small")
        page.screenshot(path=SCREENSHOTS / "instance-from-template.png", full_page=True)
        page.get_by_role("link", name="Images").click()
        expect(page.locator("#image-table")).to_contain_text(host.name)  # the host now holds a copy
        page.screenshot(path=SCREENSHOTS / "image-list.png", full_page=True)
        # An import from an internal address is refused on the form, with the reason
        page.get_by_role("link", name="Import from URL").click()
        page.fill("#id_url", "http://169.254.169.254/latest/meta-data/")
        page.fill("#id_name", "metadata")
        page.click("#import-form button[type=submit]")
        expect(page.locator("#import-form .alert-danger")).to_contain_text("169.254.169.254")
        expect(page.locator("#live-indicator")).to_contain_text("live")
        page.screenshot(path=SCREENSHOTS / "image-import.png", full_page=True)
        browser.close()
    instance = Instance.objects.get(name="from-template")
    assert (instance.memory_mib, instance.disk_gib, instance.image.name) == (128, 2, "appliance")
    assert "packages" in instance.user_data and "me@laptop" in instance.user_data


def test_networks_pages_create_show_and_refuse_an_overlap(server):
    from instances import services as instance_services
    from networks.services import create_network

    tenant = make_tenant("netco")
    member = make_user(tenant=tenant, password="s3cret-pass")
    rack = make_host(name="rack-1", uri="test+unix:///default")  # shared with the server process, unlike test:///
    boot_kernel = make_boot_kernel(rack)
    db_net = create_network(user=member, tenant=tenant, name="db", kind="isolated", cidr="10.45.0.0/24")
    for name in ("db-1", "db-2"):
        instance_services.create_instance(user=member, tenant=tenant, name=name, vcpus=1, memory_mib=64,
                                          boot_kernel=boot_kernel, nics=[(db_net, None)])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = sign_in(browser.new_context(viewport={"width": 1400, "height": 1000}), server, member.username)
        page.get_by_role("link", name="Networks").click()
        page.fill("#id_name", "backend")
        page.fill("#id_cidr", "10.44.0.0/24")
        page.fill("#id_dns_servers", "1.1.1.1")
        page.click("#network-form button[type=submit]")
        expect(page.get_by_role("heading", name="backend")).to_be_visible()
        expect(page.locator("main")).to_contain_text("10.44.0.0/24")
        page.screenshot(path=SCREENSHOTS / "network-detail.png", full_page=True)
        # A second network overlapping the first is refused on the form, naming what it overlaps
        page.get_by_role("link", name="Networks").click()
        page.fill("#id_name", "frontend")
        page.fill("#id_cidr", "10.44.0.128/25")
        page.click("#network-form button[type=submit]")
        expect(page.locator("#network-form .alert-danger")).to_contain_text("overlaps 10.44.0.0/24 of network backend")
        expect(page.locator("#network-table")).to_contain_text("backend")
        page.screenshot(path=SCREENSHOTS / "network-list.png", full_page=True)
        # The topology draws the networks, the instances on them and their hosts
        page.get_by_role("link", name="Topology").click()
        topology = page.locator("#topology")
        for name in ("backend", "db", "db-1", "db-2", "rack-1"):
            expect(topology).to_contain_text(name)
        assert topology.locator("line").count() == 4  # two NICs, two placements
        page.screenshot(path=SCREENSHOTS / "topology.png", full_page=True)
        browser.close()
    for instance in Instance.objects.filter(tenant=tenant):  # the shared test driver outlives the test
        instance_services.request_operation(instance=instance, operation="delete", user=member)


def test_security_group_pages_make_rules_and_put_a_nic_in_a_group(server):
    from instances import services as instance_services
    from networks.services import create_network

    tenant = make_tenant("fwco")
    member = make_user(tenant=tenant, password="s3cret-pass")
    rack = make_host(name="rack-2", uri="test+unix:///default")  # its test driver has no network filters
    lan = create_network(user=member, tenant=tenant, name="lan", kind="nat", cidr="10.46.0.0/24")
    web = instance_services.create_instance(user=member, tenant=tenant, name="web-1", vcpus=1, memory_mib=64,
                                            boot_kernel=make_boot_kernel(rack), nics=[(lan, "10.46.0.10")]).instance
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = sign_in(browser.new_context(viewport={"width": 1400, "height": 1000}), server, member.username)
        # A group is made on its page, open outwards and closed inwards
        page.get_by_role("link", name="Security groups").click()
        page.fill("#id_name", "web")
        page.fill("#id_description", "public web servers")
        page.click("#group-form button[type=submit]")
        expect(page.get_by_role("heading", name="web")).to_be_visible()
        expect(page.locator("#rule-table tbody tr")).to_have_count(2)
        # A rule that cannot be is refused on the form with its reason; a good one is added
        page.select_option("#id_protocol", "icmp")
        page.fill("#id_port_min", "8")
        page.click("#rule-form button[type=submit]")
        expect(page.locator("#rule-form .alert-danger")).to_contain_text("only TCP and UDP rules take a port range")
        page.select_option("#id_protocol", "tcp")
        page.fill("#id_port_min", "443")
        page.fill("#id_remote_cidr", "0.0.0.0/0")
        page.click("#rule-form button[type=submit]")
        expect(page.locator("#rule-table")).to_contain_text("443")
        page.screenshot(path=SCREENSHOTS / "security-group.png", full_page=True)
        # The NIC joins the group on its instance's page; this host cannot enforce it and the page says so
        page.goto(f"{server}/instances/{web.pk}/")
        page.select_option(".nic-groups select", label="web")
        page.click(".nic-groups button")
        nics = page.locator("#nics")
        expect(nics).to_contain_text("web")
        expect(nics).to_contain_text("cannot enforce firewall rules")
        page.screenshot(path=SCREENSHOTS / "instance-nic-groups.png", full_page=True)
        page.get_by_role("link", name="Security groups").click()
        expect(page.locator("#group-table")).to_contain_text("public web servers")
        page.screenshot(path=SCREENSHOTS / "security-groups.png", full_page=True)
        # Reserved ranges on the network page: the addresses are kept out of the pool
        page.goto(f"{server}/networks/{lan.pk}/")
        page.fill("#id_start", "10.46.0.200")
        page.fill("#id_end", "10.46.0.220")
        page.fill("#id_reason", "routers")
        page.click("#reserve-form button[type=submit]")
        expect(page.locator(".reserved-range")).to_contain_text("10.46.0.200 – 10.46.0.220 (routers)")
        page.screenshot(path=SCREENSHOTS / "network-reserved.png", full_page=True)
        browser.close()
    for instance in Instance.objects.filter(tenant=tenant):  # the shared test driver outlives the test
        instance_services.request_operation(instance=instance, operation="delete", user=member)


def test_billing_pages_plans_invoices_the_month_so_far_and_revenue(server):
    # Given acme on a plan since last month, with an instance running since then, metered and invoiced
    acme = make_tenant("acme")
    boss = make_user(tenant=acme, role=Role.ADMIN, password="s3cret-pass")
    admin = make_user(staff=True, password="s3cret-pass")
    now = timezone.now()
    last_month = (now.replace(day=1) - timedelta(days=1)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    plan = billing_services.create_plan(name="standard", currency="EUR", effective_from=last_month,
                                        vcpu_hour="0.012", ram_gib_hour="0.004", disk_gib_month="0.05",
                                        monthly_fee="4.00")
    billing_services.set_tenant_billing(tenant=acme, plan=plan, tax_rate="0.19", billed_from=last_month)
    vm = make_instance(tenant=acme, host=make_host(), name="shop-db", vcpus=2, memory_mib=2048, disk_gib=20,
                       status=InstanceStatus.RUNNING)
    Instance.objects.filter(pk=vm.pk).update(created_at=last_month)
    InstanceStateChange.objects.create(instance=vm, from_status=InstanceStatus.STOPPED,
                                       to_status=InstanceStatus.RUNNING, at=last_month + timedelta(days=3),
                                       cause=Cause.EVENT)
    metering.meter()
    draft, = invoicing.invoice_month(year=last_month.year, month=last_month.month)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = sign_in(browser.new_context(viewport={"width": 1400, "height": 1000}), server, admin.username)
        # When the admin adds a plan, it has its first prices
        page.get_by_role("link", name="Billing").click()
        page.get_by_role("link", name="Rate plans").click()
        page.fill("#id_name", "premium")
        page.fill("#id_currency", "EUR")
        page.fill("#id_vcpu_hour", "0.02")
        page.fill("#id_monthly_fee", "9.50")
        page.locator("#plan-form button").click()
        expect(page.locator("#version-table")).to_contain_text("0.02")
        page.screenshot(path=SCREENSHOTS / "billing-plan.png", full_page=True)
        page.get_by_role("link", name="Rate plans").click()
        expect(page.locator("#plan-table")).to_contain_text("premium")
        page.screenshot(path=SCREENSHOTS / "billing-plans.png", full_page=True)
        # And issues last month's draft: it gets its number and can no longer change
        page.get_by_role("link", name="Invoices").click()
        page.get_by_role("link", name=draft.display_number).click()
        page.get_by_role("button", name="Issue").click()
        expect(page.locator("#invoice-status")).to_have_text("Issued")
        expect(page.get_by_role("heading", level=1)).to_contain_text("INV-")
        issued_heading = page.get_by_role("heading", level=1).inner_text()
        expect(page.locator("#invoice-total")).to_have_text(f"{draft.total} EUR")
        page.screenshot(path=SCREENSHOTS / "billing-invoice.png", full_page=True)
        page.get_by_role("link", name="Invoices").click()
        page.screenshot(path=SCREENSHOTS / "billing-invoices.png", full_page=True)
        # The admin moves acme to the premium plan on its tenant page
        page.goto(f"{server}/tenants/")
        page.get_by_role("link", name="acme").click()
        page.select_option("#billing-form select[name=plan]", label="premium (EUR)")
        page.fill("#billing-form input[name=tax_rate]", "0.075")
        page.locator("#billing-form button").click()
        expect(page.locator("#tenant-billing")).to_contain_text("On premium (EUR), tax 7.5 %")
        page.screenshot(path=SCREENSHOTS / "billing-tenant.png", full_page=True)
        # The revenue page charts it
        page.goto(f"{server}/billing/")
        page.get_by_role("link", name="Revenue", exact=True).click()
        expect(page.locator(".revenue-table")).to_contain_text(str(draft.subtotal))
        expect(page.locator(".revenue-report canvas")).to_have_count(1)
        page.screenshot(path=SCREENSHOTS / "billing-revenue.png", full_page=True)
        # The tenant's admin sees its month so far, the forecast and a chart of cost per day
        tenant_page = sign_in(browser.new_context(viewport={"width": 1400, "height": 1000}), server, boss.username)
        tenant_page.get_by_role("link", name="Billing").click()
        expect(tenant_page.locator("#cost-so-far")).to_contain_text("EUR")
        expect(tenant_page.locator("#cost-forecast")).to_contain_text("EUR")
        assert tenant_page.locator("#day-chart").bounding_box()["height"] > 100
        expect(tenant_page.locator("#invoice-table")).to_contain_text(issued_heading.split()[1])
        tenant_page.screenshot(path=SCREENSHOTS / "billing-usage.png", full_page=True)
        browser.close()
    draft.refresh_from_db()
    assert draft.status == "issued" and draft.display_number in issued_heading


def test_a_platform_admin_adopts_a_domain_made_by_hand_from_the_host_page(server, tenant):
    # Given a host on libvirtd's shared test driver, and a domain defined on it by hand, running
    from contextlib import suppress
    from uuid import uuid4

    from hosts import hypervisor

    make_user(staff=True, tenant=tenant, password="s3cret-pass")
    admin = tenant.memberships.get().user
    host = make_host(uri="test+unix:///default", name="shared-test")
    hand_made = str(uuid4())
    dom = hypervisor.connection(host.uri).defineXML(
        f"<domain type='test'><name>legacy-db</name><uuid>{hand_made}</uuid><memory unit='MiB'>512</memory>"
        "<vcpu>2</vcpu><os><type>hvm</type></os></domain>")
    dom.create()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(f"{server}/login/")
            page.fill("#id_username", admin.username)
            page.fill("#id_password", "s3cret-pass")
            page.click("button[type=submit]")
            # When they open the host's page, then the domain is listed as not the panel's (the listener or the
            # next sweep has read the host)
            row = page.locator(f'tr[data-domain="{hand_made}"]')
            deadline = time.monotonic() + 20
            while True:
                page.goto(f"{server}/hosts/{host.pk}/")
                if row.count() or time.monotonic() > deadline:
                    break
                time.sleep(1)
            expect(row).to_contain_text("legacy-db")
            expect(row).to_contain_text("512 MiB")
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SCREENSHOTS / "host-unmanaged.png", full_page=True)
            # And when they adopt it into the tenant
            row.locator("select[name=tenant]").select_option(str(tenant.pk))
            row.get_by_role("button", name="Adopt").click()
            # Then it is the tenant's instance, running
            expect(page.locator("#instance-status")).to_have_text("Running", timeout=10000)
            page.screenshot(path=SCREENSHOTS / "instance-adopted.png", full_page=True)
            browser.close()
        instance = Instance.objects.get(uuid=hand_made)
        assert (instance.tenant, instance.name, instance.vcpus, instance.memory_mib) == (tenant, "legacy-db", 2, 512)
    finally:
        with suppress(hypervisor.HypervisorError):
            hypervisor.undefine(host.uri, hand_made)


def test_volume_and_snapshot_pages_make_attach_detach_and_snapshot(server):
    from instances import services as instance_services
    from instances import volumes as volume_services
    from instances.models import Volume

    tenant = make_tenant("diskco")
    member = make_user(tenant=tenant, password="s3cret-pass")
    rack = make_host(name="rack-2", uri="test+unix:///default")  # shared with the server process, unlike test:///
    action = instance_services.create_instance(user=member, tenant=tenant, name="db-1", vcpus=1, memory_mib=64,
                                               disk_gib=1, boot_kernel=make_boot_kernel(rack), start=False)
    instance = action.instance
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = sign_in(browser.new_context(viewport={"width": 1400, "height": 1000}), server, member.username)
            # A member makes a volume beside the instance on the Volumes page: it shows up as available
            page.get_by_role("link", name="Volumes").click()
            page.fill("#id_name", "data")
            page.fill("#id_size_gib", "2")
            page.select_option("#id_instance", str(instance.pk))
            page.click("#volume-form button[type=submit]")
            row = page.locator('tr[data-volume="data"]')
            expect(row).to_contain_text("Available", timeout=15000)
            expect(row).to_contain_text("2 GiB")
            # and attaches it: the row names the instance and its disk
            row.get_by_role("button", name="Attach").click()
            expect(page.locator('tr[data-volume="data"]')).to_contain_text("db-1 vdc", timeout=15000)
            expect(page.locator('tr[data-volume="data"]')).to_contain_text("In use", timeout=15000)
            expect(page.locator('tr[data-volume="data"]').get_by_role("button", name="Detach")).to_be_visible()
            page.screenshot(path=SCREENSHOTS / "volumes.png", full_page=True)
            # The instance page lists it, and detaches it (once the refresh on its socket's opening has come and gone:
            # a click on a section being replaced is lost)
            page.goto(f"{server}/instances/{instance.pk}/")
            expect(page.locator("#live-indicator")).to_contain_text("live")
            page.wait_for_timeout(500)
            card = page.locator("#volumes")
            expect(card.locator('tr[data-attached-volume="data"]')).to_contain_text("vdc")
            page.screenshot(path=SCREENSHOTS / "instance-volumes.png", full_page=True)
            card.get_by_role("button", name="Detach").click()
            expect(page.locator("#volumes")).to_contain_text("No volumes attached", timeout=15000)
            # then takes a snapshot of its disk (stopped: the disks alone), reverts to it and deletes it
            page.fill("#snapshot-form input[name=name]", "before")
            page.fill("#snapshot-form input[name=description]", "before the upgrade")
            page.click("#snapshot-form button")
            snap = page.locator('tr[data-snapshot="before"]')
            expect(snap).to_contain_text("Available", timeout=15000)
            expect(snap).to_contain_text("disks")
            page.screenshot(path=SCREENSHOTS / "instance-snapshots.png", full_page=True)
            page.once("dialog", lambda dialog: dialog.accept())
            snap.get_by_role("button", name="Revert").click()
            expect(page.locator("#instance-status")).to_have_text("Stopped", timeout=15000)
            page.once("dialog", lambda dialog: dialog.accept())
            page.locator('tr[data-snapshot="before"]').get_by_role("button", name="Delete the snapshot before").click()
            expect(page.locator("#snapshots")).to_contain_text("No snapshots.", timeout=15000)
            browser.close()
        assert Instance.objects.get(pk=instance.pk).actions.filter(operation="revert", status="succeeded").exists()
    finally:  # the shared test driver outlives the test
        instance_services.request_operation(instance=Instance.objects.get(pk=instance.pk), operation="delete",
                                            user=member)
        for volume in Volume.objects.filter(tenant=tenant).exclude(status="deleted"):
            volume_services.delete(volume=volume, user=member)


SCREEN = """() => {
  const canvas = document.querySelector("#display canvas");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let ui = 0, hash = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    if ((b > 120 && r < 60 && g < 60) || (r > 140 && r < 200 && Math.abs(r - g) < 12 && Math.abs(r - b) < 12)) ui++;
    hash = (hash * 31 + r + 3 * g + 7 * b) | 0;
  }
  return {ui: ui / (data.length / 4), hash: hash};
}"""


def installer_screen(page, changed_from: int | None = None, timeout: float = 180.0) -> int:
    """Wait until the display shows the installer (its blue background and grey dialogs over most of the screen),
    another screen of it than changed_from if given; returns that screen's fingerprint."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = page.evaluate(SCREEN)
        if screen["ui"] > 0.5 and screen["hash"] != changed_from:
            page.wait_for_timeout(1500)  # the installer draws a screen in a few strokes: the last one
            return page.evaluate(SCREEN)["hash"]
        page.wait_for_timeout(1000)
    page.screenshot(path=SCREENSHOTS / "installer-failed.png", full_page=True)
    raise AssertionError(f"the installer's screen never came (or never changed): {page.evaluate(SCREEN)}")


def test_an_iso_install_of_debians_installer_is_driven_from_the_browser(server, tenant):
    # Given a member, the local QEMU host and Debian's installer as an ISO of the library
    if not INSTALLER_ISO.exists():
        pytest.fail(f"the installer ISO is missing at {INSTALLER_ISO}: run scripts/build-installer-iso.sh")
    iso = add_file(INSTALLER_ISO, name="debian-installer", declared_format="iso")
    member = make_user(tenant=tenant, password="s3cret-pass")
    host = make_host(uri="qemu:///system", name="local-qemu", accelerator="tcg", storage_pool="default",
                     state=HostState.NEW, cpus=0, memory_mib=0)
    deadline = time.monotonic() + 90  # the listener's next sweep finds the new host and probes it
    while Host.objects.get(pk=host.pk).state != HostState.ONLINE and time.monotonic() < deadline:
        time.sleep(0.2)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = sign_in(browser.new_context(viewport={"width": 1400, "height": 1000}), server, member.username)
        # When they create an instance that installs from the ISO onto an empty disk
        page.goto(f"{server}/instances/new/")
        page.select_option("#id_boot_source", "image")
        page.fill("#id_name", "installing")
        page.select_option("#id_image", str(iso.pk))
        page.fill("#id_memory_mib", "1024")
        page.fill("#id_disk_gib", "2")
        page.click("#instance-form button[type=submit]")
        expect(page.locator("#instance-status")).to_have_text("Running", timeout=60000)
        # Then its graphical console shows the installer, which takes their keys screen after screen
        page.get_by_role("button", name="Connect", exact=True).last.click()
        expect(page.locator("#display-state")).to_contain_text("Connected", timeout=15000)
        page.locator("#display canvas").click()
        first = installer_screen(page)
        page.screenshot(path=SCREENSHOTS / "installer-language.png", full_page=True)
        page.keyboard.press("ArrowDown")  # another language highlighted
        second = installer_screen(page, changed_from=first, timeout=60)
        page.keyboard.press("Enter")  # and chosen: the installer goes on to its next question
        installer_screen(page, changed_from=second, timeout=60)
        page.screenshot(path=SCREENSHOTS / "installer-next.png", full_page=True)
        page.locator("#display-connect").click()
        force_off_and_delete(page)
        browser.close()
    instance = Instance.objects.get(name="installing")
    assert instance.image == iso and instance.cdrom == iso and instance.disk_gib == 2
