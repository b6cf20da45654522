"""Thin tasks over networks.firewall."""

from celery import shared_task

from networks import firewall


@shared_task
def sync_filters(port_ids: list[int]) -> None:
    """Redefine the network filters of these NICs (all on one host) from their groups as they are now."""
    for port_id in port_ids:
        firewall.sync(port_id)
