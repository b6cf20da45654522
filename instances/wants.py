"""What an instance wants of a host besides room, as placement takes it: its networks reached, its image's copy."""

from __future__ import annotations

from collections.abc import Iterable

from hosts import placement as placing
from images.choices import CopyStatus
from images.models import Image, ImageCopy
from instances.choices import BootSource
from instances.models import Instance
from networks.models import Network


def network_tags(networks: Iterable[Network]) -> list[tuple[str, str]]:
    """(name, host tag) of those networks that only hosts with that tag reach (bridged and VLAN ones)."""
    return sorted({(network.name, network.host_tag) for network in networks if network.host_tag})


def networks_of(instance: Instance) -> list[tuple[str, str]]:
    return network_tags(Network.objects.filter(ports__instance=instance).distinct())


def image_need(image: Image | None) -> placing.ImageNeed | None:
    """The copy of a library image a host must hold (or make room for) to make a disk from it."""
    if image is None:
        return None
    cached = ImageCopy.objects.filter(image=image, status=CopyStatus.AVAILABLE).values_list("host_id", flat=True)
    return placing.ImageNeed(image.name, max(1, -(-image.size // placing.GIB)), frozenset(cached))


def image_of(instance: Instance) -> placing.ImageNeed | None:
    """Its image's copy, where its disk is made from one (an overlay, or an ISO to install from)."""
    return image_need(instance.image) if instance.boot_source == BootSource.IMAGE else None
