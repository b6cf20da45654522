"""Rebuild: an instance reinstalled from another image keeps its name, UUID, NICs and addresses."""

import pytest

from hosts import hypervisor
from images import services as image_services
from images.choices import DiskFormat
from images.models import Image, ImageCopy
from instances import services
from instances.choices import ActionStatus, Status
from instances.models import Instance, InstanceAction, Snapshot
from networks import services as network_services
from tests.conftest import token_client
from tests.factories import make_library_image, make_tenant, make_user
from tests.test_qemu import console_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fleet_host]


def test_a_rebuild_replaces_the_disk_and_keeps_the_nics(member, member_api, tenant, host):
    first = make_library_image(hosts=(host,), name="debian")
    second = make_library_image(hosts=(host,), name="alpine", virtual_size=3 << 30)
    network = network_services.create_network(user=None, tenant=tenant, name="lan", kind="nat", cidr="10.77.0.0/24")
    response = member_api.post("/api/v1/instances/", {
        "name": "web", "vcpus": 1, "memory_mib": 128, "disk_gib": 1, "boot_source": "image", "image": first.pk,
        "networks": [{"network": network.pk, "address": "10.77.0.9"}]}, format="json")
    assert response.status_code == 202, response.content
    instance = Instance.objects.get(pk=response.json()["instance"])
    assert instance.status == Status.RUNNING, instance.status_reason
    port = instance.ports.get()

    rebuilt = member_api.post(f"/api/v1/instances/{instance.pk}/rebuild/", {"image": second.pk}, format="json")
    assert rebuilt.status_code == 202, rebuilt.content
    action = InstanceAction.objects.get(pk=rebuilt.json()["id"])
    assert action.status == ActionStatus.SUCCEEDED, action.error
    instance.refresh_from_db()
    # The same instance, running again on an overlay of the new image, grown to what the image needs
    assert (instance.image, instance.status, instance.disk_gib) == (second, Status.RUNNING, 3)
    dom = hypervisor.connection(host.uri).lookupByUUIDString(str(instance.uuid))
    assert dom.UUIDString() == str(instance.uuid)
    disk = hypervisor.connection(host.uri).storagePoolLookupByName(host.storage_pool).storageVolLookupByName(
        instance.volume_name)
    assert ImageCopy.volume_name(second) in disk.XMLDesc() and ImageCopy.volume_name(first) not in disk.XMLDesc()
    # with its NIC and address kept
    assert list(instance.ports.values_list("pk", "mac")) == [(port.pk, port.mac)]
    assert [a.address for a in port.addresses.all()] == ["10.77.0.9"]
    assert port.mac in dom.XMLDesc()
    # and billed at the larger disk from now on
    assert list(instance.sizes.values_list("disk_gib", flat=True)) == [1, 3]
    # A stopped instance is rebuilt stopped
    services.request_operation(instance=instance, operation="poweroff", user=member)
    again = member_api.post(f"/api/v1/instances/{instance.pk}/rebuild/", {"image": first.pk}, format="json")
    assert InstanceAction.objects.get(pk=again.json()["id"]).status == ActionStatus.SUCCEEDED
    instance.refresh_from_db()
    assert (instance.image, instance.status, instance.disk_gib) == (first, Status.STOPPED, 3)


def test_rebuilds_are_refused_with_the_reason(member, member_api, tenant, host):
    image = make_library_image(hosts=(host,), name="base")
    response = member_api.post("/api/v1/instances/", {"name": "web", "vcpus": 1, "memory_mib": 128, "disk_gib": 1,
                                                      "boot_source": "image", "image": image.pk}, format="json")
    instance = Instance.objects.get(pk=response.json()["instance"])
    url = f"/api/v1/instances/{instance.pk}/rebuild/"
    # another tenant's image, instance or nothing to rebuild from
    foreign = make_library_image(tenant=make_tenant(), hosts=(host,), name="theirs")
    assert member_api.post(url, {"image": foreign.pk}, format="json").status_code == 404
    assert token_client(make_user(tenant=make_tenant())).post(url, {"image": image.pk},
                                                              format="json").status_code == 404
    assert "choose an image" in member_api.post(url, {}, format="json").json()["detail"]
    # an ISO, a licensed image for an unlicensed instance
    iso = make_library_image(hosts=(host,), name="installer", disk_format=DiskFormat.ISO)
    assert "CD-ROM" in member_api.post(url, {"image": iso.pk}, format="json").json()["detail"]
    licensed = make_library_image(hosts=(host,), name="licensed", licensed=True)
    assert "licence" in member_api.post(url, {"image": licensed.pk}, format="json").json()["detail"]
    # an instance with snapshots of the disk it would replace
    Snapshot.objects.create(instance=instance, name="keep", status="available")
    assert "snapshots" in member_api.post(url, {"image": image.pk}, format="json").json()["detail"]
    Snapshot.objects.all().delete()
    # an instance not booted from an image
    kernel_booted = Instance.objects.create(tenant=tenant, host=host, name="k", vcpus=1, memory_mib=64,
                                            status=Status.STOPPED)
    refused = member_api.post(f"/api/v1/instances/{kernel_booted.pk}/rebuild/", {"image": image.pk}, format="json")
    assert refused.status_code == 409 and "booted from a library image" in refused.json()["detail"]
    # a busy one
    Instance.objects.filter(pk=instance.pk).update(task_state="rebooting")
    assert member_api.post(url, {"image": image.pk}, format="json").status_code == 409
    Instance.objects.filter(pk=instance.pk).update(task_state=None)
    instance.refresh_from_db()
    assert instance.image == image and not instance.actions.filter(operation="rebuild").exists()
    services.request_operation(instance=instance, operation="delete", user=member)


def test_a_rename_changes_the_name_and_the_domains_title_and_keeps_names_unique(member, member_api, tenant, host):
    image = make_library_image(hosts=(host,), name="base")
    ids = []
    for name in ("web", "db"):
        response = member_api.post("/api/v1/instances/", {"name": name, "vcpus": 1, "memory_mib": 128,
                                                          "disk_gib": 1, "boot_source": "image", "image": image.pk},
                                   format="json")
        ids.append(response.json()["instance"])
    web = Instance.objects.get(pk=ids[0])
    renamed = member_api.post(f"/api/v1/instances/{web.pk}/rename/", {"name": "frontend"}, format="json")
    assert renamed.status_code == 202, renamed.content
    assert InstanceAction.objects.get(pk=renamed.json()["id"]).status == ActionStatus.SUCCEEDED
    web.refresh_from_db()
    assert web.name == "frontend" and web.domain_name == f"cp-{web.uuid}"
    dom = hypervisor.connection(host.uri).lookupByUUIDString(str(web.uuid))
    assert dom.metadata(hypervisor.connections.libvirt.VIR_DOMAIN_METADATA_TITLE, None, 0) == "frontend"
    # Another of the tenant's names, a bad one, or the same one are refused with the reason; nothing changes
    taken = member_api.post(f"/api/v1/instances/{web.pk}/rename/", {"name": "db"}, format="json")
    assert taken.status_code == 400 and "already exists" in taken.json()["detail"]
    assert member_api.post(f"/api/v1/instances/{web.pk}/rename/", {"name": "../x"}, format="json").status_code == 400
    assert member_api.post(f"/api/v1/instances/{web.pk}/rename/", {"name": "x" * 64},
                           format="json").status_code == 400
    assert member_api.post(f"/api/v1/instances/{web.pk}/rename/", {"name": "frontend"},
                           format="json").status_code == 409
    web.refresh_from_db()
    assert (web.name, web.task_state) == ("frontend", None)
    assert token_client(make_user(tenant=make_tenant())).post(f"/api/v1/instances/{web.pk}/rename/", {
        "name": "mine"}, format="json").status_code == 404


@pytest.mark.qemu
def test_a_real_guests_disk_saved_as_an_image_boots_a_new_instance(qemu_host, member, member_api, tenant,
                                                                   guest_kernel):
    action = services.create_instance(user=member, tenant=tenant, name="golden", vcpus=1, memory_mib=128,
                                      disk_gib=1, boot_kernel=guest_kernel, host=qemu_host)
    source = Instance.objects.get(pk=action.instance_id)
    assert source.status == Status.RUNNING, source.status_reason
    console_session(source, member, "echo golden-disk | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; "
                    "sync; echo synced-$((3*3))", r"synced-9")
    # Running, it is refused (its disk is being written); stopped, its disk becomes a private image
    refused = member_api.post(f"/api/v1/instances/{source.pk}/save-image/", {"name": "golden"}, format="json")
    assert refused.status_code == 409
    services.request_operation(instance=source, operation="poweroff", user=member)
    saved = member_api.post(f"/api/v1/instances/{source.pk}/save-image/", {"name": "golden"}, format="json")
    assert saved.status_code == 202, saved.content
    act = InstanceAction.objects.get(pk=saved.json()["id"])
    assert act.status == ActionStatus.SUCCEEDED, act.error
    image = Image.objects.get(pk=act.image_id)
    assert (image.status, image.disk_format, image.tenant, image.visibility) == ("available", "qcow2", tenant,
                                                                                 "private"), image.status_reason
    assert image.virtual_size == 1 << 30 and image.min_disk_gib == 1
    # its copy on the host is gone once stored
    assert image.capture_volume not in hypervisor.connection(qemu_host.uri).storagePoolLookupByName(
        qemu_host.storage_pool).listVolumes()
    # and a new instance booted from it reads what the first one wrote
    created = member_api.post("/api/v1/instances/", {
        "name": "from-golden", "vcpus": 1, "memory_mib": 128, "boot_source": "image", "image": image.pk,
        "boot_kernel": guest_kernel.pk}, format="json")
    assert created.status_code == 202, created.content
    clone = Instance.objects.get(pk=created.json()["instance"])
    assert clone.status == Status.RUNNING, clone.status_reason
    assert "golden-disk" in console_session(clone, member, "head -c 11 /dev/vda; echo", r"golden-\w+\s")


def test_deleting_an_image_saved_from_a_disk_removes_the_copy_still_on_the_host(member, tenant, host):
    image = image_services.create_capture(user=member, tenant=tenant, name="half-read", host=host, size_gib=1)
    hypervisor.create_volume(host.uri, host.storage_pool, image.capture_volume, 1)
    pool = hypervisor.connection(host.uri).storagePoolLookupByName(host.storage_pool)
    assert image.capture_volume in pool.listVolumes()
    image_services.delete_image(image=image)
    assert image.capture_volume not in pool.listVolumes()
