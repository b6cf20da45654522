"""Instance list at scale: the list API and page at 100 and 10,000 instances.

Measures server time (Django test client, no network) and SQL query counts, and
makes sure no hypervisor call happens. Targets: p95 < 100 ms, time(10,000) /
time(100) <= 2, a constant number of queries.
Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/instance_list.py
"""

from unittest import mock

from common import measure_get, print_table, record, setup_django, summary

setup_django()

from django.contrib.auth import get_user_model  # noqa: E402
from django.test import Client  # noqa: E402

from hosts.models import Host  # noqa: E402
from instances.models import Instance  # noqa: E402
from tenants.models import Tenant  # noqa: E402
from tenants.services import create_api_token  # noqa: E402

REPEATS = 60


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
    Instance.objects.all().delete()


if __name__ == "__main__":
    main()
