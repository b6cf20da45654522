"""Control-plane overhead: create + start 200 instances through the whole path vs raw libvirt-python.

Whole path: the REST API (Django test client, in-process, no network) → PostgreSQL →
Celery on Redis → a `celery worker` process → libvirt (libvirtd's shared test driver,
test+unix:///default) → PostgreSQL → the Channels group on Redis, where a client
subscribed like the status websocket consumer receives the "running" message.
Baseline, in the same run: a raw libvirt-python loop doing defineXML + create on the
same driver. Latency is measured one instance at a time; throughput by queuing all
200 at once and waiting for the last "running" message.
Targets: p50 overhead <= 25 ms per instance, >= 50 creates/s. The one-at-a-time creates are also split into their
steps (bench/steps.py wraps the functions of each step, in this process and in the worker's), printed with each
step's p50 and share of the whole.
Run: DATABASE_URL=... REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/control_plane.py
"""

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import steps
from common import ROOT, print_table, record, setup_django, summary

QUEUE = f"bench-{uuid.uuid4().hex[:6]}"
os.environ["CLOUDPANEL_TASK_QUEUE"] = QUEUE
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
_fd, os.environ["BENCH_STEPS"] = tempfile.mkstemp(prefix="cloudpanel-steps-", suffix=".jsonl")
os.close(_fd)
setup_django()
for _step in steps.API_STEPS:
    steps.wrap(*_step)

from channels.layers import get_channel_layer  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from hosts import hypervisor  # noqa: E402
from hosts.hypervisor import domain_xml  # noqa: E402
from hosts.models import Host  # noqa: E402
from instances.models import Instance  # noqa: E402
from tenants.models import Tenant  # noqa: E402
from tenants.quotas import RESOURCES  # noqa: E402
from tenants.services import create_api_token, set_quota  # noqa: E402

URI = "test+unix:///default"
COUNT = int(os.environ.get("BENCH_COUNT", "200"))


def raw_libvirt() -> list[float]:
    # A plain libvirt-python virConnect (hypervisor.connection only opens and caches it).
    conn = hypervisor.connection(URI)
    times, made = [], []
    for _ in range(COUNT):
        spec = hypervisor.DomainSpec(name=f"raw-{uuid.uuid4()}", uuid=str(uuid.uuid4()), vcpus=1, memory_mib=64)
        start = time.perf_counter()
        dom = conn.defineXML(domain_xml.domain_xml(hypervisor.Technology.TEST, spec))
        dom.create()
        times.append(time.perf_counter() - start)
        made.append(dom)
    for dom in made:
        dom.destroy()
        dom.undefine()
    return times


def breakdown(windows: list[tuple[float, float, float]]) -> list[tuple[str, float]]:
    """Each step's p50 (ms) over the one-at-a-time creates, from their windows (request sent, answered, "running"
    received) and the steps recorded in this process and the worker's. Steps inside another are given without it."""
    with open(os.environ["BENCH_STEPS"]) as recorded:
        worker = [json.loads(line) for line in recorded]
    times: dict[str, list[float]] = {}
    for sent, answered, running in windows:
        def within(step: str, records: list[dict], after: float, before: float) -> dict:
            return next(r for r in records if r["step"] == step and after <= r["start"] <= before)

        api = {name: within(name, steps.RECORDED, sent, answered) for name in ("quota", "placement", "broker check",
                                                                            "publish")}
        task = {name: within(name, worker, sent, running) for name in ("task", "claim", "prepare", "libvirt",
                                                                          "finish")}
        took = {name: (r["end"] - r["start"]) * 1000 for name, r in {**api, **task}.items()}
        parts = {
            "API: request handling (rest)": (answered - sent) * 1000 - sum(took[n] for n in api),
            **{f"API: {name}": took[name] for name in api},
            "queue: publish → task starts": (task["task"]["start"] - api["publish"]["end"]) * 1000,
            "task: claim the action": took["claim"],
            "task: prepare the domain (rest)": took["prepare"] - took["libvirt"],
            "task: libvirt define + start": took["libvirt"],
            "task: finish the action": took["finish"],
            "task: other": took["task"] - took["claim"] - took["prepare"] - took["finish"],
            "event: finish → 'running' received": (running - task["finish"]["end"]) * 1000,
        }
        for name, value in parts.items():
            times.setdefault(name, []).append(value)
    return [(name, statistics.median(values)) for name, values in times.items()]


async def panel(api: APIClient, tenant_id: int) -> tuple[list[float], float, list[tuple[float, float, float]]]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("admin", channel)
    running: dict[int, float] = {}
    received: dict[int, float] = {}  # wall clock, to compare with the recorded steps
    arrived = asyncio.Event()

    async def listen() -> None:
        while True:
            message = await layer.receive(channel)
            payload = message["payload"]
            if payload.get("type") == "instance" and payload["status"] == "running":
                running.setdefault(payload["id"], time.perf_counter())
                received.setdefault(payload["id"], time.time())
                arrived.set()

    listener = asyncio.create_task(listen())
    loop = asyncio.get_running_loop()

    def post(name: str) -> int:
        response = api.post("/api/v1/instances/", {"name": name, "tenant": tenant_id, "vcpus": 1, "memory_mib": 64,
                                                  "kernel": "/boot/vmlinuz"},
                            format="json")
        assert response.status_code == 202, response.content
        return response.json()["instance"]

    async def wait(ids: list[int], timeout: float = 120) -> None:
        deadline = time.perf_counter() + timeout
        while not all(i in running for i in ids):
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), timeout=deadline - time.perf_counter())
            except TimeoutError:
                raise RuntimeError(f"only {sum(i in running for i in ids)} of {len(ids)} reached running") from None

    latencies, windows = [], []
    for i in range(COUNT):
        start, sent = time.perf_counter(), time.time()
        instance_id = await loop.run_in_executor(None, post, f"seq-{i}")
        answered = time.time()
        await wait([instance_id])
        latencies.append(running[instance_id] - start)
        windows.append((sent, answered, received[instance_id]))
    start = time.perf_counter()
    ids = [await loop.run_in_executor(None, post, f"burst-{i}") for i in range(COUNT)]
    await wait(ids)
    burst = time.perf_counter() - start
    listener.cancel()
    await layer.group_discard("admin", channel)
    return latencies, burst, windows


def main() -> None:
    user, _ = get_user_model().objects.get_or_create(username="bench-admin", defaults={"is_staff": True})
    tenant, _ = Tenant.objects.get_or_create(name="bench")
    set_quota(tenant=tenant, limits={r.key: None for r in RESOURCES})  # 200 instances: no quota in the way
    Instance.objects.all().delete()
    Host.objects.all().delete()
    # The admin boots a kernel by its path on the host, which the host allows (no image copy on the way).
    Host.objects.create(name="bench-test", uri=URI, technology="test", state="online", cpus=10_000,
                        memory_mib=10_000_000, storage_pool="default-pool", allowed_paths="/boot")
    _token, key = create_api_token(user=user, name="bench", tenant=None)  # staff: platform-wide
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    worker = subprocess.Popen(
        [sys.executable, "bench/steps.py", "worker", "--pool", "threads", "-c", "4", "-Q", QUEUE,
         "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=dict(os.environ), stdout=sys.stderr,  # its banner is not a measure
    )
    try:
        time.sleep(3)  # let the worker connect
        raw = raw_libvirt()
        latencies, burst, windows = asyncio.run(panel(api, tenant.pk))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        conn = hypervisor.connection(URI)
        uuids = set(Instance.objects.values_list("uuid", flat=True))
        for dom in conn.listAllDomains():
            if uuid.UUID(dom.UUIDString()) in uuids:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        Instance.objects.all().delete()
        Host.objects.all().delete()
    parts = breakdown(windows)
    os.unlink(os.environ["BENCH_STEPS"])
    raw_p50, raw_p95, _ = summary(raw)
    p50, p95, _ = summary(latencies)
    print_table(
        f"Create + start, {COUNT} instances, one at a time (ms per instance)",
        ["path", "p50", "p95"],
        [["raw libvirt-python (defineXML + create)", raw_p50, raw_p95],
         ["CloudPanel: API → Redis → worker → libvirt → DB → channel layer", p50, p95],
         ["overhead (target p50 <= 25 ms)", p50 - raw_p50, p95 - raw_p95]],
    )
    whole = sum(value for _, value in parts)
    print_table(f"Where the time of a create goes: each step's p50 over the {COUNT} one-at-a-time creates",
                ["step", "p50 ms", "share"], [[name, value, f"{value / whole:.0%}"] for name, value in parts])
    for name, value in parts:
        record(f"create step: {name} (ms)", value, f"{value / whole:.0%} of the steps' sum {whole:.1f} ms",
               "none (reported)", True)
    print_table(f"Throughput: {COUNT} creates queued at once, until the last is running",
                ["seconds", "creates/s", "target"], [[burst, COUNT / burst, ">= 50/s"]])
    record("create + start: overhead over raw libvirt, p50 (ms)", p50 - raw_p50,
           f"raw libvirt-python p50 {raw_p50:.2f} ms", "<= 25", p50 - raw_p50 <= 25)
    record(f"creates/s, {COUNT} queued at once", COUNT / burst, "—", ">= 50", COUNT / burst >= 50)


if __name__ == "__main__":
    main()
