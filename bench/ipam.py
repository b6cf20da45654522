"""IP address allocation: does it scale with networks, and does one busy network stay exact?

Clients are processes, each with its own PostgreSQL connection, allocating the next free
address for its ports one request at a time (networks.services.allocate: the subnet's row
lock, a window query for free offsets, an insert under a unique constraint). Three runs:
one client alone; 8 clients each on a network of its own (the lock is per subnet, so they
should not wait on each other: target ≥ 1.6× the lone client on 2 cores); 8 clients on one
/16, which must hand out no address twice.
Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/ipam.py
"""

import multiprocessing
import os
import time
import uuid

from common import print_table, record, setup_django, summary

setup_django()

from django.db import connections  # noqa: E402

from networks import services  # noqa: E402
from networks.models import Allocation, Network, Port, Subnet  # noqa: E402

PER_CLIENT = int(os.environ.get("BENCH_IPAM_PER_CLIENT", "1000"))


def allocate_all(subnet_id: int, port_ids: list[int], ready: multiprocessing.Queue, go: multiprocessing.Event,
                 results: multiprocessing.Queue) -> None:
    """One client: once every client is ready and told to go, allocate an address for each port in turn; put its
    latencies on the queue."""
    subnet = Subnet.objects.get(pk=subnet_id)
    ports = list(Port.objects.filter(pk__in=port_ids))
    ready.put(True)
    go.wait()
    latencies = []
    for port in ports:
        start = time.perf_counter()
        services.allocate(port=port, subnet=subnet)
        latencies.append(time.perf_counter() - start)
    connections.close_all()
    results.put(latencies)


def network(ports: int) -> tuple[Subnet, list[int]]:
    made = Network.objects.create(name=f"bench-ipam-{uuid.uuid4().hex[:8]}")
    subnet = services.add_subnet(network=made, cidr="10.64.0.0/16")
    return subnet, [services.create_port(network=made).pk for _ in range(ports)]


def run(label: str, work: list[tuple[Subnet, list[int]]]) -> dict:
    """Start a process per (subnet, ports) pair at once; allocations per second over all of them."""
    ready, go, results = multiprocessing.Queue(), multiprocessing.Event(), multiprocessing.Queue()
    processes = [multiprocessing.Process(target=allocate_all, args=(subnet.pk, ports, ready, go, results))
                 for subnet, ports in work]
    for process in processes:
        process.start()
    for _ in processes:  # timed from when every client has started and read its ports
        ready.get()
    start = time.perf_counter()
    go.set()
    latencies = [latency for _ in processes for latency in results.get(timeout=900)]  # (a client that fails says)
    for process in processes:
        process.join()
    seconds = time.perf_counter() - start
    duplicates, given = 0, 0
    subnets = {subnet.pk: subnet for subnet, _ in work}.values()
    for subnet in subnets:  # (the database's unique index forbids a duplicate: this checks that it held)
        addresses = list(Allocation.objects.filter(subnet=subnet).values_list("address", flat=True))
        duplicates += len(addresses) - len(set(addresses))
        given += len(set(addresses))
    total = sum(len(ports) for _, ports in work)
    assert len(latencies) == total == given, (len(latencies), total, given)
    p50, p95, _mean = summary(latencies)
    for subnet in subnets:
        subnet.network.ports.all().delete()
        subnet.network.delete()
    return {"label": label, "clients": len(work), "allocations": total, "seconds": seconds,
            "per second": total / seconds, "p50": p50, "p95": p95, "duplicates": duplicates}


def main() -> None:
    multiprocessing.set_start_method("spawn")  # (a fork would inherit the connection pool's threads half-made)
    alone = run("1 client, 1 network", [network(PER_CLIENT)])
    spread = run("8 clients, 8 networks", [network(PER_CLIENT) for _ in range(8)])
    shared_subnet, shared_ports = network(8 * PER_CLIENT)
    one = run("8 clients, 1 network", [(shared_subnet, shared_ports[i::8]) for i in range(8)])
    rows = [[r["label"], r["allocations"], r["seconds"], r["per second"], r["p50"], r["p95"], r["duplicates"]]
            for r in (alone, spread, one)]
    print_table(f"Address allocations (PostgreSQL, {os.cpu_count()} cores)",
                ["clients", "allocations", "seconds", "per second", "p50 ms", "p95 ms", "duplicates"], rows)
    gain = spread["per second"] / alone["per second"]
    record("address allocations/s, 8 clients on 8 networks", spread["per second"],
           f"1 client: {alone['per second']:.0f}/s ({gain:.2f}×)", ">= 1.6× 1 client", gain >= 1.6)
    record("address allocations/s, 8 clients on one /16", one["per second"],
           f"duplicates: {one['duplicates']}", "no address twice", one["duplicates"] == 0)


if __name__ == "__main__":
    main()
