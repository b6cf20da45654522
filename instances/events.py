"""Group names and payloads for instance changes, and their publication."""

from django.db import transaction

from cloudpanel.events import instance_group, publish, tenant_group
from instances.lifecycle import allowed_operations
from instances.models import Instance, Volume


def instance_payload(instance: Instance) -> dict:
    return {
        "type": "instance",
        "id": instance.pk,
        "name": instance.name,
        "status": instance.status,
        "status_display": instance.get_status_display(),
        "task_state": instance.task_state or "",
        "task_state_display": instance.get_task_state_display() if instance.task_state else "",
        "status_reason": instance.status_reason,
        "operations": allowed_operations(instance.status, instance.task_state),
    }


def publish_on_commit(instance: Instance) -> None:
    """Send the instance, as saved in this transaction, to its page, its tenant's and the admins' once it commits."""
    groups = [instance_group(instance.pk), tenant_group(instance.tenant_id), "admin"]
    payload = instance_payload(instance)
    transaction.on_commit(lambda: publish(groups, payload))


def publish_volume_on_commit(volume: Volume) -> None:
    """Tell its tenant's pages, the admins' and its instance's that the volume changed, once this commits."""
    groups = [tenant_group(volume.tenant_id), "admin"]
    if volume.instance_id:
        groups.append(instance_group(volume.instance_id))
    payload = {"type": "volume", "id": volume.pk}
    transaction.on_commit(lambda: publish(groups, payload))
