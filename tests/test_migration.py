"""Migration between two real hosts on this machine (scripts/fleet.sh: each a libvirtd in namespaces of its own,
reached over qemu+tcp://): live with its disks, seed, volume, NIC and filter; cold with its snapshots; refused with
the reason; cancelled; the target dying halfway; a worker dying after the move; and a host's libvirtd dying."""

import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from django.conf import settings
from django.db import connections
from django.utils import timezone
from playwright.sync_api import expect, sync_playwright

from cloudpanel.celery import app as celery_app
from hosts import hypervisor
from hosts import services as host_services
from hosts import tasks as host_tasks
from hosts.choices import HostState
from hosts.exceptions import NoCapacity
from images.management.commands.add_image import add_file
from instances import migration, migration_jobs, services, snapshots, tasks, volumes
from instances.choices import ActionStatus, Operation, Status
from instances.host_steps import HostSide
from instances.models import HostStep, Instance, InstanceAction, Leftover, Snapshot, Volume
from networks import security
from networks import services as network_services
from tests.conftest import ROOT, run_fleet
from tests.factories import make_host, make_user, wait_for
from tests.test_browser import CHROMIUM_ARGS, SCREENSHOTS
from tests.test_qemu import console_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.xdist_group("fleet")]
@pytest.fixture
def admin(db):
    return make_user(staff=True)


def migrate(api, instance, host=None):
    return api.post(f"/api/v1/instances/{instance.pk}/migrate/", {"host": host.pk if host else None},
                    format="json")


def _qcow2_with_marker(tmp_path: Path) -> Path:
    raw, qcow2 = tmp_path / "base.raw", tmp_path / "base.qcow2"
    with open(raw, "wb") as out:
        out.write(b"CLOUDPANEL-BASE-MARKER\n")
        out.truncate(16 << 20)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True)
    return qcow2


def _files(host, instance):
    pool = hypervisor.connection(host.uri).storagePoolLookupByName(host.storage_pool)
    pool.refresh(0)
    return set(pool.listVolumes()) & {instance.volume_name, instance.seed_volume_name,
                                      *(v.volume_name for v in Volume.objects.filter(instance=instance))}


def _defined(host, instance) -> bool:
    return any(dom.UUIDString() == str(instance.uuid) for dom in hypervisor.connection(host.uri).listAllDomains(0))


def test_a_running_guest_moves_live_with_its_disk_seed_volume_nic_and_filter(
        fleet, panel, admin, admin_api, member, tenant, guest_kernel, tmp_path):
    source, target = fleet
    # Given a running guest on the first host: an overlay of a library image, its cloud-init seed, a volume, and a
    # NIC with a security group on a NAT network
    image = add_file(_qcow2_with_marker(tmp_path), name="base", declared_format="qcow2")
    network = network_services.create_network(user=None, tenant=tenant, name="lan", kind="nat", cidr="10.79.0.0/24")
    group = security.create_group(user=None, tenant=tenant, name="web")
    action = services.create_instance(
        user=member, tenant=tenant, name="mover", vcpus=1, memory_mib=128, boot_source="image", image=image,
        boot_kernel=guest_kernel, ssh_keys="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKx4cpmove test@cloudpanel",
        host=source, nics=[services.NicRequest(network, "10.79.0.20", [group])])
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, instance.status_reason
    volume = volumes.create(tenant=tenant, name="data", size_gib=1, user=member, instance=instance)
    attached = volumes.attach(volume=Volume.objects.get(pk=volume.pk), instance=instance, user=member)
    assert InstanceAction.objects.get(pk=attached.pk).status == ActionStatus.SUCCEEDED
    console_session(instance, member, "echo still-here > /tmp/alive; echo MOVED-DISK | dd of=/dev/vda bs=512 "
                    "seek=2048 count=1 conv=sync 2>/dev/null; echo VOLUME-MARK | dd of=/dev/vdc bs=512 count=1 "
                    "conv=sync 2>/dev/null; sync; echo written-$((3*3))", r"written-9")
    # When a platform admin migrates it, choosing no host (the other is the only one that fits)
    answer = migrate(admin_api, instance)
    # Then it moved while it ran: on the second host, with everything it had, and nothing left on the first
    assert answer.status_code == 202, answer.content
    done = InstanceAction.objects.get(pk=answer.json()["id"])
    assert done.status == ActionStatus.SUCCEEDED, done.error
    assert done.target_host == target and done.progress["data_total"] > 0
    instance.refresh_from_db()
    assert (instance.host, instance.status, instance.task_state) == (target, Status.RUNNING, None)
    assert Volume.objects.get(pk=volume.pk).host == target
    assert not _defined(source, instance) and _defined(target, instance)
    assert _files(source, instance) == set()
    assert _files(target, instance) == {instance.volume_name, instance.seed_volume_name, volume.volume_name}
    [port] = instance.ports.all()
    conn = hypervisor.connection(target.uri)
    assert port.mac in conn.networkLookupByName(network.libvirt_name).XMLDesc()  # its address pinned there
    assert port.filter_name in conn.listNWFilters()
    gone = hypervisor.connection(source.uri)
    assert network.libvirt_name not in gone.listNetworks() + gone.listDefinedNetworks()
    assert port.filter_name not in gone.listNWFilters()
    # and its console (through the panel, on the new host) reaches the same running system, disks and all
    text = console_session(instance, member, "cat /tmp/alive; head -c 22 /dev/vda; echo; dd if=/dev/vda bs=512 "
                           "skip=2048 count=1 2>/dev/null | head -c 10; echo; head -c 11 /dev/vdc; echo; "
                           "echo read-$((2*4))", r"read-8")
    assert "still-here" in text and "CLOUDPANEL-BASE-MARKER" in text
    assert "MOVED-DISK" in text and "VOLUME-MARK" in text


def test_a_stopped_guest_moves_cold_with_its_snapshots(fleet, panel, admin, admin_api, member, tenant,
                                                       guest_kernel):
    source, target = fleet
    action = services.create_instance(user=member, tenant=tenant, name="cold", vcpus=1, memory_mib=128, disk_gib=1,
                                      boot_kernel=guest_kernel, host=source)
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, instance.status_reason
    console_session(instance, member, "echo COLD-MARK | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; "
                    "sync; echo synced-$((5*5))", r"synced-25")
    services.request_operation(instance=instance, operation="poweroff", user=member)
    snapshot = snapshots.take(instance=Instance.objects.get(pk=instance.pk), name="before", user=member).snapshot
    assert Snapshot.objects.get(pk=snapshot.pk).status == "available"
    # When it is migrated to the named host while stopped
    answer = migrate(admin_api, Instance.objects.get(pk=instance.pk), target)
    assert answer.status_code == 202, answer.content
    done = InstanceAction.objects.get(pk=answer.json()["id"])
    assert done.status == ActionStatus.SUCCEEDED, done.error
    # Then it is defined there (stopped, its snapshot with it) and gone from the source, disk and all
    instance.refresh_from_db()
    assert (instance.host, instance.status) == (target, Status.STOPPED)
    assert not _defined(source, instance) and _defined(target, instance)
    assert _files(source, instance) == set() and _files(target, instance) == {instance.volume_name}
    assert hypervisor.connection(target.uri).lookupByUUIDString(str(instance.uuid)).snapshotListNames() == [
        snapshot.libvirt_name]
    # and it starts there with what it wrote
    services.request_operation(instance=instance, operation="start", user=member)
    assert Instance.objects.get(pk=instance.pk).status == Status.RUNNING
    assert "COLD-MARK" in console_session(instance, member, "head -c 9 /dev/vda; echo", r"COLD-\w+\s")


def test_migrations_are_refused_with_the_reason_and_nothing_changes(fleet, admin, admin_api, member, member_api,
                                                                   tenant, guest_kernel, panel):
    source, target = fleet
    action = services.create_instance(user=member, tenant=tenant, name="stay", vcpus=1, memory_mib=128,
                                      boot_kernel=guest_kernel, host=source)
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, instance.status_reason
    other_technology = make_host(name="fake")

    def refused(host, *, status, says):
        before = InstanceAction.objects.count()
        answer = migrate(admin_api, instance, host)
        assert answer.status_code == status, answer.content
        assert says in str(answer.json()), answer.json()
        assert InstanceAction.objects.count() == before
        assert Instance.objects.get(pk=instance.pk).host == source

    refused(source, status=409, says="on fleet-1 already")
    refused(other_technology, status=409, says="runs libvirt test driver, not QEMU/KVM")
    host_services.set_enabled(host=target, enabled=False)
    refused(target, status=400, says="'fleet-2' is disabled")
    host_services.set_enabled(host=target, enabled=True)
    target.__class__.objects.filter(pk=target.pk).update(memory_mib=64)
    refused(target, status=400, says="128 MiB of RAM exceed host 'fleet-2'")
    refused(None, status=400, says="no other host can take 'stay'")
    target.__class__.objects.filter(pk=target.pk).update(memory_mib=4096)
    Snapshot.objects.create(instance=instance, name="s", size_gib=0, status="available")
    refused(target, status=409, says="has snapshots")
    Snapshot.objects.filter(instance=instance).delete()
    # a tenant's own member may not, nor may anyone cancel what is not in flight
    assert migrate(member_api, instance, target).status_code == 403
    assert admin_api.post(f"/api/v1/instances/{instance.pk}/migrate/cancel/").status_code == 409


def _in_thread(api, instance, host):
    """Migrate from a thread of its own (tasks run in-process in tests): returns the thread and its answer."""
    answers = []

    def run():
        try:
            answers.append(migrate(api, instance, host))
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, answers


def _running_migration(instance):
    def found():
        return InstanceAction.objects.filter(instance=instance, operation=Operation.MIGRATE,
                                             status=ActionStatus.RUNNING, progress__data_processed__gt=0).first()
    assert wait_for(lambda: found() is not None, timeout=60), "the migration did not start moving data"
    return found()


def test_a_migration_in_flight_is_busy_then_cancelled_and_the_guest_stays(fleet, settings, admin, admin_api, member,
                                                                         tenant, guest_kernel, panel):
    source, target = fleet
    settings.CLOUDPANEL_MIGRATION_BANDWIDTH_MIB = 1  # slow enough to be caught halfway
    action = services.create_instance(user=member, tenant=tenant, name="slow", vcpus=1, memory_mib=128, disk_gib=1,
                                      boot_kernel=guest_kernel, host=source)
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, instance.status_reason
    thread, answers = _in_thread(admin_api, instance, target)
    running = _running_migration(instance)
    # a second migration of it meanwhile is refused as busy
    second = migrate(admin_api, instance, target)
    assert second.status_code == 409 and "migrating is in progress" in second.json()["detail"]
    # and so is removing the host it is on its way to
    removal = admin_api.delete(f"/api/v1/hosts/{target.pk}/")
    assert removal.status_code == 409 and "on their way to host 'fleet-2'" in removal.json()["detail"]
    # When the admin cancels it
    assert admin_api.post(f"/api/v1/instances/{instance.pk}/migrate/cancel/").status_code == 202
    thread.join(timeout=60)
    assert not thread.is_alive() and answers[0].status_code == 202
    # Then it failed as cancelled, and the guest runs on where it was, with nothing left on the target
    running.refresh_from_db()
    assert running.status == ActionStatus.FAILED and "cancelled" in running.error
    instance.refresh_from_db()
    assert (instance.host, instance.status, instance.task_state) == (source, Status.RUNNING, None)
    assert _defined(source, instance) and not _defined(target, instance)
    assert _files(target, instance) == set()
    assert "alive-6" in console_session(instance, member, "echo alive-$((2*3))", r"alive-6")


def test_the_target_dying_halfway_leaves_the_guest_running_on_its_host_and_a_retry_works(
        fleet, settings, admin, admin_api, member, tenant, guest_kernel, panel):
    source, target = fleet
    settings.CLOUDPANEL_MIGRATION_BANDWIDTH_MIB = 1
    action = services.create_instance(user=member, tenant=tenant, name="survivor", vcpus=1, memory_mib=128,
                                      boot_kernel=guest_kernel, host=source)
    instance = Instance.objects.get(pk=action.instance_id)
    thread, answers = _in_thread(admin_api, instance, target)
    running = _running_migration(instance)
    # When the target host's libvirtd and QEMU die halfway
    pids = subprocess.run(["ip", "netns", "pids", "cp-host2"], capture_output=True, text=True).stdout.split()
    subprocess.run(["kill", "-9", *pids], check=False)
    thread.join(timeout=90)
    assert not thread.is_alive()
    # Then the migration failed with the reason, and the guest still runs on its host, shown so
    running.refresh_from_db()
    assert running.status == ActionStatus.FAILED and running.error
    instance.refresh_from_db()
    assert (instance.host, instance.status, instance.task_state) == (source, Status.RUNNING, None)
    assert "alive-6" in console_session(instance, member, "echo alive-$((2*3))", r"alive-6")
    # and once the target is back, the migration can be asked for again and goes through
    run_fleet("start", "2")
    hypervisor.forget(target.uri)
    settings.CLOUDPANEL_MIGRATION_BANDWIDTH_MIB = 0
    refused = migrate(admin_api, instance, target)  # (what the move made there is taken back once it answers)
    assert refused.status_code == 409 and "a migration to it that failed" in refused.json()["detail"]
    host_tasks.reconcile_host(target.pk)
    assert not Leftover.objects.filter(instance=instance).exists()
    answer = migrate(admin_api, instance, target)
    assert answer.status_code == 202, answer.content
    done = InstanceAction.objects.get(pk=answer.json()["id"])
    assert done.status == ActionStatus.SUCCEEDED, done.error
    assert Instance.objects.get(pk=instance.pk).host == target


def test_a_host_whose_libvirtd_dies_shows_its_guest_unknown_then_running_again(fleet, settings, member, tenant,
                                                                             guest_kernel, panel):
    _, host = fleet
    action = services.create_instance(user=member, tenant=tenant, name="orphan", vcpus=1, memory_mib=128,
                                      boot_kernel=guest_kernel, host=host)
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, instance.status_reason
    # When the host's libvirtd dies (its guest's QEMU runs on) and the host stays silent past the limit
    pidfile = Path("/var/lib/cloudpanel-fleet/host2/run/libvirtd.pid")
    subprocess.run(["kill", "-9", pidfile.read_text().strip()], check=True)
    host_tasks.reconcile_host(host.pk)
    assert host.__class__.objects.get(pk=host.pk).state == HostState.OFFLINE
    settings.CLOUDPANEL_HOST_DOWN_SECONDS = 0
    host_tasks.check_hosts()
    # Then the guest is unknown, not "running"
    assert Instance.objects.get(pk=instance.pk).status == Status.UNKNOWN
    # When libvirtd is back, the next reconcile finds the guest running, and its console answers
    run_fleet("start", "2")
    host_tasks.reconcile_host(host.pk)
    assert host.__class__.objects.get(pk=host.pk).state == HostState.ONLINE
    assert Instance.objects.get(pk=instance.pk).status == Status.RUNNING
    assert "alive-6" in console_session(instance, member, "echo alive-$((2*3))", r"alive-6")


def test_a_migration_whose_worker_died_after_the_guest_moved_is_finished_by_the_sweep(fleet, admin, member, tenant,
                                                                                      guest_kernel, panel):
    source, target = fleet
    action = services.create_instance(user=member, tenant=tenant, name="resumed", vcpus=1, memory_mib=128,
                                      boot_kernel=guest_kernel, host=source)
    instance = Instance.objects.get(pk=action.instance_id)
    console_session(instance, member, "echo booted-$((1+1))", r"booted-2")  # (moved once it has booted)
    # Given a migration a worker took, which moved the guest, then died before recording it
    with mock.patch.object(tasks, "enqueue"):
        moving = migration.migrate(instance=instance, host=target, user=admin)
    InstanceAction.objects.filter(pk=moving.pk).update(status=ActionStatus.RUNNING, attempts=1,
                                                       heartbeat_at=timezone.now() - timedelta(minutes=5))
    steps = migration_jobs.plan(instance, source, target)
    migration_jobs.prepare(HostSide(moving, target), instance, source, steps, live=True)
    hypervisor.migrate_live(source.uri, str(instance.uuid), target_uri=target.uri, paths=steps.paths, copy=[],
                            watch=lambda progress: True)
    # When the sweep finds its lease expired
    services.recover_lost_actions(lease=timedelta(seconds=30))
    # Then the migration is run again, finds the guest on the target, and finishes there
    moving.refresh_from_db()
    assert (moving.status, moving.attempts) == (ActionStatus.SUCCEEDED, 2), moving.error
    instance.refresh_from_db()
    assert (instance.host, instance.status, instance.task_state) == (target, Status.RUNNING, None)
    assert not _defined(source, instance) and _defined(target, instance)
    assert "alive-6" in console_session(instance, member, "echo alive-$((2*3))", r"alive-6")


def test_maintenance_shows_its_plan_then_moves_each_instance_by_its_policy(fleet, settings, admin, admin_api, member,
                                                                         tenant, guest_kernel, panel):
    source, target = fleet
    settings.CLOUDPANEL_RAM_ALLOCATION_RATIO = 1.0
    settings.CLOUDPANEL_SHUTDOWN_TIMEOUT_SECONDS = 2  # (the tiny guest ignores ACPI: it is forced off after that)

    def make(name, **fields):
        action = services.create_instance(user=member, tenant=tenant, name=name, vcpus=1, memory_mib=128,
                                          boot_kernel=guest_kernel, host=source, **fields)
        return Instance.objects.get(pk=action.instance_id)

    live, cold, stop, too_many = make("a-live"), make("b-cold", start=False), make("c-stop"), make("d-late")
    Instance.objects.filter(pk=stop.pk).update(on_host_maintenance="stop")
    broken = make("e-broken")
    Instance.objects.filter(pk=broken.pk).update(status=Status.ERROR)
    # (the other host has room for three of them: the plan fills it in order, then says why the next stays)
    target.__class__.objects.filter(pk=target.pk).update(memory_mib=128 * 3 + 64)
    # When a platform admin asks for the plan
    plan = admin_api.get(f"/api/v1/hosts/{source.pk}/maintenance/")
    assert plan.status_code == 200
    steps = {step["instance_name"]: step for step in plan.json()}
    # Then it says what would become of each, and nothing has changed
    assert (steps["a-live"]["action"], steps["a-live"]["target_host"]) == ("migrate live", target.pk)
    assert (steps["b-cold"]["action"], steps["b-cold"]["target_host"]) == ("migrate cold", target.pk)
    assert steps["c-stop"]["action"] == "shut down"
    assert (steps["d-late"]["action"], steps["d-late"]["target_host"]) == ("migrate live", target.pk)
    assert steps["e-broken"]["action"] == "stays" and "it is error" in steps["e-broken"]["reason"]
    assert not host_services.Host.objects.get(pk=source.pk).maintenance
    assert not InstanceAction.objects.filter(operation=Operation.MIGRATE).exists()
    target.__class__.objects.filter(pk=target.pk).update(memory_mib=128 * 2 + 64)
    again = {step["instance_name"]: step for step in admin_api.get(
        f"/api/v1/hosts/{source.pk}/maintenance/").json()}
    assert again["d-late"]["action"] == "stays" and "64 MiB of RAM left" in again["d-late"]["reason"]
    # When it enters maintenance
    entered = admin_api.post(f"/api/v1/hosts/{source.pk}/maintenance/", {"enter": True}, format="json")
    assert entered.status_code == 202, entered.content
    # Then the host takes nothing new, each instance went its way, and the rest stayed with the reason
    assert host_services.Host.objects.get(pk=source.pk).maintenance
    assert (Instance.objects.get(pk=live.pk).host, Instance.objects.get(pk=live.pk).status) == (target, "running")
    assert (Instance.objects.get(pk=cold.pk).host, Instance.objects.get(pk=cold.pk).status) == (target, "stopped")
    assert (Instance.objects.get(pk=stop.pk).host, Instance.objects.get(pk=stop.pk).status) == (source, "stopped")
    assert Instance.objects.get(pk=too_many.pk).host == source
    with pytest.raises(NoCapacity, match="'fleet-1' is in maintenance"):
        services.create_instance(user=member, tenant=tenant, name="new", vcpus=1, memory_mib=64,
                                 boot_kernel=guest_kernel, host=source)
    # When it leaves maintenance, placement may use the host again (nothing moves back)
    left = admin_api.post(f"/api/v1/hosts/{source.pk}/maintenance/", {"enter": False}, format="json")
    assert left.status_code == 202
    assert not host_services.Host.objects.get(pk=source.pk).maintenance
    assert Instance.objects.get(pk=live.pk).host == target


@pytest.fixture
def slow_migrations(monkeypatch):
    """Live migrations at 8 MiB/s in the served panel (set before `server` starts it): slow enough to watch."""
    monkeypatch.setenv("CLOUDPANEL_MIGRATION_BANDWIDTH_MIB", "8")


def test_a_platform_admin_migrates_a_running_guest_from_its_page_and_watches_it_go(
        fleet, slow_migrations, server, member, tenant, guest_kernel, panel, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # (the database is read while Playwright's loop runs)
    source, target = fleet
    action = services.create_instance(user=member, tenant=tenant, name="watched", vcpus=1, memory_mib=128,
                                      boot_kernel=guest_kernel, host=source)
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, instance.status_reason
    console_session(instance, member, "echo booted-$((1+1))", r"booted-2")  # (moved once it has booted)
    admin = make_user(staff=True, password="s3cret-pass")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(f"{server}/login/")
        page.fill("#id_username", admin.username)
        page.fill("#id_password", "s3cret-pass")
        page.click("button[type=submit]")
        # When the admin picks the other host on the instance's page and migrates it
        page.goto(f"{server}/instances/{instance.pk}/")
        expect(page.locator("#live-indicator")).to_contain_text("live")
        page.select_option("#migrate-form select", label="fleet-2")
        page.locator("#migrate-form").get_by_role("button", name="Migrate").click()
        # Then the page shows it on its way, with how far it is, without a reload
        progress = page.locator("#migration-progress")
        expect(progress).to_contain_text("Migrating to fleet-2", timeout=30000)
        expect(progress.get_by_role("progressbar")).to_be_visible(timeout=30000)
        expect(progress).to_contain_text("of memory left")
        page.screenshot(path=SCREENSHOTS / "instance-migrating.png", full_page=True)
        # and once it is there, the page says so: running, on the new host
        expect(progress).to_be_hidden(timeout=120000)
        moved = InstanceAction.objects.filter(instance=instance, operation=Operation.MIGRATE).get()
        assert moved.status == ActionStatus.SUCCEEDED, (moved.error, Instance.objects.get(pk=instance.pk).status_reason)
        expect(page.locator("#instance-status")).to_have_text("Running")
        expect(page.locator("#instance-details")).to_contain_text("fleet-2")
        # And the maintenance page of the host it left plans nothing for it any more
        page.goto(f"{server}/hosts/{source.pk}/maintenance/")
        expect(page.locator("#maintenance-plan")).to_contain_text("No instances on this host")
        page.goto(f"{server}/hosts/{target.pk}/maintenance/")
        expect(page.locator("#maintenance-plan")).to_contain_text("Migrate live to fleet-1")
        page.screenshot(path=SCREENSHOTS / "host-maintenance.png", full_page=True)
        browser.close()
    assert Instance.objects.get(pk=instance.pk).host == target


def test_a_migration_between_hosts_that_share_their_storage_is_refused_and_keeps_the_disk(
        fleet, admin, admin_api, member, tenant, guest_kernel, panel):
    source, _ = fleet
    # Given the same libvirtd registered a second time (by its port): its pool is the first one's storage
    alias = host_services.register_host(name="fleet-1-again", uri=source.uri.replace("/system", ":16509/system"),
                                        accelerator="tcg")
    alias.refresh_from_db()
    assert alias.state == HostState.ONLINE, alias.last_error
    action = services.create_instance(user=member, tenant=tenant, name="shared", vcpus=1, memory_mib=128, disk_gib=1,
                                      boot_kernel=guest_kernel, host=source)
    instance = Instance.objects.get(pk=action.instance_id)
    # When it is migrated to the alias
    answer = migrate(admin_api, instance, alias)
    # Then the worker refuses with the reason, and the guest runs on with its disk in place
    done = InstanceAction.objects.get(pk=answer.json()["id"])
    assert done.status == ActionStatus.FAILED and "share their storage pool" in done.error
    instance.refresh_from_db()
    assert (instance.host, instance.status) == (source, Status.RUNNING)
    assert _files(source, instance) == {instance.volume_name}
    with hypervisor.pool_marker(fleet[0].uri, "default") as marker:  # (the two hosts of the fleet do not share)
        assert not hypervisor.holds_volume(fleet[1].uri, "default", marker)


def test_a_dead_host_is_evacuated_its_guests_rebuilt_from_image_and_backup_and_cleaned_when_it_returns(
        fleet, settings, admin, admin_api, member, member_api, tenant, guest_kernel, panel, tmp_path):
    survivor_host, dying = fleet
    image = add_file(_qcow2_with_marker(tmp_path), name="base", declared_format="qcow2")
    network = network_services.create_network(user=None, tenant=tenant, name="lan", kind="nat", cidr="10.84.0.0/24")

    def create(name, **fields):
        action = services.create_instance(user=member, tenant=tenant, name=name, vcpus=1, memory_mib=128,
                                          boot_kernel=guest_kernel, host=dying, **fields)
        instance = Instance.objects.get(pk=action.instance_id)
        assert instance.status == Status.RUNNING, instance.status_reason
        return instance

    # Given a host running a guest booted from an image (with a NIC), one whose disk was backed up, and one whose
    # disk was not
    phoenix = create("phoenix", boot_source="image", image=image, nics=[services.NicRequest(network, "10.84.0.20", [])])
    saved = create("saved", disk_gib=1)
    anchor = create("anchor", disk_gib=1)
    console_session(saved, member, "echo SAVED-V1 | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; sync; "
                    "echo synced-$((4+1))", r"synced-5")
    taken = member_api.post(f"/api/v1/instances/{saved.pk}/backups/", {}, format="json")
    assert taken.status_code == 202, taken.content
    assert InstanceAction.objects.get(pk=taken.json()["id"]).status == ActionStatus.SUCCEEDED
    # When the host dies (its libvirtd and guests killed) and stays silent past the limit
    pids = subprocess.run(["ip", "netns", "pids", "cp-host2"], capture_output=True, text=True).stdout.split()
    subprocess.run(["kill", "-9", *pids], check=False)
    host_tasks.reconcile_host(dying.pk)
    settings.CLOUDPANEL_HOST_DOWN_SECONDS = 0
    host_tasks.check_hosts()
    host_tasks.reconcile_host(survivor_host.pk)  # (which answers: a limit of 0 s took it for silent too)
    assert Instance.objects.get(pk=phoenix.pk).status == Status.UNKNOWN
    # Then the plan rebuilds two of them on the other host, and says why the third stays
    plan = {s["instance_name"]: s for s in admin_api.get(f"/api/v1/hosts/{dying.pk}/evacuate/").json()}
    assert {name: (s["action"], s["target_host_name"]) for name, s in plan.items()} == {
        "phoenix": ("from image", survivor_host.name), "saved": ("from backup", survivor_host.name),
        "anchor": ("stays", None)}, {name: s["reason"] for name, s in plan.items()}
    assert plan["anchor"]["reason"] == "its disk was only on the host, and it has no backup"
    # When a platform admin evacuates it
    answer = admin_api.post(f"/api/v1/hosts/{dying.pk}/evacuate/", {"host_is_off": True}, format="json")
    assert answer.status_code == 202, answer.content
    # Then each runs again on the other host: from the image's disk, from the backup's, with its address
    for instance in (phoenix, saved):
        instance.refresh_from_db()
        assert (instance.host, instance.status) == (survivor_host, Status.RUNNING), instance.status_reason
    assert "CLOUDPANEL-BASE" in console_session(phoenix, member, 'echo "base:$(head -c 15 /dev/vda):end$((2+2))"',
                                                r"base:.*:end4")
    assert "SAVED-V1" in console_session(saved, member, 'echo "blk:$(head -c 8 /dev/vda):end$((1+1))"',
                                         r"blk:.*:end2")
    assert "10.84.0.20" in console_session(phoenix, member, "ip -4 addr; echo addr-$((5+5))", r"addr-10")
    assert Instance.objects.get(pk=anchor.pk).status == Status.UNKNOWN
    # When the dead host comes back, what the evacuated guests left there goes; the guest that stayed is its own
    run_fleet("start", "2")
    hypervisor.forget(dying.uri)
    host_tasks.reconcile_host(dying.pk)
    assert not _defined(dying, phoenix) and not _defined(dying, saved) and _defined(dying, anchor)
    assert _files(dying, phoenix) == set() and _files(dying, saved) == set()
    assert Instance.objects.get(pk=phoenix.pk).host == survivor_host
    assert not dying.__class__.objects.get(pk=dying.pk).enabled  # (until an admin enables it again)


def test_a_guest_cpu_the_target_cannot_give_is_refused_with_the_features_it_lacks(fleet):
    import uuid as uuids
    import xml.etree.ElementTree as ET

    source, target = fleet

    def defined(cpu_model):
        root = ET.Element("domain", type="qemu")
        ET.SubElement(root, "name").text = f"cp-cpu-{cpu_model or 'default'}"
        ET.SubElement(root, "uuid").text = str(uuids.uuid4())
        ET.SubElement(root, "memory", unit="MiB").text = "64"
        ET.SubElement(ET.SubElement(root, "os"), "type", arch="x86_64", machine="pc").text = "hvm"
        if cpu_model:
            cpu = ET.SubElement(root, "cpu", mode="custom", match="exact")
            ET.SubElement(cpu, "model", fallback="forbid").text = cpu_model
        return hypervisor.connection(source.uri).defineXML(ET.tostring(root, encoding="unicode")).UUIDString()

    def refusal(cpu_model):  # (read on the source, compared on the target)
        return hypervisor.cpu_refusal(target.uri, hypervisor.guest_cpu(source.uri, defined(cpu_model)))

    refused = refusal("Skylake-Server")
    assert refused.startswith("the guest's CPU is not one the target host can give it") and "avx512f" in refused
    assert refusal("qemu64") is None
    assert refusal("") is None  # (libvirt gives a definition without one its hypervisor's default CPU)


@pytest.fixture
def host_workers(fleet, panel, settings):
    """Each fleet host's own worker (queue host.<id>, CLOUDPANEL_HOST_QUEUES), reaching its host through its unix
    socket and the other host not at all (its URI there leads to a socket that does not exist)."""
    local = dict(pair.split("=>") for pair in run_fleet("local-uris"))
    db = connections["default"].settings_dict
    processes = []
    for host in fleet:
        reach = [f"{host.uri}=>{local[host.uri]}"] + [
            f"{other.uri}=>qemu:///system?socket=/nonexistent/host{other.pk}" for other in fleet if other != host]
        env = {**os.environ, "CLOUDPANEL_HOST_QUEUES": "1", "CLOUDPANEL_LOCAL_URIS": " ".join(reach),
               "CLOUDPANEL_TASK_TIMEOUT_SECONDS": "20",
               "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
               "CLOUDPANEL_PANEL_URL": settings.CLOUDPANEL_PANEL_URL,
               "CLOUDPANEL_BACKUP_DIR": str(settings.CLOUDPANEL_BACKUP_DIR),
               "CLOUDPANEL_SCRATCH_DIR": settings.CLOUDPANEL_SCRATCH_DIR}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "cloudpanel", "worker", "--pool", "threads", "-c", "2",
             "-Q", f"host.{host.pk},host.{host.pk}.steps", "-n", f"host{host.pk}@%h", "--loglevel", "WARNING",
             "--without-gossip", "--without-mingle", "--without-heartbeat"], cwd=ROOT, env=env))
    settings.CLOUDPANEL_HOST_QUEUES = True
    celery_app.conf.task_always_eager = False
    yield fleet, processes
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=30)


def _finished(action_id: int, timeout: float = 120) -> InstanceAction:
    assert wait_for(lambda: InstanceAction.objects.get(pk=action_id).status in (ActionStatus.SUCCEEDED,
                                                                                ActionStatus.FAILED), timeout=timeout)
    return InstanceAction.objects.get(pk=action_id)


def test_with_a_worker_per_host_each_side_of_a_migration_is_done_by_its_own_hosts_worker(
        host_workers, admin, admin_api, member, tenant, guest_kernel):
    (first, second), workers = host_workers
    # Given a guest with a disk, made by the first host's worker
    action = services.create_instance(user=member, tenant=tenant, name="far", vcpus=1, memory_mib=128, disk_gib=1,
                                      boot_kernel=guest_kernel, host=first)
    created = _finished(action.pk)
    assert created.status == ActionStatus.SUCCEEDED, created.error
    instance = Instance.objects.get(pk=action.instance_id)
    # When it is migrated live, then stopped and migrated back cold: each worker reaching only its own host
    live = _finished(migrate(admin_api, instance, second).json()["id"])
    assert live.status == ActionStatus.SUCCEEDED, live.error
    instance.refresh_from_db()
    assert (instance.host, instance.status) == (second, Status.RUNNING)
    assert not _defined(first, instance) and _defined(second, instance)
    stop = services.request_operation(instance=instance, operation="poweroff", user=member)
    assert _finished(stop.pk).status == ActionStatus.SUCCEEDED
    cold = _finished(migrate(admin_api, Instance.objects.get(pk=instance.pk), first).json()["id"])
    # Then both went through: the target's side by the target's worker, the disk through the backup store
    assert cold.status == ActionStatus.SUCCEEDED, cold.error
    instance.refresh_from_db()
    assert (instance.host, instance.status) == (first, Status.STOPPED)
    assert _defined(first, instance) and not _defined(second, instance)
    assert _files(first, instance) == {instance.volume_name} and _files(second, instance) == set()
    assert not HostStep.objects.exists() and not list((Path(settings.CLOUDPANEL_BACKUP_DIR) / "migrations").glob("*"))
    # and with the second host's worker gone, a migration there fails saying so, the guest staying where it is
    workers[1].terminate()
    workers[1].wait(timeout=30)
    refused = _finished(migrate(admin_api, Instance.objects.get(pk=instance.pk), second).json()["id"])
    assert refused.status == ActionStatus.FAILED
    assert refused.error.startswith(f"no worker of {second.name} took the step 'check target' within 20 s")
    instance.refresh_from_db()
    assert (instance.host, instance.status, instance.task_state) == (first, Status.STOPPED, None)
    assert _defined(first, instance) and not _defined(second, instance) and not HostStep.objects.exists()
