"""The monthly invoice run: 1,000 tenants from 1,000,000 ledger rows, aggregated in the database.

Each tenant has 5 instances metered for vCPUs and RAM, hour by hour, for 100 hours of the
month (5 × 2 × 100 = 1,000 rows per tenant), plus a price change in the middle of the month,
so that lines split by rate. Metering adds each revision to its month's sum (UsageMonth) as
it writes it; here the rows are inserted in bulk, so their sums are built in one grouped
query, timed apart ("monthly sums s": what metering spreads over the month).
billing.invoicing.invoice_month then drafts every tenant's invoice in one transaction from
those sums, its lines priced and numbered by PostgreSQL. Compared against, in the same run:
a Python loop over the same ledger rows
(streamed from the database with a server-side cursor, summed in a dict, priced with the
same rules). The totals of the two must be identical to the cent, which also checks the sums
against the ledger. The run is repeated at a tenth of the rows to show that its query count
does not depend on how many rows there are.
Targets: < 2 s for 1,000,000 rows, a query count independent of the row count, ≥ 20× the loop.
Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/invoice_run.py
"""

import time
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

from common import print_table, record, setup_django

setup_django()

from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from billing import invoicing, services  # noqa: E402
from billing.models import RateVersion, TenantBilling, UsageMonth, UsageRecord  # noqa: E402
from tenants.models import Tenant  # noqa: E402

TENANTS, INSTANCES, HOURS = 1000, 5, 100
MONTH = (2027, 3)


def populate(hours: int) -> tuple[list[int], str]:
    """The tenants, their plan (with a price change on the 15th) and hours × 10 ledger rows each."""
    stamp = time.time_ns()
    plan = services.create_plan(name=f"bench-{stamp}", currency="EUR", effective_from=datetime(2027, 1, 1, tzinfo=UTC),
                                vcpu_hour="0.013", ram_gib_hour="0.0041", monthly_fee="5.00")
    services.add_version(plan=plan, effective_from=datetime(2027, 3, 15, tzinfo=UTC), vcpu_hour="0.017")
    tenants = Tenant.objects.bulk_create([Tenant(name=f"bench-{stamp}-{i}") for i in range(TENANTS)])
    TenantBilling.objects.bulk_create([TenantBilling(tenant=t, plan=plan, tax_rate=Decimal("0.19")) for t in tenants])
    ids = [t.pk for t in tenants]
    early, late = plan.versions.order_by("effective_from").values_list("pk", flat=True)
    with connection.cursor() as cursor:
        # hour h of the month, for each tenant, instance and meter; the rate changes at hour 14 × 24
        cursor.execute("""
            INSERT INTO billing_usagerecord (tenant_id, resource_type, resource_id, resource_name, meter,
                                             interval_start, revision, units, rate_id, recorded_at)
            SELECT t, 'instance', t * 10 + i, 'vm-' || i, m,
                   %s::timestamptz + (h * 7) * interval '1 hour', 1,
                   CASE m WHEN 'vcpu' THEN 2 * 3600 - h ELSE 2048 * 3600 - h END,
                   CASE WHEN h * 7 >= 14 * 24 THEN %s ELSE %s END, now()
            FROM unnest(%s::bigint[]) AS t, generate_series(1, %s) AS i, unnest(ARRAY['vcpu', 'ram']) AS m,
                 generate_series(0, %s - 1) AS h
        """, [datetime(*MONTH, 1, tzinfo=UTC), late, early, ids, INSTANCES, hours])
    return ids, plan.name


def monthly_sums(ids: list[int]) -> float:
    """Sum the tenants' ledger rows into UsageMonth, as metering does row by row; returns the seconds taken."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO billing_usagemonth (tenant_id, resource_type, resource_id, resource_name, meter, rate_id, month,
                                            units, invoiced_units)
            SELECT tenant_id, resource_type, resource_id, max(resource_name), meter, rate_id,
                   date_trunc('month', interval_start, 'UTC'), sum(units), 0
            FROM billing_usagerecord WHERE tenant_id = ANY(%s)
            GROUP BY tenant_id, resource_type, resource_id, meter, rate_id, date_trunc('month', interval_start, 'UTC')
        """, [ids])
    return time.perf_counter() - started


def python_loop(ids: list[int]) -> dict[int, Decimal]:
    """The same invoices' totals, summed row by row in Python."""
    start, end = invoicing.month_bounds(*MONTH)
    sums: dict[tuple, int] = defaultdict(int)
    rows = (UsageRecord.objects.filter(tenant_id__in=ids, interval_start__lt=end)
            .values_list("tenant_id", "resource_type", "resource_id", "meter", "rate_id", "interval_start", "units")
            .iterator(chunk_size=20000))
    for tenant_id, resource_type, resource_id, meter, rate_id, interval_start, units in rows:
        month = interval_start.replace(day=1, hour=0, minute=0, second=0)
        sums[(tenant_id, resource_type, resource_id, meter, rate_id, month)] += units
    rates = RateVersion.objects.in_bulk({key[4] for key in sums})
    billing = {b.tenant_id: b for b in TenantBilling.objects.filter(tenant_id__in=ids).select_related("plan")}
    subtotals: dict[int, Decimal] = defaultdict(Decimal)
    for (tenant_id, _type, _id, meter, rate_id, month), units in sums.items():
        quantity = invoicing.quantity(units, invoicing.divisor(meter, month))
        subtotals[tenant_id] += invoicing.amount(quantity, rates[rate_id].price(meter))
    totals = {}
    for tenant_id in ids:
        versions = sorted(billing[tenant_id].plan.versions.all(), key=lambda v: v.effective_from)
        fee = invoicing.fee_version(versions, start, end)
        subtotal = subtotals[tenant_id] + (fee.monthly_fee if fee else Decimal(0))
        totals[tenant_id] = subtotal + invoicing.money(subtotal * billing[tenant_id].tax_rate)
    return totals


def run(hours: int) -> list[object]:
    ids, plan = populate(hours)
    rows = UsageRecord.objects.filter(tenant_id__in=ids).count()
    sums = monthly_sums(ids)
    connection.cursor().execute("ANALYZE billing_usagerecord")
    connection.cursor().execute("ANALYZE billing_usagemonth")
    with transaction.atomic():
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            invoices = invoicing.invoice_month(year=MONTH[0], month=MONTH[1], tenant_ids=set(ids),
                                               now=datetime(2030, 1, 1, tzinfo=UTC))
            database = time.perf_counter() - started
        by_db = {invoice.tenant_id: invoice.total for invoice in invoices}
        transaction.set_rollback(True)  # the loop below reads the same, uninvoiced rows
    started = time.perf_counter()
    by_loop = python_loop(ids)
    loop = time.perf_counter() - started
    assert len(by_db) == TENANTS and by_db == by_loop, "the database and the loop disagree"
    UsageMonth.objects.filter(tenant_id__in=ids).delete()
    UsageRecord.objects.filter(tenant_id__in=ids).delete()
    TenantBilling.objects.filter(tenant_id__in=ids).delete()
    Tenant.objects.filter(pk__in=ids).delete()
    return [f"{rows:,}", round(sums, 2), round(database, 2), len(queries), round(loop, 2), f"{loop / database:.1f}×",
            f"{sum(by_db.values()):,.2f}", plan]


def main() -> None:
    results = [run(HOURS // 10), run(HOURS)]
    print_table(f"Invoice run for {TENANTS:,} tenants (targets: < 2 s at 1,000,000 rows, queries independent "
                "of rows, ≥ 20× the loop; totals identical to the cent)",
                ["ledger rows", "monthly sums s", "database run s", "queries", "Python loop s", "speed-up",
                 "sum of totals", "plan"],
                results)
    (small_rows, _, _, small_queries, _, _, _, _), (rows, _, database, queries, loop, _, _, _) = results
    record(f"invoice run, {TENANTS:,} tenants from {rows} ledger rows (s)", float(database),
           f"Python loop {loop} s", "< 2", database < 2)
    record("invoice run: speed-up over the Python loop (×)", loop / database, f"{rows} rows", ">= 20",
           loop / database >= 20)
    record(f"invoice run queries at {rows} rows", queries, f"{small_queries} at {small_rows} rows",
           "the same at both", queries == small_queries)


if __name__ == "__main__":
    main()
