"""Reconcile at scale: reading 1,000 domains of one host, and the listener's CPU while it watches them.

The host is libvirtd's shared test driver (test+unix:///default), so every libvirt call is
a real RPC to libvirtd. Compared side by side, in the same run: the per-domain loop
(listAllDomains, then one info call per domain) and hosts.hypervisor.all_domains (one
getAllDomainStats call, sizes known from the last read), and libvirt's bulk call alone (state only, its answer
unused: no bulk read can be faster); then the whole reconcile_host
(the read, HostDomain and the instances compared). The listener (`manage.py
listen_events`) then watches the host idle for 10 s: its CPU share is its user + system
time over that wall time.
Targets: the bulk read >= 20x faster than the loop; the listener idle < 5 % CPU.
Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/reconcile.py
"""

import os
import time
import uuid

from common import listener_idle_share, print_table, record, setup_django

setup_django()

from hosts import hypervisor, services  # noqa: E402
from hosts.hypervisor import domain_xml  # noqa: E402
from hosts.models import Host, HostDomain  # noqa: E402
from hosts.tasks import reconcile_host  # noqa: E402

URI = "test+unix:///default"
COUNT = int(os.environ.get("BENCH_DOMAINS", "1000"))
IDLE_SECONDS = 10


def best_of(runs: int, work) -> float:
    """The fastest of `runs` timings of work(), in milliseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def bare_bulk_call() -> int:
    """libvirt's bulk call alone, state only, nothing done with its answer: the floor of any bulk read."""
    libvirt = hypervisor.connections.libvirt
    return len(hypervisor.connection(URI).getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0))


def per_domain_loop() -> int:
    conn = hypervisor.connection(URI)
    return len([(dom.UUIDString(), dom.name(), dom.info()) for dom in conn.listAllDomains(0)])


def main() -> None:
    Host.objects.all().delete()
    conn = hypervisor.connection(URI)
    made = []
    for index in range(COUNT):
        spec = hypervisor.DomainSpec(name=f"bench-rec-{uuid.uuid4().hex[:12]}", uuid=str(uuid.uuid4()), vcpus=1,
                                     memory_mib=64)
        dom = conn.defineXML(domain_xml.domain_xml(hypervisor.Technology.TEST, spec))
        if index % 2:
            dom.create()
        made.append(dom)
    try:
        host = Host.objects.create(name="bench-reconcile", uri=URI, technology="test", state="online", cpus=64,
                                   memory_mib=262_144, storage_pool="default-pool")
        start = time.perf_counter()
        reconcile_host(host.pk)
        first = (time.perf_counter() - start) * 1000
        domains = per_domain_loop()
        loop = best_of(3, per_domain_loop)
        known = services.known_sizes(host.pk)
        bulk = best_of(3, lambda: hypervisor.all_domains(URI, known))
        bare = best_of(3, bare_bulk_call)
        whole = best_of(3, lambda: reconcile_host(host.pk))
        idle = listener_idle_share(lambda: HostDomain.objects.filter(host=host).count() >= COUNT,
                                   seconds=IDLE_SECONDS)
    finally:
        for dom in made:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        Host.objects.all().delete()
    print_table(f"Reading {domains:,} domains of one host (libvirtd's test driver, ms, best of 3)",
                ["read", "ms"],
                [["per-domain loop: listAllDomains + info each", loop],
                 ["one getAllDomainStats call (hypervisor.all_domains)", bulk],
                 ["libvirt's getAllDomainStats alone, state only (the floor)", bare],
                 ["reconcile_host, first read (sizes of new domains asked)", first],
                 ["reconcile_host, steady (read + HostDomain + instances)", whole]])
    print_table(f"Listener watching {domains:,} domains, idle for {IDLE_SECONDS} s", ["CPU share"],
                [[f"{idle:.1%}"]])
    record(f"read {domains:,} domains of a host, one bulk call (ms)", bulk,
           f"per-domain loop {loop:.1f} ms ({loop / bulk:.0f}×); libvirt's call alone {bare:.1f} ms "
           f"({loop / bare:.0f}×)", ">= 20× faster", loop / bulk >= 20)
    record(f"listener CPU, idle, {domains:,} domains (%)", idle * 100, f"over {IDLE_SECONDS} s", "< 5", idle < 0.05)


if __name__ == "__main__":
    main()
