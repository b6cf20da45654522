"""Thin tasks over host services and the hypervisor layer."""

from celery import shared_task
from django.utils import timezone

from cloudpanel.tasking import enqueue, task
from hosts import hypervisor, services, signals
from hosts.models import Host


@task
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


@task
def reconcile_host(host_id: int) -> None:
    """Read every domain on a host, keep what it holds (HostDomain), and pass their states on to the apps that
    compare them with theirs (signals.host_observed)."""
    host = Host.objects.filter(pk=host_id).first()
    if host is None:
        return
    observed_at = timezone.now()
    states: dict[str, str] | None = None
    try:
        domains = hypervisor.all_domains(host.uri, services.known_sizes(host_id))
    except hypervisor.HypervisorError as exc:
        services.record_failure(host_id=host_id, error=exc)
    else:
        services.record_seen(host_id=host_id)
        services.record_domains(host_id=host_id, domains=domains, observed_at=observed_at)
        states = {domain.uuid: domain.state for domain in domains}
    signals.host_observed.send(sender=Host, host=host, states=states, observed_at=observed_at)


@shared_task
def check_hosts() -> None:
    """The periodic check, on the default queue (a host's own worker may be what is silent): hosts not heard from
    for too long go offline, and the apps above mark what runs there as unknown (signals.host_lost)."""
    for host in services.lost_hosts():
        signals.host_lost.send(sender=Host, host=host, last_seen_at=host.last_seen_at)


@shared_task
def reconcile_hosts() -> None:
    """The periodic sweep: reconcile every host, each on its own worker's queue. Not retried: the next sweep is."""
    for host_id in Host.objects.values_list("pk", flat=True):
        enqueue(reconcile_host, host_id, host_id=host_id)
