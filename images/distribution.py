"""Images on hosts: each host caches a verified copy in its storage pool, sent through libvirt's upload stream.

Runs in the worker that drives the host. The bytes come from the panel over a signed URL
and go to libvirt as they arrive, so neither the worker's nor the panel's disk needs to be
the host's. A copy is checked against the image's sha256 on the way in and read back
through libvirt once written.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from hosts import hypervisor
from hosts.models import Host
from images import events, transfer
from images.choices import CopyStatus, ImageStatus
from images.exceptions import ImageNotReady, UnsafeImage
from images.models import Image, ImageCopy

HEARTBEAT_SECONDS = 30


class _Heartbeat:
    """Tells the copy's row (and the caller, say an instance's create) that the work goes on."""

    def __init__(self, copy: ImageCopy, also: Callable[[], None] | None) -> None:
        self.copy, self.also, self.last = copy, also, time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.last < HEARTBEAT_SECONDS:
            return
        self.last = time.monotonic()
        ImageCopy.objects.filter(pk=self.copy.pk, status=CopyStatus.COPYING).update(started_at=timezone.now())
        if self.also is not None:
            self.also()


def _copy_and_verify(image: Image, host: Host, copy: ImageCopy, beat: _Heartbeat) -> None:
    """Send the image's bytes to the host and check them, or leave nothing behind."""
    digest = hashlib.sha256()

    with transfer.reading(transfer.url_for(image.uuid, transfer.READ)) as response:
        def read(size: int) -> bytes:
            block = response.read(size)
            digest.update(block)
            beat()
            return block

        path = hypervisor.upload_volume(host.uri, copy.pool, copy.volume, size=image.size, read=read)
    try:
        if digest.hexdigest() != image.sha256:
            raise UnsafeImage("the bytes sent to the host do not match the image's sha256")
        verified_at = None
        if hypervisor.stores_data(host.uri):
            written, size = hypervisor.volume_sha256(host.uri, copy.pool, copy.volume)
            if (written, size) != (image.sha256, image.size):
                raise UnsafeImage("the copy read back from the host does not match the image's sha256")
            verified_at = timezone.now()
    except Exception:
        hypervisor.delete_volume(host.uri, copy.pool, copy.volume)
        raise
    ImageCopy.objects.filter(pk=copy.pk).update(status=CopyStatus.AVAILABLE, path=path, error="",
                                                verified_at=verified_at)


def _wait_for_other_worker(copy: ImageCopy, beat: Callable[[], None] | None) -> ImageCopy:
    deadline = time.monotonic() + settings.CLOUDPANEL_IMAGE_COPY_TIMEOUT
    last = time.monotonic()
    while time.monotonic() < deadline:
        copy.refresh_from_db()
        if copy.status != CopyStatus.COPYING:
            break
        if beat is not None and time.monotonic() - last >= HEARTBEAT_SECONDS:
            beat()
            last = time.monotonic()
        time.sleep(0.5)
    if copy.status != CopyStatus.AVAILABLE:
        raise hypervisor.HypervisorError(f"copying the image to {copy.host.name} failed: "
                                         f"{copy.error or 'it took too long'}")
    return copy


def ensure_copy(*, image: Image, host: Host, heartbeat: Callable[[], None] | None = None) -> ImageCopy:
    """The image's verified copy on the host: copied now if missing, or waited for if another worker copies it.

    heartbeat is called every half minute or so while that takes, so that a caller's own
    timeout (an instance's create) knows it is still at work.
    """
    if image.status != ImageStatus.AVAILABLE:
        raise ImageNotReady(f"the image {image.name} is {image.get_status_display().lower()}")
    now = timezone.now()
    copy, created = ImageCopy.objects.get_or_create(
        image=image, host=host,
        defaults={"pool": host.storage_pool, "volume": ImageCopy.volume_name(image), "started_at": now},
    )
    if not created:
        if copy.status == CopyStatus.AVAILABLE and hypervisor.volume_path(host.uri, copy.pool, copy.volume):
            return copy
        stale = now - timedelta(seconds=settings.CLOUDPANEL_IMAGE_COPY_TIMEOUT)
        claimed = ImageCopy.objects.filter(pk=copy.pk).filter(
            ~Q(status=CopyStatus.COPYING) | Q(started_at__lt=stale)
        ).update(status=CopyStatus.COPYING, started_at=now, error="")
        if not claimed:
            return _wait_for_other_worker(copy, heartbeat)
    events.publish(image)
    try:
        _copy_and_verify(image, host, copy, _Heartbeat(copy, heartbeat))
    except Exception as exc:
        ImageCopy.objects.filter(pk=copy.pk).update(status=CopyStatus.ERROR, error=str(exc)[:2000])
        events.publish(image)
        raise
    events.publish(image)
    copy.refresh_from_db()
    return copy
