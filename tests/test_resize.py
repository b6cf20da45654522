"""Resize: vCPUs and RAM while stopped, the disk grown live or not, under the quota and the host's capacity;
billing prices each part of the month at the size it had."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from billing import metering
from billing import services as billing_services
from billing.models import UsageRecord
from hosts import hypervisor
from hosts.models import Host
from instances import services
from instances.choices import ActionStatus, Status
from instances.models import Instance, InstanceAction, InstanceSize, InstanceStateChange
from tenants.choices import Role
from tenants.services import set_quota
from tests.conftest import token_client
from tests.factories import make_boot_kernel, make_tenant, make_user
from tests.test_qemu import console_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.fleet_host]


def created(api, **fields) -> Instance:
    kernel = make_boot_kernel(*Host.objects.all())
    response = api.post("/api/v1/instances/", {"name": fields.pop("name", "grow"), "vcpus": 1, "memory_mib": 128,
                                               "disk_gib": 1, "boot_kernel": kernel.pk, **fields}, format="json")
    assert response.status_code == 202, response.content
    return Instance.objects.get(pk=response.json()["instance"])


def resize(api, instance, **sizes):
    return api.post(f"/api/v1/instances/{instance.pk}/resize/", sizes, format="json")


def succeeded(response):
    assert response.status_code == 202, response.content
    action = InstanceAction.objects.get(pk=response.json()["id"])
    assert action.status == ActionStatus.SUCCEEDED, action.error
    return action


def test_a_stopped_instance_gets_its_new_size_and_its_history(member_api, tenant, host):
    instance = created(member_api, start=False)
    assert instance.status == Status.STOPPED
    succeeded(resize(member_api, instance, vcpus=2, memory_mib=256))
    instance.refresh_from_db()
    assert (instance.vcpus, instance.memory_mib, instance.disk_gib) == (2, 256, 1)
    dom = hypervisor.connection(host.uri).lookupByUUIDString(str(instance.uuid))
    assert dom.info()[1] == 256 * 1024 and dom.info()[3] == 2  # max memory (KiB), vCPUs
    sizes = list(instance.sizes.values_list("vcpus", "memory_mib", "disk_gib"))
    assert sizes == [(1, 128, 1), (2, 256, 1)]
    assert instance.sizes.first().at == instance.created_at


def test_resizes_are_refused_with_the_reason(member_api, tenant, host):
    instance = created(member_api)
    assert instance.status == Status.RUNNING
    # vCPUs and RAM of a running guest
    refused = resize(member_api, instance, vcpus=2)
    assert refused.status_code == 409 and "while it is stopped" in refused.json()["detail"]
    services.request_operation(instance=instance, operation="poweroff", user=None)
    # a disk never shrinks; the same size is no change
    shrink = resize(member_api, instance, disk_gib=0)
    assert shrink.status_code == 409 and "never shrinks" in shrink.json()["detail"]
    assert resize(member_api, instance, vcpus=1).status_code == 409
    # over the tenant's quota, saying which
    set_quota(tenant=tenant, limits={"vcpus": 2})
    over = resize(member_api, instance, vcpus=3)
    assert over.status_code == 409 and "vCPUs: 1 of 2 in use, 2 more asked" in over.json()["detail"]
    # over the host's capacity, saying which
    Host.objects.filter(pk=host.pk).update(memory_mib=512)
    full = resize(member_api, instance, memory_mib=4096)
    assert full.status_code == 409 and "exceed host" in full.json()["detail"]
    # under the boot source's minimum, or out of bounds
    assert resize(member_api, instance, memory_mib=8).status_code == 400
    assert resize(member_api, instance, vcpus=0).status_code == 400
    # another tenant's instance is not there; a viewer changes nothing
    assert resize(token_client(make_user(tenant=make_tenant())), instance, vcpus=2).status_code == 404
    viewer = token_client(make_user(tenant=tenant, role=Role.VIEWER), tenant)
    assert resize(viewer, instance, vcpus=2).status_code == 403
    # a busy instance
    Instance.objects.filter(pk=instance.pk).update(task_state="rebooting")
    assert resize(member_api, instance, vcpus=2).status_code == 409
    Instance.objects.filter(pk=instance.pk).update(task_state=None)
    # and nothing of it was stored
    instance.refresh_from_db()
    assert (instance.vcpus, instance.memory_mib, instance.disk_gib) == (1, 128, 1)
    assert not InstanceSize.objects.exists()


def test_a_failed_resize_gives_the_old_size_back(member_api, tenant, host):
    instance = created(member_api, start=False)
    with mock.patch("hosts.hypervisor.set_size", side_effect=hypervisor.HypervisorError("no such CPU model")):
        response = resize(member_api, instance, vcpus=2)
    action = InstanceAction.objects.get(pk=response.json()["id"])
    assert action.status == ActionStatus.FAILED and action.error == "no such CPU model"
    instance.refresh_from_db()
    assert (instance.vcpus, instance.task_state) == (1, None)
    assert list(instance.sizes.values_list("vcpus", flat=True)) == [1]  # billed as it was all along
    retried = member_api.post(f"/api/v1/actions/{action.pk}/retry/")
    assert retried.status_code == 409 and "ask for it again" in retried.json()["detail"]


def test_billing_prices_each_part_of_the_month_at_the_size_it_had(member_api, tenant, host):
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    plan = billing_services.create_plan(name="sizes", currency="EUR", effective_from=hour - timedelta(hours=4),
                                        vcpu_hour="1")
    billing_services.set_tenant_billing(tenant=tenant, plan=plan, billed_from=hour - timedelta(hours=4))
    instance = created(member_api)
    # It ran for the last three hours: the first hour and a half with 1 vCPU and 1 GiB, then 2 vCPUs and 3 GiB
    InstanceStateChange.objects.filter(instance=instance).update(at=hour - timedelta(hours=3))
    Instance.objects.filter(pk=instance.pk).update(vcpus=2, disk_gib=3, created_at=hour - timedelta(hours=3))
    InstanceSize.objects.create(instance=instance, at=hour - timedelta(hours=3), vcpus=1, memory_mib=128, disk_gib=1)
    InstanceSize.objects.create(instance=instance, at=hour - timedelta(minutes=90), vcpus=2, memory_mib=128,
                                disk_gib=3)
    metering.meter(since=hour - timedelta(hours=4), until=hour)
    used = {meter: sum(UsageRecord.objects.filter(resource_id=instance.pk, resource_type="instance", meter=meter)
                       .values_list("units", flat=True)) for meter in ("vcpu", "disk")}
    assert used == {"vcpu": 1 * 5400 + 2 * 5400, "disk": 1 * 5400 + 3 * 5400}


@pytest.mark.qemu
def test_a_real_guest_sees_its_disk_grow_live_and_its_cpus_and_ram_after_a_restart(qemu_host, member, member_api,
                                                                                   tenant, guest_kernel):
    action = services.create_instance(user=member, tenant=tenant, name="growing", vcpus=1, memory_mib=128,
                                      disk_gib=1, boot_kernel=guest_kernel, host=qemu_host)
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, instance.status_reason
    assert "sectors=2097152" in console_session(instance, member, "echo sectors=$(cat /sys/block/vda/size)",
                                                r"sectors=\d+\s")
    # The disk grows while it runs: the guest sees 2 GiB at once
    succeeded(resize(member_api, instance, disk_gib=2))
    assert "sectors=4194304" in console_session(instance, member, "echo sectors=$(cat /sys/block/vda/size)",
                                                r"sectors=\d+\s")
    # vCPUs and RAM while it is stopped: started again, it has two CPUs and more memory
    services.request_operation(instance=instance, operation="poweroff", user=member)
    succeeded(resize(member_api, instance, vcpus=2, memory_mib=192))
    services.request_operation(instance=instance, operation="start", user=member)
    text = console_session(instance, member, "echo cpus=$(grep -c ^processor /proc/cpuinfo) "
                           "mem=$(sed -n 's/MemTotal: *//p' /proc/meminfo)", r"mem=\d+ kB")
    cpus = int(text.split("cpus=")[-1].split()[0])
    memory_kib = int(text.split("mem=")[-1].split()[0])
    assert cpus == 2 and 128 * 1024 < memory_kib <= 192 * 1024, text
