"""Container root filesystems: tar archives checked member by member, and unpacked only as checked.

A container image is a root filesystem in a tar archive (plain, gzip, bzip2 or xz). The
same rules hold when the library inspects an upload and when a worker unpacks it for a
container on a host, as root: member names are short and stay inside the tree (no
absolute names, no `..`, nothing under a symlink or a file of the archive), nothing
replaces an earlier member of another kind, hard links name an earlier file of the
archive, there are no device nodes, FIFOs, sockets, sparse files or global headers,
owners fit the container's user namespace, and the unpacked tree stays under a size cap
(counted from each header before its data is read). tarfile never reads more than 1 MiB
at once (an extended header), keeps no list of the members, and links are made as the
archive says, never by looking for their target elsewhere in it. Symlinks may point
anywhere: they resolve inside the container's root, and nothing here follows them.
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
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hosts.specs import ID_RANGE
from images.exceptions import UnpackStopped, UnsafeImage

MAX_MEMBERS = 1_000_000
MAX_NAME = 4096  # PATH_MAX
MAX_DEPTH = 256
MAX_MTIME = 1 << 40
ROOT = "rootfs"  # the tree's directory in the container's home
MAX_READ = 1 << 20  # the most tarfile may ask for at once: file data comes in 16 KiB blocks, headers are small
BEAT_SECONDS = 5.0
# Names libvirt's LXC driver makes in a container's root while it sets it up.
_RESERVED = {".oldroot"}


class _Checker:
    """The rules, applied to members in archive order."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.total, self.count = max_bytes, 0, 0
        self.files: set[str] = set()
        self.links: set[str] = set()
        self.dirs: set[str] = set()

    def _parts(self, raw: str, what: str) -> list[str]:
        if len(raw) > MAX_NAME or "\x00" in raw:
            raise UnsafeImage(f"the {what} '{raw[:200]}' is longer than {MAX_NAME} characters or holds a NUL")
        if raw.startswith("/"):
            raise UnsafeImage(f"the {what} '{raw[:200]}' has an absolute name")
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise UnsafeImage(f"the {what} '{raw[:200]}' climbs out of the tree with '..'")
        if len(parts) > MAX_DEPTH:
            raise UnsafeImage(f"the {what} '{raw[:200]}' is more than {MAX_DEPTH} directories deep")
        prefix = ""
        for part in parts[:-1]:
            prefix = f"{prefix}/{part}" if prefix else part
            if prefix in self.links:
                raise UnsafeImage(f"the {what} '{raw[:200]}' lies behind a symlink of the archive")
            if prefix in self.files:
                raise UnsafeImage(f"the {what} '{raw[:200]}' lies under a file of the archive")
        return parts

    def check(self, member: tarfile.TarInfo) -> str:
        """The member's normalised name ("" for the root itself); raises UnsafeImage for anything refused."""
        self.count += 1
        if self.count > MAX_MEMBERS:
            raise UnsafeImage(f"the archive has more than {MAX_MEMBERS} members")
        raw = member.name
        parts = self._parts(raw, "member")
        name = "/".join(parts)
        if (not name or raw.endswith("/")) and not member.isdir():
            raise UnsafeImage(f"the member '{raw[:200]}' is named as a directory but is none")
        if parts and parts[0] in _RESERVED:
            raise UnsafeImage(f"the member '{raw[:200]}' uses a name the container's set-up needs")
        if member.ischr() or member.isblk():
            raise UnsafeImage(f"the member '{raw[:200]}' is a device node")
        if member.sparse is not None or not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise UnsafeImage(f"the member '{raw[:200]}' is not a file, directory or link")
        if not 0 <= member.uid < ID_RANGE or not 0 <= member.gid < ID_RANGE:
            raise UnsafeImage(f"the member '{raw[:200]}' is owned by {member.uid}:{member.gid}, outside the "
                              f"container's 0-{ID_RANGE - 1}")
        if member.size < 0 or not 0 <= member.mtime < MAX_MTIME:
            raise UnsafeImage(f"the member '{raw[:200]}' has an impossible size or time")
        # Only a file may follow a file of the same name (tar's later-wins), only a directory a directory.
        if name in self.links or (name in self.files and not member.isreg()) or (name in self.dirs and
                                                                                  not member.isdir()):
            raise UnsafeImage(f"the member '{raw[:200]}' replaces an earlier member of another kind")
        self.dirs.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
        if member.issym():
            self._symlink(member, name)
        elif member.islnk():
            target = "/".join(self._parts(member.linkname, "hard link target"))
            if target not in self.files or member.linkname.removeprefix("./") != target:
                raise UnsafeImage(f"the hard link '{raw[:200]}' does not name an earlier file of the archive")
            self.files.add(name)
        elif member.isreg():
            self.total += member.size
            if self.total > self.max_bytes:
                raise UnsafeImage(f"the unpacked tree is larger than the {self.max_bytes} bytes allowed")
            self.files.add(name)
        elif name:
            self.dirs.add(name)
        return name

    def _symlink(self, member: tarfile.TarInfo, name: str) -> None:
        target = member.linkname
        if "\x00" in target or len(target) > MAX_NAME:
            raise UnsafeImage(f"the symlink '{member.name[:200]}' has a NUL in its target or a target too long")
        if not target.startswith("/"):
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            if resolved == ".." or resolved.startswith("../"):
                raise UnsafeImage(f"the symlink '{member.name[:200]}' points out of the tree")
        self.links.add(name)


class _Header(tarfile.TarInfo):
    """tarfile's header reading, without what a root filesystem never needs: sparse files (their maps are read
    whole, and they write more than their size says) and global headers (copied into every member)."""

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in (tarfile.GNUTYPE_SPARSE, tarfile.XGLTYPE):
            raise UnsafeImage("the archive has sparse files or global headers, which are not accepted")
        return super()._proc_member(archive)

    def _proc_gnusparse_00(self, *_args: object) -> None:
        raise UnsafeImage("the archive has sparse files, which are not accepted")

    _proc_gnusparse_01 = _proc_gnusparse_10 = _proc_gnusparse_00


class _Archive(tarfile.TarFile):
    """Links exactly as the archive says: no fallback that would copy some other member in their place."""

    tarinfo = _Header

    def makelink(self, tarinfo: tarfile.TarInfo, targetpath: str) -> None:
        if tarinfo.issym():
            os.symlink(tarinfo.linkname, targetpath)
        else:
            os.link(tarinfo._link_target, targetpath, follow_symlinks=False)


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


def _each(archive: tarfile.TarFile):
    """The members in order, forgetting each once the next is read (tarfile would keep them all)."""
    while (member := archive.next()) is not None:
        yield member
        archive.members.clear()


def inspect_archive(path: Path, *, max_bytes: int) -> int:
    """Check every member of a root-filesystem archive; returns the unpacked size."""
    checker = _Checker(max_bytes)
    try:
        with path.open("rb") as source, _Archive.open(fileobj=_Forward(source.read), mode="r:") as archive:
            for member in _each(archive):
                checker.check(member)
    except UnsafeImage:
        raise
    except Exception as exc:  # whatever tarfile or a decompressor makes of a hostile file: refused, with why
        raise UnsafeImage(f"the file is not a readable tar archive: {exc!r}"[:500]) from None
    if not checker.count:
        raise UnsafeImage("the archive is empty")
    return checker.total


def unpack(read: Callable[[int], bytes], home: Path, *, owner: int, max_bytes: int,
           beat: Callable[[], bool] = lambda: True) -> Path:
    """Unpack an archive (read as a stream) into ROOT in home, checking every member again; each member's owner
    is shifted by owner (container uid 0 is host uid owner). Returns the tree's root.

    The tree is made in a directory of its own beside home and only then renamed to home, which must not
    exist: no other attempt shares it. home is the container's alone (mode 0700, owned by its root): no other
    host user, nor another tenant's container, can reach into the tree, say to run a setuid program of it.
    beat() is called every few seconds; False stops the work (UnpackStopped). Nothing is left on failure.
    """
    work = Path(tempfile.mkdtemp(prefix=".unpack-", dir=home.parent))
    os.chown(work, owner, owner)
    destination = work / ROOT
    destination.mkdir(mode=0o755)
    os.chown(destination, owner, owner)
    real = os.path.realpath(destination)
    checker, next_beat = _Checker(max_bytes), time.monotonic() + BEAT_SECONDS

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
        with _Archive.open(fileobj=_Forward(read), mode="r:", errorlevel=2) as archive:
            for member in _each(archive):
                archive.extract(member, real, numeric_owner=True, filter=shifted)
                if time.monotonic() >= next_beat:
                    if not beat():
                        raise UnpackStopped("the unpacking stopped: its operation is no longer in flight")
                    next_beat = time.monotonic() + BEAT_SECONDS
        os.rename(work, home)
    except (UnsafeImage, UnpackStopped):
        remove_tree(work)
        raise
    except Exception as exc:  # a hostile archive, or the host's disk: the reason, and nothing left behind
        remove_tree(work)
        raise UnsafeImage(f"the container image could not be unpacked: {exc!r}"[:500]) from None
    except BaseException:
        remove_tree(work)
        raise
    return home / ROOT


def remove_tree(path: Path) -> None:
    """Delete a container's tree (symlinks are removed, never followed); a missing tree counts as done."""
    shutil.rmtree(path, ignore_errors=True)
