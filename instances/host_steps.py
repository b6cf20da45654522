"""Steps of an operation that belong to another host than the operation's own (a migration's target side).

With per-host workers (CLOUDPANEL_HOST_QUEUES) a step goes to that host's worker, the one process that reaches it:
its request is a row (HostStep), queued to the host's queue, and the operation's worker waits for the row's outcome,
holding its own lease meanwhile. A step no worker takes within CLOUDPANEL_TASK_TIMEOUT_SECONDS, or whose worker stops
renewing its lease, fails the operation with the reason. Without per-host workers, the operation's worker, which
reaches every host, runs the step itself. A step is a function of the action, the host and JSON arguments,
returning JSON; it must be safe to run again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from cloudpanel import tasking
from cloudpanel.exceptions import DomainError
from hosts import hypervisor
from hosts.models import Host
from instances.models import HostStep, InstanceAction

log = logging.getLogger(__name__)

Step = Callable[..., dict]
STEPS: dict[str, Step] = {}
POLL_SECONDS = 0.25


def step(fn: Step) -> Step:
    """Register a step by its function's name."""
    STEPS[fn.__name__] = fn
    return fn


class HostSide:
    """Runs the action's steps that belong to one host: through that host's worker, or here (see the module)."""

    def __init__(self, action: InstanceAction | None, host: Host) -> None:
        self.action, self.host = action, host
        self.delegated = settings.CLOUDPANEL_HOST_QUEUES

    def __call__(self, name: str, /, *, patience: float | None = None, **args: object) -> dict:
        """The step's answer; its failure raised as HypervisorError. patience: seconds a worker may take to pick it
        up (default CLOUDPANEL_TASK_TIMEOUT_SECONDS)."""
        if not self.delegated:
            return STEPS[name](self.action, self.host, **args)
        row = HostStep.objects.create(action=self.action, host=self.host, name=name, args=args)
        try:
            tasking.enqueue(run_host_step, row.pk, host_id=self.host.pk)
            return self._outcome(row.pk, name, settings.CLOUDPANEL_TASK_TIMEOUT_SECONDS if patience is None
                                 else patience)
        finally:
            HostStep.objects.filter(pk=row.pk).delete()

    def _outcome(self, step_id: int, name: str, patience: float) -> dict:
        what = name.replace("_", " ")
        taken_by = time.monotonic() + patience
        while True:
            row = HostStep.objects.filter(pk=step_id).values("state", "result", "error", "beat_at").first()
            if row is None:
                raise hypervisor.HypervisorError(f"the step '{what}' was removed")
            if row["state"] == HostStep.State.DONE:
                return row["result"] or {}
            if row["state"] == HostStep.State.FAILED:
                raise hypervisor.HypervisorError(row["error"])
            if row["state"] == HostStep.State.QUEUED and time.monotonic() > taken_by:
                reason = (f"no worker of {self.host.name} took the step '{what}' within {patience:.0f} s: is its "
                          f"worker running (cloudpanel-host-worker@{self.host.pk})?")
                if _end(step_id, HostStep.State.QUEUED, error=reason):
                    raise hypervisor.HypervisorError(reason)
                continue
            lapsed = timezone.now() - timedelta(seconds=settings.CLOUDPANEL_LEASE_SECONDS)
            if row["state"] == HostStep.State.RUNNING and row["beat_at"] < lapsed:
                reason = f"the worker of {self.host.name} stopped answering during the step '{what}'"
                if _end(step_id, HostStep.State.RUNNING, error=reason):
                    raise hypervisor.HypervisorError(reason)
                continue
            time.sleep(POLL_SECONDS)


def _end(step_id: int, state: str, *, result: dict | None = None, error: str = "") -> bool:
    """The step's outcome, if it is still in that state (a waiter that gave up, or a runner, got there first)."""
    done = HostStep.State.FAILED if error else HostStep.State.DONE
    return bool(HostStep.objects.filter(pk=step_id, state=state).update(state=done, result=result, error=error))


@tasking.task
def run_host_step(step_id: int) -> None:
    """Run a queued step on this (its host's) worker, renewing its lease, and store its outcome."""
    if not HostStep.objects.filter(pk=step_id, state=HostStep.State.QUEUED).update(
            state=HostStep.State.RUNNING, beat_at=timezone.now()):
        return  # taken already, given up on, or gone
    row = HostStep.objects.select_related("action__instance__host", "action__target_host", "host").get(pk=step_id)

    def renew() -> bool:
        return bool(HostStep.objects.filter(pk=step_id, state=HostStep.State.RUNNING).update(beat_at=timezone.now()))

    running = HostStep.State.RUNNING
    try:
        with tasking.lease(renew, every=settings.CLOUDPANEL_LEASE_SECONDS / 3):
            result = STEPS[row.name](row.action, row.host, **row.args)
    except (hypervisor.HypervisorError, DomainError) as exc:
        tasking.persist(_end, step_id, running, error=str(exc) or type(exc).__name__)
        return
    except Exception as exc:  # the operation waiting on it must hear why, whatever it was
        log.exception("host step %s (%s) failed", step_id, row.name)
        tasking.persist(_end, step_id, running, error=f"an unexpected error stopped the step: {exc}")
        return
    tasking.persist(_end, step_id, running, result=result)


@step
def holds(action: InstanceAction | None, host: Host, *, pool: str, name: str) -> dict:
    """Whether the host's pool holds a volume of that name (a marker another host made: one storage)."""
    return {"held": hypervisor.holds_volume(host.uri, pool, name)}
