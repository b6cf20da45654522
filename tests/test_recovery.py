"""Crash recovery: a running operation holds a lease its worker renews; one whose lease expired lost its worker and
is run again (a delete, a power-off) or failed with the reason "worker lost", the guest's state read at once."""

import time
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from hosts import hypervisor
from instances import services, tasks
from instances.choices import ActionStatus, Status
from instances.models import Instance, InstanceAction
from tests.factories import make_boot_kernel, make_instance

pytestmark = pytest.mark.django_db(transaction=True)


def create(api, host):
    body = {"name": "web", "vcpus": 1, "memory_mib": 64, "disk_gib": 1, "boot_kernel": make_boot_kernel(host).pk}
    response = api.post("/api/v1/instances/", body, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def lease_expires(action_id: int) -> None:
    """Age the lease past its term, as a dead worker leaves it."""
    InstanceAction.objects.filter(pk=action_id).update(heartbeat_at=timezone.now() - timedelta(minutes=5))


def test_a_create_whose_worker_died_after_the_guest_started_fails_as_worker_lost_and_shows_it_running(member_api,
                                                                                                      host):
    # Given a create whose worker started the guest, then died before it could say so
    with mock.patch("instances.services.finish_action"):
        created = create(member_api, host)
    action = InstanceAction.objects.get(pk=created["id"])
    assert action.status == ActionStatus.RUNNING and action.attempts == 1
    # When its lease expires and the sweep runs
    lease_expires(action.pk)
    tasks.recover_lost_actions()
    # Then the create failed with the reason, and the instance shows what the host holds: a running guest
    action.refresh_from_db()
    assert action.status == ActionStatus.FAILED and action.error.startswith("worker lost")
    instance = Instance.objects.get(pk=created["instance"])
    assert (instance.status, instance.task_state) == (Status.RUNNING, None)
    assert hypervisor.state(host.uri, str(instance.uuid)) == hypervisor.PowerState.RUNNING


def test_a_lost_create_that_started_nothing_leaves_an_error_to_retry(member_api, host):
    with mock.patch("hosts.hypervisor.define", side_effect=SystemExit), pytest.raises(SystemExit):
        create(member_api, host)  # the worker stops in the middle (nothing reports back)
    action = InstanceAction.objects.get()
    lease_expires(action.pk)
    tasks.recover_lost_actions()
    instance = Instance.objects.get(pk=action.instance_id)
    assert (instance.status, instance.task_state) == (Status.ERROR, None)
    assert "worker lost" in instance.status_reason
    assert member_api.post(f"/api/v1/actions/{action.pk}/retry/").status_code == 202
    assert Instance.objects.get(pk=instance.pk).status == Status.RUNNING


def test_a_delete_whose_worker_died_is_run_again_and_finishes(member_api, host, tenant, member):
    instance_id = create(member_api, host)["instance"]
    with mock.patch("instances.tasks.enqueue"):
        action = services.request_operation(instance=Instance.objects.get(pk=instance_id), operation="delete",
                                            user=member)
    assert services.begin_action(action.pk) is not None  # a worker took it, then died
    lease_expires(action.pk)
    tasks.recover_lost_actions()
    action.refresh_from_db()
    assert (action.status, action.attempts) == (ActionStatus.SUCCEEDED, 2)
    assert Instance.objects.get(pk=instance_id).status == Status.DELETED
    with pytest.raises(hypervisor.DomainNotFound):
        hypervisor.state(host.uri, str(Instance.objects.get(pk=instance_id).uuid))


def test_a_delete_that_kills_its_worker_every_time_fails_after_the_last_attempt(tenant, host, member):
    instance = make_instance(tenant=tenant, host=host, status=Status.STOPPED)
    with mock.patch("instances.tasks.enqueue"):
        action = services.request_operation(instance=instance, operation="delete", user=member)
    InstanceAction.objects.filter(pk=action.pk).update(status=ActionStatus.RUNNING, attempts=services.MAX_ATTEMPTS)
    lease_expires(action.pk)
    with mock.patch("instances.tasks.enqueue") as queued:
        tasks.recover_lost_actions()
    queued.assert_not_called()
    action.refresh_from_db()
    assert action.status == ActionStatus.FAILED and "worker lost" in action.error
    # And the host was read at once: this row never had a domain there, which is what it now shows
    instance.refresh_from_db()
    assert (instance.status, instance.task_state) == (Status.MISSING, None)


def test_a_renewed_lease_is_left_alone(tenant, host, member):
    instance = make_instance(tenant=tenant, host=host, status=Status.STOPPED)
    with mock.patch("instances.tasks.enqueue"):
        action = services.request_operation(instance=instance, operation="start", user=member)
    services.begin_action(action.pk)
    tasks.recover_lost_actions()
    action.refresh_from_db()
    assert action.status == ActionStatus.RUNNING
    # And a second copy of its task finds it claimed: it is not run twice
    with mock.patch("hosts.hypervisor.start") as start:
        tasks.start_instance(action.pk)
    start.assert_not_called()


def test_the_worker_renews_the_lease_while_it_works(member_api, host, settings):
    settings.CLOUDPANEL_LEASE_SECONDS = 0.3
    instance_id = create(member_api, host)["instance"]
    seen = []

    def slow_poweroff(uri, domain_uuid):
        began = InstanceAction.objects.get(operation="poweroff").heartbeat_at
        time.sleep(0.5)
        seen.append(InstanceAction.objects.get(operation="poweroff").heartbeat_at - began)
        return hypervisor.PowerState.STOPPED

    with mock.patch("hosts.hypervisor.power_off", side_effect=slow_poweroff):
        assert member_api.post(f"/api/v1/instances/{instance_id}/poweroff/").status_code == 202
    assert seen and seen[0] >= timedelta(seconds=0.1)


def test_a_report_meets_a_database_outage_and_is_recorded_once_it_answers(member_api, host):
    from django.db import OperationalError

    instance_id = create(member_api, host)["instance"]
    real, calls = services.finish_action, []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) < 3:
            raise OperationalError("FATAL: sorry, too many clients already")
        return real(*args, **kwargs)

    with mock.patch("instances.services.finish_action", side_effect=flaky):
        response = member_api.post(f"/api/v1/instances/{instance_id}/suspend/")
    assert len(calls) == 3
    assert InstanceAction.objects.get(pk=response.json()["id"]).status == ActionStatus.SUCCEEDED
    assert Instance.objects.get(pk=instance_id).status == Status.PAUSED


def test_a_task_that_cannot_reach_the_database_is_retried_not_dropped(tenant, host, member):
    from django.db import OperationalError

    instance = make_instance(tenant=tenant, host=host, status=Status.STOPPED)
    with mock.patch("instances.tasks.enqueue"):
        action = services.request_operation(instance=instance, operation="start", user=member)
    with mock.patch("instances.services.begin_action", side_effect=OperationalError("too many clients")), \
            mock.patch("celery.app.task.Task.retry", side_effect=RuntimeError("retried")) as retry, \
            pytest.raises(RuntimeError, match="retried"):
        tasks.start_instance.delay(action.pk)
    assert isinstance(retry.call_args.kwargs["exc"], OperationalError)


def test_a_create_timed_out_while_it_prepared_does_not_start_its_guest(member_api, host):
    # Given a create whose preparation (a slow copy to the host) outlives its timeout: the sweep fails it meanwhile
    with mock.patch("instances.tasks.enqueue"):
        created = create(member_api, host)

    def slow_copy(instance, on_host):
        services.expire_stuck_tasks(host=on_host, older_than=timezone.now() + timedelta(hours=1))
        return {}

    # When the worker gets to the point of defining and starting the guest
    with mock.patch("instances.tasks._boot_kernel", side_effect=slow_copy), \
            mock.patch("hosts.hypervisor.define") as define:
        tasks.create_instance(created["id"])
    # Then it does not: the instance shows the timeout, and no guest runs untracked
    define.assert_not_called()
    instance = Instance.objects.get(pk=created["instance"])
    assert (instance.status, instance.task_state) == (Status.ERROR, None)
    assert "did not finish in time" in instance.status_reason
    assert InstanceAction.objects.get(pk=created["id"]).status == ActionStatus.FAILED


def test_a_resize_and_a_snapshot_whose_worker_died_are_run_again_and_finish(member_api, host, member):
    instance = Instance.objects.get(pk=create(member_api, host)["instance"])
    # A snapshot whose worker took it on the host, then died before it could say so
    with mock.patch("instances.services.finish_action"):
        member_api.post(f"/api/v1/instances/{instance.pk}/snapshots/", {"name": "s"}, format="json")
    snapshot_action = InstanceAction.objects.get(operation="snapshot")
    lease_expires(snapshot_action.pk)
    tasks.recover_lost_actions()
    snapshot_action.refresh_from_db()
    assert (snapshot_action.status, snapshot_action.attempts) == (ActionStatus.SUCCEEDED, 2)
    assert snapshot_action.snapshot.status == "available"
    # A resize of the stopped guest whose worker died in the middle
    services.request_operation(instance=instance, operation="poweroff", user=member)
    with mock.patch("instances.tasks.enqueue"):
        response = member_api.post(f"/api/v1/instances/{instance.pk}/resize/", {"vcpus": 2}, format="json")
    resize = InstanceAction.objects.get(pk=response.json()["id"])
    assert services.begin_action(resize.pk) is not None
    lease_expires(resize.pk)
    tasks.recover_lost_actions()
    resize.refresh_from_db()
    assert (resize.status, resize.attempts) == (ActionStatus.SUCCEEDED, 2), resize.error
    assert Instance.objects.get(pk=instance.pk).vcpus == 2
    assert list(instance.sizes.values_list("vcpus", flat=True)) == [1, 2]
    assert hypervisor.connection(host.uri).lookupByUUIDString(str(instance.uuid)).info()[3] == 2
