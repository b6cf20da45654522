"""Storage volumes: created, filled and read back through libvirt's streams, so a host may be remote."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from hosts import capabilities
from hosts.hypervisor import connections
from hosts.hypervisor.connections import (
    HypervisorError,
    libvirt,
    technology_of,
)
from hosts.hypervisor.domain_xml import raw_volume_xml, volume_xml
from hosts.specs import Backing


def _pool(conn: libvirt.virConnect, uri: str, pool: str) -> libvirt.virStoragePool:
    try:
        return conn.storagePoolLookupByName(pool)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise HypervisorError(f"storage pool '{pool}' does not exist on {uri}") from None
        raise


def _volume(storage: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    try:
        return storage.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise
        return None


def create_volume(uri: str, pool: str, name: str, size_gib: int, *, backing: Backing | None = None) -> str:
    """Create (or find) a qcow2 volume in a pool, over a backing file if given; returns its path on the host."""
    conn = connections.connection(uri)
    with connections.errors(uri):
        storage = _pool(conn, uri, pool)
        existing = _volume(storage, name)
        if existing is not None:
            return existing.path()
        return storage.createXML(volume_xml(name, size_gib, backing=backing), 0).path()


def volume_path(uri: str, pool: str, name: str) -> str | None:
    """A volume's path on the host, or None if the pool has no such volume."""
    conn = connections.connection(uri)
    with connections.errors(uri):
        volume = _volume(_pool(conn, uri, pool), name)
        return volume.path() if volume is not None else None


def upload_volume(uri: str, pool: str, name: str, *, size: int, read: Callable[[int], bytes]) -> str:
    """Fill a new volume of exactly size bytes through libvirt's upload stream; returns its path.

    read(n) supplies the bytes (b"" at the end). The stream goes through the libvirt
    connection, so the host may be remote: nothing assumes its disk is ours. A half-written
    volume of the same name (an earlier attempt) is replaced; on failure nothing is left.
    """
    conn = connections.connection(uri)
    with connections.errors(uri):
        storage = _pool(conn, uri, pool)
        stale = _volume(storage, name)
        if stale is not None:
            stale.delete(0)
        volume = storage.createXML(raw_volume_xml(name, size), 0)
        if not stores_data(uri):  # libvirt's test driver keeps no volume data: the bytes are read and dropped
            while read(1 << 20):
                pass
            return volume.path()
        stream = conn.newStream(0)
        try:
            volume.upload(stream, 0, size, 0)
            stream.sendAll(lambda _stream, nbytes, _opaque: read(nbytes), None)
            stream.finish()
        except BaseException:
            with suppress(libvirt.libvirtError):
                stream.abort()
            with suppress(libvirt.libvirtError):
                volume.delete(0)
            raise
        return volume.path()


def stores_data(uri: str) -> bool:
    """Whether the host's volumes hold real bytes (libvirt's test driver only pretends)."""
    return capabilities.of(technology_of(uri)).stores_data


def volume_sha256(uri: str, pool: str, name: str) -> tuple[str, int]:
    """Read a volume back through libvirt's download stream: its sha256 and size."""
    conn = connections.connection(uri)
    with connections.errors(uri):
        volume = _volume(_pool(conn, uri, pool), name)
        if volume is None:
            raise HypervisorError(f"volume '{name}' does not exist in pool '{pool}' on {uri}")
        digest, counted = hashlib.sha256(), [0]

        def take(_stream: libvirt.virStream, data: bytes, _opaque: object) -> int:
            digest.update(data)
            counted[0] += len(data)
            return len(data)

        stream = conn.newStream(0)
        volume.download(stream, 0, 0, 0)
        stream.recvAll(take, None)
        stream.finish()
        return digest.hexdigest(), counted[0]


@contextmanager
def reading_volume(uri: str, pool: str, name: str) -> Iterator[Callable[[int], bytes]]:
    """A volume's bytes through libvirt's download stream, as read(n) (b"" at the end)."""
    conn = connections.connection(uri)
    with connections.errors(uri):
        volume = _volume(_pool(conn, uri, pool), name)
        if volume is None:
            raise HypervisorError(f"volume '{name}' does not exist in pool '{pool}' on {uri}")
        stream = conn.newStream(0)
        volume.download(stream, 0, 0, 0)
        pending = bytearray()

        def read(size: int) -> bytes:
            with connections.errors(uri):
                while len(pending) < size:
                    block = stream.recv(max(size - len(pending), 1 << 16))
                    if not block:
                        break
                    pending.extend(block)
            data = bytes(pending[:size])
            del pending[:size]
            return data

        try:
            yield read
            while read(1 << 16):  # the rest (an archive's padding): the stream ends only once read to its end
                pass
            stream.finish()
        except BaseException:
            with suppress(libvirt.libvirtError):
                stream.abort()
            raise


def delete_volume(uri: str, pool: str, name: str) -> None:
    """Delete a volume; a missing pool or volume counts as done."""
    conn = connections.connection(uri)
    with connections.errors(uri):
        try:
            conn.storagePoolLookupByName(pool).storageVolLookupByName(name).delete(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_ERR_NO_STORAGE_VOL):
                raise


def grow_disk(uri: str, domain_uuid: str | None, *, pool: str, volume: str, size_gib: int) -> None:
    """Grow a volume of the pool to size_gib: through the block device of the running guest it is a disk of (the
    guest sees the new size at once), else the volume itself (a domain that is stopped, or none). Never shrinks;
    already so counts as done."""
    dom = connections.domain(uri, domain_uuid) if domain_uuid else None
    conn = connections.connection(uri)
    wanted = size_gib << 30
    with connections.errors(uri):
        found = _volume(_pool(conn, uri, pool), volume)
        if found is None:
            raise HypervisorError(f"the instance's disk {volume} is not in the pool {pool}")
        current = found.info()[1]
        if current >= wanted:
            return
        if dom is not None and dom.isActive():
            dom.blockResize(found.path(), wanted, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
        else:
            found.resize(wanted, 0)


def clone_volume(uri: str, pool: str, source: str, name: str, size_gib: int) -> str:
    """A full, standalone qcow2 copy of a volume of the pool (its backing chain flattened into it); returns its path.
    One of that name already there counts as done."""
    conn = connections.connection(uri)
    with connections.errors(uri):
        storage = _pool(conn, uri, pool)
        existing = _volume(storage, name)
        if existing is not None:
            return existing.path()
        original = _volume(storage, source)
        if original is None:
            raise HypervisorError(f"the disk {source} is not in the pool {pool}")
        return storage.createXMLFrom(volume_xml(name, size_gib), original, 0).path()
