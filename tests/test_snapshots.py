"""Snapshots: taken, listed, reverted to and deleted through the API and pages, with the quota and the meter;
the test driver for breadth, a real QEMU guest for what its disk and memory hold."""

from datetime import timedelta
from unittest import mock

import pytest
from django.test import Client
from django.utils import timezone

from billing import metering
from billing import services as billing_services
from billing.models import UsageRecord
from hosts import hypervisor
from hosts.models import Host
from instances import services
from instances.choices import ActionStatus, SnapshotStatus, Status
from instances.models import Instance, InstanceAction, Snapshot
from tenants.choices import Role
from tenants.services import set_quota
from tests.conftest import token_client
from tests.factories import make_boot_kernel, make_host, make_instance, make_tenant, make_user
from tests.test_qemu import console_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fleet_host]


def running_instance(api, **fields) -> Instance:
    kernel = make_boot_kernel(*Host.objects.all())
    response = api.post("/api/v1/instances/", {"name": fields.pop("name", "snap"), "vcpus": 1, "memory_mib": 1536,
                                               "disk_gib": 2, "boot_kernel": kernel.pk, **fields}, format="json")
    assert response.status_code == 202, response.content
    return Instance.objects.get(pk=response.json()["instance"])


def take(api, instance, **body):
    return api.post(f"/api/v1/instances/{instance.pk}/snapshots/", {"name": "s1", **body}, format="json")


def test_snapshots_are_taken_listed_reverted_to_and_deleted(member_api, tenant, host):
    instance = running_instance(member_api)
    # A running guest's snapshot keeps its memory: billed at its disk plus its memory rounded up to GiB
    response = take(member_api, instance, description="before the upgrade")
    assert response.status_code == 202, response.content
    assert InstanceAction.objects.get(pk=response.json()["id"]).status == ActionStatus.SUCCEEDED
    [listed] = member_api.get(f"/api/v1/instances/{instance.pk}/snapshots/").json()
    assert (listed["name"], listed["description"], listed["memory"], listed["kind"], listed["size_gib"],
            listed["status"]) == ("s1", "before the upgrade", True, "disks and memory", 2 + 2, "available")
    snapshot = Snapshot.objects.get(pk=listed["id"])
    dom = hypervisor.connection(host.uri).lookupByUUIDString(str(instance.uuid))
    assert dom.snapshotListNames(0) == [snapshot.libvirt_name]
    # Its name is the instance's once (409), and not disk-only while it runs (409 with the reason)
    assert take(member_api, instance).status_code == 400
    refused = take(member_api, instance, name="s2", memory=False)
    assert refused.status_code == 409 and "stop it first" in refused.json()["detail"]
    # Stopped, a snapshot holds its disks alone
    services.request_operation(instance=instance, operation="poweroff", user=None)
    assert take(member_api, instance, name="s2").status_code == 202
    assert Snapshot.objects.get(name="s2").memory is False and Snapshot.objects.get(name="s2").size_gib == 2
    assert take(member_api, instance, name="s3", memory=True).status_code == 409
    # Reverting to the first brings it back running
    reverted = member_api.post(f"/api/v1/instances/{instance.pk}/snapshots/{snapshot.pk}/revert/")
    assert reverted.status_code == 202, reverted.content
    assert InstanceAction.objects.get(pk=reverted.json()["id"]).status == ActionStatus.SUCCEEDED
    assert Instance.objects.get(pk=instance.pk).status == Status.RUNNING
    # and deleting it removes it from the host, ends its billing, and frees its name
    deleted = member_api.delete(f"/api/v1/instances/{instance.pk}/snapshots/{snapshot.pk}/")
    assert deleted.status_code == 202
    snapshot.refresh_from_db()
    assert snapshot.status == SnapshotStatus.DELETED and snapshot.deleted_at is not None
    assert snapshot.libvirt_name not in dom.snapshotListNames(0)
    assert [s["name"] for s in member_api.get(f"/api/v1/instances/{instance.pk}/snapshots/").json()] == ["s2"]
    assert take(member_api, instance).status_code == 202
    # Deleting the instance ends every snapshot with it
    services.request_operation(instance=instance, operation="delete", user=None)
    assert not Snapshot.objects.filter(instance=instance).exclude(status=SnapshotStatus.DELETED).exists()


def test_snapshot_requests_are_refused_with_the_reason(member_api, tenant, host):
    instance = running_instance(member_api)
    # another tenant's instance, or snapshot, is not there
    stranger = token_client(make_user(tenant=make_tenant()))
    assert take(stranger, instance).status_code == 404
    assert take(member_api, instance).status_code == 202
    snapshot = Snapshot.objects.get()
    other = running_instance(member_api, name="other")
    for api, url in ((stranger, f"/api/v1/instances/{instance.pk}/snapshots/{snapshot.pk}/revert/"),
                     (member_api, f"/api/v1/instances/{other.pk}/snapshots/{snapshot.pk}/revert/")):
        assert api.post(url).status_code == 404
    assert member_api.delete(f"/api/v1/instances/{other.pk}/snapshots/{snapshot.pk}/").status_code == 404
    # a viewer reads them and changes nothing
    viewer = token_client(make_user(tenant=tenant, role=Role.VIEWER), tenant)
    assert viewer.get(f"/api/v1/instances/{instance.pk}/snapshots/").status_code == 200
    assert take(viewer, instance, name="v").status_code == 403
    # bad names and descriptions
    assert take(member_api, instance, name="../x").status_code == 400
    assert take(member_api, instance, name="ok", description="x" * 501).status_code == 400
    # a busy instance
    Instance.objects.filter(pk=instance.pk).update(task_state="rebooting")
    busy = take(member_api, instance, name="busy")
    assert busy.status_code == 409 and "busy" in busy.json()["detail"]
    Instance.objects.filter(pk=instance.pk).update(task_state=None)
    # NICs or media changed since: a revert would bring back what the panel no longer has
    Snapshot.objects.filter(pk=snapshot.pk).update(macs=["52:54:00:00:00:01"])
    changed = member_api.post(f"/api/v1/instances/{instance.pk}/snapshots/{snapshot.pk}/revert/")
    assert changed.status_code == 409 and "NICs" in changed.json()["detail"]
    # the tenant's snapshot quota
    set_quota(tenant=tenant, limits={"snapshots": 1})
    over = take(member_api, instance, name="s2")
    assert over.status_code == 409 and "Snapshots: 1 of 1" in over.json()["detail"]
    assert not Snapshot.objects.filter(name="s2").exists()
    # more than the host's pool has left (the instance's 2 GiB disk, then 2 GiB of disk and 2 of memory)
    set_quota(tenant=tenant, limits={"snapshots": None})
    Host.objects.filter(pk=host.pk).update(pools=[{"name": host.storage_pool, "capacity_bytes": 7 << 30}])
    full = take(member_api, instance, name="s3")
    assert full.status_code == 409 and "GiB of disk left in its pool" in full.json()["detail"], full.content
    assert not Snapshot.objects.filter(name="s3").exists()
    # a technology without snapshots, or an instance without a disk
    lxc = make_instance(tenant=tenant, host=make_host(uri="lxc:///", name="lxc"), status=Status.RUNNING)
    assert "QEMU/KVM" in take(member_api, lxc).json()["detail"]
    diskless = make_instance(tenant=tenant, host=host, status=Status.RUNNING, disk_gib=0)
    assert "no disk" in take(member_api, diskless).json()["detail"]


def test_a_failed_snapshot_is_kept_with_its_reason_unbilled_and_deleted_at_once(member_api, tenant, host):
    instance = running_instance(member_api)
    with mock.patch("hosts.hypervisor.create_snapshot", side_effect=hypervisor.HypervisorError("no space left")):
        take(member_api, instance)
    snapshot = Snapshot.objects.get()
    assert (snapshot.status, snapshot.error, snapshot.taken_at) == (SnapshotStatus.ERROR, "no space left", None)
    assert Instance.objects.get(pk=instance.pk).status == Status.RUNNING  # and the instance is free again
    retried = member_api.post(f"/api/v1/actions/{InstanceAction.objects.get(operation='snapshot').pk}/retry/")
    assert retried.status_code == 409 and "ask for it again" in retried.json()["detail"]
    # deleting it removes whatever its worker may have left on the host
    assert member_api.delete(f"/api/v1/instances/{instance.pk}/snapshots/{snapshot.pk}/").status_code == 202
    assert Snapshot.objects.get().status == SnapshotStatus.DELETED and Snapshot.objects.get().taken_at is None


def test_snapshots_are_metered_per_gib_from_taken_to_deleted(member_api, tenant, host):
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    plan = billing_services.create_plan(name="snaps", currency="EUR", effective_from=hour - timedelta(hours=3),
                                        snapshot_gib_month="0.10")
    billing_services.set_tenant_billing(tenant=tenant, plan=plan, billed_from=hour - timedelta(hours=3))
    instance = running_instance(member_api)
    take(member_api, instance)
    snapshot = Snapshot.objects.get()
    Snapshot.objects.filter(pk=snapshot.pk).update(taken_at=hour - timedelta(hours=2),
                                                   deleted_at=hour - timedelta(minutes=30))
    metering.meter(since=hour - timedelta(hours=3), until=hour)
    units = sum(UsageRecord.objects.filter(resource_type="snapshot", resource_id=snapshot.pk, meter="snapshot")
                .values_list("units", flat=True))
    assert units == 4 * 90 * 60  # 4 GiB for an hour and a half


def test_the_instance_page_takes_reverts_and_deletes_snapshots(member, member_api, tenant, host):
    instance = running_instance(member_api)
    browser = Client()
    browser.force_login(member)
    response = browser.post(f"/instances/{instance.pk}/snapshots/", {"name": "page", "description": "from the page"})
    assert response.status_code == 302
    snapshot = Snapshot.objects.get(name="page")
    assert snapshot.status == SnapshotStatus.AVAILABLE and snapshot.created_by == member
    page = browser.get(f"/instances/{instance.pk}/").content.decode()
    assert 'data-snapshot="page"' in page and "from the page" in page and "disks and memory" in page
    browser.post(f"/instances/{instance.pk}/snapshots/revert/", {"snapshot": snapshot.pk})
    assert InstanceAction.objects.filter(operation="revert", status=ActionStatus.SUCCEEDED).exists()
    browser.post(f"/instances/{instance.pk}/snapshots/delete/", {"snapshot": snapshot.pk})
    assert Snapshot.objects.get(pk=snapshot.pk).status == SnapshotStatus.DELETED
    # a refused request comes back with the reason
    response = browser.post(f"/instances/{instance.pk}/snapshots/", {"name": "bad name!"}, follow=True)
    assert "name" in response.content.decode() and not Snapshot.objects.filter(name="bad name!").exists()


@pytest.mark.qemu
def test_a_real_guest_goes_back_to_its_memory_and_to_its_disk(qemu_host, member, member_api, tenant, guest_kernel):
    action = services.create_instance(user=member, tenant=tenant, name="snapper", vcpus=1, memory_mib=128,
                                      disk_gib=1, boot_kernel=guest_kernel, host=qemu_host)
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, instance.status_reason

    def done(response):
        assert response.status_code == 202, response.content
        act = InstanceAction.objects.get(pk=response.json()["id"])
        assert act.status == ActionStatus.SUCCEEDED, act.error

    # Its memory (the guest's root is a RAM disk): what was written before the snapshot is back after a revert
    console_session(instance, member, "echo one > /root/state; echo wrote-$((1+1))", r"wrote-2")
    done(take(member_api, instance, name="memory"))
    console_session(instance, member, "echo two > /root/state; echo wrote-$((1+2))", r"wrote-3")
    memory = Snapshot.objects.get(name="memory")
    assert memory.memory and memory.size_gib == 2
    done(member_api.post(f"/api/v1/instances/{instance.pk}/snapshots/{memory.pk}/revert/"))
    assert Instance.objects.get(pk=instance.pk).status == Status.RUNNING
    assert "state=one" in console_session(instance, member, "echo state=$(cat /root/state)", r"state=\w+\s")
    # Its disk: a stopped guest's snapshot holds the disk alone, and a revert brings its bytes back
    console_session(instance, member, "echo disk-one | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; "
                    "sync; echo synced-$((2*2))", r"synced-4")
    services.request_operation(instance=instance, operation="poweroff", user=member)
    done(take(member_api, instance, name="disk"))
    services.request_operation(instance=instance, operation="start", user=member)
    console_session(instance, member, "echo disk-two | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; "
                    "sync; echo synced-$((2*3))", r"synced-6")
    services.request_operation(instance=instance, operation="poweroff", user=member)
    disk = Snapshot.objects.get(name="disk")
    assert not disk.memory and disk.size_gib == 1
    done(member_api.post(f"/api/v1/instances/{instance.pk}/snapshots/{disk.pk}/revert/"))
    assert Instance.objects.get(pk=instance.pk).status == Status.STOPPED
    services.request_operation(instance=instance, operation="start", user=member)
    assert "disk-one" in console_session(instance, member, "head -c 8 /dev/vda; echo", r"disk-\w+\s")
    # Both live inside its qcow2 disk; deleting one takes it off the host
    dom = hypervisor.connection(qemu_host.uri).lookupByUUIDString(str(instance.uuid))
    assert sorted(dom.snapshotListNames(0)) == sorted([memory.libvirt_name, disk.libvirt_name])
    done(member_api.delete(f"/api/v1/instances/{instance.pk}/snapshots/{memory.pk}/"))
    assert dom.snapshotListNames(0) == [disk.libvirt_name]
