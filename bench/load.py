"""Load: 16 clients for 60 s of mixed reads, creates, operations and deletes against the services mode.

The services mode (scripts/run-services.sh: web, worker, beat and listener under the supervisor) runs on a
database of its own on the PostgreSQL of DATABASE_URL, with Redis from REDIS_URL and libvirtd's shared test
driver as the host. Each client, as a member of one tenant, loops: 60 % reads (instance list, one instance,
actions, networks), 15 % creates, 15 % operations on one of its instances (a 409 for a busy or unsuitable one is
an answer, not an error) and 10 % deletes. A sampler counts the panel's PostgreSQL connections every 0.1 s.
Targets: >= 150 requests/s with p95 <= 200 ms and no 5xx; the peak of the panel's connections within the
documented budget ((web processes + worker, beat and listener) x CLOUDPANEL_DB_POOL_SIZE), below PostgreSQL's
max_connections.
Run: DATABASE_URL=... REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/load.py
"""

import hashlib
import io
import json
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import suppress

from common import ROOT, cpu_seconds, percentile, print_table, record, setup_django

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "60"))
POOL_SIZE = int(os.environ.get("CLOUDPANEL_DB_POOL_SIZE", "10"))
WEB = int(os.environ.get("CLOUDPANEL_WEB_WORKERS") or min(len(os.sched_getaffinity(0)), 4))
BUDGET = (WEB + 3) * POOL_SIZE  # web processes, worker, beat, listener: each at most its pool (README, operations)
APP_NAME = f"cloudpanel-load-{uuid.uuid4().hex[:6]}"
URI = "test+unix:///default"

os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
setup_django()

from django.db import connection  # noqa: E402

from hosts.choices import HostState  # noqa: E402
from hosts.models import Host  # noqa: E402
from images.choices import CopyStatus, DiskFormat, ImageStatus, Visibility  # noqa: E402
from images.models import BootKernel, Image, ImageCopy  # noqa: E402
from instances.models import Instance  # noqa: E402
from tenants.choices import Role  # noqa: E402
from tenants.models import Tenant  # noqa: E402
from tenants.services import add_member, create_api_token, create_tenant, set_quota  # noqa: E402


def seed() -> tuple[str, int, str]:
    """A tenant with a member's token and no limits, the test-driver host, and a boot kernel already on it."""
    from django.contrib.auth import get_user_model

    from hosts import hypervisor

    tenant = Tenant.objects.filter(name="load").first() or create_tenant(name="load")
    set_quota(tenant=tenant, limits={"instances": None, "vcpus": None, "memory_mib": None, "disk_gib": None})
    user, _ = get_user_model().objects.get_or_create(username="load-member")
    if not tenant.memberships.filter(user=user).exists():
        add_member(tenant=tenant, user=user, role=Role.MEMBER)
    _, token = create_api_token(user=user, name=f"load-{uuid.uuid4().hex[:6]}", tenant=tenant, expires_at=None)
    host, _ = Host.objects.get_or_create(uri=URI, defaults={
        "name": "load-host", "technology": "test", "state": HostState.ONLINE, "cpus": 100000,
        "memory_mib": 1 << 40, "storage_pool": "default-pool"})
    data = b"load kernel"
    kernel = Image.objects.create(
        name=f"load-kernel-{uuid.uuid4().hex[:6]}", disk_format=DiskFormat.KERNEL, source_format="raw",
        visibility=Visibility.PUBLIC, status=ImageStatus.AVAILABLE, size=len(data), virtual_size=len(data),
        sha256=hashlib.sha256(data).hexdigest())
    volume = ImageCopy.volume_name(kernel)
    path = hypervisor.upload_volume(URI, host.storage_pool, volume, size=len(data), read=io.BytesIO(data).read)
    ImageCopy.objects.create(image=kernel, host=host, pool=host.storage_pool, volume=volume, path=path,
                             status=CopyStatus.AVAILABLE)
    boot = BootKernel.objects.create(name=kernel.name, kernel=kernel, visibility=Visibility.PUBLIC,
                                     cmdline="console=ttyS0")
    return token, boot.pk, volume


def clean_up(volume: str) -> None:
    """Remove what the run left on libvirtd's shared test driver and in the bench database."""
    from hosts import hypervisor

    made = Instance.objects.filter(tenant__name="load")
    for domain_uuid in made.values_list("uuid", flat=True):
        with suppress(hypervisor.HypervisorError):
            hypervisor.undefine(URI, str(domain_uuid))
    made.delete()
    with suppress(hypervisor.HypervisorError):
        hypervisor.delete_volume(URI, "default-pool", volume)


class Client(threading.Thread):
    """One user: a mix of requests until the deadline; every answer's status and time kept."""

    def __init__(self, port: int, token: str, kernel: int, deadline: float, seed_: int) -> None:
        super().__init__(daemon=True)
        self.base, self.token, self.kernel, self.deadline = f"http://127.0.0.1:{port}/api/v1", token, kernel, deadline
        self.random = random.Random(seed_)
        self.mine: list[int] = []
        self.results: list[tuple[int, float]] = []

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(self.base + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": f"Token {self.token}",
                                                  "Content-Type": "application/json"})
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                code, text = response.status, response.read()
        except urllib.error.HTTPError as exc:
            code, text = exc.code, exc.read()
        except OSError:
            code, text = 599, b""  # no answer at all: counted with the server errors
        self.results.append((code, time.perf_counter() - start))
        try:
            return code, json.loads(text or b"{}")
        except ValueError:
            return code, {}

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            roll = self.random.random()
            if roll < 0.60 or not self.mine and roll >= 0.75:
                path = self.random.choice(["/instances/?limit=50", "/actions/?limit=50", "/networks/",
                                           f"/instances/{self.mine[-1]}/" if self.mine else "/instances/"])
                self.call("GET", path)
            elif roll < 0.75:
                code, body = self.call("POST", "/instances/", {
                    "name": f"load-{uuid.uuid4().hex[:10]}", "vcpus": 1, "memory_mib": 64,
                    "boot_kernel": self.kernel})
                if code == 202:
                    self.mine.append(body["instance"])
            elif roll < 0.90:
                operation = self.random.choice(["reboot", "suspend", "resume", "poweroff", "start"])
                self.call("POST", f"/instances/{self.random.choice(self.mine)}/{operation}/")
            else:
                self.call("POST", f"/instances/{self.mine.pop(0)}/delete/")


def service_pids(env: dict) -> dict[str, list[int]]:
    """Each running service's processes: the web's worker processes (or its one process), the others' own."""
    status = subprocess.run(["scripts/services-ctl.sh", "status"], cwd=ROOT, env=env, capture_output=True,
                            text=True).stdout
    found = {}
    for line in status.splitlines():
        name, state, *rest = line.split()
        if state != "RUNNING":
            continue
        pid = int(rest[1].rstrip(","))
        children = subprocess.run(["pgrep", "-P", str(pid), "-f", "multiprocessing-fork"], capture_output=True,
                                  text=True).stdout.split()
        found[name] = [int(child) for child in children] or [pid] if name == "web" else [pid]
    return found


def resident_mib(pids: dict[str, list[int]]) -> dict[str, float]:
    """Each service's resident memory (MiB); for the web, its largest worker process."""

    def rss(pid: int) -> float:
        with open(f"/proc/{pid}/status") as fields:
            return next(int(line.split()[1]) for line in fields if line.startswith("VmRSS:")) / 1024

    return {name: max(rss(pid) for pid in group) for name, group in pids.items()}


def cpu_by_process(pids: dict[str, list[int]], cursor) -> dict[tuple[str, int], float]:
    """CPU seconds so far of every process the load runs on, by (kind, pid): the services, the panel's PostgreSQL
    backends (when PostgreSQL runs on this machine), Redis, libvirtd and the clients (this process)."""
    others: dict[str, list[int]] = {}
    if connection.settings_dict["HOST"] in ("", "127.0.0.1", "localhost", "::1"):
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [APP_NAME])
        others["postgresql"] = [row[0] for row in cursor.fetchall()]
    for kind, name in (("redis", "redis-server"), ("libvirtd", "libvirtd")):
        others[kind] = [int(pid) for pid in subprocess.run(["pgrep", "-x", name], capture_output=True,
                                                           text=True).stdout.split()]
    seconds = {(kind, pid): cpu_seconds(pid) for kind, group in {**pids, **others}.items() for pid in group}
    seconds[("clients (this process)", os.getpid())] = sum(os.times()[:2])
    return seconds


def cpu_spent(before: dict[tuple[str, int], float], after: dict[tuple[str, int], float]) -> dict[str, float]:
    """CPU seconds by kind between two readings: a process that started meanwhile counts in full, one that ended
    meanwhile not at all."""
    spent: dict[str, float] = {}
    for (kind, pid), seconds in after.items():
        spent[kind] = spent.get(kind, 0.0) + max(0.0, seconds - before.get((kind, pid), 0.0))
    return spent


def connections_now(cursor) -> int:
    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APP_NAME])
    return cursor.fetchone()[0]


def main() -> None:
    token, kernel, volume = seed()
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_connections")
        max_connections = int(cursor.fetchone()[0])
    db = connection.settings_dict
    port = int(os.environ.get("BENCH_PORT", "8765"))
    var = tempfile.mkdtemp(prefix="cloudpanel-load-")
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "CLOUDPANEL_VAR_DIR": var, "CLOUDPANEL_TASK_QUEUE": APP_NAME, "CLOUDPANEL_CHANNEL_PREFIX": APP_NAME,
           "CLOUDPANEL_DB_APPLICATION_NAME": APP_NAME, "CLOUDPANEL_DB_POOL_SIZE": str(POOL_SIZE),
           "CLOUDPANEL_WEB_WORKERS": str(WEB)}
    services = subprocess.Popen(["scripts/run-services.sh", str(port)], cwd=ROOT, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the services did not answer within 60 s") from None
                time.sleep(0.5)
        time.sleep(3)  # worker, beat and listener up too
        for path in ("/instances/?limit=50", "/actions/?limit=50", "/networks/"):  # warm-up: each process's imports
            for _ in range(2 * WEB):
                Client(port, token, kernel, 0, 0).call("GET", path)
        pids = service_pids(env)
        warm = resident_mib(pids)
        peak, done = 0, threading.Event()

        def sample() -> None:
            nonlocal peak
            with connection.cursor() as cursor:
                while not done.wait(0.1):
                    peak = max(peak, connections_now(cursor))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        end = time.monotonic() + SECONDS
        clients = [Client(port, token, kernel, end, index) for index in range(CLIENTS)]
        with connection.cursor() as cursor:
            cpu_before = cpu_by_process(pids, cursor)
        started = time.perf_counter()
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        elapsed = time.perf_counter() - started
        with connection.cursor() as cursor:
            cpu_after = cpu_by_process(service_pids(env), cursor)
        done.set()
        sampler.join()
        loaded = resident_mib(service_pids(env))  # (a service restarted during the load: its new process)
    finally:
        os.killpg(services.pid, signal.SIGTERM)
        services.wait(timeout=60)
        clean_up(volume)
    results = [result for client in clients for result in client.results]
    times = [seconds for _, seconds in results]
    errors = sum(1 for code, _ in results if code >= 500)
    rate, p50, p95 = len(results) / elapsed, percentile(times, 50) * 1000, percentile(times, 95) * 1000
    mix = f"{len(results)} requests, {CLIENTS} clients, {SECONDS:.0f} s, {WEB} web processes"
    spent = cpu_spent(cpu_before, cpu_after)
    total = sum(spent.values())
    print_table(f"Where the CPU went during the load ({os.cpu_count()} CPUs x {elapsed:.0f} s = "
                f"{os.cpu_count() * elapsed:.0f} CPU-seconds)", ["process", "CPU seconds", "share", "ms per request"],
                [[kind, seconds, f"{seconds / total:.0%}", seconds / len(results) * 1000]
                 for kind, seconds in sorted(spent.items(), key=lambda item: -item[1])])
    record("load: CPU per request, every process (ms)", total / len(results) * 1000,
           f"web {spent['web'] / len(results) * 1000:.1f} ms of it; {os.cpu_count()} CPUs", "none (reported)", True)
    record("load: requests/s (mixed reads, creates, operations, deletes)", rate, mix, ">= 150", rate >= 150)
    record("load: p50 latency (ms)", p50, mix, "none (reported)", True)
    record("load: p95 latency (ms)", p95, mix, "<= 200", p95 <= 200)
    for name in ("web", "worker", "beat", "listener"):
        web = name == "web"
        record(f"RSS of the {'largest web process' if web else name} after the load (MiB)", loaded[name],
               f"{warm[name]:.1f} MiB after warm-up", "< 100" if web else "none (reported)",
               loaded[name] < 100 if web else True)
    record("load: 5xx answers", errors, f"of {len(results)}", "0", errors == 0)
    record("load: peak PostgreSQL connections of the panel", peak, f"max_connections {max_connections}",
           f"<= {BUDGET} ({WEB + 3} processes x pool {POOL_SIZE})", peak <= BUDGET < max_connections)

if __name__ == "__main__":
    main()
