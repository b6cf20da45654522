"""IP address allocation: 10,000 addresses from 8 concurrent clients on one /16.

Each client is a thread with its own PostgreSQL connection, allocating the next free
address for its ports one request at a time (networks.services.allocate: the subnet's row
lock, a window query for free offsets, an insert under a unique constraint). Reports
allocations per second and the p50/p95 latency of one allocation, and checks that no
address was handed out twice. Compared against: the same run with a single client, to
show what the lock costs under contention.
Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/ipam.py
"""

import threading
import time
import uuid

from common import print_table, record, setup_django, summary

setup_django()

from django.db import close_old_connections  # noqa: E402

from networks import services  # noqa: E402
from networks.models import Allocation, Network  # noqa: E402

TOTAL = 10_000


def run(clients: int) -> list[object]:
    network = Network.objects.create(name=f"bench-ipam-{uuid.uuid4().hex[:8]}")
    subnet = services.add_subnet(network=network, cidr="10.64.0.0/16")
    ports = [services.create_port(network=network) for _ in range(TOTAL)]
    latencies: list[float] = []
    lock = threading.Lock()

    def client(mine) -> None:
        mine_latencies = []
        try:
            for port in mine:
                start = time.perf_counter()
                services.allocate(port=port, subnet=subnet)
                mine_latencies.append(time.perf_counter() - start)
        finally:
            close_old_connections()
        with lock:
            latencies.extend(mine_latencies)

    threads = [threading.Thread(target=client, args=(ports[i::clients],)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    addresses = list(Allocation.objects.filter(subnet=subnet).values_list("address", flat=True))
    duplicates = len(addresses) - len(set(addresses))
    assert len(addresses) == TOTAL and duplicates == 0, (len(addresses), duplicates)
    p50, p95, _mean = summary(latencies)
    network.ports.all().delete()
    network.delete()
    return [clients, TOTAL, round(seconds, 2), round(TOTAL / seconds), round(p50, 2), round(p95, 2), duplicates]


def main() -> None:
    rows = [run(8), run(1)]
    print_table(f"{TOTAL:,} address allocations on one /16 (PostgreSQL)",
                ["clients", "allocations", "seconds", "per second", "p50 ms", "p95 ms", "duplicates"], rows)
    (_, total, _, per_second, _, p95, duplicates), (_, _, _, alone, _, _, _) = rows
    record(f"address allocations per second, 8 clients on one /16 ({total:,})", per_second,
           f"1 client: {alone}/s; p95 {p95} ms", "no address twice", duplicates == 0)


if __name__ == "__main__":
    main()
