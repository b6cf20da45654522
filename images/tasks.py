"""Thin tasks of the image library: each takes an image id and tolerates its deletion."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from celery import shared_task
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from cloudpanel.exceptions import DomainError
from cloudpanel.tasking import enqueue
from hosts import hypervisor
from hosts.models import Host
from images import distribution, processing, services, transfer
from images.choices import ImageStatus
from images.exceptions import TransferFailed, UploadIncomplete
from images.models import Image

log = logging.getLogger(__name__)
RESTARTED = "started over: its worker went away"


def _finish(image: Image, received: Path, digests: dict[str, str], workdir: Path, *, stored: bool) -> None:
    """Verify and inspect what arrived, store it if it changed (or was never stored), then publish it."""
    processing.verify_checksum(image, digests)
    result = processing.inspect(image, received, digests["sha256"], workdir)
    size = result.path.stat().st_size
    if result.changed or not stored:
        services.check_stored_size(image_id=image.pk, size=size)
        transfer.upload(transfer.url_for(image.uuid, transfer.WRITE), result.path)
    services.publish_image(image_id=image.pk, source_format=result.source_format, disk_format=result.disk_format,
                           size=size, virtual_size=result.virtual_size, sha256=result.sha256)


def _fail(image: Image, exc: Exception) -> None:
    services.fail_image(image_id=image.pk, reason=str(exc))
    try:
        transfer.discard(transfer.url_for(image.uuid, transfer.DISCARD))
    except DomainError:
        log.warning("could not discard the bytes of image %s; they go when it is deleted", image.pk)


def _attempt(task, image: Image, work: Callable[[Path], None]) -> None:
    """Run the work in a scratch directory. The panel being out of reach is retried with back-off; a refusal,
    or anything unforeseen, fails the image with the reason (never leaving it in transit)."""
    with processing.scratch() as scratch:
        try:
            work(Path(scratch))
        except TransferFailed as exc:
            if task.request.retries < task.max_retries:
                raise task.retry(countdown=min(600, 15 * 2 ** task.request.retries)) from None
            _fail(image, exc)
        except DomainError as exc:
            _fail(image, exc)
        except Exception as exc:
            log.exception("image %s: unexpected failure", image.pk)
            _fail(image, RuntimeError(f"an unexpected error stopped the work: {exc}"))


@shared_task(bind=True, max_retries=5)
def inspect_image(self, image_id: int) -> None:
    """An upload is complete: fetch it from the store, inspect it, publish it or refuse it."""
    image = Image.objects.filter(pk=image_id, status=ImageStatus.INSPECTING).first()
    if image is None:
        return

    def work(workdir: Path) -> None:
        received = workdir / "received"
        url = transfer.url_for(image.uuid, transfer.READ)
        digests = transfer.download(url, received, algorithms=processing.algorithms_for(image))
        _finish(image, received, digests, workdir, stored=True)

    _attempt(self, image, work)


@shared_task(bind=True, max_retries=5)
def import_image(self, image_id: int) -> None:
    """Download an image by URL (every hop checked), verify and inspect it, and store it."""
    image = Image.objects.filter(pk=image_id, status=ImageStatus.IMPORTING).first()
    if image is None:
        return

    def work(workdir: Path) -> None:
        received = workdir / "received"
        digests = processing.download_url(image, received)
        _finish(image, received, digests, workdir, stored=False)

    _attempt(self, image, work)


class _VolumeReader:
    """A volume's read(n) where hashing_copy expects a response."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self.read = read

    def getheader(self, _name: str) -> None:
        return None


@shared_task(bind=True, max_retries=5)
def capture_image(self, image_id: int) -> None:
    """An instance's disk saved as an image: read its copy from the host, inspect and store it like an upload, then
    remove the copy."""
    image = Image.objects.filter(pk=image_id, status=ImageStatus.IMPORTING).exclude(capture_volume="").first()
    if image is None:
        return
    host = image.capture_host

    def work(workdir: Path) -> None:
        if host is None:
            raise UploadIncomplete("the host holding the disk's copy was removed")
        received = workdir / "received"
        with hypervisor.reading_volume(host.uri, host.storage_pool, image.capture_volume) as read:
            digests, _size = transfer.hashing_copy(_VolumeReader(read), received,
                                                   algorithms=processing.algorithms_for(image),
                                                   limit=settings.CLOUDPANEL_IMAGE_MAX_DOWNLOAD_GIB << 30)
        _finish(image, received, digests, workdir, stored=False)

    _attempt(self, image, work)
    if host is not None:  # published or failed: the copy has served
        try:
            hypervisor.delete_volume(host.uri, host.storage_pool, image.capture_volume)
        except hypervisor.HypervisorError as exc:
            log.warning("could not remove %s from host %s: %s", image.capture_volume, host.pk, exc)


@shared_task
def expire_stale_images() -> None:
    """Uploads left idle, and imports or inspections whose worker went away, end in error and free their bytes."""
    now = timezone.now()
    idle = now - timedelta(hours=settings.CLOUDPANEL_UPLOAD_IDLE_HOURS)
    stuck = now - timedelta(seconds=settings.CLOUDPANEL_IMAGE_TASK_TIMEOUT)
    stale = Image.objects.filter(Q(status=ImageStatus.UPLOADING, updated_at__lt=idle)
                                 | Q(status__in=(ImageStatus.IMPORTING, ImageStatus.INSPECTING), updated_at__lt=stuck))
    for image in stale:
        if image.status == ImageStatus.UPLOADING:
            reason = f"the upload stopped at byte {image.received_bytes} and was abandoned after " \
                     f"{settings.CLOUDPANEL_UPLOAD_IDLE_HOURS} h without a chunk"
        elif image.status_reason != RESTARTED:
            # Its worker went away: the bytes (or the URL) are still there, so the work starts over, once.
            if Image.objects.filter(pk=image.pk, status=image.status).update(status_reason=RESTARTED,
                                                                              updated_at=now):
                task = inspect_image if image.status == ImageStatus.INSPECTING else \
                    capture_image if image.capture_volume else import_image
                enqueue(task, image.pk)
            continue
        else:
            reason = f"{image.get_status_display().lower()} did not finish in time, twice (is a worker running?)"
        _fail(image, UploadIncomplete(reason))


@shared_task
def copy_image(image_id: int, host_id: int) -> None:
    """Cache the image on the host ahead of use (runs on the host's worker)."""
    image = Image.objects.filter(pk=image_id, status=ImageStatus.AVAILABLE).first()
    host = Host.objects.filter(pk=host_id).first()
    if image is None or host is None:
        return
    try:
        distribution.ensure_copy(image=image, host=host)
    except (DomainError, hypervisor.HypervisorError) as exc:
        log.warning("copying image %s to host %s failed: %s", image_id, host_id, exc)  # shown on the image's page


@shared_task(autoretry_for=(hypervisor.HypervisorUnavailable,), retry_backoff=30, max_retries=20)
def delete_copy(host_id: int, pool: str, volume: str) -> None:
    """Remove a deleted image's cached copy from a host (retried while the host is unreachable)."""
    host = Host.objects.filter(pk=host_id).first()
    if host is not None:
        hypervisor.delete_volume(host.uri, pool, volume)
