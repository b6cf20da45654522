"""The backup store: a directory (settings.CLOUDPANEL_BACKUP_DIR, shared by the web tier and the hosts' workers)
with a qcow2 file per backup, under its tenant's id. An incremental backup's file names its parent's as its backing
file, so the newest file of a chain reads as the whole disk at its time."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from instances.exceptions import BackupFailed
from instances.models import Backup

CHUNK = 1 << 20


def path_of(backup: Backup) -> Path:
    return Path(settings.CLOUDPANEL_BACKUP_DIR) / str(backup.tenant_id) / backup.file_name


def _qemu_img(*args: str) -> None:
    try:
        subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True, timeout=3600)
    except subprocess.CalledProcessError as exc:
        raise BackupFailed(f"qemu-img {args[0]} failed: {exc.stderr.strip()[:500]}") from None


def store(backup: Backup, read: Callable[[int], bytes], *, parent: Backup | None) -> int:
    """Write the backup's file from read(n) (b"" at the end), over its parent's file if it is incremental; returns
    its size. Written under a temporary name first: a file that stopped halfway is never taken for a backup."""
    path = path_of(backup)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    with open(part, "wb") as out:
        while chunk := read(CHUNK):
            out.write(chunk)
    if parent is not None:  # (a name beside it: the chain moves with the directory)
        _qemu_img("rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", parent.file_name, str(part))
    os.replace(part, path)
    return path.stat().st_size


def flatten(backup: Backup, into: Path) -> None:
    """The whole disk as the backup holds it (its chain read through), into one standalone qcow2 file."""
    if not path_of(backup).exists():
        raise BackupFailed(f"the backup's file is missing from the store ({path_of(backup)})")
    _qemu_img("convert", "-f", "qcow2", "-O", "qcow2", str(path_of(backup)), str(into))


def remove(backup: Backup) -> None:
    for path in (path_of(backup), path_of(backup).with_suffix(".part")):
        path.unlink(missing_ok=True)
