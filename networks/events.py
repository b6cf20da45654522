"""NIC changes, published to the pages showing their instance (the groups are cloudpanel.events')."""

from django.db import transaction

from cloudpanel.events import instance_group, publish, tenant_group
from networks.models import Port


def publish_port_on_commit(port: Port) -> None:
    """Tell the pages of the NIC's instance, its tenant's and the admins' that the NIC changed (its filter)."""
    instance = port.instance
    payload = {"type": "port", "id": port.pk, "instance": instance.pk, "filter_status": port.filter_status,
               "filter_error": port.filter_error}
    groups = [instance_group(instance.pk), tenant_group(instance.tenant_id), "admin"]
    transaction.on_commit(lambda: publish(groups, payload))
