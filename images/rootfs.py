"""Container root filesystems: tar archives checked member by member, and unpacked only as checked.

A container image is a root filesystem in a tar archive (plain, gzip, bzip2 or xz). The
same rules hold when the library inspects an upload and when a worker unpacks it for a
container on a host, as root: member names stay inside the tree (no absolute names, no
`..`, nothing reached through a symlink of the archive), hard links name an earlier file
of the archive, there are no device nodes, FIFOs or sockets, owners fit the container's
user namespace, and the unpacked tree stays under a size cap (a decompression bomb is
refused at the first header over it, before its data is read; an extended header is
never read whole into memory past 1 MiB). Symlinks may point anywhere: they are resolved
inside the container's root, and nothing here follows them.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

from images.exceptions import UnsafeImage

ID_COUNT = 65536  # uids and gids a container's user namespace maps: archive owners must be below it
MAX_MEMBERS = 1_000_000
ROOT = "rootfs"  # the tree's directory in the container's home
MAX_READ = 1 << 20  # the most tarfile may ask for at once: file data comes in 16 KiB blocks, headers are small
# Names libvirt's LXC driver makes in a container's root while it sets it up.
_RESERVED = {".oldroot"}


class _Checker:
    """The rules, applied to members in archive order."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.total, self.count = max_bytes, 0, 0
        self.files: set[str] = set()
        self.links: set[str] = set()
        self.dirs: set[str] = set()

    def check(self, member: tarfile.TarInfo) -> str:
        """The member's normalised name ("" for the root itself); raises UnsafeImage for anything refused."""
        self.count += 1
        if self.count > MAX_MEMBERS:
            raise UnsafeImage(f"the archive has more than {MAX_MEMBERS} members")
        raw = member.name
        if "\x00" in raw or raw.startswith("/"):
            raise UnsafeImage(f"the member '{raw[:200]}' has an absolute name")
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise UnsafeImage(f"the member '{raw[:200]}' climbs out of the tree with '..'")
        name = "/".join(parts)
        if parts and parts[0] in _RESERVED:
            raise UnsafeImage(f"the member '{raw[:200]}' uses a name the container's set-up needs")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in self.links:
                raise UnsafeImage(f"the member '{raw[:200]}' lies behind a symlink of the archive")
        if member.ischr() or member.isblk():
            raise UnsafeImage(f"the member '{raw[:200]}' is a device node")
        if member.isfifo() or not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise UnsafeImage(f"the member '{raw[:200]}' is not a file, directory or link")
        if not 0 <= member.uid < ID_COUNT or not 0 <= member.gid < ID_COUNT:
            raise UnsafeImage(f"the member '{raw[:200]}' is owned by {member.uid}:{member.gid}, outside the "
                              f"container's 0-{ID_COUNT - 1}")
        if member.issym():
            target = member.linkname
            if "\x00" in target:
                raise UnsafeImage(f"the symlink '{raw[:200]}' has a NUL in its target")
            if not target.startswith("/"):
                resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
                if resolved == ".." or resolved.startswith("../"):
                    raise UnsafeImage(f"the symlink '{raw[:200]}' points out of the tree")
            self.links.add(name)
        elif member.islnk():
            target = "/".join(p for p in member.linkname.split("/") if p not in ("", "."))
            if member.linkname.startswith("/") or target not in self.files or target in self.links:
                raise UnsafeImage(f"the hard link '{raw[:200]}' does not name an earlier file of the archive")
            self.files.add(name)
        elif member.isreg():
            self.total += member.size
            if self.total > self.max_bytes:
                raise UnsafeImage(f"the unpacked tree is larger than the {self.max_bytes} bytes allowed")
            self.files.add(name)
        if name in self.links and not member.issym():
            raise UnsafeImage(f"the member '{raw[:200]}' replaces a symlink of the archive")
        if member.isdir():
            self.dirs.add(name)
        elif name in self.dirs:
            raise UnsafeImage(f"the member '{raw[:200]}' replaces a directory of the archive")
        return name


class _Source(io.RawIOBase):
    """A raw stream over read(n)."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class _Forward:
    """The archive, decompressed, as tarfile's "r:" mode reads it: in order, and never a header of more than
    MAX_READ bytes at once (tarfile reads a pax or long-name header whole, whatever size it claims)."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        raw = io.BufferedReader(_Source(read), 1 << 16)
        head = raw.peek(6)[:6]
        # Closed with the archive's source; the decompressors hold no resource of their own.
        if head.startswith(b"\x1f\x8b"):
            self._stream = gzip.GzipFile(fileobj=raw)
        elif head.startswith(b"\xfd7zXZ\x00"):
            self._stream = lzma.LZMAFile(raw)  # noqa: SIM115
        elif head.startswith(b"BZh"):
            self._stream = bz2.BZ2File(raw)  # noqa: SIM115
        else:
            self._stream = raw
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > MAX_READ:
            raise UnsafeImage(f"the archive has a header larger than the {MAX_READ} bytes allowed")
        data = self._stream.read(size)
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self._position + offset
        if target < self._position:
            raise UnsafeImage("the archive can only be read in order")
        while self._position < target and self.read(min(1 << 16, target - self._position)):
            pass
        return self._position


def _members(read: Callable[[int], bytes]) -> tarfile.TarFile:
    return tarfile.open(fileobj=_Forward(read), mode="r:")


_UNREADABLE = (tarfile.TarError, EOFError, OSError, ValueError, lzma.LZMAError)


def inspect_archive(path: Path, *, max_bytes: int) -> int:
    """Check every member of a root-filesystem archive; returns the unpacked size."""
    checker = _Checker(max_bytes)
    try:
        with path.open("rb") as source, _members(source.read) as archive:
            for member in archive:
                checker.check(member)
    except _UNREADABLE as exc:
        raise UnsafeImage(f"the file is not a readable tar archive: {exc}") from None
    if not checker.count:
        raise UnsafeImage("the archive is empty")
    return checker.total


def unpack(read: Callable[[int], bytes], home: Path, *, owner: int, max_bytes: int) -> Path:
    """Unpack an archive (read as a stream) into ROOT in home, a new directory, checking every member again; each
    member's owner is shifted by owner (container uid 0 is host uid owner). Returns the tree's root.

    home is the container's alone (mode 0700, owned by its root): no other host user, nor another tenant's
    container, can reach into the tree, say to run a setuid program of it. Nothing is left on failure.
    """
    home.mkdir(mode=0o700)
    os.chown(home, owner, owner)
    destination = home / ROOT
    destination.mkdir(mode=0o755)
    os.chown(destination, owner, owner)
    real = os.path.realpath(destination)
    checker = _Checker(max_bytes)

    def shifted(member: tarfile.TarInfo, _path: str) -> tarfile.TarInfo | None:
        name = checker.check(member)
        parent = os.path.realpath(os.path.join(real, posixpath.dirname(name)))
        if parent != real and not parent.startswith(real + os.sep):
            raise UnsafeImage(f"the member '{member.name[:200]}' would land outside the container's tree")
        if not name:  # the tree's own root: its mode, owned by container root
            os.chmod(real, stat.S_IMODE(member.mode) or 0o755)
            return None
        return member.replace(name=name, uid=owner + member.uid, gid=owner + member.gid, uname="", gname="",
                              deep=False)

    try:
        with _members(read) as archive:
            for member in archive:
                archive.extract(member, real, numeric_owner=True, filter=shifted)
    except UnsafeImage:
        remove_tree(home)
        raise
    except _UNREADABLE as exc:
        remove_tree(home)
        raise UnsafeImage(f"the container image could not be unpacked: {exc}") from None
    except BaseException:
        remove_tree(home)
        raise
    return destination


def remove_tree(path: Path) -> None:
    """Delete a container's tree (symlinks are removed, never followed); a missing tree counts as done."""
    shutil.rmtree(path, ignore_errors=True)
