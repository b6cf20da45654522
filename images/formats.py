"""Disk image inspection before qemu-img ever opens the file: OpenStack's format inspector, under our policy.

Images come from tenants and the internet, and qemu-img follows what a header says: a
qcow2 backing file or external data file, or a VMDK extent, can make it read any file on
the host. oslo.utils' format_inspector (maintained by OpenStack since those CVEs) reads
the file's own bytes with every format's parser at once and runs each format's safety
checks. CloudPanel's policy on its answers refuses:

- a file that is two formats at once (a bootable ISO's partition table aside), since a
  tool could read it either way;
- any failed safety check: a backing file, a data file, unknown qcow2 features, a VMDK
  that is not a single file or whose extents lie elsewhere;
- what the inspector lets through: a qcow2 image marked corrupt or naming a data file in
  a header extension, and a "raw" file that starts with another format's magic;
- formats CloudPanel does not take (VHD, QED, LUKS).

Only then does qemu-img run, always with an explicit `-f` and under address-space and CPU limits.
"""

from __future__ import annotations

import json
import resource
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from oslo_utils.imageutils import format_inspector

from images.exceptions import UnsafeImage

QCOW2, RAW, ISO, VMDK, VDI, VHDX = "qcow2", "raw", "iso", "vmdk", "vdi", "vhdx"
ACCEPTED = (QCOW2, RAW, ISO, VMDK, VDI, VHDX)
# Formats accepted only by converting them to qcow2 after inspection.
CONVERTED = (VMDK, VDI, VHDX)
_PARTITION_TABLE = "gpt"  # a raw disk with a partition table, or the one a bootable ISO carries
_ORDER = list(format_inspector.ALL_FORMATS)
# Magic numbers at offset 0: a file that starts with one is that format or refused, never taken as raw.
_MAGICS = {b"QFI\xfb": QCOW2, b"KDMV": VMDK, b"# Disk DescriptorFile": VMDK, b"vhdxfile": VHDX, b"QED\0": "qed",
           b"LUKS\xba\xbe": "luks", b"conectix": "vhd"}
_QCOW2_CORRUPT = 1 << 1
_QCOW2_EXT_DATA_FILE = 0x44415441  # "DATA": the header extension naming an external data file
_READ = 1 << 16


@dataclass(frozen=True)
class Inspection:
    """What the file is: its format and the size of the disk it holds."""

    format: str
    virtual_size: int


def _inspectors(path: Path) -> list[format_inspector.FileInspector]:
    """Every format the file's bytes match (the raw one alone when none does), read once."""
    wrapper = format_inspector.InspectWrapper(path.open("rb"))
    try:
        while wrapper.formats is None and wrapper.read(_READ):
            pass
    finally:
        wrapper.close()
    return sorted(wrapper.formats or [], key=lambda inspector: _ORDER.index(inspector.NAME))


def image_formats(path: Path) -> list[str]:
    """Every image format the file's bytes match but raw (nor a partition table, which a kernel's boot
    sector looks like too)."""
    return [inspector.NAME for inspector in _inspectors(path) if inspector.NAME not in (RAW, _PARTITION_TABLE)]


def _detect(path: Path) -> format_inspector.FileInspector:
    found = _inspectors(path)
    names = [inspector.NAME for inspector in found]
    if sorted(names) == sorted([ISO, _PARTITION_TABLE]):
        return found[names.index(ISO)]  # a bootable (hybrid) ISO
    if len(found) != 1:
        raise UnsafeImage(f"the file is at once {' and '.join(names)}: refused, as a tool could read it either way")
    return found[0]


def _name(inspector: format_inspector.FileInspector) -> str:
    return RAW if inspector.NAME == _PARTITION_TABLE else inspector.NAME


def _read(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def _classify(path: Path) -> tuple[str, format_inspector.FileInspector]:
    inspector = _detect(path)
    name = _name(inspector)
    if name == RAW:
        head = _read(path, 0, 32)
        for magic, claimed in _MAGICS.items():
            if head.startswith(magic):
                raise UnsafeImage(f"the file starts like a {claimed} image but is not a valid one")
    return name, inspector


def detect(path: Path) -> str:
    """The one format the file's bytes say it is (raw when none); two at once, or a format's magic on a file
    that does not parse as it, are refused."""
    return _classify(path)[0]


def _safety_check(inspector: format_inspector.FileInspector) -> None:
    """The inspector's safety checks, each failure given as a reason."""
    fmt = _name(inspector)
    try:
        inspector.safety_check()
    except format_inspector.SafetyCheckFailed as exc:
        reasons = {
            "backing_file": f"the {fmt} image has a backing file: upload a standalone image (qemu-img convert)",
            "data_file": f"the {fmt} image keeps its data in an external file",
            "unknown_features": f"the {fmt} image uses unknown incompatible features",
            "descriptor": "the VMDK points at other files or is not a single file: only single-file VMDKs "
                          "(monolithicSparse, streamOptimized) are accepted",
        }
        name, failure = next(iter(exc.failures.items()))
        raise UnsafeImage(f"{reasons.get(name, f'the {fmt} image fails the {name} check')} ({failure})") from None
    except format_inspector.ImageFormatError as exc:
        raise UnsafeImage(f"the {fmt} image cannot be checked: {exc}") from None


def _check_qcow2(path: Path) -> None:
    """What the inspector lets through: the corrupt flag, and a data file named in a header extension even
    when its feature bit is clear."""
    header = _read(path, 0, 104)
    if len(header) < 24 or struct.unpack_from(">I", header, 4)[0] != 3:
        return  # version 2 has neither; the inspector has checked the rest of the header
    if len(header) < 104:
        raise UnsafeImage("the qcow2 header is truncated")
    cluster_bits = min(struct.unpack_from(">I", header, 20)[0], 21)
    if struct.unpack_from(">Q", header, 72)[0] & _QCOW2_CORRUPT:
        raise UnsafeImage("the qcow2 image is marked corrupt")
    offset, end = struct.unpack_from(">I", header, 100)[0], 1 << cluster_bits
    while offset + 8 <= end:  # the extensions: type, length, data padded to 8 bytes, within the first cluster
        kind, length = struct.unpack(">II", _read(path, offset, 8).ljust(8, b"\0"))
        if kind == 0:
            return
        if kind == _QCOW2_EXT_DATA_FILE:
            raise UnsafeImage("the qcow2 image names an external data file")
        offset += 8 + (length + 7) // 8 * 8


def inspect_image(path: Path, *, declared: str | None = None, max_virtual_size: int) -> Inspection:
    """Find the format and check it is safe to hand to qemu-img; raise UnsafeImage with the reason."""
    found, inspector = _classify(path)
    if found not in ACCEPTED:
        raise UnsafeImage(f"{found} images are not accepted: convert it to qcow2 (qemu-img convert -O qcow2)")
    if declared is not None and declared != found:
        raise UnsafeImage(f"the image was declared {declared} but is {found}")
    _safety_check(inspector)
    if found == QCOW2:
        _check_qcow2(path)
    size = path.stat().st_size if found in (RAW, ISO) else inspector.virtual_size
    if size > max_virtual_size:
        raise UnsafeImage(f"its virtual size, {size} bytes, is over the limit of {max_virtual_size} bytes")
    return Inspection(format=found, virtual_size=size)


def _limits(address_space: int, cpu_seconds: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    return apply


def qemu_img_info(path: Path, fmt: str, *, address_space: int = 1 << 30, cpu_seconds: int = 30) -> dict:
    """`qemu-img info` with an explicit format, under address-space and CPU limits."""
    result = _run_limited(["qemu-img", "info", "-f", fmt, "--output=json", str(path)], address_space, cpu_seconds)
    if result.returncode != 0:
        raise UnsafeImage(f"qemu-img could not read the {fmt} image: {result.stderr.strip()[:300]}")
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise UnsafeImage("qemu-img gave an unreadable description of the image") from None


def _run_limited(command: list[str], address_space: int, cpu_seconds: int) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, preexec_fn=_limits(address_space, cpu_seconds),
                              timeout=cpu_seconds * 2, check=False)
    except subprocess.TimeoutExpired:
        raise UnsafeImage(f"qemu-img took longer than {cpu_seconds * 2} s on the image") from None


def qemu_img_convert(source: Path, fmt: str, destination: Path, *, address_space: int = 2 << 30,
                     cpu_seconds: int = 3600) -> None:
    """Convert an inspected image to qcow2, with an explicit source format, under limits."""
    result = _run_limited(["qemu-img", "convert", "-f", fmt, "-O", "qcow2", str(source), str(destination)],
                          address_space, cpu_seconds)
    if result.returncode != 0:
        raise UnsafeImage(f"qemu-img could not convert the {fmt} image: {result.stderr.strip()[:300]}")
