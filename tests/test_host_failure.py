"""Honest host failure: a host silent for too long (its libvirt or its worker) is offline and its instances
unknown from the moment it last answered (not billed past it, no operation but an admin's delete from the panel);
its return restores what is really there. The test driver here; a real host's libvirtd killed in test_migration."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from billing import metering
from billing.choices import Meter
from hosts import hypervisor
from hosts import tasks as host_tasks
from hosts.choices import HostState
from hosts.models import Host
from instances import services
from instances.choices import Cause, Status
from instances.models import Instance, InstanceStateChange
from networks import services as network_services
from networks.models import Allocation, Port
from tests.factories import make_boot_kernel, make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def running(host, tenant, member):
    network = network_services.create_network(user=None, tenant=tenant, name="lan", kind="nat", cidr="10.81.0.0/24")
    action = services.create_instance(user=member, tenant=tenant, name="web", vcpus=2, memory_mib=256,
                                      boot_kernel=make_boot_kernel(host), host=host,
                                      nics=[services.NicRequest(network, None, [])])
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, instance.status_reason
    # (running for ten minutes already)
    earlier = timezone.now() - timedelta(minutes=10)
    InstanceStateChange.objects.filter(instance=instance).update(at=earlier)
    Instance.objects.filter(pk=instance.pk).update(status_changed_at=earlier)
    return Instance.objects.get(pk=instance.pk)


def _silent_since(host, seconds):
    seen = timezone.now() - timedelta(seconds=seconds)
    Host.objects.filter(pk=host.pk).update(last_seen_at=seen)
    return Host.objects.get(pk=host.pk).last_seen_at


def test_a_silent_host_makes_its_instances_unknown_from_when_it_was_last_seen_until_it_answers(
        settings, host, running, member_api):
    settings.CLOUDPANEL_HOST_DOWN_SECONDS = 90
    # Given a host last heard from two minutes ago (its worker stopped reconciling it)
    seen = _silent_since(host, 120)
    # When the periodic check runs
    host_tasks.check_hosts()
    # Then the host is offline with the reason, and its instance unknown as of that moment, shown with why
    host.refresh_from_db()
    assert host.state == HostState.OFFLINE and "not heard from since" in host.last_error
    instance = Instance.objects.get(pk=running.pk)
    assert (instance.status, instance.status_changed_at) == (Status.UNKNOWN, seen)
    assert f"host '{host.name}' does not answer" in instance.status_reason
    change = InstanceStateChange.objects.filter(instance=instance).latest("at", "id")
    assert (change.from_status, change.to_status, change.cause) == (Status.RUNNING, Status.UNKNOWN, Cause.RECONCILE)
    # and metering charges its vCPUs up to the moment the host was last seen, not beyond
    [vcpus] = [span for span in metering._instance(instance, timezone.now()).spans if span.meter == Meter.VCPU]
    assert vcpus.end == seen
    # and nothing may be asked of it meanwhile, not even a delete by its tenant
    for operation in ("poweroff", "reboot", "delete"):
        answer = member_api.post(f"/api/v1/instances/{instance.pk}/{operation}/") if operation != "delete" else \
            member_api.delete(f"/api/v1/instances/{instance.pk}/")
        assert answer.status_code == 409, (operation, answer.content)
        assert "its host does not answer" in answer.json()["detail"]
    # When the host answers again (a reconcile reads its domains)
    host_tasks.reconcile_host(host.pk)
    # Then it is online and the instance shows what the host holds: running, billed again from then
    assert Host.objects.get(pk=host.pk).state == HostState.ONLINE
    instance.refresh_from_db()
    assert (instance.status, instance.status_reason) == (Status.RUNNING, "")
    back = InstanceStateChange.objects.filter(instance=instance).latest("at", "id")
    assert (back.from_status, back.to_status, back.detail) == (Status.UNKNOWN, Status.RUNNING, "its host answers again")
    spans = [span for span in metering._instance(instance, timezone.now()).spans if span.meter == Meter.VCPU]
    assert [span.start for span in spans] == [running.status_changed_at, back.at]


def test_a_host_silent_for_less_than_the_limit_is_left_alone(settings, host, running):
    settings.CLOUDPANEL_HOST_DOWN_SECONDS = 90
    _silent_since(host, 30)
    host_tasks.check_hosts()
    assert Host.objects.get(pk=host.pk).state == HostState.ONLINE
    assert Instance.objects.get(pk=running.pk).status == Status.RUNNING


def test_a_platform_admin_deletes_an_unknown_instance_from_the_panel_alone(settings, host, running):
    settings.CLOUDPANEL_HOST_DOWN_SECONDS = 90
    _silent_since(host, 120)
    host_tasks.check_hosts()
    [port] = Port.objects.filter(instance=running)
    admin = make_user(staff=True)
    # When a platform admin deletes it, nothing is asked of the host (which does not answer)
    with mock.patch.object(hypervisor, "undefine", side_effect=AssertionError("the host was asked")) as undefine:
        services.request_operation(instance=Instance.objects.get(pk=running.pk), operation="delete", user=admin)
    undefine.assert_not_called()
    # Then it is deleted (no longer billed, out of its quota), but its address stays held while its guest may run
    instance = Instance.objects.get(pk=running.pk)
    assert (instance.status, instance.task_state) == (Status.DELETED, None) and instance.deleted_at
    assert instance.forgotten_at is not None
    assert Allocation.objects.filter(port_id=port.pk).exists()
    assert hypervisor.describe(host.uri, str(instance.uuid)).state == "running"  # (the host was not asked)
    # When the host answers again, its guest is removed from it and the address let go of
    host_tasks.reconcile_host(host.pk)
    instance.refresh_from_db()
    assert instance.forgotten_at is None
    with pytest.raises(hypervisor.DomainNotFound):
        hypervisor.describe(host.uri, str(instance.uuid))
    assert not Port.objects.filter(pk=port.pk).exists()
    assert not Allocation.objects.filter(port_id=port.pk).exists()
