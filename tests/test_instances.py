"""Instances through the API and services, on libvirt's test driver, with eager tasks."""

import threading
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from cloudpanel.exceptions import DomainError
from hosts import hypervisor
from hosts.models import Host
from images.choices import DiskFormat
from instances import services
from instances.choices import ActionStatus, Cause, Status
from instances.models import Instance, InstanceAction
from tenants.choices import Role
from tests.conftest import token_client
from tests.factories import (
    make_boot_kernel,
    make_host,
    make_instance,
    make_library_image,
    make_tenant,
    make_user,
)

pytestmark = pytest.mark.django_db(transaction=True)


def library_kernel():
    """A public boot kernel of the library, its files on every (test-driver) host the test has."""
    return make_boot_kernel(*Host.objects.all())


def create(api, **fields):
    body = {"name": "web", "vcpus": 1, "memory_mib": 128, "disk_gib": 1}
    if fields.get("boot_source", "kernel") == "kernel":
        body["boot_kernel"] = library_kernel().pk
    body.update(fields)
    return api.post("/api/v1/instances/", body, format="json")


def test_create_runs_the_whole_path_and_records_history(member_api, tenant, host):
    # When a member creates an instance
    response = create(member_api)
    # Then the API accepts it with the action, and the worker leaves it running
    assert response.status_code == 202, response.content
    assert response.json()["operation"] == "create"
    instance = Instance.objects.get(pk=response.json()["instance"])
    assert instance.status == Status.RUNNING and instance.task_state is None
    assert instance.tenant == tenant and instance.host == host
    assert hypervisor.state(host.uri, str(instance.uuid)) == hypervisor.PowerState.RUNNING
    change = instance.state_changes.get()
    assert (change.from_status, change.to_status, change.cause) == ("pending", "running", Cause.ACTION)
    assert change.at.tzinfo is not None
    assert InstanceAction.objects.get(pk=response.json()["id"]).status == ActionStatus.SUCCEEDED


def test_every_operation_changes_state_and_history(member_api, host):
    instance_id = create(member_api).json()["instance"]
    steps = [("suspend", "paused"), ("resume", "running"), ("reboot", "running"), ("poweroff", "stopped"),
             ("start", "running"), ("shutdown", "stopped"), ("delete", "deleted")]
    for operation, expected in steps:
        response = member_api.post(f"/api/v1/instances/{instance_id}/{operation}/")
        assert response.status_code == 202, (operation, response.content)
        assert Instance.objects.get(pk=instance_id).status == expected, operation
    instance = Instance.objects.get(pk=instance_id)
    assert instance.deleted_at is not None
    assert [c.to_status for c in instance.state_changes.all()] == [
        "running", "paused", "running", "stopped", "running", "stopped", "deleted"]
    with pytest.raises(hypervisor.DomainNotFound):
        hypervisor.state(host.uri, str(instance.uuid))


def test_delete_verb_queues_the_delete_operation(member_api, host):
    instance_id = create(member_api).json()["instance"]
    response = member_api.delete(f"/api/v1/instances/{instance_id}/")
    assert response.status_code == 202 and response.json()["operation"] == "delete"


def test_second_operation_in_flight_gets_409(member, tenant, host):
    # Given an instance with an operation claimed but not yet run (tasks not eager)
    instance = make_instance(tenant=tenant, host=host, status=Status.RUNNING)
    with mock.patch("instances.tasks.enqueue"):
        services.request_operation(instance=instance, operation="suspend", user=member)
    # When another operation arrives, then it is refused with the reason
    response = token_client(member).post(f"/api/v1/instances/{instance.pk}/reboot/")
    assert response.status_code == 409
    assert "suspending is in progress" in response.json()["detail"]


def test_operation_not_applicable_gets_409_with_reason(member_api, tenant, host):
    instance = make_instance(tenant=tenant, host=host, status=Status.STOPPED)
    response = member_api.post(f"/api/v1/instances/{instance.pk}/suspend/")
    assert response.status_code == 409
    assert "while it is stopped" in response.json()["detail"]


@pytest.mark.parametrize("name", ["a<b>", "x'/><disk", 'q"uote', "a" * 300, "-leading", "sp ace", ""])
def test_hostile_or_long_names_are_refused(member_api, host, name):
    with mock.patch("hosts.hypervisor.define") as define:
        response = create(member_api, name=name)
    assert response.status_code == 400, response.content
    assert Instance.objects.count() == 0
    define.assert_not_called()


def test_size_beyond_host_capacity_is_refused_with_reason(admin_api, tenant, host):
    response = create(admin_api, tenant=tenant.pk, host=host.pk, vcpus=host.cpus + 1)
    assert response.status_code == 400
    assert f"exceed host '{host.name}'" in response.json()["detail"]
    response = create(admin_api, tenant=tenant.pk, memory_mib=host.memory_mib + 1)
    assert response.status_code == 400 and "no host can take it" in response.json()["detail"]


def test_allocations_add_up_against_the_host(member_api, tenant, settings):
    # Given a host with 1 GiB and no overcommit, when two 600 MiB instances are asked for
    settings.CLOUDPANEL_RAM_ALLOCATION_RATIO = 1.0
    make_host(memory_mib=1024)
    assert create(member_api, name="a", memory_mib=600).status_code == 202
    response = create(member_api, name="b", memory_mib=600)
    # Then the second is refused, naming what is allocated
    assert response.status_code == 400 and "600 of 1024 MiB allocated" in response.json()["detail"]


def test_concurrent_creates_cannot_both_squeeze_onto_a_host(tenant, member, settings):
    settings.CLOUDPANEL_RAM_ALLOCATION_RATIO = 1.0
    host = make_host(memory_mib=1000)
    kernel = make_boot_kernel(host)
    results = []

    def attempt(name):
        try:
            services.create_instance(user=member, tenant=tenant, name=name, vcpus=1, memory_mib=600,
                                     host=host, boot_kernel=kernel)
            results.append("ok")
        except DomainError:
            results.append("refused")
        except Exception as exc:  # noqa: BLE001 - any other outcome fails the assertion below
            results.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(f"c{i}",)) for i in range(4)]
    with mock.patch("instances.tasks.enqueue"):  # patched once: patching per thread would race
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert sorted(results) == ["ok", "refused", "refused", "refused"]


def test_a_create_without_starting_defines_it_stopped(member_api, host):
    # When a member creates an instance and asks not to start it
    response = create(member_api, start=False)
    # Then it is defined on its host and left stopped
    assert response.status_code == 202, response.content
    instance = Instance.objects.get(pk=response.json()["instance"])
    assert (instance.status, instance.task_state) == (Status.STOPPED, None)
    assert hypervisor.state(host.uri, str(instance.uuid)) == hypervisor.PowerState.STOPPED
    # And a retry of a failed create keeps the wish
    assert InstanceAction.objects.get(pk=response.json()["id"]).start is False


def test_the_create_page_can_leave_the_instance_stopped(client, member, tenant, host):
    client.force_login(member)
    response = client.post("/instances/new/", {
        "name": "later", "tenant": tenant.pk, "vcpus": 1, "memory_mib": 64, "disk_gib": 0, "boot_source": "kernel",
        "boot_kernel": library_kernel().pk, "leave_stopped": "on"})
    assert response.status_code == 302, response.content
    assert Instance.objects.get(name="later").status == Status.STOPPED


def test_stopped_instances_hold_no_vcpus_or_ram_and_a_start_checks_the_host_again(member_api, settings):
    # Given a host of 1 GiB without overcommit, the "running" policy, and a stopped 600 MiB instance on it
    settings.CLOUDPANEL_RAM_ALLOCATION_RATIO, settings.CLOUDPANEL_CAPACITY_POLICY = 1.0, "running"
    make_host(memory_mib=1024)
    stopped = create(member_api, name="a", memory_mib=600, start=False).json()["instance"]
    # When another 600 MiB instance is created and started, then it fits: the stopped one holds nothing
    assert create(member_api, name="b", memory_mib=600).status_code == 202
    # And starting the first is refused (409) with what is left, the instance left as it was, nothing queued
    actions = InstanceAction.objects.count()
    response = member_api.post(f"/api/v1/instances/{stopped}/start/")
    assert response.status_code == 409, response.content
    assert "424 MiB of RAM left (600 of 1024 MiB allocated), 600 MiB asked" in response.json()["detail"]
    assert (Instance.objects.get(pk=stopped).status, Instance.objects.get(pk=stopped).task_state) == (
        Status.STOPPED, None)
    assert InstanceAction.objects.count() == actions


def test_under_the_defined_policy_stopped_instances_hold_their_size(member_api, settings):
    settings.CLOUDPANEL_RAM_ALLOCATION_RATIO, settings.CLOUDPANEL_CAPACITY_POLICY = 1.0, "defined"
    make_host(memory_mib=1024)
    assert create(member_api, name="a", memory_mib=600, start=False).status_code == 202
    response = create(member_api, name="b", memory_mib=600)
    assert response.status_code == 400 and "600 of 1024 MiB allocated" in response.json()["detail"]


def test_an_overcommitted_host_is_refused_with_the_true_reason(admin_api, tenant, settings):
    # Given a host whose running instances hold more RAM than it has (its RAM shrank, or the ratio was lowered)
    settings.CLOUDPANEL_RAM_ALLOCATION_RATIO = 1.0
    host = make_host(memory_mib=1024)
    make_instance(tenant=tenant, host=host, status=Status.RUNNING, memory_mib=2048)
    # When an instance is asked for on it, then the reason is what is left, not that the host is gone
    response = create(admin_api, tenant=tenant.pk, host=host.pk, memory_mib=128)
    assert response.status_code == 400
    assert response.json()["detail"] == (f"host '{host.name}' has 0 MiB of RAM left (2048 of 1024 MiB allocated), "
                                         "128 MiB asked")


def test_every_instance_holds_its_disk_in_the_hosts_pool(member_api, tenant):
    # Given a host whose storage pool holds 10 GiB, and a stopped instance with an 8 GiB disk on it
    host = make_host(pools=[{"name": "default-pool", "active": True, "capacity_bytes": 10 << 30,
                             "available_bytes": 10 << 30}])
    make_instance(tenant=tenant, host=host, disk_gib=8)
    # When a 4 GiB disk is asked for, then it is refused with what is left in the pool
    response = create(member_api, disk_gib=4)
    assert response.status_code == 400
    assert "2 GiB of disk left in its pool 'default-pool' (8 of 10 GiB allocated), 4 GiB asked" in \
        response.json()["detail"]
    assert create(member_api, disk_gib=2).status_code == 202


def test_less_ram_than_the_boot_source_needs_is_refused(member_api, host):
    kernel = make_boot_kernel(host)
    kernel.kernel.min_memory_mib = 128
    kernel.kernel.save()
    response = create(member_api, boot_kernel=kernel.pk, memory_mib=64)
    assert response.status_code == 400
    assert response.json()["detail"] == f"{kernel.name} needs at least 128 MiB of RAM; 64 MiB were asked"
    assert Instance.objects.count() == 0


def test_duplicate_live_name_in_a_tenant_is_refused(member_api, host):
    assert create(member_api).status_code == 202
    response = create(member_api)
    assert response.status_code == 400 and "already exists" in response.json()["detail"]


def test_other_tenants_instance_is_404_and_never_reaches_the_hypervisor(member_api, host):
    # Given an instance of another tenant
    other = make_instance(tenant=make_tenant(), host=host, status=Status.RUNNING)
    with mock.patch("hosts.hypervisor.connections.connection") as conn:
        for operation in ["start", "shutdown", "poweroff", "reboot", "suspend", "resume", "delete"]:
            assert member_api.post(f"/api/v1/instances/{other.pk}/{operation}/").status_code == 404
        assert member_api.get(f"/api/v1/instances/{other.pk}/").status_code == 404
        assert member_api.delete(f"/api/v1/instances/{other.pk}/").status_code == 404
        assert member_api.get(f"/api/v1/instances/{other.pk}/history/").status_code == 404
    conn.assert_not_called()
    assert not InstanceAction.objects.filter(instance=other).exists()
    assert member_api.get("/api/v1/instances/").json()["count"] == 0


def test_other_tenant_in_the_body_is_refused(member_api, host):
    foreign = make_tenant()
    response = create(member_api, tenant=foreign.pk)
    assert response.status_code == 404 and "No such tenant" in str(response.json())


def test_viewer_can_read_but_not_operate(tenant, host):
    viewer = make_user(tenant=tenant, role=Role.VIEWER)
    instance = make_instance(tenant=tenant, host=host, status=Status.RUNNING)
    api = token_client(viewer)
    assert api.get(f"/api/v1/instances/{instance.pk}/").status_code == 200
    with mock.patch("hosts.hypervisor.connections.connection") as conn:
        assert api.post(f"/api/v1/instances/{instance.pk}/poweroff/").status_code == 403
    conn.assert_not_called()


def test_unauthenticated_and_bad_token_are_401(client, host):
    assert client.get("/api/v1/instances/").status_code in (401, 403)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert api.get("/api/v1/instances/").status_code == 401


def test_host_going_away_mid_operation_fails_honestly_and_retry_works(member_api, host):
    # Given a running instance
    instance_id = create(member_api).json()["instance"]
    # When the host drops during a suspend
    lost = hypervisor.HypervisorUnavailable("test:///default: connection reset by peer")
    with mock.patch("hosts.hypervisor.suspend", side_effect=lost), \
         mock.patch("hosts.hypervisor.state", side_effect=lost):
        response = member_api.post(f"/api/v1/instances/{instance_id}/suspend/")
    # Then the action failed with the reason, and the status stays the last known one
    assert response.status_code == 202, response.content
    action = InstanceAction.objects.get(pk=response.json()["id"])
    assert action.status == ActionStatus.FAILED and "connection reset" in action.error
    instance = Instance.objects.get(pk=instance_id)
    assert instance.status == Status.RUNNING and instance.task_state is None
    assert "Suspend failed" in instance.status_reason
    # And a retry, once the host is back, works
    retry = member_api.post(f"/api/v1/actions/{action.pk}/retry/")
    assert retry.status_code == 202
    assert Instance.objects.get(pk=instance_id).status == Status.PAUSED


def test_failed_create_leaves_an_error_that_can_be_retried(member_api, host):
    failure = hypervisor.HypervisorError("no kernel at /boot/vmlinuz")
    with mock.patch("hosts.hypervisor.define", side_effect=failure):
        response = create(member_api)
    instance = Instance.objects.get(pk=response.json()["instance"])
    assert instance.status == Status.ERROR and "no kernel" in instance.status_reason
    retry = member_api.post(f"/api/v1/actions/{response.json()['id']}/retry/")
    assert retry.status_code == 202
    assert Instance.objects.get(pk=instance.pk).status == Status.RUNNING


def test_redelivered_task_is_a_no_op(member_api, host):
    from instances import tasks

    response = create(member_api)
    action = InstanceAction.objects.get(pk=response.json()["id"])
    with mock.patch("hosts.hypervisor.define") as define:
        tasks.create_instance(action.pk)  # delivered again
    define.assert_not_called()
    assert Instance.objects.get(pk=action.instance_id).state_changes.count() == 1


def test_task_for_a_deleted_row_is_tolerated(tenant, host, member):
    from instances import tasks

    instance = make_instance(tenant=tenant, host=host)
    with mock.patch("instances.tasks.enqueue"):
        action = services.request_operation(instance=instance, operation="start", user=member)
    instance.delete()
    # When its task is delivered after all, it finds nothing to do: no host is asked, nothing is written back
    with mock.patch("hosts.hypervisor.start") as start:
        tasks.start_instance(action.pk)
    start.assert_not_called()
    assert not InstanceAction.objects.filter(pk=action.pk).exists()


def test_action_list_is_filterable_and_scoped(member_api, admin_api, host):
    instance_id = create(member_api).json()["instance"]
    member_api.post(f"/api/v1/instances/{instance_id}/suspend/")
    assert member_api.get("/api/v1/actions/?operation=suspend").json()["count"] == 1
    assert member_api.get(f"/api/v1/actions/?instance={instance_id}").json()["count"] == 2
    other_api = token_client(make_user(tenant=make_tenant()))
    assert other_api.get("/api/v1/actions/").json()["count"] == 0
    assert admin_api.get("/api/v1/actions/").json()["count"] == 2


def _bulk_instances(tenant, host, count):
    Instance.objects.bulk_create(
        Instance(tenant=tenant, host=host, name=f"bulk-{i}", vcpus=1, memory_mib=64, status=Status.STOPPED)
        for i in range(count)
    )


@pytest.mark.parametrize("count", [100, 10_000])
def test_list_api_and_page_use_a_constant_number_of_queries_and_no_hypervisor(count, admin_user, tenant, host):
    # Given many instances
    _bulk_instances(tenant, host, count)
    api = token_client(admin_user)
    from django.test import Client

    page_client = Client()
    page_client.force_login(admin_user)
    with mock.patch("hosts.hypervisor.connections.connection") as conn:
        with CaptureQueriesContext(connection) as api_queries:
            response = api.get("/api/v1/instances/?limit=50")
        with CaptureQueriesContext(connection) as page_queries:
            page = page_client.get("/instances/")
    assert response.status_code == 200 and response.json()["count"] == count
    assert page.status_code == 200
    conn.assert_not_called()
    # token lookup + last-used update + the caller's memberships + count + page + the page's NICs
    # (none here; their networks and addresses would be two more, whatever the number of instances)
    assert len(api_queries) == 6, [q["sql"] for q in api_queries]
    # session + user + memberships + count + page + the header's tenant switcher
    assert len(page_queries) == 6, [q["sql"] for q in page_queries]


def test_the_list_written_from_rows_says_what_the_detail_says(admin_user, member, tenant, host):
    # Given instances with and without a host, an image, a boot kernel, NICs with addresses and groups, a deleted one
    from networks import security
    from networks.services import allocate, create_network, create_port

    network = create_network(user=None, tenant=tenant, name="lan", kind="nat", cidr="10.61.0.0/24",
                             ipv6_cidr="fd00:61::/64")
    groups = [security.create_group(user=None, tenant=tenant, name=name) for name in ("web", "admin")]
    web = make_instance(tenant=tenant, host=host, name="web", kernel="/boot/vmlinuz", init_env={"A": "1"},
                        image=make_library_image(), boot_kernel=make_boot_kernel(host))
    for position in (1, 0):
        port = create_port(network=network)
        port.instance, port.position = web, position
        port.save(update_fields=["instance", "position"])
        for subnet in network.subnets.all():
            allocate(port=port, subnet=subnet)
        port.security_groups.add(*groups[position:])
    make_instance(tenant=tenant, host=None, name="nowhere", status=Status.PENDING, task_state="creating")
    make_instance(tenant=tenant, host=host, name="gone", status=Status.DELETED, deleted_at="2026-01-02T03:04:05Z")
    # When the admin and a member list them, then ask for each one
    for api in (token_client(admin_user), token_client(member)):
        for query in ("", "?status=deleted"):
            listed = api.get(f"/api/v1/instances/{query}").json()["results"]
            # Then every row of the list is the instance's detail, field for field
            assert listed, query
            for row in listed:
                assert row == api.get(f"/api/v1/instances/{row['id']}/").json()
    web_row = token_client(member).get("/api/v1/instances/?name=web").json()["results"][0]
    assert web_row["kernel"] == "(on the host)" and len(web_row["nics"]) == 2
    assert web_row["nics"][0]["security_groups"] == [groups[1].pk, groups[0].pk]  # by name: admin, web


def test_per_host_queues_route_operations_to_the_hosts_worker(settings, member, tenant, host):
    from cloudpanel.celery import app

    instance = make_instance(tenant=tenant, host=host, status=Status.STOPPED)
    with mock.patch("instances.tasks.start_instance.apply_async") as send:
        services.request_operation(instance=instance, operation="start", user=member)
    send.assert_called_once()
    (args,), options = send.call_args.args, send.call_args.kwargs
    # With a worker per host, the router sends it to its host's queue; with one for all, to the default one
    settings.CLOUDPANEL_HOST_QUEUES = True
    assert app.amqp.router.route(dict(options), "instances.tasks.start_instance", args, {})["queue"].name == \
        f"host.{host.pk}"
    settings.CLOUDPANEL_HOST_QUEUES = False
    assert app.amqp.router.route(dict(options), "instances.tasks.start_instance", args, {})["queue"].name == \
        settings.CELERY_TASK_DEFAULT_QUEUE


@pytest.mark.parametrize("field", ["cmdline", "init"])
def test_control_characters_are_refused(admin_api, tenant, host, field):
    body = {field: "/bin/sh \x01 x"} if field == "init" else {field: "console=ttyS0\x00"}
    if field == "init":  # a container's command, in a container image
        rootfs = make_library_image(disk_format=DiskFormat.ROOTFS, hosts=(host,))
        body.update(boot_source="container", image=rootfs.pk, disk_gib=0)
    response = create(admin_api, tenant=tenant.pk, **body)
    assert response.status_code == 400
    assert "control characters" in str(response.json()) or "Null characters are not allowed" in str(response.json())
    assert not Instance.objects.exists()


def test_an_iso_goes_into_a_running_guest_only_through_a_drive_it_was_given(member_api, host):
    # Given a running instance made without a CD-ROM drive and one made with one, and an ISO of the library
    iso = make_library_image(disk_format=DiskFormat.ISO, hosts=(host,))
    plain = create(member_api, name="plain").json()["instance"]
    with_drive = create(member_api, name="drive", cdrom_drive=True).json()["instance"]
    assert member_api.get(f"/api/v1/instances/{with_drive}/").json()["cdrom_drive"] is True
    # When an ISO is inserted into each
    refused = member_api.post(f"/api/v1/instances/{plain}/media/", {"image": iso.pk}, format="json")
    taken = member_api.post(f"/api/v1/instances/{with_drive}/media/", {"image": iso.pk}, format="json")
    # Then the one without a drive says why, and nothing was queued for it; the other takes it
    assert refused.status_code == 409 and refused.json()["detail"] == hypervisor.NO_DRIVE
    assert not InstanceAction.objects.filter(instance_id=plain, operation="media").exists()
    assert taken.status_code == 202, taken.content
    # And so, suspended, until it is powered off
    assert member_api.post(f"/api/v1/instances/{plain}/suspend/").status_code == 202
    assert Instance.objects.get(pk=plain).status == Status.PAUSED
    refused = member_api.post(f"/api/v1/instances/{plain}/media/", {"image": iso.pk}, format="json")
    assert refused.status_code == 409 and refused.json()["detail"] == hypervisor.NO_DRIVE
