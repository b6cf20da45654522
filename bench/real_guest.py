"""A real QEMU guest, create → shell prompt: the panel's whole path against raw libvirt-python, in the same run.

Both boot the tiny guest (scripts/build-test-guest.sh: a Debian kernel and a busybox initrd that prints
"cloudpanel-guest ready", then a root shell on the serial console) with 1 vCPU and 256 MiB under TCG on
qemu:///system. Raw: defineXML of the smallest domain a libvirt user would write for the same guest (direct kernel
boot, a serial console and ACPI, without which a guest cannot be shut down by its power button) + create; the same
without ACPI is printed too. Panel: the REST API (a platform admin booting the kernel by its path, which the host
allows) → PostgreSQL → Celery on Redis → a `celery worker` process → libvirt. Each clock stops when the guest's serial
console, opened as soon as the domain runs, shows the prompt. Alternating runs; the p50 of each is compared.
Target: panel / raw <= 1.2.
Run: DATABASE_URL=... REDIS_URL=redis://127.0.0.1:6379/0 CLOUDPANEL_GUEST_DIR=.cache/guest .venv/bin/python \
bench/real_guest.py
"""

import os
import re
import statistics
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from contextlib import suppress
from pathlib import Path

from common import ROOT, print_table, record, setup_django

QUEUE = f"bench-guest-{uuid.uuid4().hex[:6]}"
os.environ["CLOUDPANEL_TASK_QUEUE"] = QUEUE
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
setup_django()

from django.contrib.auth import get_user_model  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from hosts import hypervisor  # noqa: E402
from hosts import services as host_services  # noqa: E402
from hosts.hypervisor.connections import libvirt  # noqa: E402  (the module, loaded where the panel loads it)
from instances.models import Instance  # noqa: E402
from tenants.models import Tenant  # noqa: E402
from tenants.services import create_api_token  # noqa: E402

URI = "qemu:///system"
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
GUEST = Path(os.environ.get("CLOUDPANEL_GUEST_DIR", ROOT / ".cache/guest")).resolve()
PROMPT = re.compile(rb"cloudpanel-guest ready[\s\S]*# ")


def raw_xml(name: str, acpi: bool) -> str:
    """The smallest domain for the guest: direct kernel boot, a serial console (and ACPI, for a shutdown by the
    power button: the panel's Shut down)."""
    root = ET.Element("domain", type="qemu")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "memory", unit="MiB").text = "256"
    ET.SubElement(root, "vcpu").text = "1"
    os_el = ET.SubElement(root, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(GUEST / "vmlinuz")
    ET.SubElement(os_el, "initrd").text = str(GUEST / "initrd.img")
    ET.SubElement(os_el, "cmdline").text = "console=ttyS0"
    if acpi:
        ET.SubElement(ET.SubElement(root, "features"), "acpi")
    devices = ET.SubElement(root, "devices")
    ET.SubElement(ET.SubElement(devices, "serial", type="pty"), "target", port="0")
    return ET.tostring(root, encoding="unicode")


def until_prompt(conn: libvirt.virConnect, domain_uuid: str, timeout: float = 120) -> float:
    """Open the domain's serial console and read it until the prompt; the time it showed."""
    dom = conn.lookupByUUIDString(domain_uuid)
    stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
    dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    seen, deadline = b"", time.monotonic() + timeout
    try:
        while not PROMPT.search(seen):
            if time.monotonic() > deadline:
                raise SystemExit(f"no prompt within {timeout:.0f} s; the console said: {seen[-400:]!r}")
            chunk = stream.recv(4096)  # -2: nothing yet
            if isinstance(chunk, int) or not chunk:
                time.sleep(0.01)
                continue
            seen += chunk
        return time.perf_counter()
    finally:
        stream.abort()


def raw(conn: libvirt.virConnect, acpi: bool = True) -> float:
    start = time.perf_counter()
    dom = conn.defineXML(raw_xml(f"raw-guest-{uuid.uuid4().hex[:8]}", acpi))
    try:
        dom.create()
        return until_prompt(conn, dom.UUIDString()) - start
    finally:
        dom.destroy()
        dom.undefine()


def panel(conn: libvirt.virConnect, api: APIClient, tenant: Tenant) -> float:
    start = time.perf_counter()
    response = api.post("/api/v1/instances/", {
        "name": f"guest-{uuid.uuid4().hex[:8]}", "tenant": tenant.pk, "vcpus": 1, "memory_mib": 256,
        "boot_source": "kernel", "kernel": str(GUEST / "vmlinuz"), "initrd": str(GUEST / "initrd.img"),
        "cmdline": "console=ttyS0"}, format="json")
    assert response.status_code == 202, response.content
    instance_id = response.json()["instance"]
    deadline = time.monotonic() + 60
    while (instance := Instance.objects.get(pk=instance_id)).status != "running":
        if instance.status == "error" or time.monotonic() > deadline:
            raise SystemExit(f"the panel's guest did not start: {instance.status_reason}")
        time.sleep(0.01)
    try:
        return until_prompt(conn, str(instance.uuid)) - start
    finally:
        hypervisor.undefine(URI, str(instance.uuid))


def main() -> None:
    for name in ("vmlinuz", "initrd.img"):
        if not (GUEST / name).exists():
            raise SystemExit(f"{GUEST / name} is missing: run scripts/build-test-guest.sh {GUEST}")
    user, _ = get_user_model().objects.get_or_create(username="bench-admin", defaults={"is_staff": True})
    tenant, _ = Tenant.objects.get_or_create(name="bench")
    host = host_services.register_host(name="bench-qemu", uri=URI, accelerator="tcg", storage_pool="default")
    host_services.record_probe(host_id=host.pk, info=hypervisor.probe(URI))
    host.allowed_paths = str(GUEST)
    host.save(update_fields=["allowed_paths"])
    _token, key = create_api_token(user=user, name="bench", tenant=None)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "cloudpanel", "worker", "--pool", "threads", "-c", "2", "-Q", QUEUE,
         "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=dict(os.environ), stdout=sys.stderr, stderr=sys.stderr)
    conn = hypervisor.connection(URI)  # a plain virConnect, opened and cached: the raw path's too
    times: dict[str, list[float]] = {"raw": [], "panel": [], "bare": []}
    try:
        time.sleep(3)  # let the worker connect
        raw(conn)  # warm-up: the files in the page cache, QEMU's binary too
        for _ in range(RUNS):
            times["raw"].append(raw(conn))
            times["panel"].append(panel(conn, api, tenant))
            times["bare"].append(raw(conn, acpi=False))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        for instance in Instance.objects.all():
            with suppress(hypervisor.HypervisorError):
                hypervisor.undefine(URI, str(instance.uuid))
    raw_p50, panel_p50, bare_p50 = (statistics.median(times[path]) for path in ("raw", "panel", "bare"))
    print_table(f"Real QEMU guest (TCG), create → shell prompt, {RUNS} runs each (s)",
                ["path", "p50", "runs"],
                [["raw libvirt-python, without ACPI (no power-button shutdown)", bare_p50,
                  " ".join(f"{t:.2f}" for t in times["bare"])],
                 ["raw libvirt-python: defineXML + create", raw_p50, " ".join(f"{t:.2f}" for t in times["raw"])],
                 ["CloudPanel: API → Redis → worker → libvirt", panel_p50,
                  " ".join(f"{t:.2f}" for t in times["panel"])],
                 ["panel / raw (target <= 1.2)", panel_p50 / raw_p50, ""]])
    record("real QEMU guest create → prompt, panel / raw", panel_p50 / raw_p50,
           f"raw libvirt-python p50 {raw_p50:.2f} s, panel {panel_p50:.2f} s", "<= 1.2", panel_p50 / raw_p50 <= 1.2)


if __name__ == "__main__":
    main()
