"""Moving a domain to another host: live (QEMU's migration, its writable disks copied along over NBD) or cold (a
stopped domain's volumes copied through libvirt's streams, then its definition)."""

from __future__ import annotations

import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from hosts.hypervisor import connections
from hosts.hypervisor.connections import DomainNotFound, HypervisorError, libvirt
from hosts.hypervisor.domain_xml import raw_volume_xml
from hosts.hypervisor.storage import delete_volume

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class DomainFile:
    """A file the domain's definition names: a disk or CD-ROM (with its device name), or the kernel or initrd."""

    role: str  # "disk", "cdrom", "kernel" or "initrd"
    path: str
    device: str = ""  # vda, sdb… (disks and CD-ROMs)
    pool: str = ""  # the storage pool holding it, and its name there ("" when no pool does)
    volume: str = ""
    capacity: int = 0  # bytes the guest sees (volumes of a pool)
    backing: str = ""  # the file it is a copy-on-write overlay of, if any
    backing_volume: str = ""  # that file's name in its pool ("" when no pool holds it)


@dataclass(frozen=True)
class MigrationProgress:
    """What libvirt's job statistics say of a migration in flight (bytes; None where the driver does not say)."""

    elapsed_ms: int = 0
    data_total: int | None = None
    data_processed: int | None = None
    data_remaining: int | None = None
    disk_total: int | None = None
    disk_remaining: int | None = None
    downtime_ms: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _backing(conn: libvirt.virConnect, volume: libvirt.virStorageVol) -> tuple[str, str]:
    """The path of the file the volume is an overlay of ("" if none), and its name in its pool (if one holds it)."""
    path = ET.fromstring(volume.XMLDesc(0)).findtext("backingStore/path") or ""
    if not path:
        return "", ""
    try:
        return path, conn.storageVolLookupByPath(path).name()
    except libvirt.libvirtError:
        return path, ""


def domain_files(uri: str, domain_uuid: str) -> list[DomainFile]:
    """Every file the domain's persistent definition names, each with the pool volume it is (if any)."""
    dom = connections.domain(uri, domain_uuid)
    conn = connections.connection(uri)
    found: list[DomainFile] = []
    with connections.errors(uri):
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        named = [(role, root.findtext(f"os/{role}") or "", "") for role in ("kernel", "initrd")]
        for disk in root.findall("devices/disk"):
            source = disk.find("source")
            path = source.get("file") if source is not None else None
            if source is not None and not path:  # a block device, a pool volume, a network disk: not brought along
                path = f"({disk.get('type', 'unknown')} disk {' '.join(source.attrib.values())[:200]})"
            named.append((disk.get("device", "disk"), path or "", disk.find("target").get("dev", "")))
        for role, path, device in named:
            if not path:
                continue
            try:
                volume = conn.storageVolLookupByPath(path)
            except libvirt.libvirtError:
                found.append(DomainFile(role=role, path=path, device=device))
                continue
            backing, backing_volume = _backing(conn, volume)
            found.append(DomainFile(role=role, path=path, device=device, pool=volume.storagePoolLookupByVolume()
                                    .name(), volume=volume.name(), capacity=volume.info()[1], backing=backing,
                                    backing_volume=backing_volume))
    return found


def _moved_xml(xml: str, paths: Mapping[str, str]) -> str:
    """The definition with each file path replaced by its path on the target host."""
    root = ET.fromstring(xml)
    for role in ("kernel", "initrd"):
        element = root.find(f"os/{role}")
        if element is not None and element.text in paths:
            element.text = paths[element.text]
    for source in root.findall("devices/disk/source"):
        if source.get("file") in paths:
            source.set("file", paths[source.get("file")])
    for disk in root.findall("devices/disk"):  # the target reads each chain again from its files
        for store in disk.findall("backingStore"):
            disk.remove(store)
    return ET.tostring(root, encoding="unicode")


def _moved_snapshot(xml: str, paths: Mapping[str, str]) -> str:
    """A snapshot's record with the files of its domain, and of its disks, at their paths on the target host."""
    root = ET.fromstring(xml)
    domain = root.find("domain")
    if domain is not None:
        root.insert(list(root).index(domain), ET.fromstring(_moved_xml(ET.tostring(domain, encoding="unicode"),
                                                                        paths)))
        root.remove(domain)
    for source in root.findall("disks/disk/source"):
        if source.get("file") in paths:
            source.set("file", paths[source.get("file")])
    return ET.tostring(root, encoding="unicode")


@dataclass(frozen=True)
class GuestCpu:
    """What a running guest's CPU asks of a host: its <cpu> as its migratable definition has it, with its
    architecture, machine and domain type; for a host-passthrough CPU, its host's own <cpu> instead (host_cpu)."""

    cpu: str  # ("" for a host-passthrough CPU)
    arch: str
    machine: str
    virt_type: str
    host_cpu: str = ""  # (a host-passthrough CPU: its host's, if libvirt tells it)


def guest_cpu(uri: str, domain_uuid: str) -> GuestCpu | None:
    """The running guest's CPU (None: the hypervisor's default CPU, which every host of the same hypervisor gives)."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE))
    cpu, os_type = root.find("cpu"), root.find("os/type")
    if cpu is None or os_type is None:
        return None
    guest, host_cpu = ET.tostring(cpu, encoding="unicode"), ""
    if cpu.get("mode") == "host-passthrough":
        with connections.errors(uri):
            found = ET.fromstring(connections.connection(uri).getCapabilities()).find("host/cpu")
        guest, host_cpu = "", ET.tostring(found, encoding="unicode") if found is not None else ""
    return GuestCpu(cpu=guest, arch=os_type.get("arch", ""), machine=os_type.get("machine", ""),
                    virt_type=root.get("type", ""), host_cpu=host_cpu)


def cpu_refusal(uri: str, need: GuestCpu) -> str | None:
    """Why the host cannot go on running a guest with this CPU, or None: compared by its libvirt with what its
    hypervisor (KVM or TCG) offers there; a host-passthrough CPU with the host's own."""
    conn = connections.connection(uri)
    flags = libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE
    try:
        if need.host_cpu:
            conn.compareCPU(need.host_cpu, flags)
        elif need.cpu:
            conn.compareHypervisorCPU(None, need.arch or None, need.machine or None, need.virt_type or None,
                                      need.cpu, flags)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_CPU_INCOMPATIBLE:
            return f"the guest's CPU is not one the target host can give it: {exc.get_error_message()}"
        with connections.errors(uri):
            raise
    return None


def defined(uri: str, domain_uuid: str) -> bool:
    """Whether the domain is defined (or runs) on the host now."""
    try:
        dom = connections.domain(uri, domain_uuid)
    except DomainNotFound:
        return False
    with connections.errors(uri):
        return bool(dom.isPersistent() or dom.isActive())


def _job(dom: libvirt.virDomain, started: float) -> MigrationProgress | None:
    """The migration job's statistics, or None when no job runs."""
    try:
        stats = dom.jobStats(0)
    except libvirt.libvirtError:
        return None
    if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
        return None
    return MigrationProgress(
        elapsed_ms=stats.get("time_elapsed", int((time.monotonic() - started) * 1000)),
        data_total=stats.get("data_total"), data_processed=stats.get("data_processed"),
        data_remaining=stats.get("data_remaining"), disk_total=stats.get("disk_total"),
        disk_remaining=stats.get("disk_remaining"), downtime_ms=stats.get("downtime"))


def migrating(uri: str, domain_uuid: str) -> bool:
    """Whether a job (a migration left by an earlier attempt, say) runs on the domain now."""
    try:
        dom = connections.domain(uri, domain_uuid)
    except DomainNotFound:
        return False
    return _job(dom, time.monotonic()) is not None


@contextmanager
def pool_marker(uri: str, pool: str) -> Iterator[str]:
    """An empty marker volume in the pool while the block runs, by its name: looked for in another host's pool
    (holds_volume), it shows whether the two are one storage (an NFS export both mount, say). Removed after, as far
    as the host lets it go."""
    marker = f"cp-marker-{uuid.uuid4()}"
    with connections.errors(uri):
        connections.connection(uri).storagePoolLookupByName(pool).createXML(raw_volume_xml(marker, 0), 0)
    try:
        yield marker
    finally:
        with suppress(HypervisorError):
            delete_volume(uri, pool, marker)


def holds_volume(uri: str, pool: str, name: str) -> bool:
    """Whether the pool (read again from its storage) holds a volume of that name."""
    with connections.errors(uri):
        storage = connections.connection(uri).storagePoolLookupByName(pool)
        storage.refresh(0)
        return name in storage.listVolumes()


def abort_job(uri: str, domain_uuid: str) -> None:
    """Stop the job running on the domain (a migration left by an earlier attempt); none running counts as done."""
    with suppress(DomainNotFound):
        dom = connections.domain(uri, domain_uuid)
        with suppress(libvirt.libvirtError):
            dom.abortJob()


def migrate_live(uri: str, domain_uuid: str, *, target_uri: str, paths: Mapping[str, str], copy: Sequence[str],
                 watch: Callable[[MigrationProgress], bool], bandwidth_mib: int = 0) -> None:
    """Move the running (or paused) domain to the target host while it runs: its memory and the writable disks named
    in `copy` (by device; their volumes made on the target beforehand) go over; `paths` gives each file's path on the
    target. The source's libvirtd talks to the target's by target_uri, so that must be an address it can reach.
    watch(progress) is called every half second; it returning False cancels the migration (the guest stays on the
    source). bandwidth_mib: at most so many MiB/s (0: as fast as it goes)."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        xml = _moved_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE), paths)
    # (auto-converge: a guest that dirties memory faster than the link copies it is slowed until it converges)
    flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
             | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
             | libvirt.VIR_MIGRATE_AUTO_CONVERGE)
    params: dict[str, object] = {libvirt.VIR_MIGRATE_PARAM_DEST_XML: xml}
    if bandwidth_mib:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = bandwidth_mib
    if copy:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC  # the disks' own layers: their images are on the target
        params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(copy)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            with connections.errors(uri):
                dom.migrateToURI3(target_uri, params, flags)
            outcome.append(None)
        except BaseException as exc:  # handed to the waiting thread
            outcome.append(exc)

    worker = threading.Thread(target=run, name=f"migrate-{domain_uuid}", daemon=True)
    started = time.monotonic()
    worker.start()
    cancelled = False
    try:
        while worker.is_alive():
            worker.join(POLL_SECONDS)
            progress = _job(dom, started)
            if progress is not None and not watch(progress) and not cancelled:
                cancelled = True
                with suppress(libvirt.libvirtError):
                    dom.abortJob()
    except BaseException:  # the watcher failed: the migration stops, and has stopped when this returns
        with suppress(libvirt.libvirtError):
            dom.abortJob()
        worker.join()
        raise
    if outcome and outcome[0] is not None:
        if cancelled:
            raise HypervisorError("the migration was cancelled: the guest stays on its host") from None
        raise outcome[0]


def copy_volume(uri: str, pool: str, name: str, *, target_uri: str, target_pool: str,
                beat: Callable[[], object] | None = None) -> str:
    """Copy a volume byte for byte (a qcow2 file with its snapshots and the path of its backing file) into the target
    host's pool under the same name, through libvirt's streams; one left there by an earlier attempt is replaced.
    Returns its path on the target."""
    conn, target = connections.connection(uri), connections.connection(target_uri)
    with connections.errors(uri):
        source = conn.storagePoolLookupByName(pool).storageVolLookupByName(name)
        length = source.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]  # the file's length: what a download sends
    with connections.errors(target_uri):
        storage = target.storagePoolLookupByName(target_pool)
        with suppress(libvirt.libvirtError):
            storage.storageVolLookupByName(name).delete(0)
        volume = storage.createXML(raw_volume_xml(name, length), 0)  # its format is read from its header
    down, up = conn.newStream(0), target.newStream(0)
    try:
        with connections.errors(uri):
            source.download(down, 0, 0, 0)
        with connections.errors(target_uri):
            volume.upload(up, 0, 0, 0)
        last = time.monotonic()
        while True:
            with connections.errors(uri):
                block = down.recv(1 << 20)
            if not block:
                break
            with connections.errors(target_uri):
                sent = 0
                while sent < len(block):
                    sent += up.send(block[sent:])
            if beat is not None and time.monotonic() - last > 10:
                beat()
                last = time.monotonic()
        with connections.errors(uri):
            down.finish()
        with connections.errors(target_uri):
            up.finish()
    except BaseException:
        for stream in (down, up):
            with suppress(libvirt.libvirtError):
                stream.abort()
        with suppress(libvirt.libvirtError):
            volume.delete(0)
        raise
    return volume.path()


@dataclass(frozen=True)
class MovedDefinition:
    """A stopped domain's definition and its snapshots' records (with whether each is the current one), their files
    at their paths on the target host."""

    xml: str
    snapshots: list[tuple[str, bool]]


def moved_definition(uri: str, domain_uuid: str, *, paths: Mapping[str, str]) -> MovedDefinition:
    """The stopped domain's definition as the target host is to have it (paths: each file's path there)."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        if dom.isActive():
            raise HypervisorError("the domain runs: a cold migration moves only a stopped one")
        xml = _moved_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
                                     | libvirt.VIR_DOMAIN_XML_MIGRATABLE), paths)
        snapshots = [(_moved_snapshot(snap.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE), paths),
                      bool(snap.isCurrent()))
                     for snap in dom.listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)]
    return MovedDefinition(xml=xml, snapshots=snapshots)


def define_moved(uri: str, moved: MovedDefinition) -> None:
    """Define a moved domain on this host, with its snapshots' records (those it has already are kept)."""
    conn = connections.connection(uri)
    with connections.errors(uri):
        domain = conn.defineXML(moved.xml)
        known = set(domain.snapshotListNames(0))
        for snapshot, current in moved.snapshots:
            if ET.fromstring(snapshot).findtext("name") in known:
                continue
            flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
            if current:
                flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
            domain.snapshotCreateXML(snapshot, flags)
