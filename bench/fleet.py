"""A fleet at scale: 100 hosts × 100 domains on one control plane.

Each host is libvirt's test driver loaded from a node XML file of its own (test:///<dir>/host-N.xml: 100 running
domains, 64 CPUs, 256 GiB), registered with 100 instances of the panel's matching its domains. Measured:
- one full reconcile sweep of every host in this one process (each host's domains read in one bulk call, kept,
  and compared with its instances), as the sweep's tasks would run it on a 2-core control plane; target <= 10 s;
- placement: 1,000 creates' decisions over 100 empty hosts (random sizes from 1 vCPU/512 MiB to 8 vCPUs/8 GiB,
  each decision locking the hosts and stored as an instance), decisions per second, and the spread achieved: the
  standard deviation of the hosts' RAM use, in percent of a host's RAM; targets >= 50 decisions/s, <= 2 %;
- the listener (`manage.py listen_events`) watching the 100 hosts, idle for 10 s: its CPU share; target < 10 %.
Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/fleet.py
"""

import os
import random
import statistics
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from common import listener_idle_share, print_table, record, setup_django

setup_django()

from django.db import transaction  # noqa: E402

from hosts import services as host_services  # noqa: E402
from hosts.models import Host, HostDomain  # noqa: E402
from hosts.tasks import reconcile_host  # noqa: E402
from instances.models import Instance  # noqa: E402
from tenants.models import Tenant  # noqa: E402

HOSTS = int(os.environ.get("BENCH_FLEET_HOSTS", "100"))
DOMAINS = int(os.environ.get("BENCH_FLEET_DOMAINS", "100"))
CREATES = int(os.environ.get("BENCH_FLEET_CREATES", "1000"))
IDLE_SECONDS = 10
SIZES = [(1, 512), (2, 2048), (4, 4096), (8, 8192)]


def node_xml() -> tuple[str, list[str]]:
    """A test-driver node of 64 CPUs and 256 GiB with DOMAINS running domains; returns it and their UUIDs."""
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for tag, text in (("mhz", "2600"), ("model", "x86_64"), ("active", "64"), ("nodes", "1"), ("sockets", "4"),
                      ("cores", "8"), ("threads", "2")):
        ET.SubElement(cpu, tag).text = text
    ET.SubElement(node, "memory").text = str(256 << 20)
    uuids = []
    for _ in range(DOMAINS):
        domain_uuid = str(uuid.uuid4())
        uuids.append(domain_uuid)
        domain = ET.SubElement(node, "domain", type="test")
        ET.SubElement(domain, "name").text = f"cp-{domain_uuid}"
        ET.SubElement(domain, "uuid").text = domain_uuid
        ET.SubElement(domain, "memory", unit="MiB").text = "512"
        ET.SubElement(domain, "vcpu").text = "1"
        os_element = ET.SubElement(domain, "os")
        ET.SubElement(os_element, "type").text = "hvm"
    return ET.tostring(node, encoding="unicode"), uuids


def build_fleet(directory: Path) -> list[Host]:
    tenant = Tenant.objects.create(name="bench-fleet")
    hosts, instances = [], []
    for index in range(HOSTS):
        text, uuids = node_xml()
        path = directory / f"host-{index}.xml"
        path.write_text(text)
        host = Host.objects.create(name=f"fleet-{index:03}", uri=f"test://{path}", technology="test",
                                   state="online", cpus=64, memory_mib=256 * 1024, storage_pool="default-pool")
        hosts.append(host)
        instances += [Instance(tenant=tenant, host=host, uuid=domain_uuid, name=f"vm-{index}-{n}", vcpus=1,
                               memory_mib=512, status="running") for n, domain_uuid in enumerate(uuids)]
    Instance.objects.bulk_create(instances, batch_size=2000)
    return hosts


def sweep(hosts: list[Host]) -> float:
    start = time.perf_counter()
    for host in hosts:
        reconcile_host(host.pk)
    return time.perf_counter() - start


def placements(hosts: list[Host]) -> tuple[float, float, int]:
    """CREATES decisions over the hosts, emptied first: (decisions per second, RAM use std dev in %, failures)."""
    Instance.objects.all().delete()
    tenant = Tenant.objects.get(name="bench-fleet")
    chooser = random.Random(18)
    failures = 0
    start = time.perf_counter()
    for number in range(CREATES):
        vcpus, memory_mib = chooser.choice(SIZES)
        with transaction.atomic():
            try:
                host = host_services.place(vcpus=vcpus, memory_mib=memory_mib)
            except host_services.NoCapacity:
                failures += 1
                continue
            Instance.objects.create(tenant=tenant, host=host, name=f"placed-{number}", vcpus=vcpus,
                                    memory_mib=memory_mib, status="running")
    rate = CREATES / (time.perf_counter() - start)
    used = host_services.allocations([host.pk for host in hosts])
    shares = [100 * used[host.pk].memory_mib / host.memory_mib for host in hosts]
    return rate, statistics.pstdev(shares), failures


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cloudpanel-fleet-") as directory:
        hosts = build_fleet(Path(directory))
        first = sweep(hosts)
        steady = sweep(hosts)
        seen = HostDomain.objects.count()
        idle = listener_idle_share(lambda: HostDomain.objects.count() >= seen, seconds=IDLE_SECONDS, wait=120)
        rate, spread, failures = placements(hosts)
    print_table(f"Reconcile of {HOSTS} hosts × {DOMAINS} domains on one process (s)", ["sweep", "s"],
                [["first (every connection opened, every domain new)", first], ["steady", steady]])
    print_table(f"Placement of {CREATES:,} creates over {HOSTS} hosts", ["measure", "value"],
                [["decisions per second", rate], ["RAM use std dev (% of a host)", spread],
                 ["refused", failures]])
    print_table(f"Listener watching {HOSTS} hosts, idle for {IDLE_SECONDS} s", ["CPU share"], [[f"{idle:.1%}"]])
    record(f"reconcile sweep, {HOSTS} hosts × {DOMAINS} domains (s)", steady,
           f"first sweep {first:.2f} s; {seen:,} domains kept", "<= 10", steady <= 10)
    record(f"placement decisions per second ({CREATES:,} over {HOSTS} hosts)", rate,
           f"RAM use std dev {spread:.2f} % of a host; {failures} refused", ">= 50, std dev <= 2 %",
           rate >= 50 and spread <= 2 and not failures)
    record(f"listener CPU, idle, {HOSTS} hosts (%)", idle * 100, f"over {IDLE_SECONDS} s", "< 10", idle < 0.10)


if __name__ == "__main__":
    main()
