"""Honest host failure: a host silent for too long (its libvirt or its worker) is offline and its instances
unknown from the moment it last answered (not billed past it, no operation but an admin's delete from the panel);
its return restores what is really there. Evacuation rebuilds its instances elsewhere. The test driver here; a real
host's libvirtd killed in test_migration."""

import subprocess
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
from instances import backup_store, migration, services, tasks
from instances.choices import Cause, Status
from instances.models import Backup, Instance, InstanceStateChange, Leftover
from networks import services as network_services
from networks.models import Allocation, Port
from tests.conftest import token_client
from tests.factories import make_boot_kernel, make_host, make_instance, make_library_image, make_user

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


def test_evacuating_a_dead_host_rebuilds_what_it_can_elsewhere_and_cleans_up_when_it_returns(
        settings, host, tenant, member):
    target, source = host, make_host(uri="test+unix:///default", name="dying")
    kernel = make_boot_kernel(source, target)
    image = make_library_image(hosts=(source, target))
    network = network_services.create_network(user=None, tenant=tenant, name="lan", kind="nat", cidr="10.83.0.0/24")

    def create(name, **fields):
        action = services.create_instance(user=member, tenant=tenant, name=name, vcpus=1, memory_mib=128,
                                          host=source, **fields)
        return Instance.objects.get(pk=action.instance_id)

    # Given a host with a diskless guest (with a NIC), one booted from an image (stopped), one whose disk has a
    # backup, and one whose disk has none
    web = create("web", boot_kernel=kernel, nics=[services.NicRequest(network, "10.83.0.20", [])])
    db = create("db", boot_source="image", image=image, start=False)
    saved = create("saved", boot_kernel=kernel, disk_gib=1)
    kept = create("kept", boot_kernel=kernel, disk_gib=1)
    backup = Backup.objects.create(tenant=tenant, instance=saved, instance_name="saved", status="available",
                                   disk_gib=1, boot_source="kernel", boot_kernel=kernel, taken_at=timezone.now())
    backup_store.path_of(backup).parent.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(backup_store.path_of(backup)), "1G"], check=True)
    try:
        # When the host goes silent past the limit
        settings.CLOUDPANEL_HOST_DOWN_SECONDS = 90
        _silent_since(source, 120)
        host_tasks.check_hosts()
        assert Instance.objects.get(pk=web.pk).status == Status.UNKNOWN
        admin = token_client(make_user(staff=True))
        # Then its plan says what becomes of each, and why
        plan = {step["instance_name"]: step for step in admin.get(f"/api/v1/hosts/{source.pk}/evacuate/").json()}
        assert {name: (step["action"], step["target_host_name"], step["start"]) for name, step in plan.items()} == {
            "web": ("boot again", target.name, True), "db": ("from image", target.name, False),
            "saved": ("stays", None, True), "kept": ("stays", None, True)}
        assert plan["kept"]["reason"] == "its disk was only on the host, and it has no backup"
        # (a backup is put back on a host that takes backups: a real one, in test_migration)
        assert plan["saved"]["reason"] == f"no other host can take it: host '{target.name}' runs libvirt test " \
                                          "driver, which cannot boot it"
        assert plan["db"]["reason"].endswith("what was written to its disk is lost")
        # and nothing happens unless a platform admin says the host is off
        assert token_client(member, tenant).post(f"/api/v1/hosts/{source.pk}/evacuate/", {"host_is_off": True},
                                                 format="json").status_code == 403
        refused = admin.post(f"/api/v1/hosts/{source.pk}/evacuate/", {"host_is_off": False}, format="json")
        assert refused.status_code == 409 and "make sure host 'dying' is off" in refused.json()["detail"]
        assert admin.post(f"/api/v1/hosts/{target.pk}/evacuate/", {"host_is_off": True},
                          format="json").status_code == 409  # (an online host is migrated, not evacuated)
        assert Instance.objects.filter(host=source).count() == 4
        # When the admin evacuates it
        answer = admin.post(f"/api/v1/hosts/{source.pk}/evacuate/", {"host_is_off": True}, format="json")
        assert answer.status_code == 202, answer.content
        # Then each instance that could be is on the other host, in the state it had, with its address; the host is
        # disabled; the one that could not stays, unknown
        moved = {i.name: i for i in Instance.objects.filter(pk__in=[web.pk, db.pk, saved.pk, kept.pk])}
        assert {name: (i.host, i.status) for name, i in moved.items()} == {
            "web": (target, Status.RUNNING), "db": (target, Status.STOPPED), "saved": (source, Status.UNKNOWN),
            "kept": (source, Status.UNKNOWN)}, {i.name: i.status_reason for i in moved.values()}
        assert moved["web"].placement["for"] == "evacuation"
        assert list(Allocation.objects.filter(port__instance=web).values_list("address", flat=True)) == ["10.83.0.20"]
        assert hypervisor.describe(target.uri, str(web.uuid)).state == "running"
        assert not Host.objects.get(pk=source.pk).enabled
        change = InstanceStateChange.objects.filter(instance=web, to_status=Status.PENDING).get()
        assert "evacuated from host 'dying'" in change.detail
        assert Leftover.objects.filter(host=source).count() == 2
        # and moving one back there is refused until they are gone
        assert "still holds what 'web' left there" in migration.refusal(Instance.objects.get(pk=web.pk), source,
                                                                        live=False)
        # When the host answers again, what the evacuated ones left there is removed; the one that stayed is kept
        tasks.remove_leftovers(source)
        assert not Leftover.objects.exists()
        for name in ("web", "db"):
            with pytest.raises(hypervisor.DomainNotFound):
                hypervisor.describe(source.uri, str(moved[name].uuid))
        assert hypervisor.describe(source.uri, str(kept.uuid)).state == "running"  # (those that stayed are kept)
        assert hypervisor.describe(target.uri, str(web.uuid)).state == "running"
    finally:
        for instance in (web, db, saved, kept):
            for uri in (source.uri, target.uri):
                hypervisor.undefine(uri, str(instance.uuid))


def test_an_evacuation_plan_places_each_beside_the_others_and_keeps_an_affinity_group_together(tenant, member):
    from instances import groups

    dead = make_host(uri="test:///dead", name="dead", state=HostState.OFFLINE)
    big = make_host(name="big", memory_mib=8192)
    small = make_host(uri="test+unix:///default", name="small", memory_mib=6144)
    kernel = make_boot_kernel()
    together = groups.create(tenant=tenant, name="pair", policy="affinity", user=member)
    for name, memory, group in (("x", 5120, None), ("y", 5120, None), ("p1", 256, together), ("p2", 256, together)):
        make_instance(tenant=tenant, host=dead, status=Status.UNKNOWN, name=name, memory_mib=memory,
                      boot_source="kernel", boot_kernel=kernel, server_group=group)
    admin = token_client(make_user(staff=True))
    plan = {s["instance_name"]: s for s in admin.get(f"/api/v1/hosts/{dead.pk}/evacuate/").json()}
    # each instance is placed beside those planned before it: the two large ones do not both fit on big
    assert {plan["x"]["target_host_name"], plan["y"]["target_host_name"]} == {big.name, small.name}
    # the group's members, all on the dead host, go together
    assert plan["p1"]["target_host_name"] == plan["p2"]["target_host_name"] is not None
    assert Instance.objects.filter(host=dead).count() == 4 and Host.objects.get(pk=dead.pk).enabled


def test_only_a_host_silent_past_the_limit_is_evacuated(settings, tenant):
    settings.CLOUDPANEL_HOST_DOWN_SECONDS = 90
    failing = make_host(uri="test:///failing", name="failing", state=HostState.ERROR)
    admin = token_client(make_user(staff=True))
    for seconds, code in ((30, 409), (120, 200)):  # (in error: it answered with an error, so it may well run)
        _silent_since(failing, seconds)
        answer = admin.get(f"/api/v1/hosts/{failing.pk}/evacuate/")
        assert answer.status_code == code, answer.content
    _silent_since(failing, 30)
    assert "answered at" in admin.post(f"/api/v1/hosts/{failing.pk}/evacuate/", {"host_is_off": True},
                                       format="json").json()["detail"]
    assert Host.objects.get(pk=failing.pk).enabled
