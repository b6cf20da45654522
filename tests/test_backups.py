"""Backups: full and incremental copies of a real guest's disk in the backup store, restored over the instance and
into a new one; their schedule, retention and meter; refusals with the reason."""

import subprocess
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from billing import metering
from billing import services as billing_services
from billing.models import UsageRecord
from hosts import hypervisor
from instances import backup_store, backups
from instances.choices import ActionStatus, BackupStatus, Status
from instances.models import Backup, Instance, InstanceAction
from tests.conftest import token_client
from tests.factories import make_instance, make_tenant, make_user
from tests.test_qemu import console_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fleet_host]


def done(response) -> InstanceAction:
    assert response.status_code == 202, response.content
    action = InstanceAction.objects.get(pk=response.json()["id"])
    assert action.status == ActionStatus.SUCCEEDED, action.error
    return action


def back_up(api, instance, **body):
    return api.post(f"/api/v1/instances/{instance.pk}/backups/", body, format="json")


def write(instance, user, text, tag):
    console_session(instance, user, f"echo {text} | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; sync; "
                    f"echo synced-$(({tag}+1))", rf"synced-{tag + 1}")


def first_block(instance, user) -> str:
    text = console_session(instance, user, 'echo "blk:$(head -c 9 /dev/vda):end$((1+1))"', r"blk:.*:end2")
    return text.rsplit("blk:", 1)[1]


@pytest.mark.qemu
def test_a_real_guest_is_backed_up_full_then_incremental_and_restored(qemu_host, member, member_api, tenant,
                                                                      guest_kernel):
    from instances import services

    action = services.create_instance(user=member, tenant=tenant, name="kept", vcpus=1, memory_mib=128, disk_gib=1,
                                      boot_kernel=guest_kernel, host=qemu_host)
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, instance.status_reason
    write(instance, member, "version-1", 10)
    # a full backup of the running guest, then an incremental one over it holding only what changed
    full = Backup.objects.get(pk=done(back_up(member_api, instance, name="first")).backup_id)
    assert (full.status, full.parent, full.name) == (BackupStatus.AVAILABLE, None, "first")
    assert hypervisor.checkpoints(qemu_host.uri, str(instance.uuid)) == [full.checkpoint]
    write(instance, member, "version-2", 20)
    incremental = Backup.objects.get(pk=done(back_up(member_api, instance)).backup_id)
    assert incremental.parent == full and incremental.stored_bytes < full.stored_bytes
    assert hypervisor.checkpoints(qemu_host.uri, str(instance.uuid)) == [incremental.checkpoint]
    info = subprocess.run(["qemu-img", "info", str(backup_store.path_of(incremental))], capture_output=True,
                          text=True).stdout
    assert full.file_name in info  # its chain in the store: the full one under it
    listed = member_api.get(f"/api/v1/instances/{instance.pk}/backups/").json()
    assert [b["kind"] for b in listed] == ["incremental", "full"]
    # the full one is not deleted while the incremental one is made over it
    refused = member_api.delete(f"/api/v1/backups/{full.pk}/")
    assert refused.status_code == 409 and "delete them first" in refused.json()["detail"]
    write(instance, member, "version-3", 30)
    # a restore over a running instance is refused; stopped, the incremental backup brings version-2 back
    over = member_api.post(f"/api/v1/backups/{incremental.pk}/restore/", {}, format="json")
    assert over.status_code == 409 and "running" in over.json()["detail"]
    services.request_operation(instance=instance, operation="poweroff", user=member)
    # (stopped by the panel, its checkpoint went first: libvirt deletes one only while the guest runs)
    assert hypervisor.checkpoints(qemu_host.uri, str(instance.uuid)) == []
    done(member_api.post(f"/api/v1/backups/{incremental.pk}/restore/", {}, format="json"))
    services.request_operation(instance=instance, operation="start", user=member)
    assert first_block(instance, member).startswith("version-2")
    assert hypervisor.checkpoints(qemu_host.uri, str(instance.uuid)) == []  # the next backup is full again
    # the full one, into a new instance of the tenant: version-1
    answer = member_api.post(f"/api/v1/backups/{full.pk}/restore/", {"name": "restored"}, format="json")
    create = done(answer)
    restored = create.instance
    assert (restored.name, restored.status, restored.restored_from, restored.disk_gib) == (
        "restored", Status.STOPPED, full, 1)
    services.request_operation(instance=restored, operation="start", user=member)
    assert first_block(restored, member).startswith("version-1")
    # a stopped instance's backup, taken from its page, is full, of its disk as it is
    services.request_operation(instance=instance, operation="poweroff", user=member)
    browser = Client()
    browser.force_login(member)
    assert browser.post(f"/instances/{instance.pk}/backups/", {"name": "paged"}).status_code == 302
    stopped = Backup.objects.get(name="paged")
    assert (stopped.status, stopped.parent, stopped.created_by) == (BackupStatus.AVAILABLE, None, member)
    assert stopped.stored_bytes > 0
    page = browser.get(f"/instances/{instance.pk}/").content.decode()
    assert page.count("data-backup=") == 3 and "incremental" in page and "Restore as new" in page
    # a snapshot of the stopped instance is taken as before (no bitmap of a backup is left in its disk)
    done(member_api.post(f"/api/v1/instances/{instance.pk}/snapshots/", {"name": "after"}, format="json"))
    # its schedule, set on the page
    browser.post(f"/instances/{instance.pk}/backups/", {"every_hours": "24", "keep": "3"})
    assert Instance.objects.filter(pk=instance.pk, backup_every_hours=24, backup_keep=3).exists()
    # a backup whose worker died halfway (its job begun, its copy and checkpoint left on the host) is run again
    services.request_operation(instance=instance, operation="start", user=member)
    lost = Backup.objects.create(tenant=tenant, instance=instance, instance_name=instance.name, disk_gib=1,
                                 memory_mib=128)
    copy = f"cp-backup-{lost.uuid}.qcow2"
    leftover = hypervisor.create_volume(qemu_host.uri, qemu_host.storage_pool, copy, 1)
    hypervisor.back_up(qemu_host.uri, str(instance.uuid), target=leftover, checkpoint=lost.checkpoint)
    long_ago = timezone.now() - timedelta(minutes=5)
    action = InstanceAction.objects.create(instance=instance, operation="backup", backup=lost, status="running",
                                           attempts=1, started_at=long_ago, heartbeat_at=long_ago)
    Instance.objects.filter(pk=instance.pk).update(task_state="backing_up", task_started_at=timezone.now())
    services.recover_lost_actions(lease=timedelta(seconds=15))
    action.refresh_from_db()
    lost.refresh_from_db()
    assert (action.status, action.attempts, lost.status) == (ActionStatus.SUCCEEDED, 2, BackupStatus.AVAILABLE)
    assert hypervisor.checkpoints(qemu_host.uri, str(instance.uuid)) == [lost.checkpoint]
    assert copy not in hypervisor.connection(qemu_host.uri).storagePoolLookupByName(
        qemu_host.storage_pool).listVolumes()


def test_backups_are_refused_with_the_reason(member, member_api, tenant, host, qemu_like_host):
    test_driver = make_instance(tenant=tenant, host=host, status=Status.RUNNING, disk_gib=1, boot_source="kernel")
    assert "QEMU/KVM" in back_up(member_api, test_driver).json()["detail"]
    instance = make_instance(tenant=tenant, host=qemu_like_host, status=Status.RUNNING, disk_gib=0,
                             boot_source="kernel")
    assert "no disk" in back_up(member_api, instance).json()["detail"]
    Instance.objects.filter(pk=instance.pk).update(disk_gib=1, task_state="rebooting")
    busy = back_up(member_api, instance)
    assert busy.status_code == 409 and "busy" in busy.json()["detail"]
    assert back_up(member_api, instance, name="../x").status_code == 400
    # another tenant's instance and backups are not there
    stranger = token_client(make_user(tenant=make_tenant()))
    assert back_up(stranger, instance).status_code == 404
    backup = Backup.objects.create(tenant=tenant, instance=instance, instance_name=instance.name, disk_gib=1,
                                   status=BackupStatus.AVAILABLE, taken_at=timezone.now(), memory_mib=128)
    assert stranger.get(f"/api/v1/backups/{backup.pk}/").status_code == 404
    assert stranger.post(f"/api/v1/backups/{backup.pk}/restore/", {"name": "x"}, format="json").status_code == 404
    assert stranger.delete(f"/api/v1/backups/{backup.pk}/").status_code == 404
    # one a restore reads from is not deleted meanwhile
    restoring = InstanceAction.objects.create(instance=instance, operation="restore", backup=backup)
    busy = member_api.delete(f"/api/v1/backups/{backup.pk}/")
    assert busy.status_code == 409 and "restore from this backup" in busy.json()["detail"]
    restoring.delete()
    # one being taken is not deleted; a schedule out of bounds is a 400
    Backup.objects.filter(pk=backup.pk).update(status=BackupStatus.CREATING)
    assert member_api.delete(f"/api/v1/backups/{backup.pk}/").status_code == 409
    for body in ({"every_hours": -1}, {"every_hours": 1, "keep": 0}, {"every_hours": "x"}):
        assert member_api.put(f"/api/v1/instances/{instance.pk}/backup-schedule/", body,
                              format="json").status_code == 400


def test_a_schedule_backs_up_when_due_and_keeps_the_newest(member, member_api, tenant, qemu_like_host, monkeypatch):
    instance = make_instance(tenant=tenant, host=qemu_like_host, status=Status.STOPPED, disk_gib=1,
                             boot_source="kernel")
    answer = member_api.put(f"/api/v1/instances/{instance.pk}/backup-schedule/", {"every_hours": 6, "keep": 2},
                            format="json")
    assert answer.status_code == 200 and answer.json()["every_hours"] == 6
    instance.refresh_from_db()
    assert instance.backup_next_at > timezone.now() + timedelta(hours=5)
    taken = []
    monkeypatch.setattr("instances.tasks.enqueue", lambda action: taken.append(action))
    assert backups.run_due() == 0  # not yet due
    later = timezone.now() + timedelta(hours=6, minutes=1)
    # busy when due: tried again at the next tick (its time stays)
    Instance.objects.filter(pk=instance.pk).update(task_state="rebooting")
    assert backups.run_due(now=later) == 0 and not taken
    assert Instance.objects.get(pk=instance.pk).backup_next_at < later
    Instance.objects.filter(pk=instance.pk).update(task_state=None)
    assert backups.run_due(now=later) == 1
    [action] = taken
    assert action.backup.scheduled and action.operation == "backup"
    assert Instance.objects.get(pk=instance.pk).backup_next_at > later + timedelta(hours=5)
    # retention: of five scheduled backups (a chain of three over a full one, then a full one), the newest two stay;
    # the old chain goes once nothing kept is made over it
    Instance.objects.filter(pk=instance.pk).update(task_state=None)
    now = timezone.now()
    chain = []
    for age, parent in ((50, None), (40, 0), (30, 1), (20, None), (10, 3)):
        chain.append(Backup.objects.create(
            tenant=tenant, instance=instance, instance_name=instance.name, scheduled=True, disk_gib=1,
            memory_mib=128, status=BackupStatus.AVAILABLE, taken_at=now - timedelta(minutes=age),
            parent=chain[parent] if parent is not None else None))
    manual = Backup.objects.create(tenant=tenant, instance=instance, instance_name=instance.name, disk_gib=1,
                                   memory_mib=128, status=BackupStatus.AVAILABLE, taken_at=now - timedelta(hours=9))
    backups.prune(instance.pk)
    kept = set(Backup.objects.filter(instance=instance).live().values_list("pk", flat=True))
    assert kept == {chain[3].pk, chain[4].pk, manual.pk, action.backup_id}


def test_backups_are_metered_per_gib_stored(member, tenant, qemu_like_host):
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    plan = billing_services.create_plan(name="backups", currency="EUR", effective_from=hour - timedelta(hours=3),
                                        backup_gib_month="0.05")
    billing_services.set_tenant_billing(tenant=tenant, plan=plan, billed_from=hour - timedelta(hours=3))
    instance = make_instance(tenant=tenant, host=qemu_like_host, disk_gib=8)
    backup = Backup.objects.create(tenant=tenant, instance=instance, instance_name=instance.name, disk_gib=8,
                                   memory_mib=128, status=BackupStatus.DELETED, stored_bytes=(2 << 30) + 1,
                                   taken_at=hour - timedelta(hours=2), deleted_at=hour - timedelta(hours=1))
    metering.meter(since=hour - timedelta(hours=3), until=hour)
    units = sum(UsageRecord.objects.filter(resource_type="backup", resource_id=backup.pk, meter="backup")
                .values_list("units", flat=True))
    assert units == 3 * 3600  # 2 GiB and a byte: 3 GiB, for an hour


def test_a_restore_into_a_new_instance_gets_a_nic_on_each_network_of_its_instance(member, member_api, tenant,
                                                                                 qemu_like_host, monkeypatch):
    from networks import services as network_services

    network = network_services.create_network(user=None, tenant=tenant, name="lan", kind="nat", cidr="10.79.0.0/24")
    source = make_instance(tenant=tenant, host=qemu_like_host, status=Status.STOPPED, disk_gib=1,
                           boot_source="image")
    theirs = network_services.create_port(network=network)
    theirs.instance = source
    theirs.save(update_fields=["instance"])
    backup = Backup.objects.create(tenant=tenant, instance=source, instance_name=source.name, disk_gib=1,
                                   memory_mib=128, boot_source="image", status=BackupStatus.AVAILABLE,
                                   taken_at=timezone.now())
    monkeypatch.setattr("instances.tasks.enqueue", lambda action: None)  # (its create is not run here)
    answer = member_api.post(f"/api/v1/backups/{backup.pk}/restore/", {"name": "again"}, format="json")
    assert answer.status_code == 202, answer.content
    restored = Instance.objects.get(pk=answer.json()["instance"])
    assert (restored.host, restored.restored_from, restored.disk_gib) == (qemu_like_host, backup, 1)
    [port] = restored.ports.all()
    assert port.network == network and port.mac != theirs.mac
    # a taken name is refused, and nothing is kept of it
    taken = member_api.post(f"/api/v1/backups/{backup.pk}/restore/", {"name": "again"}, format="json")
    assert taken.status_code == 400 and Instance.objects.filter(name="again").count() == 1


@pytest.fixture
def qemu_like_host(db):
    """A QEMU host the panel knows but never reaches (no test here asks it anything)."""
    from tests.factories import make_host

    return make_host(uri="qemu+unix:///system?socket=/nonexistent/sock", name="qemu-offline")
