"""Instance list at scale: the list API and page at 100 and 10,000 instances, and every row of 1,000 instances.

Measures server time (Django test client, no network) and SQL query counts, and
makes sure no hypervisor call happens. Targets: p95 < 100 ms, time(10,000) /
time(100) <= 2, a constant number of queries. Then 1,000 instances, each with a NIC, read
through the API in the largest pages it sends (500 rows) against the bare query of the same
rows (`.values()` of the instances and their NICs, JSON-encoded): at most 3x.
Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/instance_list.py
"""

import json
import time
from unittest import mock

from common import measure_get, print_table, record, setup_django, summary

setup_django()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.serializers.json import DjangoJSONEncoder  # noqa: E402
from django.test import Client  # noqa: E402

from hosts.models import Host  # noqa: E402
from instances.models import Instance  # noqa: E402
from networks.models import Allocation, Port  # noqa: E402
from networks.services import allocate, create_network  # noqa: E402
from tenants.models import Tenant  # noqa: E402
from tenants.services import create_api_token  # noqa: E402

REPEATS = 60
WHOLE = 1_000
PAGE = 500  # the most rows a page holds (cloudpanel.parsers.MAX_LIMIT)


def whole_list(client: Client, key: str, tenant: Tenant, host: Host) -> tuple[float, float]:
    """p50 seconds to read WHOLE instances (each with a NIC and its address) through the API, and through the
    bare query of the same rows."""
    Instance.objects.all().delete()
    made = Instance.objects.bulk_create(
        Instance(tenant=tenant, host=host, name=f"w{i}", vcpus=1, memory_mib=64, status="running")
        for i in range(WHOLE))
    network = create_network(user=None, tenant=tenant, name="bench-lan", kind="nat", cidr="10.200.0.0/16")
    subnet = network.subnets.get()
    ports = Port.objects.bulk_create(Port(network=network, instance=instance, mac=f"52:54:00:00:{i >> 8:02x}:"
                                          f"{i & 255:02x}") for i, instance in enumerate(made))
    for port in ports:
        allocate(port=port, subnet=subnet)

    def api() -> int:
        rows = 0
        for offset in range(0, WHOLE, PAGE):
            response = client.get(f"/api/v1/instances/?limit={PAGE}&offset={offset}", HTTP_AUTHORIZATION=f"Token {key}")
            assert response.status_code == 200, response.status_code
            rows += len(response.json()["results"])
        return rows

    def bare() -> int:
        rows = 0
        for offset in range(0, WHOLE, PAGE):
            page = list(Instance.objects.values()[offset:offset + PAGE])
            ids = [row["id"] for row in page]
            nics = list(Port.objects.filter(instance_id__in=ids).values())
            addresses = list(Allocation.objects.filter(port__instance_id__in=ids).values())
            json.dumps({"results": page, "nics": nics, "addresses": addresses}, cls=DjangoJSONEncoder)
            rows += len(page)
        return rows

    timings = {}
    for name, read in (("api", api), ("bare", bare)):
        assert read() == WHOLE  # warm-up, and every row is read
        times = []
        for _ in range(15):
            start = time.perf_counter()
            read()
            times.append(time.perf_counter() - start)
        timings[name] = sorted(times)[len(times) // 2]
    Instance.objects.all().delete()
    network.delete()
    return timings["api"], timings["bare"]


def main() -> None:
    Instance.objects.all().delete()
    User = get_user_model()
    user, _ = User.objects.get_or_create(username="bench-admin", defaults={"is_staff": True})
    tenant, _ = Tenant.objects.get_or_create(name="bench")
    host, _ = Host.objects.get_or_create(uri="test:///bench", defaults={"name": "bench", "technology": "test"})
    _token, key = create_api_token(user=user, name="bench", tenant=None)  # staff: platform-wide
    client = Client()
    client.force_login(user)
    rows, results = [], {}
    with mock.patch("hosts.hypervisor.connections.connection") as hypervisor:
        for count in (100, 10_000):
            existing = Instance.objects.count()
            Instance.objects.bulk_create(
                (Instance(tenant=tenant, host=host, name=f"b{i}", vcpus=1, memory_mib=64, status="running")
                 for i in range(existing, count)), batch_size=2000,
            )
            for label, url, headers in (("API /api/v1/instances/", "/api/v1/instances/", {
                "HTTP_AUTHORIZATION": f"Token {key}"}), ("page /instances/", "/instances/", {})):
                times, sql, _response = measure_get(client, url, REPEATS, **headers)
                queries = len(sql)
                p50, p95, _mean = summary(times)
                results[(label, count)] = p95
                rows.append([label, count, queries, p50, p95])
    assert not hypervisor.called, "the list made a hypervisor call"
    print_table("Instance list at scale (server time, Django test client, PostgreSQL; no hypervisor calls)",
                ["endpoint", "instances", "queries", "p50 ms", "p95 ms"], rows)
    print_table("Scaling", ["endpoint", "p95(10,000) / p95(100)", "target"],
                [[label, results[(label, 10_000)] / results[(label, 100)], "<= 2"]
                 for label in ("API /api/v1/instances/", "page /instances/")])
    for label in ("API /api/v1/instances/", "page /instances/"):
        large, small = results[(label, 10_000)], results[(label, 100)]
        record(f"{label} p95 at 10,000 instances (ms)", large, f"{small:.2f} ms at 100", "< 100", large < 100)
        record(f"{label} p95, 10,000 / 100 instances", large / small, "—", "<= 2", large / small <= 2)
    api, bare = whole_list(client, key, tenant, host)
    print_table(f"Every row: {WHOLE:,} instances with a NIC each, in pages of {PAGE} (p50 of 15 reads, ms)",
                ["path", "ms", "ratio"], [["bare query: .values() of instances, NICs, addresses + JSON", bare * 1000,
                                           1.0], ["API /api/v1/instances/", api * 1000, api / bare]])
    record(f"API: {WHOLE:,} instances with NICs, p50 (ms)", api * 1000, f"bare query + JSON {bare * 1000:.2f} ms",
           "<= 3x the bare query", api <= 3 * bare)


if __name__ == "__main__":
    main()
