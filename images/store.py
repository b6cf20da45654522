"""The panel's image store: where the web tier keeps image bytes, under generated names.

Only the web process opens these files. Workers read and replace an image's bytes over
HTTP through signed transfer URLs (images/transfer.py): nothing assumes that a worker,
perhaps next to a remote hypervisor host, shares a filesystem with the panel.
"""

from __future__ import annotations

import errno
import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from images.exceptions import UploadBusy, UploadIncomplete

BLOCK = 1 << 20


def root() -> Path:
    path = Path(settings.CLOUDPANEL_IMAGE_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_path(key: uuid.UUID | str) -> Path:
    return root() / str(key)


def partial_path(key: uuid.UUID | str) -> Path:
    return root() / f"{key}.part"


def _copy(stream: BinaryIO, out: BinaryIO, length: int) -> int:
    """Copy up to length bytes; returns how many arrived (fewer: the sender went away)."""
    done = 0
    while done < length:
        block = stream.read(min(BLOCK, length - done))
        if not block:
            break
        out.write(block)
        done += len(block)
    return done


@contextmanager
def locked_upload(key: uuid.UUID | str) -> Iterator[BinaryIO]:
    """The upload's partial file, opened for writing (created if needed) and locked: one writer at a time.

    Check where the upload stands only once this is held: a chunk committed meanwhile by
    another request is then visible, and is never overwritten.
    """
    fd = os.open(partial_path(key), os.O_RDWR | os.O_CREAT, 0o600)
    handle = os.fdopen(fd, "r+b")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UploadBusy("Another upload to this image is in progress.") from None
        yield handle
    finally:
        handle.close()


def write_at(out: BinaryIO, *, offset: int, length: int, stream: BinaryIO) -> None:
    """Write one chunk of a locked upload at offset (where the upload stands); a chunk that fails or is cut
    short leaves the file as it was before it."""
    out.truncate(offset)  # a chunk that died half-way (say, the process was killed) left bytes past the offset
    out.seek(offset)
    try:
        done = _copy(stream, out, length)
        if done == length:
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        out.truncate(offset)
        if exc.errno == errno.ENOSPC:
            raise UploadIncomplete("The image store is full; the chunk was not kept.") from None
        raise UploadIncomplete(f"The chunk could not be read: {exc}") from None
    if done != length:
        out.truncate(offset)
        raise UploadIncomplete(f"The chunk ended after {done} of {length} bytes; send it again from byte {offset}.")


def complete(key: uuid.UUID | str) -> int:
    """The upload is whole: it becomes the image's data. Returns its size."""
    target = data_path(key)
    os.replace(partial_path(key), target)
    return target.stat().st_size


def replace(key: uuid.UUID | str, *, length: int, stream: BinaryIO) -> int:
    """Replace the image's data with what a worker sends (a converted or imported image), atomically."""
    temporary = root() / f"{key}.in-{uuid.uuid4().hex}"
    try:
        with open(temporary, "wb") as out:
            done = _copy(stream, out, length)
            if done != length:
                raise UploadIncomplete(f"The transfer ended after {done} of {length} bytes.")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, data_path(key))
    except FileNotFoundError:
        raise UploadIncomplete("The image's bytes were discarded while they were being stored.") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UploadIncomplete("The image store is full.") from None
        raise
    finally:
        temporary.unlink(missing_ok=True)
    return length


def remove(key: uuid.UUID | str) -> None:
    """Forget every byte of the image: its data, an unfinished upload, transfers in flight."""
    for path in root().glob(f"{key}*"):
        path.unlink(missing_ok=True)

