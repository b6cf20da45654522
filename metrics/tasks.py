"""Thin tasks: sample each host where its operations run, and roll samples up."""

import logging

from celery import shared_task
from django.conf import settings

from cloudpanel.tasking import enqueue, task
from hosts import hypervisor
from hosts.choices import HostState
from hosts.models import Host
from metrics import alerts, history, sampling

log = logging.getLogger(__name__)


@shared_task
def sample_hosts() -> None:
    """The periodic round: each online host is sampled by its own worker. A round no worker took within one
    interval is dropped, not run late (the next one is due)."""
    for host_id in Host.objects.filter(enabled=True, state=HostState.ONLINE).values_list("pk", flat=True):
        enqueue(sample_host, host_id, host_id=host_id, expires=settings.CLOUDPANEL_METRICS_SECONDS)


@task
def sample_host(host_id: int) -> None:
    """Read a host's counters in bulk and store its and its instances' samples. A host that does not answer is
    the reconcile's business: its samples are simply missing."""
    host = Host.objects.filter(pk=host_id).first()
    if host is None:
        return
    try:
        read = hypervisor.counters(host.uri)
    except hypervisor.HypervisorError as exc:
        log.info("no samples of host %s: %s", host.name, exc)
        return
    sampling.record(host_id=host_id, read=read)


@shared_task
def roll_up() -> None:
    """Average raw samples into minutes and hours, and drop those past their retention."""
    history.roll_up()


@shared_task
def evaluate_alerts() -> None:
    """Check the alert rules against the newest samples; tell what starts and stops holding."""
    alerts.evaluate()
