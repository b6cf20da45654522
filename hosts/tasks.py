"""Thin tasks over host services and the hypervisor layer."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from hosts import hypervisor, services
from hosts.models import Host


def queue_for(host_id: int) -> str | None:
    """The queue of the worker that drives a host: its own with per-host workers, else the default (None)."""
    return f"host.{host_id}" if settings.CLOUDPANEL_HOST_QUEUES else None


@shared_task
def probe_host(host_id: int) -> None:
    """Probe a host and record what it is, or why it can't be reached."""
    host = Host.objects.filter(pk=host_id).first()
    if host is None:
        return
    try:
        info = hypervisor.probe(host.uri)
    except hypervisor.HypervisorError as exc:
        services.record_failure(host_id=host_id, error=exc)
        return
    services.record_probe(host_id=host_id, info=info)


@shared_task
def reconcile_host(host_id: int) -> None:
    """Compare every instance on a host with libvirt, in one listAllDomains call."""
    from instances import services as instance_services

    host = Host.objects.filter(pk=host_id).first()
    if host is None:
        return
    observed_at = timezone.now()
    try:
        states = hypervisor.all_states(host.uri)
    except hypervisor.HypervisorError as exc:
        services.record_failure(host_id=host_id, error=exc)
    else:
        services.record_seen(host_id=host_id)
        instance_services.reconcile_host_states(host=host, states=states, observed_at=observed_at)
    instance_services.expire_stuck_tasks(
        host=host, older_than=timezone.now() - timedelta(seconds=settings.CLOUDPANEL_TASK_TIMEOUT_SECONDS)
    )
