"""Snapshots of a real guest's 1 GiB disk: the panel's path against raw libvirt-python, in time and bytes.

A real QEMU guest (the tiny guest, TCG, 128 MiB) runs on qemu:///system with the panel's own definition and a
qcow2 disk holding 1 GiB of data. Each run takes one snapshot and deletes it again: raw, with
virDomainSnapshotCreateXML; through the panel, instances.snapshots.take → the operation's task (run in this
process) → libvirt, until the action has succeeded. Twice over: while the guest runs (disks and memory) and once it
is stopped (disks alone). Bytes: what the snapshot added to the disk's file on the host (its allocation).
Target: the panel adds at most 50 ms to a snapshot (p50).
Run: DATABASE_URL=... CLOUDPANEL_GUEST_DIR=.cache/guest .venv/bin/python bench/snapshots.py
"""

import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from common import ROOT, print_table, record, setup_django

os.environ["CLOUDPANEL_TASKS_EAGER"] = "1"
setup_django()

from django.contrib.auth import get_user_model  # noqa: E402

from hosts import hypervisor  # noqa: E402
from hosts import services as host_services  # noqa: E402
from hosts.hypervisor.domain_xml import domain_xml, snapshot_xml  # noqa: E402
from instances import snapshots  # noqa: E402
from instances.choices import ActionStatus, BootSource, Status  # noqa: E402
from instances.models import Instance, InstanceAction, Snapshot  # noqa: E402
from tenants.models import Tenant  # noqa: E402

URI = "qemu:///system"
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
GUEST = Path(os.environ.get("CLOUDPANEL_GUEST_DIR", ROOT / ".cache/guest")).resolve()
GIB = 1 << 30


def allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


def raw(dom, path: str) -> tuple[float, int]:
    before = allocated(path)
    name = f"raw-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    dom.snapshotCreateXML(snapshot_xml(name, ""), 0)
    took = time.perf_counter() - start
    grown = allocated(path) - before
    dom.snapshotLookupByName(name, 0).delete(0)
    return took, grown


def panel(instance: Instance, user, path: str) -> tuple[float, int]:
    before = allocated(path)
    instance.refresh_from_db()
    start = time.perf_counter()
    action = snapshots.take(instance=instance, name=f"s-{uuid.uuid4().hex[:8]}", user=user)
    took = time.perf_counter() - start
    action = InstanceAction.objects.get(pk=action.pk)
    if action.status != ActionStatus.SUCCEEDED:
        raise SystemExit(f"the panel's snapshot failed: {action.error}")
    grown = allocated(path) - before
    snapshot = Snapshot.objects.get(pk=action.snapshot_id)
    instance.refresh_from_db()
    snapshots.delete(instance=instance, snapshot=snapshot, user=user)
    return took, grown


def main() -> None:
    user = get_user_model().objects.create_user(username="bench-snap")
    tenant = Tenant.objects.create(name="bench-snap")
    host = host_services.register_host(name="bench-qemu", uri=URI, accelerator="tcg", storage_pool="default")
    instance = Instance.objects.create(tenant=tenant, host=host, name="snap", vcpus=1, memory_mib=128, disk_gib=1,
                                       boot_source=BootSource.KERNEL, status=Status.RUNNING)
    with tempfile.TemporaryDirectory() as scratch:  # 1 GiB of data, as a qcow2 volume of the host's pool
        data = Path(scratch) / "data.raw"
        subprocess.run(["dd", "if=/dev/urandom", f"of={data}", "bs=4M", f"count={GIB // (4 << 20)}", "status=none"],
                       check=True)
        path = hypervisor.create_volume(URI, "default", f"bench-snap-{instance.uuid}.qcow2", 1)
        subprocess.run(["qemu-img", "convert", "-n", "-O", "qcow2", str(data), path], check=True)
    spec = hypervisor.DomainSpec(name=f"bench-snap-{instance.uuid}", uuid=str(instance.uuid), vcpus=1,
                                 memory_mib=128, kernel=str(GUEST / "vmlinuz"), initrd=str(GUEST / "initrd.img"),
                                 disk_path=path)
    conn = hypervisor.connection(URI)
    dom = conn.defineXML(domain_xml("qemu", spec))
    rows, results = [], {}
    try:
        dom.create()
        time.sleep(3)
        for state in ("running", "stopped"):
            if state == "stopped":
                dom.destroy()
                Instance.objects.filter(pk=instance.pk).update(status=Status.STOPPED)
            raw(dom, path)  # warm-up
            times = {"raw": [], "panel": []}
            sizes = {"raw": [], "panel": []}
            for _ in range(RUNS):
                for kind, run in (("raw", lambda: raw(dom, path)), ("panel", lambda: panel(instance, user, path))):
                    took, grown = run()
                    times[kind].append(took)
                    sizes[kind].append(grown)
            raw_p50, panel_p50 = statistics.median(times["raw"]), statistics.median(times["panel"])
            grown = statistics.median(sizes["panel"])
            results[state] = (raw_p50, panel_p50, grown)
            holds = "disks and 128 MiB of memory" if state == "running" else "disks alone"
            rows += [[f"{state} guest ({holds}): raw libvirt-python", raw_p50 * 1000,
                      statistics.median(sizes["raw"]) / (1 << 20)],
                     [f"{state} guest ({holds}): CloudPanel", panel_p50 * 1000, grown / (1 << 20)]]
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(hypervisor.connections.libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        hypervisor.delete_volume(URI, "default", f"bench-snap-{instance.uuid}.qcow2")
    print_table(f"Snapshot of a 1 GiB qcow2 disk, {RUNS} runs each (p50)", ["path", "ms", "MiB added to the disk"],
                rows)
    for state, (raw_p50, panel_p50, grown) in results.items():
        added = (panel_p50 - raw_p50) * 1000
        record(f"snapshot of a 1 GiB disk, {state} guest: time added by the panel (ms)", added,
               f"raw libvirt {raw_p50 * 1000:.0f} ms, panel {panel_p50 * 1000:.0f} ms; "
               f"{grown / (1 << 20):.1f} MiB added to the disk", "<= 50", added <= 50)


if __name__ == "__main__":
    main()
