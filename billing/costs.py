"""What the pages and the API show of money: a tenant's cost this month so far, its forecast and cost per day,
and revenue per tenant and month.

The month so far is priced from the ledger as metered (up to the last full hour), at the
prices each hour was metered at; it is an estimate until the month's invoice, which rounds
per line. The forecast adds the last metered hour's cost for every hour left in the month:
what the tenant runs now, kept running.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext

from django.db.models import Max, Sum
from django.db.models.functions import TruncDay
from django.utils import timezone

from billing.choices import InvoiceKind, InvoiceStatus
from billing.invoicing import EXACT, divisor, fee_version, money, month_bounds, quantity
from billing.models import Invoice, RateVersion, TenantBilling, UsageRecord
from instances.plans import Price, Size

HOUR = timedelta(hours=1)


@dataclass
class MonthToDate:
    """A tenant's month so far: usage cost per day, the plan's monthly fee, and the forecast to its end."""

    currency: str
    plan: str
    start: datetime
    end: datetime
    metered_until: datetime | None
    fee: Decimal
    per_day: list[tuple[date, Decimal]] = field(default_factory=list)
    hourly: Decimal = Decimal("0.00")

    @property
    def so_far(self) -> Decimal:
        return money(sum((cost for _, cost in self.per_day), Decimal(0)) + self.fee)

    @property
    def day_rows(self) -> list[dict]:
        return [{"day": day, "cost": cost} for day, cost in self.per_day]

    @property
    def forecast(self) -> Decimal:
        left = self.end - (self.metered_until or self.start)
        return money(self.so_far + self.hourly * Decimal(int(left.total_seconds()) // 3600))


def _price(units: int, meter: str, month: datetime, rate: RateVersion) -> Decimal:
    return EXACT.multiply(quantity(units, divisor(meter, month)), rate.price(meter))


def month_to_date(billing: TenantBilling, now: datetime | None = None) -> MonthToDate:
    """The tenant's current month, priced from its ledger: a fixed number of queries."""
    now = now or timezone.now()
    start, end = month_bounds(now.year, now.month)
    fee = fee_version(list(billing.plan.versions.all()), start, end)  # oldest first (RateVersion's order)
    ledger = UsageRecord.objects.filter(tenant_id=billing.tenant_id, interval_start__gte=start,
                                        interval_start__lt=end)
    rates = RateVersion.objects.in_bulk(ledger.order_by().values_list("rate", flat=True).distinct())  # any plan's
    last = ledger.aggregate(last=Max("interval_start"))["last"]
    days: dict[date, Decimal] = defaultdict(Decimal)
    for row in (ledger.annotate(day=TruncDay("interval_start", tzinfo=UTC)).values("day", "meter", "rate")
                .annotate(units=Sum("units"))):
        days[row["day"].date()] += _price(row["units"], row["meter"], start, rates[row["rate"]])
    hourly = Decimal(0)
    if last is not None and last >= now.replace(minute=0, second=0, microsecond=0) - 2 * HOUR:
        for row in ledger.filter(interval_start=last).values("meter", "rate").annotate(units=Sum("units")):
            hourly += _price(row["units"], row["meter"], start, rates[row["rate"]])
    every_day = [start.date() + timedelta(days=n) for n in range((min(now, end) - start).days + 1)]
    return MonthToDate(currency=billing.plan.currency, plan=billing.plan.name, start=start, end=end,
                       metered_until=last + HOUR if last else None,
                       fee=fee.monthly_fee if fee else Decimal("0.00"),
                       per_day=[(day, money(days.get(day, Decimal(0)))) for day in every_day], hourly=hourly)


@dataclass
class Revenue:
    """Invoiced revenue (before tax, net of credit notes) per tenant and month, in one currency."""

    currency: str
    months: list[date]
    tenants: list[str]
    amounts: dict[tuple[str, date], Decimal]

    def row(self, tenant: str) -> list[Decimal]:
        return [self.amounts.get((tenant, month), Decimal("0.00")) for month in self.months]

    @property
    def rows(self) -> list[tuple[str, list[Decimal]]]:
        return [(tenant, self.row(tenant)) for tenant in self.tenants]

    @property
    def totals(self) -> list[Decimal]:
        return [sum((self.amounts.get((t, m), Decimal(0)) for t in self.tenants), Decimal("0.00"))
                for m in self.months]


def last_months(count: int, now: datetime | None = None) -> list[datetime]:
    """The starts of the last `count` months up to this one, oldest first."""
    now = now or timezone.now()
    year, month, starts = now.year, now.month, []
    for _ in range(count):
        starts.append(datetime(year, month, 1, tzinfo=UTC))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return starts[::-1]


def revenue(*, months: int = 12, now: datetime | None = None) -> list[Revenue]:
    """The last `months` months' issued and paid invoices and credit notes, summed in the database per
    currency, tenant and month (void invoices and drafts are not revenue)."""
    starts = last_months(months, now)
    sums = (Invoice.objects.filter(status__in=[InvoiceStatus.ISSUED, InvoiceStatus.PAID],
                                   period_start__gte=starts[0],
                                   kind__in=[InvoiceKind.INVOICE, InvoiceKind.CREDIT_NOTE])
            .values("currency", "tenant__name", "period_start").annotate(amount=Sum("subtotal"))
            .order_by("currency", "tenant__name", "period_start"))
    found: dict[str, Revenue] = {}
    for row in sums:
        report = found.setdefault(row["currency"], Revenue(currency=row["currency"], tenants=[], amounts={},
                                                           months=[start.date() for start in starts]))
        if row["tenant__name"] not in report.tenants:
            report.tenants.append(row["tenant__name"])
        report.amounts[(row["tenant__name"], row["period_start"].astimezone(UTC).date())] = row["amount"]
    return list(found.values())


def monthly_price(tenant_id: int, size: Size) -> Price | None:
    """What an instance of that size costs for a whole month of running on the tenant's plan at today's prices
    (before tax, without the plan's own fee): vCPUs, RAM, licence and public addresses by the hour, disk by the
    GiB-month. None when the tenant has no plan or the plan no prices yet."""
    billing = TenantBilling.objects.select_related("plan").filter(tenant_id=tenant_id).first()
    if billing is None:
        return None
    now = timezone.now()
    rate = RateVersion.objects.filter(plan=billing.plan, effective_from__lte=now).order_by("-effective_from").first()
    if rate is None:
        return None
    start, end = month_bounds(now.year, now.month)
    hours = Decimal(int((end - start).total_seconds()) // 3600)
    with localcontext(EXACT):
        hourly = (size.vcpus * rate.vcpu_hour + Decimal(size.memory_mib) / 1024 * rate.ram_gib_hour
                  + (rate.licence_hour if size.licensed else 0) + size.public_addresses * rate.address_hour)
        return Price(billing.plan.currency, money(hourly * hours + size.disk_gib * rate.disk_gib_month))
