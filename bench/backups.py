"""Backups of a real guest's 1 GiB disk: full, then incremental after the guest wrote 64 MiB, in time and bytes
stored, against libvirt's backup job alone.

A real QEMU guest (the tiny guest, TCG, 128 MiB) runs on qemu:///system with the panel's own definition and a
qcow2 disk holding 1 GiB of random data. Raw: one push-mode job (virDomainBackupBegin) into a volume of the pool,
timed until it completes. Through the panel: instances.backups.take → the operation's task (run in this process):
the job, the copy read back through libvirt's stream into the backup store, until the action has succeeded. Then the
guest writes 64 MiB over its disk (through its serial console) and the panel backs it up again, incrementally.
Targets: a full backup takes at most 3× the job alone (it also reads the copy back); the incremental one stores at
most a quarter of the full one's bytes and takes less time.
Run: DATABASE_URL=... CLOUDPANEL_GUEST_DIR=.cache/guest .venv/bin/python bench/backups.py
"""

import os
import subprocess
import tempfile
import time
from pathlib import Path

STORE = tempfile.TemporaryDirectory(prefix="bench-backups-")
os.environ["CLOUDPANEL_TASKS_EAGER"] = "1"
os.environ["CLOUDPANEL_BACKUP_DIR"] = STORE.name

from common import ROOT, print_table, record, setup_django  # noqa: E402

setup_django()

from django.contrib.auth import get_user_model  # noqa: E402

from hosts import hypervisor  # noqa: E402
from hosts import services as host_services  # noqa: E402
from hosts.hypervisor.domain_xml import domain_xml  # noqa: E402
from instances import backups  # noqa: E402
from instances.choices import ActionStatus, BootSource, Status  # noqa: E402
from instances.models import Backup, Instance, InstanceAction  # noqa: E402
from tenants.models import Tenant  # noqa: E402

URI = "qemu:///system"
GUEST = Path(os.environ.get("CLOUDPANEL_GUEST_DIR", ROOT / ".cache/guest")).resolve()
GIB, MIB = 1 << 30, 1 << 20
libvirt = hypervisor.connections.libvirt


def raw_job(dom) -> float:
    """libvirt's push-mode job alone, into a volume of the pool; its checkpoint dropped again."""
    path = hypervisor.create_volume(URI, "default", "bench-raw-backup.qcow2", 1)
    try:
        start = time.perf_counter()
        hypervisor.back_up(URI, dom.UUIDString(), target=path, checkpoint="bench-raw")
        return time.perf_counter() - start
    finally:
        hypervisor.delete_volume(URI, "default", "bench-raw-backup.qcow2")
        hypervisor.drop_checkpoints(URI, dom.UUIDString())


def panel(instance: Instance, user) -> tuple[float, Backup]:
    instance.refresh_from_db()
    start = time.perf_counter()
    action = backups.take(instance=instance, user=user)
    took = time.perf_counter() - start
    action = InstanceAction.objects.get(pk=action.pk)
    if action.status != ActionStatus.SUCCEEDED:
        raise SystemExit(f"the panel's backup failed: {action.error}")
    return took, Backup.objects.get(pk=action.backup_id)


def type_into(dom, line: str, wait: float) -> None:
    """Type a line on the guest's serial console and give it time to run."""
    stream = dom.connect().newStream(0)
    dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    stream.send(f"\n{line}\n".encode())
    time.sleep(wait)
    stream.finish()


def main() -> None:
    user = get_user_model().objects.create_user(username="bench-backup")
    tenant = Tenant.objects.create(name="bench-backup")
    host = host_services.register_host(name="bench-qemu-backup", uri=URI, accelerator="tcg", storage_pool="default")
    instance = Instance.objects.create(tenant=tenant, host=host, name="kept", vcpus=1, memory_mib=128, disk_gib=1,
                                       boot_source=BootSource.KERNEL, status=Status.RUNNING)
    with tempfile.TemporaryDirectory() as scratch:  # 1 GiB of data, as the instance's qcow2 volume in the pool
        data = Path(scratch) / "data.raw"
        subprocess.run(["dd", "if=/dev/urandom", f"of={data}", "bs=4M", f"count={GIB // (4 * MIB)}", "status=none"],
                       check=True)
        path = hypervisor.create_volume(URI, "default", instance.volume_name, 1)
        subprocess.run(["qemu-img", "convert", "-n", "-O", "qcow2", str(data), path], check=True)
    spec = hypervisor.DomainSpec(name=instance.domain_name, uuid=str(instance.uuid), vcpus=1, memory_mib=128,
                                 kernel=str(GUEST / "vmlinuz"), initrd=str(GUEST / "initrd.img"), disk_path=path)
    dom = hypervisor.connection(URI).defineXML(domain_xml("qemu", spec))
    try:
        dom.create()
        time.sleep(3)
        job = raw_job(dom)
        full_time, full = panel(instance, user)
        type_into(dom, "dd if=/dev/urandom of=/dev/vda bs=1M count=64 seek=256 conv=fsync 2>/dev/null", 20)
        incremental_time, incremental = panel(instance, user)
        if incremental.parent_id != full.pk:
            raise SystemExit("the second backup was not incremental over the first")
    finally:
        if dom.isActive():
            dom.destroy()
        hypervisor.undefine(URI, str(instance.uuid))
        hypervisor.delete_volume(URI, "default", instance.volume_name)
        STORE.cleanup()
    print_table("Backups of a 1 GiB qcow2 disk of a running guest", ["what", "seconds", "MiB stored"], [
        ["libvirt's push-mode job alone", job, "—"],
        ["CloudPanel, full", full_time, full.stored_bytes / MIB],
        ["CloudPanel, incremental after 64 MiB written", incremental_time, incremental.stored_bytes / MIB]])
    record("backup of a 1 GiB disk, full, running guest (s)", full_time,
           f"libvirt's job alone {job:.2f} s; {full.stored_bytes / MIB:.0f} MiB stored", "<= 3x the job alone",
           full_time <= 3 * job)
    record("backup of a 1 GiB disk, incremental after 64 MiB written (MiB stored)", incremental.stored_bytes / MIB,
           f"full: {full.stored_bytes / MIB:.0f} MiB", "<= 25% of the full one",
           incremental.stored_bytes <= full.stored_bytes / 4)
    record("backup of a 1 GiB disk, incremental after 64 MiB written (s)", incremental_time,
           f"full: {full_time:.2f} s", "< the full one", incremental_time < full_time)


if __name__ == "__main__":
    main()
