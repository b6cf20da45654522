"""Backups of a running domain's first disk: libvirt's push-mode backup jobs into a volume of the host's pool, full or
incremental from a checkpoint (a dirty bitmap in the qcow2 disk), each leaving a checkpoint for the next."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

from hosts.hypervisor import connections
from hosts.hypervisor.connections import HypervisorError, libvirt
from hosts.hypervisor.domain_xml import backup_xml, checkpoint_xml


def checkpoints(uri: str, domain_uuid: str) -> list[str]:
    """The names of the domain's checkpoints."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        return [checkpoint.getName() for checkpoint in dom.listAllCheckpoints(0)]


def _quiesce(dom: libvirt.virDomain, freeze: bool) -> bool:
    """Freeze (or thaw) the guest's file systems through its agent; False where it has none that answers."""
    try:
        (dom.fsFreeze if freeze else dom.fsThaw)(None, 0)
        return True
    except libvirt.libvirtError:
        return False


def back_up(uri: str, domain_uuid: str, *, target: str, checkpoint: str, incremental: str = "") -> bool:
    """Copy the running domain's first disk into the qcow2 file at target (a volume made beforehand, of the disk's
    size): all of it, or what changed since the checkpoint `incremental`; a new checkpoint of that name marks the
    moment for the next one. The guest's file systems are frozen for the start where its agent answers (returns
    whether they were). Waits for the job; raises with its error."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        disks = [t.get("dev") for t in ET.fromstring(dom.XMLDesc(0)).findall("devices/disk/target")]
        if dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:  # a job an earlier attempt began (its worker died)
            dom.abortJob()
        for stale in dom.listAllCheckpoints(0):  # that attempt's checkpoint, if it got as far
            if stale.getName() == checkpoint:
                stale.delete(0)
        frozen = _quiesce(dom, True)
        try:
            dom.backupBegin(backup_xml(disks, target, incremental), checkpoint_xml(checkpoint, disks),
                            libvirt.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL)
        finally:
            if frozen:
                _quiesce(dom, False)
        while dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            time.sleep(0.1)
        done = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        if done.get("type") != libvirt.VIR_DOMAIN_JOB_COMPLETED:
            raise HypervisorError(f"the backup job failed: {done.get('errmsg') or 'libvirt gave no reason'}")
        return frozen


STALE = ("its disk still holds its last backup's checkpoint (a dirty bitmap), which libvirt removes only while the "
         "guest runs: start it, then stop it from the panel")


def drop_checkpoints(uri: str, domain_uuid: str, *, keep: str = "", metadata_only: bool = False) -> None:
    """Delete the domain's checkpoints but `keep` (their bitmaps with them), or forget all of them (metadata_only:
    their disk was replaced, its bitmaps with it). libvirt deletes a checkpoint only while the domain runs: a
    stopped one that still has some is refused with the reason."""
    dom = connections.domain(uri, domain_uuid)
    flags = libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY if metadata_only else 0
    with connections.errors(uri):
        dropped = [c for c in dom.listAllCheckpoints(0) if c.getName() != keep]
        if dropped and not metadata_only and not dom.isActive():
            raise HypervisorError(STALE)
        for checkpoint in dropped:
            checkpoint.delete(flags)
