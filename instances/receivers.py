"""What instances take from hosts (hosts.signals): lifecycle events, and each host's domains read at once."""

from datetime import datetime, timedelta

from django.conf import settings
from django.dispatch import receiver
from django.utils import timezone

from hosts.models import Host
from hosts.signals import domain_event, host_lost, host_observed
from instances import services, tasks


@receiver(domain_event)
def record_event(sender: type, *, host: Host, domain_uuid: str, status: str | None, event: str,
                 observed_at: datetime, **kwargs: object) -> None:
    services.record_domain_event(host=host, domain_uuid=domain_uuid, status=status, event=event,
                                 observed_at=observed_at)


@receiver(host_lost)
def host_gone_silent(sender: type, *, host: Host, last_seen_at: datetime | None, **kwargs: object) -> None:
    """Operations on it past their timeout end (its worker may be what is silent), then its instances are unknown."""
    services.expire_stuck_tasks(
        host=host, older_than=timezone.now() - timedelta(seconds=settings.CLOUDPANEL_TASK_TIMEOUT_SECONDS))
    services.mark_unknown(host=host, last_seen_at=last_seen_at)


@receiver(host_observed)
def reconcile(sender: type, *, host: Host, states: dict[str, str] | None, observed_at: datetime,
              **kwargs: object) -> None:
    """Instances follow what the host holds; operations in flight past the timeout end in error either way."""
    if states is not None:
        services.reconcile_host_states(host=host, states=states, observed_at=observed_at)
        tasks.remove_forgotten(host)
        tasks.remove_leftovers(host)
    services.expire_stuck_tasks(
        host=host, older_than=timezone.now() - timedelta(seconds=settings.CLOUDPANEL_TASK_TIMEOUT_SECONDS))
