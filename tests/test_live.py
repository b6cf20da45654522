"""Live status: lifecycle events and reconciliation, pushed through Channels to websockets."""

import json
import time
import unittest.mock as mock
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from cloudpanel.asgi import application
from hosts import hypervisor
from hosts.models import Host
from hosts.tasks import reconcile_host
from instances import services
from instances.choices import Cause, Status, TaskState
from instances.lifecycle import allowed_operations
from instances.models import Instance
from tests.conftest import token_client
from tests.factories import make_boot_kernel, make_instance, make_tenant, make_user, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")  # the address the socket was opened to, as a browser sends it


def running_instance(user, tenant):
    """Created from a public boot kernel of the library, its files on every (test-driver) host."""
    action = services.create_instance(user=user, tenant=tenant, name=f"live-{time.monotonic_ns()}", vcpus=1,
                                      memory_mib=64, boot_kernel=make_boot_kernel(*Host.objects.all()))
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, list(instance.state_changes.values_list("to_status", "cause", "detail"))
    return instance


def test_change_outside_the_panel_arrives_through_an_event(member, tenant, host, listener):
    # Given a running instance and the listener watching its host
    instance = running_instance(member, tenant)
    assert wait_for(lambda: host.uri in listener.watched)
    # When someone destroys the domain behind the panel's back
    hypervisor.connection(host.uri).lookupByUUIDString(str(instance.uuid)).destroy()
    # Then the status follows within a second, caused by the event
    assert wait_for(lambda: Instance.objects.get(pk=instance.pk).status == Status.STOPPED, timeout=1.0)
    change = instance.state_changes.order_by("-id").first()
    assert change.cause == Cause.EVENT and change.to_status == Status.STOPPED


def test_reconcile_catches_what_events_missed_in_one_call(member, tenant, host):
    instance = running_instance(member, tenant)
    gone = running_instance(member, tenant)
    dom = hypervisor.connection(host.uri).lookupByUUIDString(str(instance.uuid))
    dom.suspend()
    hypervisor.undefine(host.uri, str(gone.uuid))
    calls = []
    original = hypervisor.all_domains

    def counting(uri, sizes=None):
        calls.append(uri)
        return original(uri, sizes)


    with mock.patch("hosts.hypervisor.all_domains", side_effect=counting), \
         mock.patch("hosts.hypervisor.state") as per_domain:
        reconcile_host(host.pk)
    assert calls == [host.uri] and not per_domain.called
    assert Instance.objects.get(pk=instance.pk).status == Status.PAUSED
    gone.refresh_from_db()
    assert gone.status == Status.MISSING and "no longer exists" in gone.status_reason
    assert gone.state_changes.order_by("-id").first().cause == Cause.RECONCILE


def test_stuck_operation_turns_to_error_after_the_timeout(tenant, host):
    instance = make_instance(tenant=tenant, host=host, status=Status.RUNNING)
    Instance.objects.filter(pk=instance.pk).update(task_state=TaskState.REBOOTING,
                                                   task_started_at=timezone.now() - timedelta(hours=1))
    reconcile_host(host.pk)
    instance.refresh_from_db()
    assert instance.status == Status.ERROR and instance.task_state is None
    assert "did not finish in time" in instance.status_reason


def _connect(path, user=None, origin=ORIGIN):
    headers = [origin, HOST] if origin else [HOST]
    communicator = WebsocketCommunicator(application, path, headers=headers)
    if user is not None:
        communicator.scope["user"] = user
    return communicator


def test_status_socket_pushes_changes_to_the_tenant(member, tenant, host):
    @async_to_sync
    async def scenario():
        from channels.db import database_sync_to_async

        communicator = _connect("/ws/status/", member)
        # AuthMiddlewareStack would replace a scope user; go through it with a session instead
        connected, _ = await communicator.connect()
        assert connected
        await database_sync_to_async(running_instance)(member, tenant)
        seen = []
        while True:
            message = json.loads(await communicator.receive_from(timeout=5))
            seen.append(message["status"])
            if message["status"] == Status.RUNNING:
                break
        await communicator.disconnect()
        return seen

    assert scenario()[-1] == Status.RUNNING


@pytest.mark.parametrize("path", ["/ws/status/", "/ws/instances/1/console/", "/ws/instances/1/status/"])
def test_sockets_refuse_anonymous_users(path):
    @async_to_sync
    async def scenario():
        communicator = _connect(path)
        connected, code = await communicator.connect()
        return connected, code

    assert scenario() == (False, 4401)


def test_console_of_another_tenants_instance_is_closed_before_opening(member, host):
    other = make_instance(tenant=make_tenant(), host=host, status=Status.RUNNING)

    @async_to_sync
    async def scenario():
        with mock.patch("hosts.hypervisor.Console") as console:
            communicator = _connect(f"/ws/instances/{other.pk}/console/", member)
            result = await communicator.connect()
        return result, console.called

    (connected, code), opened = scenario()
    assert (connected, code, opened) == (False, 4404, False)


@pytest.mark.parametrize(("origin", "host"), [
    (b"http://evil.example", b"127.0.0.1:8000"),  # another site
    (b"http://127.0.0.1:9000", b"127.0.0.1:8000"),  # another port of the panel's host: another service
    (b"https://127.0.0.1:8000", b"127.0.0.1:8000"),  # another scheme
    (b"http://127.0.0.1", b"127.0.0.1:8000"),  # the default port is another port
    (b"http://evil.example:8000", b"evil.example:8000"),  # a host the panel does not serve, even as its own origin
    (b"null", b"127.0.0.1:8000"),
    (b"http://127.0.0.1:8000/path", b"127.0.0.1:8000"),
])
def test_sockets_from_another_origin_are_refused(member, origin, host):
    @async_to_sync
    async def scenario(headers):
        communicator = WebsocketCommunicator(application, "/ws/status/", headers=headers)
        communicator.scope["user"] = member
        connected, _ = await communicator.connect()
        if connected:
            await communicator.disconnect()
        return connected

    assert scenario([(b"origin", origin), (b"host", host)]) is False
    assert scenario([ORIGIN, HOST]) is True  # the panel's own page


def test_viewer_of_other_tenant_cannot_watch_an_instance(host):
    user = make_user(tenant=make_tenant())
    other = make_instance(tenant=make_tenant(), host=host)

    @async_to_sync
    async def scenario():
        communicator = _connect(f"/ws/instances/{other.pk}/status/", user)
        return await communicator.connect()

    assert scenario() == (False, 4404)


def test_stale_observation_does_not_overwrite_a_newer_change(member, tenant, host):
    # Given an instance whose create finished after a reconcile snapshot was taken
    before = timezone.now()
    instance = running_instance(member, tenant)
    # When the snapshot (which saw it stopped) is applied afterwards
    changed = services.reconcile_host_states(host=host, states={str(instance.uuid): Status.STOPPED},
                                             observed_at=before)
    # Then it is ignored as stale
    assert changed == 0 and Instance.objects.get(pk=instance.pk).status == Status.RUNNING


def test_two_events_recorded_in_a_burst_both_apply(member, tenant, host):
    # Given a running instance whose domain was destroyed and then undefined by hand, both observed before either
    # is recorded (the listener was busy)
    instance = make_instance(tenant=tenant, host=host, status=Status.RUNNING)
    stopped_at = timezone.now()
    undefined_at = stopped_at + timedelta(microseconds=10)
    # When the two events are recorded in order
    assert services.record_domain_event(host=host, domain_uuid=str(instance.uuid), status=Status.STOPPED,
                                        event="stopped", observed_at=stopped_at)
    assert services.record_domain_event(host=host, domain_uuid=str(instance.uuid), status=None, event="undefined",
                                        observed_at=undefined_at)
    # Then the instance is missing, and its history dates each change when it was observed
    instance.refresh_from_db()
    assert instance.status == Status.MISSING
    assert list(instance.state_changes.order_by("at").values_list("to_status", "at"))[-2:] == [
        (Status.STOPPED, stopped_at), (Status.MISSING, undefined_at)]


def test_listener_backs_off_from_an_unreachable_host_and_shows_why(db):
    from hosts.choices import HostState
    from hosts.listener import Listener
    from tests.factories import make_host

    host = make_host(uri="qemu+unix:///system?socket=/nonexistent/sock")
    listener = Listener(rescan_seconds=5)
    with mock.patch("hosts.hypervisor.watch_lifecycle", wraps=hypervisor.watch_lifecycle) as watch:
        listener._watch_hosts([host])
        listener._watch_hosts([host])  # within the back-off: not tried again
    assert watch.call_count == 1
    host.refresh_from_db()
    assert host.state == HostState.OFFLINE and "cannot connect" in host.last_error


def test_a_domain_removed_outside_the_panel_leaves_its_instance_missing_with_only_delete_offered(member, tenant,
                                                                                               host):
    # Given a running instance whose domain is undefined by hand (the host's event says so)
    instance = make_instance(tenant=tenant, host=host, status=Status.RUNNING)
    services.record_domain_event(host=host, domain_uuid=str(instance.uuid), status=None, event="undefined",
                                 observed_at=timezone.now())
    instance.refresh_from_db()
    # Then it is missing, says why, and only delete applies (through the API too)
    assert instance.status == Status.MISSING and "undefined on the host outside CloudPanel" in instance.status_reason
    assert allowed_operations(instance.status, instance.task_state) == ["delete"]
    api = token_client(member, tenant)
    assert api.post(f"/api/v1/instances/{instance.pk}/start/").status_code == 409
    # And a later reconcile that does not find it leaves it so; one that finds it again (defined back by hand) follows
    later = timezone.now() + timedelta(seconds=1)
    assert services.reconcile_host_states(host=host, states={}, observed_at=later) == 0
    assert services.reconcile_host_states(host=host, states={str(instance.uuid): Status.STOPPED},
                                          observed_at=later + timedelta(seconds=1)) == 1
    instance.refresh_from_db()
    assert (instance.status, instance.status_reason) == (Status.STOPPED, "")


def test_an_event_that_meets_a_database_outage_is_kept_and_recorded_once_it_answers(member, tenant, host):
    from django.db import DatabaseError, OperationalError

    from hosts.listener import Listener

    instance = running_instance(member, tenant)
    listener = Listener()
    first = hypervisor.LifecycleEvent(uri=host.uri, domain_uuid=str(instance.uuid), state=hypervisor.PowerState.PAUSED,
                                      event="suspended", observed_at=timezone.now())
    then = hypervisor.LifecycleEvent(uri=host.uri, domain_uuid=str(instance.uuid), state=hypervisor.PowerState.STOPPED,
                                     event="stopped", observed_at=timezone.now() + timedelta(seconds=1))
    listener.events.put(first)
    listener.events.put(then)
    # When the database drops the listener's connection as it records them
    dropped = OperationalError("server closed the connection unexpectedly")
    with mock.patch("hosts.listener.signals.domain_event.send", side_effect=dropped), pytest.raises(DatabaseError):
        listener._drain(timeout=0.1)
    # Then both are kept, in order, and recorded, in order, once it answers
    assert list(listener.unrecorded) == [first, then]
    listener._drain(timeout=0.1)
    assert not listener.unrecorded
    assert list(instance.state_changes.order_by("id").values_list("to_status", "cause"))[-2:] == [
        (Status.PAUSED, Cause.EVENT), (Status.STOPPED, Cause.EVENT)]


def test_the_listener_records_events_while_it_catches_up_on_a_host(member, tenant, host, listener):
    # Given a catch-up (a reconcile) that takes long
    instance = running_instance(member, tenant)
    assert wait_for(lambda: host.uri in listener.watched)
    original = hypervisor.all_domains

    def slow(uri, sizes=None):
        time.sleep(3)
        return original(uri, sizes)

    with mock.patch("hosts.hypervisor.all_domains", side_effect=slow):
        catching_up = listener._catch_up(host.pk)
        # When the guest stops meanwhile, then its event is recorded before the catch-up ends
        hypervisor.connection(host.uri).lookupByUUIDString(str(instance.uuid)).destroy()
        assert wait_for(lambda: Instance.objects.get(pk=instance.pk).status == Status.STOPPED, timeout=1.5)
        assert catching_up.is_alive()
        catching_up.join()


def test_an_event_that_cannot_be_recorded_is_dropped_with_a_log_and_the_next_one_recorded(member, tenant, host,
                                                                                        caplog):
    from hosts.listener import Listener

    instance = running_instance(member, tenant)
    listener = Listener()
    bad = hypervisor.LifecycleEvent(uri=host.uri, domain_uuid=str(instance.uuid), state=hypervisor.PowerState.PAUSED,
                                    event="suspended", observed_at=timezone.now())
    good = hypervisor.LifecycleEvent(uri=host.uri, domain_uuid=str(instance.uuid),
                                     state=hypervisor.PowerState.STOPPED, event="stopped",
                                     observed_at=timezone.now() + timedelta(seconds=1))
    listener.events.put(bad)
    listener.events.put(good)
    real, calls = services.record_domain_event, []

    def first_fails(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise ValueError("a bug")
        return real(**kwargs)

    with mock.patch("instances.services.record_domain_event", side_effect=first_fails):
        listener._drain(timeout=0.1)
    assert not listener.unrecorded and "could not be recorded" in caplog.text
    assert Instance.objects.get(pk=instance.pk).status == Status.STOPPED
