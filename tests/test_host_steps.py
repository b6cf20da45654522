"""Steps of an operation run by another host's worker (instances.host_steps): their answer, and what happens when
no worker takes one, its worker dies, or it fails."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from hosts import hypervisor
from instances import host_steps
from instances.choices import ActionStatus, Operation
from instances.models import HostStep, InstanceAction
from tests.factories import make_host, make_instance

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def action(tenant, host):
    return InstanceAction.objects.create(instance=make_instance(tenant=tenant, host=host), operation=Operation.MIGRATE,
                                         status=ActionStatus.RUNNING, attempts=1)


@pytest.fixture
def echo(monkeypatch):
    calls = []

    def step(action, host, **args):
        calls.append((action.pk, host.pk, args))
        if args.get("fail"):
            raise hypervisor.HypervisorError(args["fail"])
        return {"heard": args}

    monkeypatch.setitem(host_steps.STEPS, "echo", step)
    return calls


def test_a_step_goes_to_its_hosts_queue_and_its_answer_comes_back(settings, action, echo):
    target = make_host(name="far", uri="test:///far")
    settings.CLOUDPANEL_HOST_QUEUES = True
    queued = []
    enqueue = host_steps.tasking.enqueue
    with mock.patch.object(host_steps.tasking, "enqueue",
                           side_effect=lambda task, *args, **kw: (queued.append(kw), enqueue(task, *args, **kw))):
        answer = host_steps.HostSide(action, target)("echo", size=3, names=["a"])
    assert answer == {"heard": {"size": 3, "names": ["a"]}}
    assert queued == [{"host_id": target.pk, "lane": "steps"}]
    assert echo == [(action.pk, target.pk, {"size": 3, "names": ["a"]})]
    assert not HostStep.objects.exists()
    # Without per-host workers it is run here, without a row
    settings.CLOUDPANEL_HOST_QUEUES = False
    with mock.patch.object(HostStep.objects, "create", side_effect=AssertionError("queued")):
        assert host_steps.HostSide(action, target)("echo", size=4) == {"heard": {"size": 4}}


def test_a_step_that_fails_fails_with_its_reason(settings, action, echo):
    settings.CLOUDPANEL_HOST_QUEUES = True
    with pytest.raises(hypervisor.HypervisorError, match="^no room on the pool$"):
        host_steps.HostSide(action, make_host(uri="test:///other"))("echo", fail="no room on the pool")
    assert not HostStep.objects.exists()


def test_a_step_no_worker_takes_fails_with_the_reason_and_is_not_run_later(settings, action, echo):
    settings.CLOUDPANEL_HOST_QUEUES = True
    target = make_host(name="silent", uri="test:///silent")
    taken = []
    reason = (r"no worker of silent took the step 'echo' within 1 s: is its step worker running "
              rf"\(cloudpanel-host-steps@{target.pk}\)")
    nobody = mock.patch.object(host_steps.tasking, "enqueue", side_effect=lambda task, step, **kw: taken.append(step))
    with (nobody,
          pytest.raises(hypervisor.HypervisorError, match=reason)):
        host_steps.HostSide(action, target)("echo", patience=1)
    host_steps.run_host_step(taken[0])  # (the worker comes back later: the step is gone)
    assert echo == []


def test_a_step_whose_worker_stops_answering_fails_with_the_reason(settings, action, echo):
    settings.CLOUDPANEL_HOST_QUEUES = True

    def taken_then_lost(task, step_id, **kw):
        HostStep.objects.filter(pk=step_id).update(state=HostStep.State.RUNNING,
                                                   beat_at=timezone.now() - timedelta(minutes=5))

    reason = "the worker of lost stopped answering during the step 'echo'"
    with (mock.patch.object(host_steps.tasking, "enqueue", side_effect=taken_then_lost),
          pytest.raises(hypervisor.HypervisorError, match=reason)):
        host_steps.HostSide(action, make_host(name="lost", uri="test:///lost"))("echo")


@pytest.mark.parametrize("why", ["taken too late", "its attempt is over", "its operation ended"])
def test_a_step_is_not_run_when_taken_too_late_or_after_its_attempt(action, echo, why):
    row = HostStep.objects.create(action=action, host=action.instance.host, name="echo", attempt=1,
                                  take_by=timezone.now() + timedelta(minutes=5))
    if why == "taken too late":
        HostStep.objects.filter(pk=row.pk).update(take_by=timezone.now() - timedelta(seconds=1))
    elif why == "its attempt is over":
        InstanceAction.objects.filter(pk=action.pk).update(attempts=2)
    else:
        InstanceAction.objects.filter(pk=action.pk).update(status=ActionStatus.FAILED)
    host_steps.run_host_step(row.pk)
    assert echo == [] and HostStep.objects.get(pk=row.pk).state == HostStep.State.QUEUED
    # (one in time, of the attempt that runs, is)
    InstanceAction.objects.filter(pk=action.pk).update(status=ActionStatus.RUNNING, attempts=1)
    HostStep.objects.filter(pk=row.pk).update(take_by=timezone.now() + timedelta(minutes=5))
    host_steps.run_host_step(row.pk)
    assert len(echo) == 1 and HostStep.objects.get(pk=row.pk).state == HostStep.State.DONE
