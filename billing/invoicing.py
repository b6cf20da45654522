"""Invoices: a month of every billed tenant at once, aggregated in the database; numbers, issue, payment,
void and credit notes.

An invoice run counts each tenant's ledger revisions not yet invoiced up to the month's end
(later revisions of already invoiced months come along as adjustment lines), sums them in
one grouped query per run, and prices each group with the rate version it was metered at.
Which revisions an invoice counts follows from the ledger's id when it was made and the
tenant's previous invoice (Invoice.ledger_through), so no ledger row is written by a run.
A line's amount is its quantity × unit price rounded to the cent, and the subtotal is the sum
of the lines, so the lines add up exactly; tax is the subtotal × the tenant's tax rate,
rounded once. The number of queries does not depend on how many ledger rows there are.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Max, Q, Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone

from billing.choices import InvoiceKind, InvoiceStatus, Meter
from billing.exceptions import InvoiceState, PeriodOpen
from billing.models import Invoice, InvoiceLine, InvoiceSequence, RateVersion, TenantBilling, UsageRecord

LEDGER_LOCK = 0x6C656467  # an advisory lock key of our own ("ledg")
CENT = Decimal("0.01")
QUANTITY = Decimal("0.000001")
UNIT_NAMES = {Meter.VCPU: "vCPU-hours", Meter.RAM: "GiB-hours", Meter.DISK: "GiB-months", Meter.LICENCE: "hours",
              Meter.ADDRESS: "hours"}


def lock_ledger(*, shared: bool) -> None:
    """Metering writes under a shared lock and an invoice run reads the ledger's last id under an exclusive
    one, so no revision is still being written below that id (PostgreSQL; SQLite has one writer anyway)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT pg_advisory_xact_lock{'_shared' if shared else ''}(%s)", [LEDGER_LOCK])


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    """The month as [start, end) in UTC."""
    start = datetime(year, month, 1, tzinfo=UTC)
    return start, start + timedelta(days=calendar.monthrange(year, month)[1])


def divisor(meter: str, month: datetime) -> int:
    """Ledger units per unit billed: seconds per hour (times 1024 MiB per GiB of RAM), or for disk the
    seconds of that month, so a GiB kept for a whole month is one GiB-month in February as in March."""
    if meter == Meter.DISK:
        start, end = month_bounds(month.year, month.month)
        return int((end - start).total_seconds())
    return 3600 * (1024 if meter == Meter.RAM else 1)


def quantity(units: int, per: int) -> Decimal:
    with localcontext() as context:
        context.prec = 50
        return (Decimal(units) / Decimal(per)).quantize(QUANTITY, rounding=ROUND_HALF_UP)


def money(value: Decimal) -> Decimal:
    with localcontext() as context:
        context.prec = 50
        return value.quantize(CENT, rounding=ROUND_HALF_UP)


def fee_version(versions: list[RateVersion], start: datetime, end: datetime) -> RateVersion | None:
    """The version whose monthly fee the month pays: the one in effect at its start (else its first)."""
    current = None
    for version in versions:
        if version.effective_from <= start or (current is None and version.effective_from < end):
            current = version
    return current


def _lines(invoice: Invoice, groups: list[dict], rates: dict[int, RateVersion], fee: RateVersion | None
           ) -> list[InvoiceLine]:
    lines = []
    for group in groups:
        if not group["units"]:
            continue
        rate, month, meter = rates[group["rate"]], group["month"], group["meter"]
        amount_of = quantity(group["units"], divisor(meter, month))
        unit_price = rate.price(meter)
        adjustment = month < invoice.period_start
        description = f"{group['name']} · {Meter(meter).label}"
        if rate.effective_from > month:
            description += f" · price from {rate.effective_from:%Y-%m-%d %H:%M}"
        if adjustment:
            description += f" · adjustment for {month:%Y-%m}"
        lines.append(InvoiceLine(
            invoice=invoice, description=description[:255], resource_type=group["resource_type"],
            resource_id=group["resource_id"], meter=meter, adjustment=adjustment, quantity=amount_of,
            unit=UNIT_NAMES[meter], unit_price=unit_price, amount=money(amount_of * unit_price)))
    if fee is not None and fee.monthly_fee:
        lines.append(InvoiceLine(invoice=invoice, description=f"Monthly fee · {fee.plan.name}", quantity=Decimal(1),
                                 unit="month", unit_price=fee.monthly_fee, amount=fee.monthly_fee))
    for position, line in enumerate(lines, start=1):
        line.position = position
    return lines


def _totals(invoice: Invoice, lines: list[InvoiceLine]) -> None:
    invoice.subtotal = sum((line.amount for line in lines), Decimal("0.00"))
    invoice.tax = money(invoice.subtotal * invoice.tax_rate)
    invoice.total = invoice.subtotal + invoice.tax


@transaction.atomic
def invoice_month(*, year: int, month: int, tenant_ids: set[int] | None = None, now: datetime | None = None
                  ) -> list[Invoice]:
    """Draft the month's invoices of every billed tenant (or of these) that has none yet; idempotent.

    Refused while the month is open: it closes CLOUDPANEL_BILLING_GRACE_HOURS after its end, so
    that late events still land in it. A tenant with no usage gets no invoice, or a zero one if
    CLOUDPANEL_BILLING_ZERO_INVOICES is set.
    """
    start, end = month_bounds(year, month)
    closes = end + timedelta(hours=settings.CLOUDPANEL_BILLING_GRACE_HOURS)
    if (now or timezone.now()) < closes:
        raise PeriodOpen(f"{start:%Y-%m} closes at {closes:%Y-%m-%d %H:%M} UTC; invoices come after that")
    lock_ledger(shared=False)
    billed = TenantBilling.objects.select_for_update().select_related("plan").order_by("tenant_id")
    if tenant_ids is not None:
        billed = billed.filter(tenant_id__in=tenant_ids)
    # Locked, so runs of the same tenants take turns; a tenant already invoiced for this month or a later
    # one is left out (months are invoiced in order: a later invoice counted what came before).
    todo = {b.tenant_id: b for b in billed if (b.counted_end is None or b.counted_end < end) and b.billed_from < end}
    done = set(Invoice.objects.filter(kind=InvoiceKind.INVOICE, period_start=start, tenant_id__in=todo)
               .exclude(status=InvoiceStatus.VOID).values_list("tenant_id", flat=True))
    todo = {tenant: b for tenant, b in todo.items() if tenant not in done}
    if not todo:
        return []
    through = UsageRecord.objects.aggregate(last=Max("id"))["last"] or 0
    counts = (UsageRecord.objects.filter(
        Q(tenant_id__in=todo) & Q(interval_start__lt=end) & Q(id__lte=through)
        & (Q(id__gt=F("tenant__billing__counted_through")) | Q(interval_start__gte=F("tenant__billing__counted_end"))))
        .annotate(month=TruncMonth("interval_start", tzinfo=UTC))
        .values("tenant_id", "resource_type", "resource_id", "meter", "rate", "month")
        .annotate(units=Sum("units"), name=Max("resource_name"))
        .order_by("tenant_id", "month", "name", "resource_type", "resource_id", "meter", "rate"))
    groups: dict[int, list[dict]] = defaultdict(list)
    for group in counts:
        groups[group["tenant_id"]].append(group)
    rates = RateVersion.objects.select_related("plan").in_bulk({g["rate"] for gs in groups.values() for g in gs})
    versions: dict[int, list[RateVersion]] = defaultdict(list)
    for version in RateVersion.objects.filter(plan_id__in={b.plan_id for b in todo.values()}).select_related("plan"):
        versions[version.plan_id].append(version)
    for plan_versions in versions.values():
        plan_versions.sort(key=lambda v: v.effective_from)
    drafts: list[tuple[Invoice, list[InvoiceLine]]] = []
    for tenant_id, billing in todo.items():
        invoice = Invoice(tenant_id=tenant_id, period_start=start, period_end=end, currency=billing.plan.currency,
                          plan_name=billing.plan.name, tax_rate=billing.tax_rate, ledger_through=through,
                          prior_through=billing.counted_through, prior_end=billing.counted_end)
        lines = _lines(invoice, groups[tenant_id], rates, fee_version(versions[billing.plan_id], start, end))
        if lines or settings.CLOUDPANEL_BILLING_ZERO_INVOICES:
            _totals(invoice, lines)
            drafts.append((invoice, lines))
    invoices = Invoice.objects.bulk_create([invoice for invoice, _ in drafts])
    for invoice, lines in drafts:
        for line in lines:
            line.invoice = invoice  # now that it has its id
    InvoiceLine.objects.bulk_create([line for _, lines in drafts for line in lines], batch_size=5000)
    TenantBilling.objects.filter(tenant_id__in=[i.tenant_id for i in invoices]).update(counted_through=through,
                                                                                      counted_end=end)
    return invoices


def _next_number() -> int:
    sequence, _ = InvoiceSequence.objects.get_or_create(pk=1)
    sequence = InvoiceSequence.objects.select_for_update().get(pk=sequence.pk)
    sequence.last += 1
    sequence.save(update_fields=["last"])
    return sequence.last


@transaction.atomic
def issue(*, invoice: Invoice) -> Invoice:
    """Give the draft the next number (numbers have no gaps) and make it immutable."""
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if invoice.status != InvoiceStatus.DRAFT:
        raise InvoiceState(f"{invoice.display_number} is {invoice.get_status_display().lower()}, not a draft")
    invoice.number, invoice.status, invoice.issued_at = _next_number(), InvoiceStatus.ISSUED, timezone.now()
    invoice.save(update_fields=["number", "status", "issued_at"])
    return invoice


@transaction.atomic
def mark_paid(*, invoice: Invoice) -> Invoice:
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if invoice.status != InvoiceStatus.ISSUED:
        raise InvoiceState(f"only an issued invoice can be paid; {invoice.display_number} is "
                           f"{invoice.get_status_display().lower()}")
    invoice.status, invoice.paid_at = InvoiceStatus.PAID, timezone.now()
    invoice.save(update_fields=["status", "paid_at"])
    return invoice


@transaction.atomic
def void(*, invoice: Invoice) -> Invoice:
    """Cancel the tenant's latest invoice while it is issued, unpaid and not credited: it keeps its number,
    and what it counted is counted again by the next invoice run (a new invoice of its month, if it was
    last month's; else as adjustments on the next one). Earlier or paid invoices get a credit note."""
    billing = TenantBilling.objects.select_for_update().get(tenant_id=invoice.tenant_id)
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if invoice.status != InvoiceStatus.ISSUED or invoice.kind != InvoiceKind.INVOICE:
        raise InvoiceState("only an issued, unpaid invoice can be voided; a paid one is corrected by a credit note")
    if invoice.credit_notes.exists():
        raise InvoiceState(f"{invoice.display_number} is credited already")
    if billing.counted_end != invoice.period_end:
        raise InvoiceState("only the latest invoice can be voided; correct an earlier one with a credit note")
    billing.counted_through, billing.counted_end = invoice.prior_through, invoice.prior_end
    billing.save(update_fields=["counted_through", "counted_end"])
    invoice.status, invoice.voided_at = InvoiceStatus.VOID, timezone.now()
    invoice.save(update_fields=["status", "voided_at"])
    return invoice


@transaction.atomic
def credit_note(*, invoice: Invoice) -> Invoice:
    """Credit an issued or paid invoice in full: a numbered credit note with its lines negated."""
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if invoice.kind != InvoiceKind.INVOICE or invoice.status not in (InvoiceStatus.ISSUED, InvoiceStatus.PAID):
        raise InvoiceState("only an issued or paid invoice can be credited")
    if invoice.credit_notes.exists():
        raise InvoiceState(f"{invoice.display_number} is already credited")
    note = Invoice.objects.create(
        tenant_id=invoice.tenant_id, kind=InvoiceKind.CREDIT_NOTE, period_start=invoice.period_start,
        period_end=invoice.period_end, currency=invoice.currency, plan_name=invoice.plan_name,
        tax_rate=invoice.tax_rate, subtotal=-invoice.subtotal, tax=-invoice.tax, total=-invoice.total,
        credits=invoice)
    InvoiceLine.objects.bulk_create([InvoiceLine(
        invoice=note, position=line.position, description=f"Credit: {line.description}"[:255],
        resource_type=line.resource_type, resource_id=line.resource_id, meter=line.meter,
        adjustment=line.adjustment, quantity=-line.quantity, unit=line.unit, unit_price=line.unit_price,
        amount=-line.amount) for line in invoice.lines.all()])
    return issue(invoice=note)
