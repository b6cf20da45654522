"""Metrics at scale: sampling 100 hosts × 100 domains per interval, and a week's chart with a year stored.

Sampling: 100 libvirt test-driver hosts, each its own node file with 100 running domains, every domain a panel
instance. A round is what the periodic job asks every 10 s: each host's counters read in bulk and its samples
stored (rates against the previous round, one row per host and per instance) and their points published to the
channel layer (Redis under `make bench`). Here one process does every host in turn, on this 2-core machine (with
a worker per host, the rounds run side by side). Measured: seconds per round (target: within the 10 s interval)
and rows written per second.

Chart: one instance holding a year of samples at every resolution (what retention keeps: 6 h raw, 7 days of
minutes, a year of hours), among 20 others alike; GET /api/v1/instances/{id}/metrics/?range=week, p95 of 50
(target < 100 ms). The storage one instance's year takes is reported too (the README's figure).
Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/metrics.py
"""

import os
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

from common import measure_get, print_table, record, setup_django, summary

setup_django()

from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from hosts.models import Host  # noqa: E402
from instances.models import Instance  # noqa: E402
from metrics.choices import Resolution  # noqa: E402
from metrics.history import KEEP  # noqa: E402
from metrics.models import HostSample, InstanceSample  # noqa: E402
from metrics.tasks import sample_host  # noqa: E402
from tenants.services import create_api_token  # noqa: E402
from tests.factories import make_tenant, make_user  # noqa: E402

HOSTS = int(os.environ.get("BENCH_METRIC_HOSTS", "100"))
DOMAINS = int(os.environ.get("BENCH_METRIC_DOMAINS", "100"))
ROUNDS = 3
OTHERS = 20
INTERVAL = 10.0


def node_file(directory: Path, index: int, uuids: list[str]) -> str:
    """A test-driver node with `uuids` as running domains; its URI."""
    node = ET.Element("node")
    for number, domain_uuid in enumerate(uuids):
        domain = ET.SubElement(node, "domain", type="test")
        ET.SubElement(domain, "name").text = f"bench-{index}-{number}"
        ET.SubElement(domain, "uuid").text = domain_uuid
        ET.SubElement(domain, "memory").text = "131072"
        ET.SubElement(domain, "vcpu").text = "1"
        os_element = ET.SubElement(domain, "os")
        ET.SubElement(os_element, "type").text = "hvm"
    path = directory / f"node-{index}.xml"
    ET.ElementTree(node).write(path)
    return f"test://{path}"


def sampling() -> tuple[float, float, int]:
    """Seconds per round (the slowest of ROUNDS), rows written per second, rows per round."""
    tenant = make_tenant("bench-metrics")
    directory = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    hosts = []
    for index in range(HOSTS):
        uuids = [str(uuid.uuid4()) for _ in range(DOMAINS)]
        host = Host.objects.create(name=f"bench-metrics-{index}", uri=node_file(directory, index, uuids),
                                   technology="test", state="online", cpus=64, memory_mib=262_144)
        Instance.objects.bulk_create([Instance(uuid=u, name=f"vm-{index}-{n}", tenant=tenant, host=host, vcpus=1,
                                               memory_mib=128, status="running") for n, u in enumerate(uuids)])
        hosts.append(host.pk)
    for host_id in hosts:  # the first round only keeps counters, as after a restart
        sample_host(host_id)
    times = []
    for _ in range(ROUNDS):
        time.sleep(1)  # (a rate needs time between rounds)
        before = InstanceSample.objects.count() + HostSample.objects.count()
        start = time.perf_counter()
        for host_id in hosts:
            sample_host(host_id)
        times.append(time.perf_counter() - start)
        rows = InstanceSample.objects.count() + HostSample.objects.count() - before
    worst = max(times)
    return worst, rows / worst, rows


def chart() -> tuple[list[float], int, int]:
    """Server times of the week chart, the rows it read, and the bytes one instance's kept year takes."""
    tenant = make_tenant("bench-chart")
    user = make_user(tenant=tenant)
    host = Host.objects.create(name="bench-chart", uri="test:///default", technology="test", state="online")
    instances = [Instance.objects.create(name=f"chart-{n}", tenant=tenant, host=host, vcpus=2, memory_mib=512,
                                         status="running") for n in range(OTHERS + 1)]
    now = timezone.now()
    steps = {Resolution.RAW: 10, Resolution.MINUTE: 60, Resolution.HOUR: 3600}
    for instance in instances:
        rows = []
        for resolution, keep in KEEP.items():
            step = steps[resolution]
            for n in range(int(keep.total_seconds() // step)):
                rows.append(InstanceSample(instance_id=instance.pk, resolution=resolution, tenant_id=tenant.pk,
                                           time=now - timedelta(seconds=step * (n + 1)), cpu=float(n % 100),
                                           memory_used=2e8, memory_total=5.4e8, disk_read=1e5, disk_write=2e5,
                                           disk_read_iops=10.0, disk_write_iops=20.0, net_rx=3e4, net_tx=1e4))
        InstanceSample.objects.bulk_create(rows, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE metrics_instancesample")
        cursor.execute("SELECT pg_total_relation_size('metrics_instancesample')")
        per_instance = cursor.fetchone()[0] // len(instances)
    _token, key = create_api_token(user=user, name="bench", tenant=tenant)
    times, sql, response = measure_get(Client(), f"/api/v1/instances/{instances[0].pk}/metrics/?range=week", 50,
                                       HTTP_AUTHORIZATION=f"Token {key}")
    assert len(response.json()["t"]) >= 330, len(response.json()["t"])
    return times, len(sql), per_instance


def main() -> None:
    round_seconds, rows_per_second, rows = sampling()
    times, queries, per_instance = chart()
    p50, p95, mean = summary(times)
    print_table(f"Sampling {HOSTS} hosts × {DOMAINS} domains (test driver), one process", ["measure", "value"],
                [["seconds per round (slowest of 3)", round_seconds], ["rows per round", rows],
                 ["rows written per second", rows_per_second]])
    print_table("A week's chart of one instance, a year stored (ms)", ["p50", "p95", "mean", "queries"],
                [[p50, p95, mean, queries]])
    print_table("Storage of one instance's kept samples", ["bytes", "MiB"],
                [[per_instance, per_instance / 2**20]])
    record(f"metrics: one sampling round of {HOSTS} hosts × {DOMAINS} domains, one process (s)", round_seconds,
           f"{rows:,} rows, {rows_per_second:,.0f} rows/s written", f"< {INTERVAL:g} (the interval)",
           round_seconds < INTERVAL)
    record("metrics: a week's chart of an instance with a year stored, p95 (ms)", p95,
           f"p50 {p50:.1f} ms, {queries} queries; {per_instance / 2**20:.1f} MiB stored per instance-year",
           "< 100", p95 < 100)


if __name__ == "__main__":
    main()
