"""Steps of an operation that belong to another host than the operation's own (a migration's target side).

With per-host workers (CLOUDPANEL_HOST_QUEUES) a step goes to that host's step worker (queue host.<id>.steps, apart
from the host's operations, so that a step never waits behind them, nor for a slot an operation waiting on a step
holds): its request is a row (HostStep), and the operation's worker waits for the row's outcome, holding its own
lease meanwhile. A step no worker takes within its patience (CLOUDPANEL_TASK_TIMEOUT_SECONDS unless told), or whose
worker stops renewing its lease for CLOUDPANEL_LEASE_SECONDS (both by the database's clock), fails the operation
with the reason; one taken too late, or after its operation's attempt ended, is not run. Without per-host workers,
the operation's worker, which reaches every host, runs the step itself. A step is a function of the action, the
host and JSON arguments, returning JSON; it must be safe to run again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db.models import DurationField, F, Q, Value
from django.db.models.functions import Now

from cloudpanel import tasking
from cloudpanel.exceptions import DomainError
from hosts import hypervisor
from hosts.models import Host
from instances.choices import ActionStatus
from instances.models import HostStep, InstanceAction

log = logging.getLogger(__name__)

Step = Callable[..., dict]
STEPS: dict[str, Step] = {}
POLL_SECONDS = 0.25  # the first wait for a step's outcome, growing to MAX_POLL_SECONDS
MAX_POLL_SECONDS = 2.0
LANE = "steps"  # the host's queue for steps: host.<id>.steps


def step(fn: Step) -> Step:
    """Register a step by its function's name."""
    STEPS[fn.__name__] = fn
    return fn


def _ago(seconds: float) -> Now:
    return Now() - Value(timedelta(seconds=seconds), output_field=DurationField())


class HostSide:
    """Runs the action's steps that belong to one host: through that host's step worker, or here (see the module)."""

    def __init__(self, action: InstanceAction | None, host: Host) -> None:
        self.action, self.host = action, host
        self.delegated = settings.CLOUDPANEL_HOST_QUEUES

    def __call__(self, name: str, /, *, patience: float | None = None, **args: object) -> dict:
        """The step's answer; its failure raised as HypervisorError. patience: seconds a worker may take to pick it
        up (default CLOUDPANEL_TASK_TIMEOUT_SECONDS)."""
        if not self.delegated:
            return STEPS[name](self.action, self.host, **args)
        patience = settings.CLOUDPANEL_TASK_TIMEOUT_SECONDS if patience is None else patience
        row = tasking.persist(HostStep.objects.create, action=self.action, host=self.host, name=name, args=args,
                              attempt=self.action.attempts if self.action is not None else 0,
                              take_by=Now() + Value(timedelta(seconds=patience), output_field=DurationField()))
        try:
            tasking.enqueue(run_host_step, row.pk, host_id=self.host.pk, lane=LANE)
            return self._outcome(row.pk, name, patience)
        finally:
            try:
                tasking.persist(HostStep.objects.filter(pk=row.pk).delete)
            except DatabaseError as exc:  # (kept: it is not run later, its attempt being over)
                log.warning("host step %s stays recorded: %s", row.pk, exc)

    def _outcome(self, step_id: int, name: str, patience: float) -> dict:
        what, pause = name.replace("_", " "), POLL_SECONDS
        steps = HostStep.objects.filter(pk=step_id)
        while True:
            row = tasking.persist(steps.values("state", "result", "error").first)
            if row is None:
                raise hypervisor.HypervisorError(f"the step '{what}' was removed")
            if row["state"] == HostStep.State.DONE:
                return row["result"] or {}
            if row["state"] == HostStep.State.FAILED:
                raise hypervisor.HypervisorError(row["error"])
            if row["state"] == HostStep.State.QUEUED:
                reason = (f"no worker of {self.host.name} took the step '{what}' within {patience:.0f} s: is its "
                          f"step worker running (cloudpanel-host-steps@{self.host.pk})?")
                late = steps.filter(state=HostStep.State.QUEUED, take_by__lte=Now())
            else:
                reason = f"the worker of {self.host.name} stopped answering during the step '{what}'"
                late = steps.filter(state=HostStep.State.RUNNING,
                                    beat_at__lt=_ago(settings.CLOUDPANEL_LEASE_SECONDS))
            if tasking.persist(late.update, state=HostStep.State.FAILED, error=reason):
                raise hypervisor.HypervisorError(reason)
            time.sleep(pause)
            pause = min(pause * 1.5, MAX_POLL_SECONDS)  # (a long step, a disk's copy, is asked about less often)


def _end(step_id: int, *, result: dict | None = None, error: str = "") -> bool:
    """The step's outcome, if it still runs (its waiter may have given up on it)."""
    done = HostStep.State.FAILED if error else HostStep.State.DONE
    return bool(HostStep.objects.filter(pk=step_id, state=HostStep.State.RUNNING)
                .update(state=done, result=result, error=error))


@tasking.task
def run_host_step(step_id: int) -> None:
    """Run a queued step on this (its host's) worker, renewing its lease, and store its outcome. A step taken after
    its time, or whose operation's attempt is over, is not run."""
    current = Q(action__isnull=True) | Q(action__status=ActionStatus.RUNNING, action__attempts=F("attempt"))
    if not HostStep.objects.filter(current, pk=step_id, state=HostStep.State.QUEUED, take_by__gt=Now()).update(
            state=HostStep.State.RUNNING, beat_at=Now()):
        return  # taken already, too late, given up on, or gone
    row = HostStep.objects.select_related("action__instance__host", "action__target_host", "host").get(pk=step_id)

    def renew() -> bool:
        return bool(HostStep.objects.filter(pk=step_id, state=HostStep.State.RUNNING).update(beat_at=Now()))

    try:
        with tasking.lease(renew, every=settings.CLOUDPANEL_LEASE_SECONDS / 3):
            result = STEPS[row.name](row.action, row.host, **row.args)
    except (hypervisor.HypervisorError, DomainError) as exc:
        tasking.persist(_end, step_id, error=str(exc) or type(exc).__name__)
        return
    except Exception as exc:  # the operation waiting on it must hear why, whatever it was
        log.exception("host step %s (%s) failed", step_id, row.name)
        tasking.persist(_end, step_id, error=f"an unexpected error stopped the step: {exc}")
        return
    tasking.persist(_end, step_id, result=result)


@step
def holds(action: InstanceAction | None, host: Host, *, pool: str, name: str) -> dict:
    """Whether the host's pool holds a volume of that name (a marker another host made: one storage)."""
    return {"held": hypervisor.holds_volume(host.uri, pool, name)}
