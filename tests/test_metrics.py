"""Metrics: bulk sampling into rates, roll-up and retention, chart series, the API and live points."""

from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cloudpanel.asgi import application
from hosts import hypervisor
from hosts.hypervisor import DomainCounters, HostCounters, NodeCounters, PowerState
from instances.choices import Status
from metrics import history, sampling
from metrics.choices import Range, Resolution
from metrics.models import Cursor, HostSample, InstanceSample, RollUp
from metrics.tasks import sample_host
from tests.conftest import token_client
from tests.factories import make_host, make_instance, make_tenant, make_user

pytestmark = pytest.mark.django_db
TEST_DOMAIN = "6695eb01-f6a4-8304-79aa-97f2502e193f"  # the test driver's own running domain
GIB = 1024**3
ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")


def node(busy=0, total=0, pool_used=10 * GIB):
    return NodeCounters(cpu_busy_ns=busy, cpu_total_ns=total, memory_bytes=8 * GIB, memory_used_bytes=2 * GIB,
                        pool_capacity_bytes=100 * GIB, pool_used_bytes=pool_used)


def domain(uuid, cpu_ns, *, disk=0, net=0, vcpus=2, state=PowerState.RUNNING):
    return DomainCounters(uuid=str(uuid), state=state, vcpus=vcpus, cpu_time_ns=cpu_ns, memory_bytes=GIB,
                          memory_used_bytes=GIB // 2, disk_read_bytes=disk, disk_write_bytes=2 * disk,
                          disk_read_reqs=disk // 4096, disk_write_reqs=disk // 2048, net_rx_bytes=net,
                          net_tx_bytes=net // 2)


def at(seconds: float) -> float:
    return datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp() + seconds


@pytest.fixture
def placed(host, tenant):
    return make_instance(tenant=tenant, host=host, status=Status.RUNNING)


def test_rates_come_from_two_rounds_of_counters(host, placed):
    # Given a first round: counters only, nothing to rate yet
    first = sampling.record(host_id=host.pk, read=HostCounters(at(0), node(0, 0), (
        domain(placed.uuid, 0),)))
    assert first.instances == 0 and not first.host and not InstanceSample.objects.exists()
    # When a second round ten seconds later read 10 s of one vCPU's time (of 2), 40 MB read and 1 MB received
    second = sampling.record(host_id=host.pk, read=HostCounters(at(10), node(5 * 10**9, 20 * 10**9), (
        domain(placed.uuid, 10 * 10**9, disk=40_960_000, net=1_000_000),)))
    # Then the instance's sample holds the rates over those ten seconds
    assert second.instances == 1 and second.host
    sample = InstanceSample.objects.get(instance_id=placed.pk)
    assert sample.resolution == Resolution.RAW and sample.tenant_id == placed.tenant_id
    assert sample.cpu == pytest.approx(50.0)
    assert (sample.disk_read, sample.disk_write) == (pytest.approx(4_096_000), pytest.approx(8_192_000))
    assert (sample.disk_read_iops, sample.disk_write_iops) == (pytest.approx(1000), pytest.approx(2000))
    assert (sample.net_rx, sample.net_tx) == (pytest.approx(100_000), pytest.approx(50_000))
    assert (sample.memory_used, sample.memory_total) == (GIB // 2, GIB)
    # And the host's: its own CPU busy a quarter of the time, one guest with 2 vCPUs using one CPU's worth
    row = HostSample.objects.get(host_id=host.pk)
    assert row.cpu == pytest.approx(25.0) and (row.running, row.vcpus) == (1, 2)
    assert row.guest_cpu == pytest.approx(1.0) and (row.pool_used, row.pool_capacity) == (10 * GIB, 100 * GIB)


def test_a_counter_reset_by_a_reboot_gives_no_negative_rate(host, placed):
    sampling.record(host_id=host.pk, read=HostCounters(at(0), node(), (domain(placed.uuid, 900 * 10**9,
                                                                                disk=10**9, net=10**9),)))
    # When the guest's process restarted between rounds: its counters start again from small values
    sampling.record(host_id=host.pk, read=HostCounters(at(10), node(), (domain(placed.uuid, 2 * 10**9,
                                                                                 disk=4096, net=100),)))
    # Then the rates are what was counted since the restart, never below zero
    sample = InstanceSample.objects.get(instance_id=placed.pk)
    assert sample.cpu == pytest.approx(10.0) and sample.disk_read == pytest.approx(409.6)
    assert sample.net_rx == pytest.approx(10.0)
    assert all(getattr(sample, f) >= 0 for f in history.INSTANCE_FIELDS)


def test_a_round_long_after_the_last_gives_no_rates_only_a_new_base(host, placed, settings):
    sampling.record(host_id=host.pk, read=HostCounters(at(0), node(), (domain(placed.uuid, 0),)))
    # When the next round comes after the worker was away for ten minutes
    late = sampling.record(host_id=host.pk, read=HostCounters(at(600), node(), (domain(placed.uuid, 10**12),)))
    # Then nothing is averaged over the gap, and the round after it is rated against it
    assert late.instances == 0 and not InstanceSample.objects.exists()
    sampling.record(host_id=host.pk, read=HostCounters(at(610), node(), (domain(placed.uuid, 10**12 + 10**9),)))
    assert InstanceSample.objects.get(instance_id=placed.pk).cpu == pytest.approx(5.0)


def test_domains_the_panel_does_not_own_count_for_the_host_but_get_no_samples(host, placed):
    stranger = "0f0f0f0f-0000-4000-8000-000000000001"
    for t, cpu in ((0, 0), (10, 10**10)):
        sampling.record(host_id=host.pk, read=HostCounters(at(t), node(), (
            domain(placed.uuid, cpu), domain(stranger, cpu), domain("0f0f0f0f-0000-4000-8000-000000000002", 0,
                                                                    state=PowerState.STOPPED))))
    assert list(InstanceSample.objects.values_list("instance_id", flat=True)) == [placed.pk]
    row = HostSample.objects.get(host_id=host.pk)
    assert (row.running, row.vcpus) == (2, 4) and row.guest_cpu == pytest.approx(2.0)
    assert set(Cursor.objects.get(host_id=host.pk).counters["domains"]) == {str(placed.uuid), stranger}


def test_a_test_driver_host_is_sampled_in_bulk_by_its_task(tenant):
    # Given a host on libvirt's test driver, whose running domain is a panel instance
    host = make_host(uri="test:///default")
    placed = make_instance(tenant=tenant, host=host, status=Status.RUNNING, uuid=TEST_DOMAIN)
    read = hypervisor.counters(host.uri)
    assert [d.uuid for d in read.domains] == [TEST_DOMAIN] and read.domains[0].cpu_time_ns
    assert read.node.cpu_total_ns and read.node.pool_capacity_bytes
    # When its task runs twice
    sample_host(host.pk)
    sample_host(host.pk)
    # Then the instance and the host have a sample each, with a rate
    sample = InstanceSample.objects.get(instance_id=placed.pk)
    assert sample.cpu is not None and 0 <= sample.cpu <= 100 and sample.memory_total > 0
    assert HostSample.objects.get(host_id=host.pk).running == 1


def test_an_unreachable_host_gives_no_samples_and_no_error(tenant):
    host = make_host(uri="test:///nonexistent/node.xml")
    sample_host(host.pk)
    sample_host(0)  # a host deleted meanwhile
    assert not HostSample.objects.exists()


def raw(instance, seconds, cpu, tenant_id=None):
    return InstanceSample(instance_id=instance, resolution=Resolution.RAW,
                          time=datetime.fromtimestamp(at(seconds), UTC), tenant_id=tenant_id or 1, cpu=cpu,
                          memory_used=cpu * 10, memory_total=1000)


def test_roll_up_averages_whole_minutes_once_and_expires_by_resolution():
    # Given raw samples every 10 s over three minutes for one instance, CPU 10 in the first, 40 in the second...
    InstanceSample.objects.bulk_create([raw(7, s, 10.0 if s < 60 else 40.0 if s < 120 else 70.0)
                                        for s in range(0, 180, 10)])
    RollUp.objects.create(kind="instance", resolution=Resolution.MINUTE, done_until=datetime.fromtimestamp(at(0), UTC))
    # When the roll-up runs at 12:03:30 (12:02 ended more than a minute before: it is rolled up; 12:03 is not yet)
    now = datetime.fromtimestamp(at(210), UTC)
    written = history.roll_up(now=now)
    minutes = list(InstanceSample.objects.filter(resolution=Resolution.MINUTE).order_by("time")
                   .values_list("time", "cpu", "memory_used", "tenant_id"))
    assert written["instance/1 minute"] == 2
    assert [(t.minute, cpu, mem, tenant) for t, cpu, mem, tenant in minutes] == [(0, 10.0, 100.0, 1),
                                                                               (1, 40.0, 400.0, 1)]
    # When it runs again a minute later, the last minute is added and the others are not written twice
    assert history.roll_up(now=now + timedelta(minutes=1))["instance/1 minute"] == 1
    assert InstanceSample.objects.filter(resolution=Resolution.MINUTE).count() == 3
    # When seven hours have passed, the raw samples are gone and the minute averages stay
    history.roll_up(now=now + timedelta(hours=7))
    assert not InstanceSample.objects.filter(resolution=Resolution.RAW).exists()
    assert InstanceSample.objects.filter(resolution=Resolution.MINUTE).count() == 3
    # and after 8 days only the hour average of 12:00 stays, until a year has passed
    history.roll_up(now=now + timedelta(days=8))
    assert list(InstanceSample.objects.values_list("resolution", "cpu")) == [(Resolution.HOUR, 40.0)]
    history.roll_up(now=now + timedelta(days=367))
    assert not InstanceSample.objects.exists()


def test_a_deleted_instances_samples_are_kept_until_their_retention(host, placed):
    InstanceSample.objects.bulk_create([raw(placed.pk, s, 5.0) for s in range(0, 60, 10)])
    placed.status = Status.DELETED
    placed.save(update_fields=["status"])
    history.roll_up(now=datetime.fromtimestamp(at(3600), UTC))
    assert InstanceSample.objects.filter(instance_id=placed.pk).count() == 6 + 1
    history.roll_up(now=datetime.fromtimestamp(at(400 * 86400), UTC))
    assert not InstanceSample.objects.filter(instance_id=placed.pk).exists()


def test_a_chart_averages_its_range_into_buckets_and_adds_what_is_not_rolled_up_yet():
    now = datetime.fromtimestamp(at(86400), UTC)
    # Given minute averages for the last day but 5 minutes, CPU = the minute of the hour, and raw samples since
    start = now - timedelta(days=1)
    InstanceSample.objects.bulk_create(
        [InstanceSample(instance_id=3, resolution=Resolution.MINUTE, time=start + timedelta(minutes=m), tenant_id=1,
                        cpu=float(m % 60)) for m in range(0, 1440 - 5)]
        + [InstanceSample(instance_id=3, resolution=Resolution.RAW, time=now - timedelta(seconds=s), tenant_id=1,
                          cpu=99.0) for s in range(10, 300, 10)])
    # When the day chart is asked for
    chart = history.series("instance", 3, Range.DAY, now=now)
    # Then it has 5-minute points (the average of minutes 0..4 is 2.0), the newest from the raw samples
    assert chart["bucket"] == 300 and len(chart["t"]) == 288
    assert chart["cpu"][0] == pytest.approx(2.0) and chart["cpu"][-1] == pytest.approx(99.0)
    assert chart["t"] == sorted(chart["t"]) and chart["disk_read"][0] is None
    # The hour chart is the raw samples themselves
    hour = history.series("instance", 3, Range.HOUR, now=now)
    assert hour["bucket"] == 0 and len(hour["t"]) == 29 and set(hour["cpu"]) == {99.0}
    # Another instance's chart is empty
    assert history.series("instance", 4, Range.DAY, now=now)["t"] == []


def test_a_chart_shows_a_gap_where_nothing_was_sampled_not_a_line_across_it():
    now = datetime.fromtimestamp(at(86400), UTC)
    times = [now - timedelta(seconds=s) for s in (3000, 2990, 2980, 600, 590)]  # no samples from 11:10 to 11:50
    InstanceSample.objects.bulk_create([InstanceSample(instance_id=3, resolution=Resolution.RAW, time=t, tenant_id=1,
                                                       cpu=5.0) for t in times])
    hour = history.series("instance", 3, Range.HOUR, now=now)
    assert hour["cpu"] == [5.0, 5.0, 5.0, None, 5.0, 5.0]
    RollUp.objects.create(kind="instance", resolution=Resolution.MINUTE, done_until=now - timedelta(days=2))
    day = history.series("instance", 3, Range.DAY, now=now)
    assert day["t"][0] == int((now - timedelta(minutes=50)).timestamp()) // 300 * 300 * 1000
    assert [v is None for v in day["cpu"]] == [False, True, True, True, True, True, True, True, False, True]


def test_a_week_chart_of_a_year_of_data_reads_in_a_bounded_number_of_queries():
    now = datetime.fromtimestamp(at(0), UTC)
    InstanceSample.objects.bulk_create(
        [InstanceSample(instance_id=5, resolution=Resolution.MINUTE, time=now - timedelta(minutes=m), tenant_id=1,
                        cpu=1.0) for m in range(1, 7 * 1440)], batch_size=5000)
    with CaptureQueriesContext(connection) as queries:
        chart = history.series("instance", 5, Range.WEEK, now=now)
    assert len(queries) == 2 and len(chart["t"]) == 336


@pytest.fixture
def other_tenant_member(db):
    tenant = make_tenant()
    return make_user(tenant=tenant), tenant


def test_the_api_serves_an_instances_chart_to_its_tenant_only(host, placed, member_api, admin_api, client,
                                                               other_tenant_member):
    InstanceSample.objects.bulk_create([InstanceSample(instance_id=placed.pk, resolution=Resolution.RAW,
                                                       time=datetime.now(UTC) - timedelta(seconds=s),
                                                       tenant_id=placed.tenant_id, cpu=12.5) for s in (5, 15)])
    url = f"/api/v1/instances/{placed.pk}/metrics/"
    answer = member_api.get(url, {"range": "hour"})
    assert answer.status_code == 200 and answer.json()["cpu"] == [12.5, 12.5]
    assert admin_api.get(url).json()["range"] == "hour"
    # Another tenant's member: no such instance
    user, tenant = other_tenant_member
    assert token_client(user, tenant).get(url).status_code == 404
    # A range that is not one of the five
    bad = member_api.get(url, {"range": "decade"})
    assert bad.status_code == 400 and "range" in bad.json()
    # A deleted instance's kept samples are still its tenant's to read
    placed.status = Status.DELETED
    placed.save(update_fields=["status"])
    assert member_api.get(url).json()["cpu"] == [12.5, 12.5]


def test_host_charts_are_for_platform_admins(host, member_api, admin_api):
    HostSample.objects.create(host_id=host.pk, resolution=Resolution.RAW, time=datetime.now(UTC), cpu=3.0,
                              running=1, vcpus=2)
    assert admin_api.get(f"/api/v1/hosts/{host.pk}/metrics/").json()["cpu"] == [3.0]
    assert member_api.get(f"/api/v1/hosts/{host.pk}/metrics/").status_code == 403
    assert admin_api.get("/api/v1/hosts/999999/metrics/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_new_points_reach_the_instance_page_and_admin_pages_live(host, placed, member, admin_user):
    @async_to_sync
    async def scenario():
        sockets = []
        for path, user in ((f"/ws/instances/{placed.pk}/status/", member), ("/ws/status/", admin_user)):
            socket = WebsocketCommunicator(application, path, headers=[ORIGIN, HOST])
            socket.scope["user"] = user
            assert (await socket.connect())[0]
            sockets.append(socket)
        for t in (0, 10):
            await database_sync_to_async(sampling.record)(host_id=host.pk, read=HostCounters(
                at(t), node(0, t * 10**9), (domain(placed.uuid, t * 10**9),)))
        got = [await socket.receive_json_from(timeout=5) for socket in sockets]
        for socket in sockets:
            assert await socket.receive_nothing(timeout=0.3)
            await socket.disconnect()
        return got

    page, admin = scenario()
    # The instance's page gets its new point (one per round with a rate), admin pages the host's
    assert page["type"] == "metrics" and page["of"] == "instance" and page["id"] == placed.pk
    assert page["point"]["cpu"] == pytest.approx(50.0) and page["point"]["t"] == at(10) * 1000
    assert admin["of"] == "host" and admin["id"] == host.pk and admin["point"]["running"] == 1


@pytest.mark.qemu
@pytest.mark.django_db(transaction=True)
def test_a_real_guest_is_sampled_with_cpu_memory_and_the_disk_reads_it_does(qemu_host, member, tenant, guest_kernel):
    from instances import services
    from tests.test_qemu import console_session

    # Given a real QEMU guest with a 1 GiB disk, running its shell
    action = services.create_instance(user=member, tenant=tenant, name="sampled", vcpus=1, memory_mib=256,
                                      disk_gib=1, boot_kernel=guest_kernel, host=qemu_host)
    instance = action.instance
    console_session(instance, member, "echo up-$((40+2))", r"up-42")
    # When it is sampled, then reads 48 MiB of its disk, and is sampled again
    sample_host(qemu_host.pk)
    first = Cursor.objects.get(host_id=qemu_host.pk).taken
    console_session(instance, member, "dd if=/dev/vda of=/dev/null bs=1M count=48 && echo read-$((5*5))",
                    r"read-25")
    sample_host(qemu_host.pk)
    # Then its sample holds what it did: CPU used, its 256 MiB, the megabytes read per second of the round
    sample = InstanceSample.objects.get(instance_id=instance.pk)
    seconds = sample.time.timestamp() - first
    assert 0 < sample.cpu <= 100 and sample.memory_total == 256 * 1024**2
    assert 0 < sample.memory_used <= sample.memory_total
    assert sample.disk_read * seconds >= 48 * 1024**2 and sample.disk_read_iops > 0 and sample.net_rx is not None
    rounds = list(HostSample.objects.filter(host_id=qemu_host.pk).values_list("running", "memory_total", "cpu"))
    assert len(rounds) == 1 and rounds[0][0] >= 1 and rounds[0][1] > 0 and rounds[0][2] is not None


def test_hot_spots_sort_the_newest_samples_and_show_a_tenant_its_own_only(host, tenant, member_api, admin_api,
                                                                         other_tenant_member, client, member):
    # Given instances of two tenants, sampled just now: a busy one, one short of memory, and another tenant's
    _user, other = other_tenant_member
    busy = make_instance(tenant=tenant, host=host, status=Status.RUNNING, name="busy")
    full = make_instance(tenant=tenant, host=host, status=Status.RUNNING, name="full")
    theirs = make_instance(tenant=other, host=host, status=Status.RUNNING, name="theirs")
    now = datetime.now(UTC)
    for instance, cpu, used in ((busy, 95.0, 100), (full, 5.0, 990), (theirs, 99.0, 10)):
        InstanceSample.objects.create(instance_id=instance.pk, resolution=Resolution.RAW, time=now - timedelta(
            seconds=2), tenant_id=instance.tenant_id, cpu=cpu, memory_used=used, memory_total=1000)
    # (an older sample of the same instance does not count; nor does one from minutes ago)
    InstanceSample.objects.create(instance_id=busy.pk, resolution=Resolution.RAW, time=now - timedelta(seconds=12),
                                  tenant_id=tenant.pk, cpu=1.0)
    HostSample.objects.create(host_id=host.pk, resolution=Resolution.RAW, time=now, cpu=40.0, running=3, vcpus=3)
    # Then the tenant's member sees its own, busiest first, and no hosts
    mine = member_api.get("/api/v1/hot-spots/").json()
    assert [i["name"] for i in mine["instances"]] == ["busy", "full"] and mine["hosts"] == []
    assert [i["name"] for i in member_api.get("/api/v1/hot-spots/?by=memory").json()["instances"]] == ["full", "busy"]
    # and a platform admin everyone's, and the hosts
    everyone = admin_api.get("/api/v1/hot-spots/", {"limit": 2}).json()
    assert [i["name"] for i in everyone["instances"]] == ["theirs", "busy"]
    assert [(h["name"], h["cpu"]) for h in everyone["hosts"]] == [(host.name, 40.0)]
    assert admin_api.get("/api/v1/hot-spots/", {"limit": 0}).status_code == 400
    assert admin_api.get("/api/v1/hot-spots/", {"by": "temperature"}).status_code == 400
    # The page shows the same to the member
    client.force_login(member)
    page = client.get("/hot-spots/?by=memory").content.decode()
    assert page.index(">full<") < page.index(">busy<") and "theirs" not in page and 'id="hot-hosts"' not in page


def test_instance_and_host_pages_carry_their_charts(host, placed, member, admin_user, client):
    client.force_login(member)
    page = client.get(f"/instances/{placed.pk}/").content.decode()
    assert f'data-metrics-url="/api/v1/instances/{placed.pk}/metrics/"' in page and "cloudpanel/metrics.js" in page
    client.force_login(admin_user)
    page = client.get(f"/hosts/{host.pk}/").content.decode()
    assert f'data-metrics-url="/api/v1/hosts/{host.pk}/metrics/"' in page and 'data-metric-chart="pool"' in page


def scraped(client, **headers) -> dict:
    """The /metrics exposition parsed: (name, sorted labels) → value, with what generate_latest checks."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = client.get("/metrics", **headers)
    assert answer.status_code == 200, answer.content
    assert answer["Content-Type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.content.decode()) for s in family.samples}


def test_metrics_are_for_the_token_or_the_networks_set_and_nobody_else(client, settings):
    settings.CLOUDPANEL_METRICS_TOKEN, settings.CLOUDPANEL_METRICS_NETWORKS = "", []
    refused = client.get("/metrics")
    assert refused.status_code == 403 and b"CLOUDPANEL_METRICS_TOKEN" in refused.content
    settings.CLOUDPANEL_METRICS_TOKEN = "s3cret-scrape"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="s3cret-scrape").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape").status_code == 200
    import ipaddress

    settings.CLOUDPANEL_METRICS_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="not an address").status_code == 403


def test_metrics_say_the_panels_health(client, settings, host, tenant, member, member_api):
    from instances.choices import ActionStatus, Operation
    from instances.models import InstanceAction

    settings.CLOUDPANEL_METRICS_TOKEN = "t"
    auth = {"HTTP_AUTHORIZATION": "Bearer t"}
    # Given instances in two states, and operations that took 2 s and 40 s, one failed
    running = make_instance(tenant=tenant, host=host, status=Status.RUNNING)
    make_instance(tenant=tenant, host=host, status=Status.STOPPED)
    make_instance(tenant=tenant, host=host, status=Status.DELETED)
    now = datetime.now(UTC)
    for took, outcome in ((2, ActionStatus.SUCCEEDED), (40, ActionStatus.FAILED)):
        InstanceAction.objects.create(instance=running, operation=Operation.REBOOT, status=outcome,
                                      started_at=now - timedelta(seconds=took), finished_at=now)
    InstanceAction.objects.create(instance=running, operation=Operation.START, status=ActionStatus.PENDING)
    before = scraped(client, **auth)
    member_api.get("/api/v1/instances/")
    got = scraped(client, **auth)
    # Then hosts and instances are counted by state and technology (deleted ones are not)
    assert got[("cloudpanel_hosts", (("state", "online"), ("technology", "test")))] == 1
    assert got[("cloudpanel_instances", (("status", "running"), ("technology", "test")))] == 1
    assert got[("cloudpanel_instances", (("status", "stopped"), ("technology", "test")))] == 1
    assert not any(k[0] == "cloudpanel_instances" and ("status", "deleted") in k[1] for k in got)
    # operations by outcome, and their durations as a histogram
    assert got[("cloudpanel_actions_total", (("operation", "reboot"), ("status", "failed")))] == 1
    assert got[("cloudpanel_actions_total", (("operation", "start"), ("status", "pending")))] == 1
    reboot = (("operation", "reboot"),)
    assert got[("cloudpanel_action_duration_seconds_bucket", (("le", "2.5"), *reboot))] == 1
    assert got[("cloudpanel_action_duration_seconds_bucket", (("le", "60.0"), *reboot))] == 2
    assert got[("cloudpanel_action_duration_seconds_count", reboot)] == 2
    assert got[("cloudpanel_action_duration_seconds_sum", reboot)] == pytest.approx(42)
    # the API request is counted under its view, with its latency
    listed = ("cloudpanel_http_requests_total", (("method", "GET"), ("status", "200"), ("view", "api-instance-list")))
    assert got[listed] == before.get(listed, 0) + 1
    assert got[("cloudpanel_http_request_duration_seconds_count",
                (("method", "GET"), ("view", "api-instance-list")))] >= 1
    # and the broker's queue is there, with what waits in it
    assert got[("cloudpanel_queue_depth", (("queue", settings.CELERY_TASK_DEFAULT_QUEUE),))] >= 0


def test_metrics_give_each_instances_use_labelled_by_tenant_when_asked(client, settings, host, placed):
    settings.CLOUDPANEL_METRICS_TOKEN = "t"
    InstanceSample.objects.create(instance_id=placed.pk, resolution=Resolution.RAW, time=datetime.now(UTC),
                                  tenant_id=placed.tenant_id, cpu=33.0, memory_used=GIB, memory_total=2 * GIB)
    assert not any(k[0].startswith("cloudpanel_instance_") for k in scraped(client, HTTP_AUTHORIZATION="Bearer t"))
    settings.CLOUDPANEL_METRICS_INSTANCES = True
    got = scraped(client, HTTP_AUTHORIZATION="Bearer t")
    labels = (("host", host.name), ("instance", str(placed.uuid)), ("name", placed.name),
              ("tenant", placed.tenant.name))
    assert got[("cloudpanel_instance_cpu_percent", labels)] == 33.0
    assert got[("cloudpanel_instance_memory_bytes", labels)] == 2 * GIB
    assert ("cloudpanel_instance_disk_read_bytes_per_second", labels) not in got  # not sampled: not made up


@pytest.mark.django_db(transaction=True)
def test_metrics_count_open_websockets_and_the_listeners_heartbeat(client, settings, member, listener):
    settings.CLOUDPANEL_METRICS_TOKEN = "t"
    status = ("cloudpanel_websocket_connections", (("kind", "status"),))
    before = scraped(client, HTTP_AUTHORIZATION="Bearer t").get(status, 0)

    @async_to_sync
    async def open_one():
        socket = WebsocketCommunicator(application, "/ws/status/", headers=[ORIGIN, HOST])
        socket.scope["user"] = member
        assert (await socket.connect())[0]
        during = await sync_to_async(scraped)(client, HTTP_AUTHORIZATION="Bearer t")
        await socket.disconnect()
        return during

    during = open_one()
    assert during[status] == before + 1
    assert scraped(client, HTTP_AUTHORIZATION="Bearer t")[status] == before
    # The listener running beside says it is alive, and how far behind libvirt's events it is
    from tests.factories import wait_for

    assert wait_for(lambda: ("cloudpanel_listener_heartbeat_age_seconds", (("listener", "listener:all"),))
                    in scraped(client, HTTP_AUTHORIZATION="Bearer t"), timeout=5)
    got = scraped(client, HTTP_AUTHORIZATION="Bearer t")
    assert got[("cloudpanel_listener_heartbeat_age_seconds", (("listener", "listener:all"),))] < 5
    assert got[("cloudpanel_listener_lag_seconds", (("listener", "listener:all"),))] >= 0


def test_each_online_hosts_round_goes_to_its_own_queue_and_expires_within_the_interval(
        settings, tenant, django_capture_on_commit_callbacks):
    from unittest import mock

    from cloudpanel.celery import route_to_host
    from hosts.choices import HostState
    from metrics.tasks import sample_hosts

    settings.CLOUDPANEL_HOST_QUEUES = True
    online, offline = make_host(uri="test:///one"), make_host(uri="test:///two", state=HostState.OFFLINE)
    make_host(uri="test:///three", enabled=False)
    with mock.patch.object(sample_host, "apply_async") as queued, django_capture_on_commit_callbacks(execute=True):
        sample_hosts()
    (call,) = queued.call_args_list
    assert call.args == ((online.pk,),) and call.kwargs["expires"] == settings.CLOUDPANEL_METRICS_SECONDS
    assert route_to_host(sample_host.name, (online.pk,), {}, {"headers": call.kwargs["headers"]}) == {
        "queue": f"host.{online.pk}"}
    assert offline.pk not in [c.args[0][0] for c in queued.call_args_list]


def test_a_busy_domains_missing_disk_counters_are_no_reset_and_no_rate(host, placed):
    from hosts.hypervisor.stats import _summed

    # (under NOWAIT libvirt leaves out the counters a busy domain's monitor would have to answer)
    assert _summed({"block.count": 2, "block.0.rd.bytes": 5, "block.1.rd.bytes": 7}, "block", "rd.bytes") == 12
    assert _summed({"block.count": 2, "block.0.rd.bytes": 5}, "block", "rd.bytes") is None
    assert _summed({}, "net", "rx.bytes") is None
    sampling.record(host_id=host.pk, read=HostCounters(at(0), node(), (domain(placed.uuid, 0, disk=10**9),)))
    busy = DomainCounters(uuid=str(placed.uuid), state=PowerState.RUNNING, vcpus=2, cpu_time_ns=10**9,
                          memory_bytes=GIB, memory_used_bytes=GIB // 2)
    sampling.record(host_id=host.pk, read=HostCounters(at(10), node(), (busy,)))
    sampling.record(host_id=host.pk, read=HostCounters(at(20), node(), (domain(placed.uuid, 2 * 10**9,
                                                                                 disk=10**9 + 4096),)))
    rates = list(InstanceSample.objects.order_by("time").values_list("disk_read", flat=True))
    assert rates == [None, None]  # not the whole total since boot in one round


def test_metrics_sum_what_every_web_process_counted(client, settings):
    import os
    import subprocess
    import sys

    settings.CLOUDPANEL_METRICS_TOKEN = "t"
    # Another web process of the same server (it shares the directory it inherits) answered two requests
    subprocess.run([sys.executable, "-c", "from cloudpanel import telemetry; "
                    "telemetry.REQUESTS.labels('GET', 'elsewhere', '200').inc(2)"],
                   cwd=settings.BASE_DIR, env=dict(os.environ), check=True)
    got = scraped(client, HTTP_AUTHORIZATION="Bearer t")
    assert got[("cloudpanel_http_requests_total", (("method", "GET"), ("status", "200"), ("view", "elsewhere")))] == 2
