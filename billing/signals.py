"""Public addresses held and released, as the address meter needs them (networks knows nothing of billing)."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from billing.models import AddressHold
from networks.models import Allocation


@receiver(post_save, sender=Allocation)
def address_held(sender, instance: Allocation, created: bool, **kwargs) -> None:
    """An IPv4 address on a shared network, given to a tenant's NIC, starts counting."""
    if not created or instance.subnet.version != 4 or instance.port.instance_id is None:
        return
    network = instance.subnet.network
    if network.tenant_id is None:
        AddressHold.objects.create(tenant_id=instance.port.instance.tenant_id, allocation_id=instance.pk,
                                   address=instance.address, network_name=network.name, started_at=timezone.now())


@receiver(post_delete, sender=Allocation)
def address_released(sender, instance: Allocation, **kwargs) -> None:
    AddressHold.objects.filter(allocation_id=instance.pk, ended_at__isnull=True).update(ended_at=timezone.now())
