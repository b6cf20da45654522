"""Kernels and initrds for boot kernels: recognised from their own bytes before they join the library.

QEMU and Xen load them with -kernel/-initrd, so nothing parses them on the host, but a
file declared as a kernel must be one: a Linux x86 bzImage (boot sector signature and the
"HdrS" setup header), an arm64 or RISC-V Image (its magic at 0x38) or a 32-bit ARM zImage
(its magic at 0x24); and an initrd a cpio archive, compressed or not.
"""

from __future__ import annotations

from pathlib import Path

from images import formats
from images.exceptions import UnsafeImage

MAX_KERNEL_BYTES = 256 << 20
_INITRD_MAGICS = {
    b"070701": "cpio", b"070702": "cpio", b"\x1f\x8b": "gzip", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd",
    b"\x02\x21\x4c\x18": "lz4", b"\x04\x22\x4d\x18": "lz4", b"BZh": "bzip2", b"\x5d\x00\x00": "lzma",
    b"\x89LZO": "lzo",
}


def _not_a_disk(path: Path) -> None:
    found = formats.image_formats(path)
    if found:
        raise UnsafeImage(f"the file is also a {' and '.join(found)} image")


def _x86(head: bytes) -> tuple[str, ...]:
    """A bzImage (boot protocol 2): 64-bit if its xloadflags say so (protocol 2.12 on), else 32-bit, which runs on
    both."""
    if len(head) < 0x208 or head[0x1FE:0x200] != b"\x55\xaa" or head[0x202:0x206] != b"HdrS":
        return ()
    version = int.from_bytes(head[0x206:0x208], "little")
    if version < 0x0200:
        return ()
    return ("x86_64",) if version >= 0x020C and len(head) > 0x236 and head[0x236] & 1 else ("i686", "x86_64")


def kernel_arches(path: Path) -> tuple[str, ...]:
    """The architectures the kernel at path runs on (empty: it is not a kernel CloudPanel recognises), by the
    signature in its header."""
    with path.open("rb") as handle:
        head = handle.read(0x240)
    if arches := _x86(head):
        return arches
    if head[0x38:0x3C] == b"ARM\x64":
        return ("aarch64",)
    if head[0x38:0x3C] == b"RSC\x05":
        return ("riscv64",)
    if head[0x24:0x28] == b"\x18\x28\x6f\x01":
        return ("armv7l",)
    return ()


def inspect_kernel(path: Path) -> int:
    """Check a Linux kernel (x86 bzImage, arm64 or RISC-V Image, ARM zImage); returns its size."""
    size = path.stat().st_size
    if size > MAX_KERNEL_BYTES:
        raise UnsafeImage(f"a kernel larger than {MAX_KERNEL_BYTES >> 20} MiB is refused")
    if not kernel_arches(path):
        raise UnsafeImage("the file is not a Linux kernel (an x86 bzImage with a boot protocol 2 header, an arm64 or "
                          "RISC-V Image, or an ARM zImage)")
    _not_a_disk(path)
    return size


def inspect_initrd(path: Path) -> int:
    """Check an initrd: a cpio archive, or one compressed as the kernel can unpack it; returns its size."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if not any(head.startswith(magic) for magic in _INITRD_MAGICS):
        raise UnsafeImage("the file is not an initrd (a cpio archive, plain or gzip, xz, zstd, lz4, bzip2, lzma "
                          "or lzo compressed)")
    _not_a_disk(path)
    return path.stat().st_size
