"""Disk image inspection in Python, before qemu-img ever opens the file.

Images come from tenants and the internet, and qemu-img follows what a header says:
a qcow2 backing file or external data file, or a VMDK extent, can make it read any
file on the host. So the format is found here from the file's own bytes, every format
that matches is counted (a file that is two formats at once is refused), and the
headers of qcow2 and VMDK are read for references to other files. Only then does
qemu-img run, always with an explicit `-f` and under address-space and CPU limits.
"""

from __future__ import annotations

import json
import re
import resource
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from images.exceptions import UnsafeImage

QCOW2, RAW, ISO, VMDK, VDI, VHDX = "qcow2", "raw", "iso", "vmdk", "vdi", "vhdx"
# Formats accepted only by converting them to qcow2 after inspection.
CONVERTED = (VMDK, VDI, VHDX)

_QCOW2_MAGIC = b"QFI\xfb"
# Incompatible feature bits qemu knows: dirty, corrupt, external data file, compression type, extended L2.
_QCOW2_KNOWN_INCOMPATIBLE = 0b11111
_QCOW2_DIRTY, _QCOW2_CORRUPT, _QCOW2_DATA_FILE = 1 << 0, 1 << 1, 1 << 2
_QCOW2_EXT_DATA_FILE = 0x44415441  # "DATA": the external data file's name
_VMDK_SPARSE_MAGIC = b"KDMV"
_VMDK_DESCRIPTOR = b"# Disk DescriptorFile"
_VMDK_SINGLE_FILE = {"monolithicSparse", "streamOptimized"}
_VDI_SIGNATURE = 0xBEDA107F
_ISO_OFFSET = 0x8001
_SECTOR = 512


@dataclass(frozen=True)
class Inspection:
    """What the file is: its format and the size of the disk it holds."""

    format: str
    virtual_size: int


def _read(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def _is_qcow2(path: Path) -> bool:
    return _read(path, 0, 4) == _QCOW2_MAGIC


def _is_vmdk(path: Path) -> bool:
    head = _read(path, 0, 64)
    return head.startswith(_VMDK_SPARSE_MAGIC) or head.startswith(_VMDK_DESCRIPTOR)


def _is_vdi(path: Path) -> bool:
    head = _read(path, 0, 0x48)
    return len(head) >= 0x44 and struct.unpack_from("<I", head, 0x40)[0] == _VDI_SIGNATURE


def _is_vhdx(path: Path) -> bool:
    return _read(path, 0, 8) == b"vhdxfile"


def _is_iso(path: Path) -> bool:
    return _read(path, _ISO_OFFSET, 5) == b"CD001"


_DETECTORS = {QCOW2: _is_qcow2, VMDK: _is_vmdk, VDI: _is_vdi, VHDX: _is_vhdx, ISO: _is_iso}


def detect(path: Path) -> str:
    """The one format the file's bytes say it is (raw when none); two at once are refused."""
    found = [name for name, matches in _DETECTORS.items() if matches(path)]
    if len(found) > 1:
        raise UnsafeImage(f"the file is at once {' and '.join(found)}: refused, as a tool could read it either way")
    return found[0] if found else RAW


def _check_qcow2(path: Path) -> int:
    header = _read(path, 0, 112)
    if len(header) < 72:
        raise UnsafeImage("the qcow2 header is truncated")
    version, backing_offset, backing_size = struct.unpack_from(">IQI", header, 4)
    size = struct.unpack_from(">Q", header, 24)[0]
    if version not in (2, 3):
        raise UnsafeImage(f"qcow2 version {version} is not supported")
    if backing_offset or backing_size:
        raise UnsafeImage("the qcow2 image has a backing file: upload a standalone image (qemu-img convert)")
    header_length = 72
    if version == 3:
        if len(header) < 104:
            raise UnsafeImage("the qcow2 header is truncated")
        incompatible = struct.unpack_from(">Q", header, 72)[0]
        header_length = struct.unpack_from(">I", header, 100)[0]
        if incompatible & ~_QCOW2_KNOWN_INCOMPATIBLE:
            raise UnsafeImage(f"the qcow2 image uses unknown incompatible features (bits {incompatible:#x})")
        if incompatible & _QCOW2_DATA_FILE:
            raise UnsafeImage("the qcow2 image keeps its data in an external file")
        if incompatible & _QCOW2_CORRUPT:
            raise UnsafeImage("the qcow2 image is marked corrupt")
    cluster_bits = struct.unpack_from(">I", header, 20)[0]
    if not 9 <= cluster_bits <= 21:
        raise UnsafeImage(f"the qcow2 cluster size (2^{cluster_bits}) is out of range")
    if _has_qcow2_extension(path, header_length, 1 << cluster_bits, _QCOW2_EXT_DATA_FILE):
        raise UnsafeImage("the qcow2 image names an external data file")
    return size


def _has_qcow2_extension(path: Path, offset: int, end: int, wanted: int) -> bool:
    """Walk the header extensions (type, length, data padded to 8 bytes) within the first cluster."""
    while offset + 8 <= end:
        kind, length = struct.unpack(">II", _read(path, offset, 8).ljust(8, b"\0"))
        if kind == 0:
            return False
        if kind == wanted:
            return True
        offset += 8 + (length + 7) // 8 * 8
    return False


def _check_vmdk(path: Path) -> int:
    head = _read(path, 0, 512)
    if not head.startswith(_VMDK_SPARSE_MAGIC):
        raise UnsafeImage("a VMDK descriptor file points at other files: upload a single-file VMDK")
    if len(head) < 44:
        raise UnsafeImage("the VMDK header is truncated")
    capacity, _grain, descriptor_offset, descriptor_size = struct.unpack_from("<QQQQ", head, 12)
    if not descriptor_offset or not descriptor_size or descriptor_size > 2048:
        raise UnsafeImage("the VMDK has no usable embedded descriptor")
    text = _read(path, descriptor_offset * _SECTOR, descriptor_size * _SECTOR).split(b"\0", 1)[0]
    descriptor = text.decode("ascii", errors="replace")
    kind = re.search(r'^createType\s*=\s*"([^"]*)"', descriptor, re.MULTILINE)
    if kind is None or kind.group(1) not in _VMDK_SINGLE_FILE:
        raise UnsafeImage("only single-file VMDKs (monolithicSparse, streamOptimized) are accepted")
    extents = re.findall(r"^(?:RW|RDONLY|NOACCESS)\s+\d+\s+(\S+)(?:\s+\"([^\"]*)\")?", descriptor, re.MULTILINE)
    if len(extents) != 1 or extents[0][0] != "SPARSE":
        raise UnsafeImage("the VMDK descriptor lists extents in other files")
    parent = re.search(r'^parentCID\s*=\s*(\S+)', descriptor, re.MULTILINE)
    if parent is not None and parent.group(1).lower() != "ffffffff":
        raise UnsafeImage("the VMDK has a parent image")
    return capacity * _SECTOR


def _check_vdi(path: Path) -> int:
    header = _read(path, 0, 0x180)
    if len(header) < 0x178:
        raise UnsafeImage("the VDI header is truncated")
    return struct.unpack_from("<Q", header, 0x170)[0]


def inspect_image(path: Path, *, declared: str | None = None, max_virtual_size: int) -> Inspection:
    """Find the format and check it is safe to hand to qemu-img; raise UnsafeImage with the reason."""
    found = detect(path)
    if declared is not None and declared != found:
        raise UnsafeImage(f"the image was declared {declared} but is {found}")
    if found == QCOW2:
        size = _check_qcow2(path)
    elif found == VMDK:
        size = _check_vmdk(path)
    elif found == VDI:
        size = _check_vdi(path)
    elif found == VHDX:
        size = qemu_img_info(path, VHDX)["virtual-size"]  # its metadata region is read by qemu-img, with -f
    else:
        size = path.stat().st_size
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
