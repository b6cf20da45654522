"""Instance list of a tenant admin: 5,000 of 50,000 instances, next to the platform admin's 50,000.

Ten tenants hold the same number of instances each. A tenant admin (role admin in one of
them, not staff) lists its tenant's instances through the API /api/v1/instances/, with a
token bound to its tenant, and through the page /instances/ (signed-in session). Compared
against: the platform admin's list of all instances (staff, no membership, a token bound to
no tenant), measured the same two ways at the same scale; and the same measurement at a
tenth of the scale (the tenant holds 500 of 5,000), to show that the number of SQL queries
of a request depends neither on the tenant's instances nor on everyone's.
Measures server time (Django test client, no network; p50 and p95 in ms) and SQL query
counts, checks that each list shows exactly the instances of its scope and that no
hypervisor call happens. The instance table is analyzed after each load, as autovacuum
would do, so that the plans are those of a table in use. Like instance_list.py it starts
from an empty instance table in the bench database (see common.py); at the end it removes
the instances, tenants and users it made, so it can be run again. `--sql` prints the SQL
of each request at the larger scale.
Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/tenant_list.py
"""

import re
import sys
from unittest import mock

from common import measure_get, print_table, record, setup_django, summary

setup_django()

from axes.models import AccessLog  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from hosts.models import Host  # noqa: E402
from instances.models import Instance  # noqa: E402
from tenants.models import Tenant  # noqa: E402
from tenants.services import add_member, create_api_token, create_tenant  # noqa: E402

REPEATS = 60
TENANTS = 10
SCALES = (500, 5_000)  # instances per tenant: the tenant admin sees one tenant's, the platform admin all
PREFIX = "bench-tenant-list"
TENANT_ADMIN, PLATFORM_ADMIN = "tenant admin", "platform admin"
API, PAGE = "API /api/v1/instances/", "page /instances/"
PAGE_SIZE = 50



def check_visible(endpoint: str, response, expected: int, own: Tenant | None, others: list[Tenant]) -> None:
    """The list shows exactly the scope's instances: all of them for the platform admin, one tenant's otherwise."""
    if endpoint == API:
        body = response.json()
        assert body["count"] == expected, (endpoint, body["count"], expected)
        if own is not None:
            assert all(row["tenant"] == own.pk for row in body["results"]), "another tenant's instance in the API"
        return
    html = response.content.decode()
    pages = re.search(r"Page 1 of (\d+)", html)
    assert pages and int(pages.group(1)) == -(-expected // PAGE_SIZE), (endpoint, pages and pages.group(0), expected)
    assert html.count("data-instance-id=") == PAGE_SIZE
    if own is not None:
        assert f"<td>{own.name}</td>" in html
        assert not any(f"<td>{other.name}</td>" in html for other in others), "another tenant's instance on the page"


def remove_rows(host_created: bool) -> None:
    """Delete what this benchmark makes: its tenants' instances, its tenants (quotas, memberships, tokens), users
    and the sign-in log rows of their forced logins."""
    Instance.objects.filter(tenant__name__startswith=PREFIX).delete()
    Tenant.objects.filter(name__startswith=PREFIX).delete()
    get_user_model().objects.filter(username__startswith=PREFIX).delete()
    AccessLog.objects.filter(username__startswith=PREFIX).delete()
    if host_created:
        Host.objects.filter(uri="test:///bench", instances__isnull=True).delete()


def main() -> None:
    remove_rows(host_created=False)  # what a run that was stopped left behind
    Instance.objects.all().delete()  # the platform admin must see exactly the instances made here
    clients, host_created = {}, False
    rows, times, sql = [], {}, {}
    try:
        User = get_user_model()
        tenants = [create_tenant(name=f"{PREFIX}-{n:02}") for n in range(TENANTS)]
        own, others = tenants[0], tenants[1:]
        tenant_admin = User.objects.create_user(username=f"{PREFIX}-tenant-admin")
        add_member(tenant=own, user=tenant_admin, role="admin")
        platform_admin = User.objects.create_user(username=f"{PREFIX}-platform-admin", is_staff=True)
        host, host_created = Host.objects.get_or_create(uri="test:///bench",
                                                        defaults={"name": "bench", "technology": "test"})
        _token, tenant_key = create_api_token(user=tenant_admin, name="bench", tenant=own)
        _token, platform_key = create_api_token(user=platform_admin, name="bench", tenant=None)

        for role, user, key in ((TENANT_ADMIN, tenant_admin, tenant_key),
                                (PLATFORM_ADMIN, platform_admin, platform_key)):
            page = Client()
            page.force_login(user)
            # The API client has no session: the token alone authenticates and scopes the request.
            clients[(role, API)] = (Client(), "/api/v1/instances/", {"HTTP_AUTHORIZATION": f"Token {key}"})
            clients[(role, PAGE)] = (page, "/instances/", {})

        with mock.patch("hosts.hypervisor.connections.connection") as hypervisor:
            made = 0
            for per_tenant in SCALES:
                Instance.objects.bulk_create(
                    (Instance(tenant=tenant, host=host, name=f"b{i}", vcpus=1, memory_mib=64, status="running")
                     for i in range(made, per_tenant) for tenant in tenants),  # interleaved, as tenants grow together
                    batch_size=2000,
                )
                made = per_tenant
                # Statistics as autovacuum would soon leave them: with those of the empty table the planner
                # sorts all of the tenant's rows for every page (18-30 ms at 5,000) instead of reading 50.
                with connection.cursor() as cursor:
                    cursor.execute(f'ANALYZE "{Instance._meta.db_table}"')
                total = per_tenant * TENANTS
                assert Instance.objects.count() == total
                scale = f"{per_tenant:,} of {total:,}"
                for (role, endpoint), (client, url, headers) in clients.items():
                    mine = role == TENANT_ADMIN
                    expected = per_tenant if mine else total
                    durations, queries, response = measure_get(client, url, REPEATS, **headers)
                    check_visible(endpoint, response, expected, own if mine else None, others)
                    p50, p95, _mean = summary(durations)
                    times[(per_tenant, role, endpoint)] = p95
                    sql[(per_tenant, role, endpoint)] = queries
                    rows.append([scale, role, endpoint, expected, len(queries), p50, p95])
        assert not hypervisor.called, "the list made a hypervisor call"

        small, large = SCALES
        print_table("Instance list by role (server time, Django test client, PostgreSQL; no hypervisor calls)",
                    ["tenant's / all instances", "role", "endpoint", "listed", "queries", "p50 ms", "p95 ms"], rows)
        counts = []
        for role, endpoint in clients:
            numbers = [len(sql[(per_tenant, role, endpoint)]) for per_tenant in SCALES]
            counts.append([role, endpoint, *numbers, "yes" if len(set(numbers)) == 1 else "NO"])
        print_table("SQL queries per request (scale x role x endpoint)",
                    ["role", "endpoint", *(f"{n:,} of {n * TENANTS:,}" for n in SCALES), "constant"], counts)
        print_table(f"p95 compared ({large:,} of {large * TENANTS:,})",
                    ["endpoint", "tenant admin / platform admin", "tenant admin: 10x scale / 1x"],
                    [[endpoint, times[(large, TENANT_ADMIN, endpoint)] / times[(large, PLATFORM_ADMIN, endpoint)],
                      times[(large, TENANT_ADMIN, endpoint)] / times[(small, TENANT_ADMIN, endpoint)]]
                     for endpoint in (API, PAGE)])
        varying = {(role, endpoint) for role, endpoint, *_numbers, same in counts if same != "yes"}
        for (per_tenant, role, endpoint), queries in sql.items():
            # The SQL of what varies, at both scales; with --sql, of every request at the larger scale.
            if (role, endpoint) in varying or ("--sql" in sys.argv and per_tenant == large):
                print(f"\nSQL: {role}, {endpoint}, {per_tenant:,} of {per_tenant * TENANTS:,}", file=sys.stderr)
                for query in queries:
                    print(f"  {query}", file=sys.stderr)
        constant = not varying
        print(f"\nquery count constant: {'yes' if constant else 'no'}", file=sys.stderr)
        for endpoint in (API, PAGE):
            own_p95, all_p95 = times[(large, TENANT_ADMIN, endpoint)], times[(large, PLATFORM_ADMIN, endpoint)]
            record(f"tenant admin's {endpoint}, {large:,} of {large * TENANTS:,}: p95 (ms)", own_p95,
                   f"platform admin's {all_p95:.2f} ms", "<= 1.1x the platform admin's", own_p95 <= all_p95 * 1.1)
        record("SQL queries per list request, 10x the instances", "constant" if constant else "varies",
               f"{len(counts)} role x endpoint pairs", "constant", constant)
        assert constant, "the number of queries depends on the number of instances"
    finally:
        for client, _url, _headers in clients.values():
            client.logout()
        remove_rows(host_created)


if __name__ == "__main__":
    main()
