"""Volumes: made empty or from an image, attached, detached, extended, deleted and booted from, through the API and
pages, with their quota, pool space and meter; the test driver for breadth, a real QEMU guest for hot-plug and
online growth."""

import xml.etree.ElementTree as ET
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
from instances import services, tasks
from instances import volumes as volume_services
from instances.choices import ActionStatus, Status, VolumeStatus, VolumeTask
from instances.exceptions import InvalidOperation
from instances.models import Instance, InstanceAction, Snapshot, Volume
from tenants.choices import Role
from tenants.services import set_quota
from tests.conftest import token_client
from tests.factories import make_boot_kernel, make_host, make_library_image, make_tenant, make_user
from tests.test_qemu import console_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fleet_host]


def new_volume(api, **body):
    return api.post("/api/v1/volumes/", {"name": "data", "size_gib": 2, **body}, format="json")


def made(api, **body) -> Volume:
    response = new_volume(api, **body)
    assert response.status_code == 202, response.content
    return Volume.objects.get(pk=response.json()["id"])


def new_instance(api, name="vm", **body) -> Instance:
    kernel = make_boot_kernel(*Host.objects.all())
    response = api.post("/api/v1/instances/", {"name": name, "vcpus": 1, "memory_mib": 64, "boot_kernel": kernel.pk,
                                               "start": False, **body}, format="json")
    assert response.status_code == 202, response.content
    return Instance.objects.get(pk=response.json()["instance"])


def disks(host, instance, flags=0) -> dict[str, str]:
    """The domain's disks: target → source file."""
    dom = hypervisor.connection(host.uri).lookupByUUIDString(str(instance.uuid))
    return {d.find("target").get("dev"): d.find("source").get("file")
            for d in ET.fromstring(dom.XMLDesc(flags)).findall("devices/disk") if d.find("source") is not None}


def pool_names(host) -> list[str]:
    return hypervisor.connection(host.uri).storagePoolLookupByName(host.storage_pool).listVolumes()


def test_a_volume_is_made_attached_detached_and_deleted(member_api, tenant, host):
    volume = made(member_api, description="scratch")
    # made on the host's pool, counted in the quota and the pool
    assert (volume.status, volume.task_state, volume.host, volume.pool) == (VolumeStatus.AVAILABLE, None, host,
                                                                            "default-pool")
    assert volume.volume_name in pool_names(host) and volume.ready_at is not None
    usage = member_api.get(f"/api/v1/tenants/{tenant.pk}/").json()["usage"]
    assert (usage["volumes"], usage["volume_gib"]) == (1, 2)
    # attached to a stopped instance: into its definition, as the first free virtio disk
    instance = new_instance(member_api)
    answer = member_api.post(f"/api/v1/volumes/{volume.pk}/attach/", {"instance": instance.pk}, format="json")
    assert answer.status_code == 202, answer.content
    assert InstanceAction.objects.get(pk=answer.json()["id"]).status == ActionStatus.SUCCEEDED
    volume.refresh_from_db()
    assert (volume.instance, volume.device, volume.task_state) == (instance, "vdc", None)
    assert disks(host, instance)["vdc"].endswith(volume.volume_name)
    listed = member_api.get(f"/api/v1/volumes/?instance={instance.pk}").json()["results"]
    assert [(v["name"], v["instance_name"], v["device"]) for v in listed] == [("data", "vm", "vdc")]
    # attached, it is not deleted; a second volume takes the next disk
    refused = member_api.delete(f"/api/v1/volumes/{volume.pk}/")
    assert refused.status_code == 409 and "detach it first" in refused.json()["detail"]
    second = made(member_api, name="logs", size_gib=1)
    member_api.post(f"/api/v1/volumes/{second.pk}/attach/", {"instance": instance.pk}, format="json")
    assert Volume.objects.get(pk=second.pk).device == "vdd"
    # a rebuild of the domain (a start after a host's loss, say) keeps them: a create writes them in
    hypervisor.undefine(host.uri, str(instance.uuid))
    Instance.objects.filter(pk=instance.pk).update(task_state="creating")  # (what a create's worker holds)
    tasks._create(Instance.objects.get(pk=instance.pk), host, start=False)
    Instance.objects.filter(pk=instance.pk).update(task_state=None)
    assert {"vdc", "vdd"} <= set(disks(host, instance))
    # detached, then deleted: gone from the host, its name free again
    answer = member_api.post(f"/api/v1/volumes/{volume.pk}/detach/")
    assert answer.status_code == 202 and InstanceAction.objects.get(pk=answer.json()["id"]).status == "succeeded"
    volume.refresh_from_db()
    assert (volume.instance, volume.device) == (None, "") and "vdc" not in disks(host, instance)
    assert member_api.delete(f"/api/v1/volumes/{volume.pk}/").status_code == 202
    volume.refresh_from_db()
    assert volume.status == VolumeStatus.DELETED and volume.deleted_at is not None
    assert volume.volume_name not in pool_names(host)
    assert new_volume(member_api).status_code == 202
    # deleting the instance leaves its volumes, detached
    services.request_operation(instance=instance, operation="delete", user=None)
    second.refresh_from_db()
    assert (second.instance, second.status) == (None, VolumeStatus.AVAILABLE)


def test_a_volume_from_an_image_is_an_overlay_of_its_copy_which_stays_while_the_volume_does(member_api, tenant,
                                                                                         host):
    image = make_library_image(tenant=tenant, hosts=(host,), virtual_size=3 << 30, name="golden")
    # at least the image's size: 3 GiB by default, less is refused
    small = new_volume(member_api, image=image.pk, size_gib=2)
    assert small.status_code == 400 and "at least 3 GiB" in small.json()["detail"]
    volume = made(member_api, image=image.pk, size_gib=None)
    assert (volume.size_gib, volume.image_name, volume.status) == (3, "golden", VolumeStatus.AVAILABLE)
    backing = ET.fromstring(hypervisor.connection(host.uri).storagePoolLookupByName(host.storage_pool)
                            .storageVolLookupByName(volume.volume_name).XMLDesc(0)).find("backingStore/path")
    assert backing is not None and backing.text == image.copies.get().path
    # the image is not deleted under it; once the volume is, it may be
    refused = member_api.delete(f"/api/v1/images/{image.pk}/")
    assert refused.status_code == 409 and "volume data" in refused.json()["detail"], refused.content
    member_api.delete(f"/api/v1/volumes/{volume.pk}/")
    # (an ISO, or another tenant's image, is no disk to copy)
    iso = make_library_image(disk_format="iso", hosts=(host,))
    assert new_volume(member_api, name="iso", image=iso.pk).status_code == 400
    theirs = make_library_image(tenant=make_tenant(), hosts=(host,))
    assert new_volume(member_api, name="theirs", image=theirs.pk).status_code == 404


def test_volume_requests_are_refused_with_the_reason(member_api, tenant, host):
    volume = made(member_api)
    one, two = new_instance(member_api, "one"), new_instance(member_api, "two")
    attach = lambda vol, inst, api=member_api: api.post(f"/api/v1/volumes/{vol.pk}/attach/",  # noqa: E731
                                                        {"instance": inst.pk}, format="json")
    assert attach(volume, one).status_code == 202
    # attached to two instances
    twice = attach(volume, two)
    assert twice.status_code == 409 and "attached to 'one'" in twice.json()["detail"]
    # a request that read the volume before another attached it changes nothing (the claim looks again, locked)
    stale = Volume.objects.get(pk=volume.pk)
    stale.instance_id = None
    with pytest.raises(InvalidOperation, match="meanwhile"):
        volume_services.delete(volume=stale, user=None)
    assert Volume.objects.get(pk=volume.pk).status == VolumeStatus.AVAILABLE
    # to an instance of another host
    spare = made(member_api, name="spare")
    elsewhere = make_host(uri="test:///elsewhere", name="elsewhere", enabled=False)
    far = Instance.objects.create(tenant=tenant, host=elsewhere, name="far", vcpus=1, memory_mib=64,
                                  status=Status.STOPPED)
    refused = attach(spare, far)
    assert refused.status_code == 409 and "its own host" in refused.json()["detail"]
    far.delete(), elsewhere.delete()
    # another tenant's volume or instance is not there; a viewer changes nothing
    stranger = token_client(make_user(tenant=make_tenant()))
    assert stranger.get(f"/api/v1/volumes/{volume.pk}/").status_code == 404
    assert attach(spare, one, stranger).status_code == 404
    assert stranger.delete(f"/api/v1/volumes/{spare.pk}/").status_code == 404
    theirs = made(stranger, name="theirs")
    assert attach(theirs, one).status_code == 404
    assert member_api.post("/api/v1/volumes/", {"name": "x", "size_gib": 1, "instance": one.pk + 999},
                           format="json").status_code == 404
    viewer = token_client(make_user(tenant=tenant, role=Role.VIEWER), tenant)
    assert viewer.get("/api/v1/volumes/").status_code == 200
    assert new_volume(viewer, name="v").status_code == 403
    # a running guest on a technology that cannot hot-plug: stop it first
    running = new_instance(member_api, "running", start=True)
    plugged = attach(spare, running)
    assert plugged.status_code == 409 and "stop 'running' first" in plugged.json()["detail"]
    # bad sizes and names; a shrink; an ISO
    for body in ({"size_gib": 0}, {"size_gib": 70000}, {"name": "../x"}, {"size_gib": None}, {"name": ""}):
        assert new_volume(member_api, **body).status_code == 400, body
    shrink = member_api.post(f"/api/v1/volumes/{spare.pk}/extend/", {"size_gib": 1}, format="json")
    assert shrink.status_code == 409 and "never shrinks" in shrink.json()["detail"]
    assert new_volume(member_api, name="data").status_code == 400  # its name is taken
    # busy: an operation in flight on it
    Volume.objects.filter(pk=spare.pk).update(task_state=VolumeTask.EXTENDING)
    busy = member_api.delete(f"/api/v1/volumes/{spare.pk}/")
    assert busy.status_code == 409 and "busy" in busy.json()["detail"]
    Volume.objects.filter(pk=spare.pk).update(task_state=None)
    # a volume is not attached to an instance with snapshots (a revert would take it away)
    Snapshot.objects.create(instance=two, name="kept", status="available")
    with_snapshots = attach(spare, two)
    assert with_snapshots.status_code == 409 and "has snapshots" in with_snapshots.json()["detail"]
    # an instance with volumes takes no snapshots (they would not hold the volumes)
    snap = member_api.post(f"/api/v1/instances/{one.pk}/snapshots/", {"name": "s"}, format="json")
    assert snap.status_code == 409 and "volumes" in snap.json()["detail"]
    # the quota: count and GiB, nothing stored when refused
    set_quota(tenant=tenant, limits={"volumes": 2})
    over = new_volume(member_api, name="fourth")
    assert over.status_code == 409 and "Volumes: 2 of 2" in over.json()["detail"]
    set_quota(tenant=tenant, limits={"volumes": None, "volume_gib": 5})
    over = new_volume(member_api, name="big", size_gib=2)
    assert over.status_code == 409 and "Volume storage" in over.json()["detail"]
    grow = member_api.post(f"/api/v1/volumes/{spare.pk}/extend/", {"size_gib": 4}, format="json")
    assert grow.status_code == 409 and "Volume storage" in grow.json()["detail"]
    assert not Volume.objects.filter(name__in=["fourth", "big"]).exists()
    assert Volume.objects.get(pk=spare.pk).size_gib == 2
    # more than the host's pool has left
    set_quota(tenant=tenant, limits={"volume_gib": None})
    Host.objects.filter(pk=host.pk).update(pools=[{"name": host.storage_pool, "capacity_bytes": 8 << 30}])
    full = new_volume(member_api, name="huge", size_gib=3)
    assert full.status_code == 400 and "GiB of disk left in its pool" in full.json()["detail"], full.content


def test_an_instance_boots_from_a_volume_and_leaves_it_when_deleted(member_api, tenant, host):
    volume = made(member_api, name="root", size_gib=3)
    response = member_api.post("/api/v1/instances/", {"name": "vol", "vcpus": 1, "memory_mib": 64,
                                                     "boot_source": "volume", "volume": volume.pk,
                                                     "ssh_keys": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO5 me"},
                               format="json")
    assert response.status_code == 202, response.content
    instance = Instance.objects.get(pk=response.json()["instance"])
    assert instance.status == Status.RUNNING, instance.status_reason
    assert disks(host, instance)["vda"].endswith(volume.volume_name)
    assert "ssh-ed25519" in instance.user_data and instance.disk_gib == 0
    volume.refresh_from_db()
    assert (volume.instance, volume.boot, volume.device) == (instance, True, "vda")
    # its boot volume stays with it: not detached, not booted twice, not deleted
    detach = member_api.post(f"/api/v1/volumes/{volume.pk}/detach/")
    assert detach.status_code == 409 and "boots from" in detach.json()["detail"]
    twice = member_api.post("/api/v1/instances/", {"name": "vol2", "vcpus": 1, "memory_mib": 64,
                                                  "boot_source": "volume", "volume": volume.pk}, format="json")
    assert twice.status_code == 409 and "attached" in twice.json()["detail"]
    assert not Instance.objects.filter(name="vol2").exists()
    assert member_api.delete(f"/api/v1/volumes/{volume.pk}/").status_code == 409
    resize = member_api.post(f"/api/v1/instances/{instance.pk}/resize/", {"disk_gib": 5}, format="json")
    assert resize.status_code == 409 and "extend the volume" in resize.json()["detail"]
    # a volume boot takes no disk size or image; another tenant's volume is not there
    for extra in ({"disk_gib": 2}, {"image": 1}):
        body = {"name": "bad", "vcpus": 1, "memory_mib": 64, "boot_source": "volume", "volume": volume.pk, **extra}
        assert member_api.post("/api/v1/instances/", body, format="json").status_code in (400, 404)
    stranger = token_client(make_user(tenant=make_tenant()))
    body = {"name": "x", "vcpus": 1, "memory_mib": 64, "boot_source": "volume", "volume": volume.pk}
    assert stranger.post("/api/v1/instances/", body, format="json").status_code == 404
    # deleted, the instance leaves the volume, detached, to boot another
    services.request_operation(instance=instance, operation="delete", user=None)
    volume.refresh_from_db()
    assert (volume.instance, volume.boot, volume.status) == (None, False, VolumeStatus.AVAILABLE)
    assert volume.volume_name in pool_names(host)


def test_a_failed_extend_keeps_the_old_size_and_says_why(member_api, tenant, host):
    volume = made(member_api)
    # libvirt's test driver cannot resize volumes: the worker's failure comes back with the size it still has
    answer = member_api.post(f"/api/v1/volumes/{volume.pk}/extend/", {"size_gib": 5}, format="json")
    assert answer.status_code == 202, answer.content
    volume.refresh_from_db()
    assert (volume.size_gib, volume.task_state, volume.size_before) == (2, None, None)
    assert volume.error.startswith("Extend failed:") and "not supported" in volume.error
    # a create the host refuses leaves a failed volume with the reason, which a delete removes
    with mock.patch("hosts.hypervisor.create_volume", side_effect=hypervisor.HypervisorError("pool is full")):
        broken = made(member_api, name="broken")
    assert (broken.status, broken.error) == (VolumeStatus.ERROR, "pool is full")
    assert member_api.delete(f"/api/v1/volumes/{broken.pk}/").status_code == 202
    assert Volume.objects.get(pk=broken.pk).status == VolumeStatus.DELETED


def test_a_volume_whose_worker_died_is_made_again_and_one_no_worker_took_fails(member_api, tenant, host):
    # a worker claimed the create and stopped: its lease lapses, the sweep queues it again, it is made
    volume = made(member_api)
    long_ago = timezone.now() - timedelta(minutes=10)
    Volume.objects.filter(pk=volume.pk).update(status=VolumeStatus.CREATING, task_state=VolumeTask.CREATING,
                                               heartbeat_at=long_ago, task_started_at=long_ago, attempts=1)
    tasks.recover_lost_actions()
    volume.refresh_from_db()
    assert (volume.status, volume.task_state, volume.attempts) == (VolumeStatus.AVAILABLE, None, 2)
    # a delete no worker ever took, past the operation timeout: failed with the reason, the volume kept
    Volume.objects.filter(pk=volume.pk).update(task_state=VolumeTask.DELETING, heartbeat_at=None,
                                               task_started_at=long_ago - timedelta(hours=1))
    tasks.recover_lost_actions()
    volume.refresh_from_db()
    assert (volume.status, volume.task_state) == (VolumeStatus.AVAILABLE, None)
    assert "no worker took it" in volume.error
    # and three lost runs are enough: failed, not run a fourth time
    Volume.objects.filter(pk=volume.pk).update(task_state=VolumeTask.DELETING, heartbeat_at=long_ago, attempts=3)
    tasks.recover_lost_actions()
    volume.refresh_from_db()
    assert volume.task_state is None and "stopped 3 times" in volume.error
    assert volume.volume_name in pool_names(host)


def test_volumes_are_metered_per_gib_at_each_size(member_api, tenant, host):
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    plan = billing_services.create_plan(name="vols", currency="EUR", effective_from=hour - timedelta(hours=3),
                                        volume_gib_month="0.10")
    billing_services.set_tenant_billing(tenant=tenant, plan=plan, billed_from=hour - timedelta(hours=3))
    volume = made(member_api)
    # 2 GiB for an hour, then 5 GiB for half an hour until it was deleted
    made_at, grown_at = hour - timedelta(hours=2), hour - timedelta(hours=1)
    Volume.objects.filter(pk=volume.pk).update(
        ready_at=made_at, sizes=[[made_at.isoformat(), 2], [grown_at.isoformat(), 5]],
        status=VolumeStatus.DELETED, deleted_at=hour - timedelta(minutes=30))
    metering.meter(since=hour - timedelta(hours=3), until=hour)
    units = sum(UsageRecord.objects.filter(resource_type="volume", resource_id=volume.pk, meter="volume")
                .values_list("units", flat=True))
    assert units == 2 * 3600 + 5 * 1800


def test_the_volumes_page_makes_attaches_extends_and_deletes(member, member_api, tenant, host):
    instance = new_instance(member_api)
    browser = Client()
    browser.force_login(member)
    response = browser.post("/volumes/", {"name": "paged", "size_gib": 1, "description": "from the page"})
    assert response.status_code == 302, response.content.decode()[:2000]
    volume = Volume.objects.get(name="paged")
    assert volume.status == VolumeStatus.AVAILABLE and volume.created_by == member
    page = browser.get("/volumes/").content.decode()
    assert 'data-volume="paged"' in page and "from the page" in page
    browser.post(f"/volumes/{volume.pk}/attach/", {"instance": instance.pk})
    assert Volume.objects.get(pk=volume.pk).instance == instance
    detail = browser.get(f"/instances/{instance.pk}/").content.decode()
    assert 'data-attached-volume="paged"' in detail and "vdc" in detail
    browser.post(f"/volumes/{volume.pk}/detach/")
    assert Volume.objects.get(pk=volume.pk).instance is None
    response = browser.post(f"/volumes/{volume.pk}/extend/", {"size_gib": 0}, follow=True)
    assert "size" in response.content.decode() and Volume.objects.get(pk=volume.pk).size_gib == 1
    browser.post(f"/volumes/{volume.pk}/delete/")
    assert Volume.objects.get(pk=volume.pk).status == VolumeStatus.DELETED
    # a refused request comes back with the reason; another tenant's volume is not there
    response = browser.post("/volumes/", {"name": "bad name!", "size_gib": 1}, follow=True)
    assert not Volume.objects.filter(name="bad name!").exists() and "name" in response.content.decode()
    theirs = made(token_client(make_user(tenant=make_tenant())), name="theirs")
    assert browser.post(f"/volumes/{theirs.pk}/delete/").status_code == 404


@pytest.mark.qemu
def test_a_real_guest_sees_a_volume_plugged_in_grown_and_unplugged(qemu_host, member, member_api, tenant,
                                                                    guest_kernel):
    action = services.create_instance(user=member, tenant=tenant, name="plugged", vcpus=1, memory_mib=128,
                                      disk_gib=1, boot_kernel=guest_kernel, host=qemu_host)
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, instance.status_reason
    volume = made(member_api, instance=instance.pk, size_gib=1)
    assert volume.host == qemu_host and volume.status == VolumeStatus.AVAILABLE, volume.error
    try:
        def done(response):
            assert response.status_code == 202, response.content
            act = InstanceAction.objects.get(pk=response.json()["id"])
            assert act.status == ActionStatus.SUCCEEDED, act.error

        # hot-plugged: the running guest gets a second virtio disk of 1 GiB (2097152 sectors), and writes to it
        done(member_api.post(f"/api/v1/volumes/{volume.pk}/attach/", {"instance": instance.pk}, format="json"))
        text = console_session(instance, member, "sleep 2; echo size=$(cat /sys/block/vdb/size)", r"size=\d+\s")
        assert "size=2097152" in text, text
        console_session(instance, member, "echo kept | dd of=/dev/vdb bs=512 count=1 conv=sync 2>/dev/null; "
                        "sync; echo synced-$((3*3))", r"synced-9")
        # grown online: the guest sees 2 GiB at once
        answer = member_api.post(f"/api/v1/volumes/{volume.pk}/extend/", {"size_gib": 2}, format="json")
        assert answer.status_code == 202, answer.content
        volume.refresh_from_db()
        assert (volume.size_gib, volume.task_state, volume.error) == (2, None, "")
        text = console_session(instance, member, "echo size=$(cat /sys/block/vdb/size)", r"size=\d+\s")
        assert "size=4194304" in text, text
        # unplugged live: the guest lets go of it, and its bytes stay on the volume
        done(member_api.post(f"/api/v1/volumes/{volume.pk}/detach/"))
        text = console_session(instance, member, "echo disks: $(ls /sys/block) end-$((2+5))", r"end-7")
        listed = text.rsplit("disks:", 1)[1]
        assert "vdb" not in listed and "vda" in listed, text
        with hypervisor.reading_volume(qemu_host.uri, volume.pool, volume.volume_name) as read:
            header = read(4)
        assert header == b"QFI\xfb"  # a qcow2 volume, whose data the next guest sees
        # and a stopped instance boots from a volume: its first disk
        services.request_operation(instance=instance, operation="delete", user=member)
        booted = services.create_instance(user=member, tenant=tenant, name="from-volume", vcpus=1, memory_mib=128,
                                          boot_source="volume", volume=Volume.objects.get(pk=volume.pk),
                                          start=False)
        other = Instance.objects.get(pk=booted.instance_id)
        assert other.status == Status.STOPPED, other.status_reason
        assert disks(qemu_host, other, 2)["vda"].endswith(volume.volume_name)  # (2: the definition)
    finally:
        for leftover in Volume.objects.filter(host=qemu_host):
            hypervisor.delete_volume(qemu_host.uri, leftover.pool, leftover.volume_name)
