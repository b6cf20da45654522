"""Group names and payloads for host changes, and their publication."""

from cloudpanel.events import publish
from hosts.models import Host


def host_payload(host: Host) -> dict:
    return {
        "type": "host",
        "id": host.pk,
        "name": host.name,
        "state": host.state,
        "state_display": host.get_state_display(),
        "enabled": host.enabled,
        "last_error": host.last_error,
    }


def publish_host(host_id: int) -> None:
    """Tell admin pages about a host's new state."""
    host = Host.objects.filter(pk=host_id).first()
    if host is not None:
        publish(["admin"], host_payload(host))
