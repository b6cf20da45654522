"""The worker's side of the library: fetch, verify, unpack, inspect and convert, in a scratch directory.

Bytes come from the panel's store (an upload) or a URL (an import); what is published
goes back to the store through a signed URL. Nothing here opens the store's files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from images import bootfiles, fetch, formats, rootfs, services, transfer
from images.choices import DECLARED_ONLY, DiskFormat, SourceFormat
from images.exceptions import UnsafeImage
from images.models import Image

log = logging.getLogger(__name__)

BOX_DISK, BOX_METADATA = "box.img", "metadata.json"


@dataclass(frozen=True)
class Result:
    """What inspection found, and the file to publish."""

    path: Path
    source_format: str
    disk_format: str
    virtual_size: int
    sha256: str
    changed: bool  # the bytes to publish differ from those received (unpacked or converted)


def scratch() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="cloudpanel-image-", dir=settings.CLOUDPANEL_SCRATCH_DIR or None)


def algorithms_for(image: Image) -> tuple[str, ...]:
    wanted = image.expected_checksum.partition(":")[0]
    return ("sha256",) if wanted in ("", "sha256") else ("sha256", wanted)


def verify_checksum(image: Image, digests: dict[str, str]) -> None:
    if not image.expected_checksum:
        return
    algorithm, _, expected = image.expected_checksum.partition(":")
    if digests[algorithm] != expected:
        raise UnsafeImage(f"the {algorithm} checksum does not match: expected {expected}, got {digests[algorithm]}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(transfer.BLOCK):
            digest.update(block)
    return digest.hexdigest()


class Progress:
    """Reports download progress to the page, at most twice a second."""

    def __init__(self, image_id: int) -> None:
        self.image_id, self.last = image_id, 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last >= 0.5 or done == total:
            self.last = now
            services.record_progress(image_id=self.image_id, received=done, expected=total)


def download_url(image: Image, destination: Path) -> dict[str, str]:
    """Download an import, each redirect hop checked, under the size cap; returns the digests."""
    response = fetch.open_url(image.source_url, allow=services.import_allowlist())
    try:
        digests, _ = transfer.hashing_copy(response, destination, algorithms=algorithms_for(image),
                                           limit=settings.CLOUDPANEL_IMAGE_MAX_DOWNLOAD_GIB << 30,
                                           progress=Progress(image.pk),
                                           seconds=settings.CLOUDPANEL_IMAGE_TASK_TIMEOUT / 2)
    finally:
        response.close()
    return digests


def is_box(image: Image) -> bool:
    named = (image.filename or image.source_url.split("?", 1)[0]).lower()
    return image.declared_format == SourceFormat.BOX or named.endswith(".box")


def unpack_box(box: Path, workdir: Path) -> tuple[Path, str]:
    """The disk of a Vagrant box for the libvirt provider, and its format from metadata.json.

    Members are read as streams by name; nothing is extracted by the archive's own paths.
    """
    try:
        with tarfile.open(box, "r:*") as archive:
            members = {m.name.removeprefix("./"): m for m in archive.getmembers() if m.isfile()}
            if BOX_METADATA not in members or BOX_DISK not in members:
                raise UnsafeImage(f"a Vagrant box needs {BOX_METADATA} and {BOX_DISK} at its top level")
            try:
                metadata = json.loads(archive.extractfile(members[BOX_METADATA]).read(65536))
            except ValueError:
                raise UnsafeImage(f"the box's {BOX_METADATA} is not valid JSON") from None
            if not isinstance(metadata, dict) or metadata.get("provider") != "libvirt":
                raise UnsafeImage("only Vagrant boxes for the libvirt provider can be imported")
            fmt = str(metadata.get("format", formats.QCOW2))
            if fmt not in (formats.QCOW2, formats.RAW):
                raise UnsafeImage(f"the box declares the format '{fmt[:20]}'; qcow2 or raw are accepted")
            cap = settings.CLOUDPANEL_IMAGE_MAX_DOWNLOAD_GIB << 30
            if members[BOX_DISK].size > cap:
                raise UnsafeImage(f"the box's disk is over the {cap} bytes allowed")
            disk = workdir / "box.img"
            with archive.extractfile(members[BOX_DISK]) as source, open(disk, "wb") as out:
                while block := source.read(transfer.BLOCK):
                    out.write(block)
                    if out.tell() > cap:  # the header lied
                        raise UnsafeImage(f"the box's disk is over the {cap} bytes allowed")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UnsafeImage(f"the file is not a readable Vagrant box: {exc}") from None
    return disk, fmt


_BOOT_PARTS = {SourceFormat.KERNEL: (DiskFormat.KERNEL, bootfiles.inspect_kernel),
               SourceFormat.INITRD: (DiskFormat.INITRD, bootfiles.inspect_initrd)}


def _inspect_declared(image: Image, received: Path, received_sha256: str) -> Result:
    """A kernel, an initrd or a container root filesystem: checked by their own rules, stored as received."""
    declared = SourceFormat(image.declared_format)
    if declared == SourceFormat.TAR:
        disk_format = DiskFormat.ROOTFS
        size = rootfs.inspect_archive(received, max_bytes=settings.CLOUDPANEL_ROOTFS_MAX_GIB << 30)
    else:
        disk_format, check = _BOOT_PARTS[declared]
        size = check(received)
    return Result(path=received, source_format=declared, disk_format=disk_format, virtual_size=size,
                  sha256=received_sha256, changed=False)


def inspect(image: Image, received: Path, received_sha256: str, workdir: Path) -> Result:
    """Inspect what was received (unpacking a box, converting VMDK, VDI and VHDX to qcow2)."""
    if image.declared_format in DECLARED_ONLY:
        return _inspect_declared(image, received, received_sha256)
    cap = settings.CLOUDPANEL_IMAGE_MAX_VIRTUAL_GIB << 30
    path, declared, source_format, changed = received, image.declared_format or None, None, False
    if is_box(image):
        path, declared = unpack_box(received, workdir)
        source_format, changed = SourceFormat.BOX, True
    found = formats.inspect_image(path, declared=declared, max_virtual_size=cap)
    info = formats.qemu_img_info(path, formats.RAW if found.format == formats.ISO else found.format)
    if info.get("backing-filename") or info.get("format-specific", {}).get("data", {}).get("data-file"):
        raise UnsafeImage("qemu-img reports a reference to another file")
    source_format = source_format or found.format
    if found.format in formats.CONVERTED:
        converted = workdir / "converted.qcow2"
        formats.qemu_img_convert(path, found.format, converted)
        again = formats.inspect_image(converted, declared=formats.QCOW2, max_virtual_size=cap)
        path, found, changed = converted, again, True
    return Result(path=path, source_format=source_format, disk_format=found.format,
                  virtual_size=found.virtual_size, sha256=sha256_of(path) if changed else received_sha256,
                  changed=changed)
