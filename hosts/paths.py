"""Paths on a host, in the form its technology names files: POSIX paths, VMware datastore paths
('[datastore1] vm/disk.vmdk') or Windows paths (Hyper-V, 'C:\\VMs\\disk.vhdx').

A path is accepted only in its normal form (absolute, no '.', '..' or doubled separators), so that comparing it with
an allowed directory as text is comparing where it is.
"""

from __future__ import annotations

import ntpath
import posixpath
import re

from cloudpanel.text import CONTROL

POSIX, DATASTORE, WINDOWS = "posix", "datastore", "windows"
EXAMPLES = {POSIX: "/srv/disks", DATASTORE: "[datastore1] images", WINDOWS: r"C:\VMs"}
_DATASTORE = re.compile(r"\[([A-Za-z0-9 ._()-]{1,80})\] (\S.*)")
_DRIVE = re.compile(r"[A-Za-z]:\\")


def normal(style: str, path: str) -> str | None:
    """The path if it is absolute and in normal form for the style, else None."""
    if not path or CONTROL.search(path) or "\x00" in path:
        return None
    if style == DATASTORE:
        found = _DATASTORE.fullmatch(path)
        if not found:
            return None
        rest = found.group(2).rstrip("/")
        if rest.startswith("/") or "\\" in rest or posixpath.normpath(rest) != rest or rest.startswith(".."):
            return None
        return path.rstrip("/")
    if style == WINDOWS:
        if not _DRIVE.match(path) or "/" in path:
            return None
        stripped = path.rstrip("\\") if len(path) > 3 else path
        return stripped if ntpath.normpath(stripped) == stripped else None
    stripped = path.rstrip("/")
    if not path.startswith("/") or path.startswith("//") or posixpath.normpath(path) != (stripped or "/"):
        return None
    return stripped or "/"


def is_root(style: str, directory: str) -> bool:
    """Whether the directory is the whole filesystem (a drive, a datastore)."""
    if style == WINDOWS:
        return len(directory) <= 3
    if style == DATASTORE:
        return False
    return directory == "/"


def under(style: str, path: str, directory: str) -> bool:
    """Whether the (normal) path lies inside the (normal) directory."""
    if style == WINDOWS:
        return path.lower().startswith(directory.lower() + "\\")
    return path.startswith(directory + "/")
