"""Clone: a stopped instance's disk copied whole into a new instance of its tenant on its host, with NICs on the
same networks (new addresses); the test driver for the flow and refusals, a real guest for the bytes."""

import email
from unittest import mock

import pytest

from hosts import hypervisor
from images import cloudinit
from instances import services
from instances.choices import ActionStatus, Status
from instances.models import Instance, InstanceAction
from networks import services as network_services
from tenants.services import set_quota
from tests.conftest import token_client
from tests.factories import make_boot_kernel, make_library_image, make_tenant, make_user
from tests.test_qemu import console_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fleet_host]


def clone(api, instance, name="copy"):
    return api.post(f"/api/v1/instances/{instance.pk}/clone/", {"name": name}, format="json")


def test_a_clone_gets_a_copy_of_the_disk_and_nics_of_its_own(member_api, tenant, host):
    image = make_library_image(hosts=(host,), name="debian")
    network = network_services.create_network(user=None, tenant=tenant, name="lan", kind="nat", cidr="10.78.0.0/24")
    created = member_api.post("/api/v1/instances/", {
        "name": "web", "vcpus": 2, "memory_mib": 256, "disk_gib": 3, "boot_source": "image", "image": image.pk,
        "ssh_keys": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO5 me", "start": False,
        "networks": [{"network": network.pk, "address": "10.78.0.9"}]}, format="json")
    source = Instance.objects.get(pk=created.json()["instance"])
    assert source.status == Status.STOPPED, source.status_reason
    answer = clone(member_api, source)
    assert answer.status_code == 202, answer.content
    create = InstanceAction.objects.get(pk=answer.json()["id"])
    copy = create.instance
    # the clone's create ran once its disk was copied: a stopped instance of the same size and boot
    assert create.status == ActionStatus.SUCCEEDED, create.error
    assert (copy.name, copy.status, copy.cloned_from, copy.host) == ("copy", Status.STOPPED, source, host)
    assert (copy.vcpus, copy.memory_mib, copy.disk_gib, copy.image) == (2, 256, 3, image)
    assert InstanceAction.objects.get(instance=source, operation="clone").status == ActionStatus.SUCCEEDED
    pool = hypervisor.connection(host.uri).storagePoolLookupByName(host.storage_pool)
    volume = pool.storageVolLookupByName(copy.volume_name)
    assert volume.info()[1] == 3 << 30  # a volume of its own, not an overlay of the image
    assert "backingStore" not in volume.XMLDesc(0) or "<path>" not in volume.XMLDesc(0).split("backingStore")[1]
    # its NIC is on the same network with an address and MAC of its own; its seed names it
    [port], [theirs] = copy.ports.all(), source.ports.all()
    assert port.network == network and port.mac != theirs.mac
    assert port.addresses.get().address != "10.78.0.9"
    assert "hostname: copy" in copy.user_data and "ssh-ed25519" in copy.user_data
    assert Instance.objects.get(pk=source.pk).status == Status.STOPPED and source.task_state is None


def test_clones_are_refused_with_the_reason(member, member_api, tenant, host):
    kernel = make_boot_kernel(host)
    running = Instance.objects.get(pk=services.create_instance(
        user=member, tenant=tenant, name="busy", vcpus=1, memory_mib=64, disk_gib=1, boot_kernel=kernel).instance_id)
    refused = clone(member_api, running)
    assert refused.status_code == 409 and "running" in refused.json()["detail"]
    services.request_operation(instance=running, operation="poweroff", user=member)
    diskless = Instance.objects.get(pk=services.create_instance(
        user=member, tenant=tenant, name="diskless", vcpus=1, memory_mib=64, boot_kernel=kernel,
        start=False).instance_id)
    assert "no disk" in clone(member_api, diskless).json()["detail"]
    # another tenant's instance is not there; a taken or bad name is a 400; the quota is the create's
    assert clone(token_client(make_user(tenant=make_tenant())), running).status_code == 404
    assert clone(member_api, running, name="diskless").status_code == 400
    assert clone(member_api, running, name="../x").status_code == 400
    set_quota(tenant=tenant, limits={"instances": 2})
    over = clone(member_api, running)
    assert over.status_code == 409 and "Instances: 2 of 2" in over.json()["detail"]
    assert not Instance.objects.filter(name="copy").exists()
    assert Instance.objects.get(pk=running.pk).task_state is None
    # a copy the host refuses fails the clone's create with the reason, which is not retried as it was
    set_quota(tenant=tenant, limits={"instances": None})
    with mock.patch("hosts.hypervisor.clone_volume", side_effect=hypervisor.HypervisorError("pool is full")):
        answer = clone(member_api, running)
    create = InstanceAction.objects.get(pk=answer.json()["id"])
    assert (create.status, create.instance.status) == (ActionStatus.FAILED, Status.ERROR)
    assert "could not be copied" in create.error and "pool is full" in create.error
    retried = member_api.post(f"/api/v1/actions/{create.pk}/retry/")
    assert retried.status_code == 409 and "clone again" in retried.json()["detail"]
    assert Instance.objects.get(pk=running.pk).task_state is None


def test_a_clones_user_data_names_it_whether_plain_or_with_a_script():
    plain = cloudinit.compose_user_data(hostname="web", ssh_keys=["ssh-ed25519 AAAA me"])
    assert "hostname: copy" in cloudinit.with_hostname(plain, "copy")
    mixed = cloudinit.compose_user_data(hostname="web", ssh_keys=[], cloud_config="#cloud-config\npackages: [nginx]",
                                        script="echo hi")
    changed = cloudinit.with_hostname(mixed, "copy")
    parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in email.message_from_string(
        changed).walk() if not p.is_multipart()}
    assert "hostname: copy" in parts["text/cloud-config"] and "nginx" in parts["text/cloud-config"]
    assert parts["text/x-shellscript"].endswith("echo hi")


@pytest.mark.qemu
def test_a_real_guests_clone_reads_what_the_source_wrote(qemu_host, member, member_api, tenant, guest_kernel):
    action = services.create_instance(user=member, tenant=tenant, name="source", vcpus=1, memory_mib=128,
                                      disk_gib=1, boot_kernel=guest_kernel, host=qemu_host)
    source = Instance.objects.get(pk=action.instance_id)
    assert source.status == Status.RUNNING, source.status_reason
    console_session(source, member, "echo cloned-disk | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; "
                    "sync; echo synced-$((4*4))", r"synced-16")
    services.request_operation(instance=source, operation="poweroff", user=member)
    answer = clone(member_api, source, name="twin")
    assert answer.status_code == 202, answer.content
    create = InstanceAction.objects.get(pk=answer.json()["id"])
    assert create.status == ActionStatus.SUCCEEDED, create.error
    twin = create.instance
    services.request_operation(instance=twin, operation="start", user=member)
    assert Instance.objects.get(pk=twin.pk).status == Status.RUNNING
    assert "cloned-disk" in console_session(twin, member, "head -c 11 /dev/vda; echo", r"cloned-\w+\s")
