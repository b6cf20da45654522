"""Paths on a host, in the form its technology names files: POSIX paths, VMware datastore paths
('[datastore1] vm/disk.vmdk') or Windows paths (Hyper-V, 'C:\\VMs\\disk.vhdx').

A path is accepted only in its normal form (absolute, no '.', '..' or doubled separators), so that comparing it with
an allowed directory as text is comparing where it is.
"""

from __future__ import annotations

import posixpath
import re

from cloudpanel.text import CONTROL

POSIX, DATASTORE, WINDOWS = "posix", "datastore", "windows"
EXAMPLES = {POSIX: "/srv/disks", DATASTORE: "[datastore1] images", WINDOWS: r"C:\VMs"}
# Names in datastore and Windows paths: plain ASCII only (no case folding or Unicode look-alikes to compare), never
# ending in a dot or space (Windows trims those), never "." or "..".
_NAME = re.compile(r"[A-Za-z0-9_()+-](?:[A-Za-z0-9 ._()+-]*[A-Za-z0-9_()+-])?")
_DATASTORE = re.compile(r"\[([A-Za-z0-9_()+-](?:[A-Za-z0-9 ._()+-]{0,78}[A-Za-z0-9_()+-])?)\] (.+)")
_DRIVE = re.compile(r"[A-Za-z]:")
_DEVICES = re.compile(r"con|prn|aux|nul|com[0-9]|lpt[0-9]", re.IGNORECASE)  # Windows' reserved names


def _names(parts: list[str]) -> bool:
    """Plain names, none of them a Windows device, however it is spelled ("nul .txt" is NUL to Windows)."""
    return bool(parts) and all(_NAME.fullmatch(part) and not _DEVICES.fullmatch(part.split(".")[0].rstrip(" "))
                               for part in parts)


def normal(style: str, path: str) -> str | None:
    """The path if it is absolute and in normal form for the style, else None."""
    if not path or CONTROL.search(path) or "\x00" in path:
        return None
    if style == DATASTORE:
        found = _DATASTORE.fullmatch(path)
        if not found or not _names(found.group(2).split("/")):
            return None
        return path
    if style == WINDOWS:
        drive, _, rest = path.partition("\\")
        if not _DRIVE.fullmatch(drive) or not _names(rest.split("\\")):
            return None
        return path
    stripped = path.rstrip("/")
    if not path.startswith("/") or path.startswith("//") or posixpath.normpath(path) != (stripped or "/"):
        return None
    return stripped or "/"


def is_root(style: str, directory: str) -> bool:
    """Whether the directory is the whole filesystem (a datastore's or a drive's root is no normal directory)."""
    return style == POSIX and directory == "/"


def under(style: str, path: str, directory: str) -> bool:
    """Whether the (normal) path lies inside the (normal) directory."""
    if style == WINDOWS:  # (ASCII names only: Windows compares them without case)
        return path.lower().startswith(directory.lower() + "\\")
    return path.startswith(directory + "/")
