"""Invoices: a month of every billed tenant at once, aggregated in the database; numbers, issue, payment,
void and credit notes.

An invoice run counts each tenant's usage not yet invoiced up to the month's end from the
ledger's monthly sums (UsageMonth, kept up to date as revisions are written): a line per
resource, meter, rate and month, where an earlier month's line is an adjustment for late
usage. It then marks those units as invoiced, all in one transaction with a fixed number of
queries however many ledger rows there are. The lines are priced here, in Decimal, on
every database. A line's amount is its quantity × unit price rounded to the cent,
and the subtotal is the sum of the lines, so the lines add up exactly; tax is the subtotal
× the tenant's tax rate, rounded once.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import CharField, F
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast
from django.utils import timezone

from billing.choices import InvoiceKind, InvoiceStatus, Meter
from billing.exceptions import InvalidBilling, InvoiceState, PeriodOpen
from billing.models import Invoice, InvoiceLine, InvoiceSequence, RateVersion, TenantBilling, UsageMonth
from notifications.choices import Kind
from notifications.services import notify

LEDGER_LOCK = 0x6C656467  # an advisory lock key of our own ("ledg")
CENT = Decimal("0.01")
AMOUNT_LIMIT = Decimal(10) ** 16  # amounts have 18 digits, 2 of them decimals
MICROS = 10**6  # quantities are kept to the millionth, prices have 6 decimals
EXACT = Context(prec=60, rounding=ROUND_HALF_UP)  # wide enough that products of prices and quantities are exact
METER_LABELS = dict(Meter.choices)
UNIT_NAMES = {Meter.VCPU: "vCPU-hours", Meter.RAM: "GiB-hours", Meter.DISK: "GiB-months", Meter.SNAPSHOT: "GiB-months",
              Meter.VOLUME: "GiB-months", Meter.BACKUP: "GiB-months", Meter.LICENCE: "hours",
              Meter.ADDRESS: "hours"}


def lock_ledger(*, shared: bool) -> None:
    """Metering writes under a shared lock and an invoice run counts under an exclusive one, so that no units
    are added to a month between its reading them and marking them invoiced (PostgreSQL; SQLite has one
    writer anyway)."""
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
    if meter in (Meter.DISK, Meter.SNAPSHOT, Meter.VOLUME, Meter.BACKUP):
        start, end = month_bounds(month.year, month.month)
        return int((end - start).total_seconds())
    return 3600 * (1024 if meter == Meter.RAM else 1)


def _divide(numerator: int, denominator: int) -> int:
    """numerator / denominator (> 0), rounded half away from zero as ROUND_HALF_UP does: exact, in integers."""
    rounded = (abs(numerator) * 2 + denominator) // (2 * denominator)
    return rounded if numerator >= 0 else -rounded


def quantity_micros(units: int, per: int) -> int:
    """The quantity billed for units, in millionths of the unit billed (rounded half up)."""
    return _divide(units * MICROS, per)


def amount_cents(micros: int, price_micros: int) -> int:
    """A quantity × a unit price, both in millionths, in cents rounded half up."""
    return _divide(micros * price_micros, MICROS * MICROS // 100)


def micros_of(value: Decimal) -> int:
    """A quantity or price (at most 6 decimals) in millionths."""
    return int(value.scaleb(6))


def quantity(units: int, per: int) -> Decimal:
    return Decimal(quantity_micros(units, per)).scaleb(-6)


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, context=EXACT)


def amount(of: Decimal, price: Decimal) -> Decimal:
    """Quantity × unit price, exactly, rounded to the cent."""
    return Decimal(amount_cents(micros_of(of), micros_of(price))).scaleb(-2)


def plan_versions(plan_ids: set[int]) -> dict[int, list[RateVersion]]:
    """The plans' price versions (with their plan), oldest first."""
    versions: dict[int, list[RateVersion]] = defaultdict(list)
    for version in RateVersion.objects.filter(plan_id__in=plan_ids).select_related("plan").order_by(
            "effective_from"):
        versions[version.plan_id].append(version)
    return versions


def rate_at(versions: list[RateVersion], moment: datetime) -> RateVersion | None:
    """The version in effect at the moment, of versions oldest first (none before the first)."""
    current = None
    for version in versions:
        if version.effective_from > moment:
            break
        current = version
    return current


def fee_version(versions: list[RateVersion], start: datetime, end: datetime) -> RateVersion | None:
    """The version whose monthly fee the month pays: the one in effect at its start (else its first)."""
    current = None
    for version in versions:
        if version.effective_from <= start or (current is None and version.effective_from < end):
            current = version
    return current


LINE_FIELDS = ("invoice_id", "position", "description", "resource_type", "resource_id", "meter", "adjustment",
               "quantity", "unit", "unit_price", "amount", "rate_id", "usage_month", "units")


def _lines(period_start: datetime, groups: list[tuple], rates: dict[int, RateVersion], plan_id: int,
           fee: RateVersion | None, terms: dict[tuple, tuple]) -> list[list]:
    """The invoice's lines as LINE_FIELDS values (its id still to be filled in), from its groups of
    (resource type, resource id, name, meter, rate id, month, units); usage metered at another plan's prices
    (before the tenant changed plans) says so. What depends only on the rate, meter and month is worked out
    once per run, in `terms`."""
    lines = []
    for resource_type, resource_id, name, meter, rate_id, month, units in groups:
        if not units:
            continue
        rate = rates[rate_id]
        key = (rate_id, meter, month, rate.plan_id != plan_id)
        if key not in terms:
            note = f" · {METER_LABELS[meter]}"
            if rate.plan_id != plan_id:
                note += f" · {rate.plan.name} prices"
            if rate.effective_from > month:
                note += f" · price from {rate.effective_from:%Y-%m-%d %H:%M}"
            if month < period_start:
                note += f" · adjustment for {month:%Y-%m}"
            price = rate.price(meter)
            terms[key] = (note, divisor(meter, month), price, micros_of(price), month < period_start)
        note, per, unit_price, price_micros, adjustment = terms[key]
        micros = quantity_micros(units, per)
        cents = amount_cents(micros, price_micros)
        lines.append([None, len(lines) + 1, (name + note)[:255], resource_type, resource_id, meter, adjustment,
                      Decimal(micros).scaleb(-6), UNIT_NAMES[meter], unit_price, Decimal(cents).scaleb(-2), rate_id,
                      month, units])
    if fee is not None and fee.monthly_fee:
        lines.append([None, len(lines) + 1, f"Monthly fee · {fee.plan.name}", "", None, "", False, Decimal(1),
                      "month", fee.monthly_fee, fee.monthly_fee, None, None, None])
    return lines


def _totals(invoice: Invoice, lines: list[list]) -> None:
    """The invoice's subtotal, tax and total; refused (the whole run with it) beyond what an amount holds."""
    invoice.subtotal = sum((line[LINE_FIELDS.index("amount")] for line in lines), Decimal("0.00"))
    invoice.tax = money(invoice.subtotal * invoice.tax_rate)
    invoice.total = invoice.subtotal + invoice.tax
    largest = max((abs(line[LINE_FIELDS.index("amount")]) for line in lines), default=Decimal(0))
    if max(largest, abs(invoice.subtotal), abs(invoice.total)) >= AMOUNT_LIMIT:
        raise InvalidBilling("an amount of this month is beyond what an invoice holds (10^16); check the prices "
                             "of its plans")


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
        billed = billed.filter(tenant_id__in=_among(tenant_ids))
    # Locked, so runs of the same tenants take turns; a tenant already invoiced for this month or a later
    # one is left out (months are invoiced in order: a later invoice counted what came before).
    todo = {b.tenant_id: b for b in billed if (b.counted_end is None or b.counted_end < end) and b.billed_from < end}
    done = set(Invoice.objects.filter(kind=InvoiceKind.INVOICE, period_start=start, tenant_id__in=_among(todo))
               .exclude(status=InvoiceStatus.VOID).values_list("tenant_id", flat=True))
    todo = {tenant: b for tenant, b in todo.items() if tenant not in done}
    if not todo:
        return []
    versions = plan_versions({b.plan_id for b in todo.values()})
    fees = {}
    for tenant_id, billing in todo.items():
        fee = fee_version(versions[billing.plan_id], start, end)
        fees[tenant_id] = fee if fee is not None and fee.monthly_fee else None
    pending = UsageMonth.objects.filter(tenant_id__in=_among(todo), month__lt=end).exclude(units=F("invoiced_units"))
    invoices = _draft(todo, fees, pending, start, end)
    pending.update(invoiced_units=F("units"))  # every tenant with pending units got an invoice
    TenantBilling.objects.filter(tenant_id__in=_among([invoice.tenant_id for invoice in invoices])).update(
        counted_end=end)
    return invoices


def _among(ids: Collection[int]) -> list[int] | RawSQL:
    """Ids for an __in filter; on PostgreSQL as one array parameter (a placeholder per id costs more to send
    than the query takes to run)."""
    if connection.vendor == "postgresql":
        return RawSQL("SELECT unnest(%s::bigint[])", [list(ids)])
    return list(ids)


def _new_invoice(billing: TenantBilling, start: datetime, end: datetime) -> Invoice:
    return Invoice(tenant_id=billing.tenant_id, period_start=start, period_end=end, currency=billing.plan.currency,
                   plan_name=billing.plan.name, tax_rate=billing.tax_rate, prior_end=billing.counted_end)


def _draft(todo: dict[int, TenantBilling], fees: dict[int, RateVersion | None], pending,
           start: datetime, end: datetime) -> list[Invoice]:
    """The invoices and their lines, priced here from the monthly sums (read by one query, however many there
    are) and stored by one statement each."""
    groups: dict[int, list[tuple]] = defaultdict(list)
    months: dict[str, datetime] = {}  # a few distinct ones, read as text (quicker to load) and made once
    for tenant_id, resource_type, resource_id, name, meter, rate, month, units, invoiced in (
            pending.annotate(month_text=Cast("month", CharField()))
            .order_by("tenant_id", "month", "resource_name", "resource_type", "resource_id", "meter", "rate")
            .values_list("tenant_id", "resource_type", "resource_id", "resource_name", "meter", "rate", "month_text",
                         "units", "invoiced_units")):
        if month not in months:  # the first of a month, in UTC: 2027-03-01 00:00:00[+00]
            months[month] = datetime(int(month[:4]), int(month[5:7]), 1, tzinfo=UTC)
        groups[tenant_id].append((resource_type, resource_id, name, meter, rate, months[month], units - invoiced))
    rates = RateVersion.objects.select_related("plan").in_bulk({g[4] for gs in groups.values() for g in gs})
    drafts: list[tuple[Invoice, list[list]]] = []
    terms: dict[tuple, tuple] = {}
    for tenant_id, billing in todo.items():
        invoice = _new_invoice(billing, start, end)
        lines = _lines(start, groups[tenant_id], rates, billing.plan_id, fees[tenant_id], terms)
        if lines or settings.CLOUDPANEL_BILLING_ZERO_INVOICES:
            _totals(invoice, lines)
            drafts.append((invoice, lines))
    invoices = [invoice for invoice, _ in drafts]
    _store_invoices(invoices)
    for invoice, lines in drafts:
        for line in lines:
            line[0] = invoice.pk
    _insert(InvoiceLine, LINE_FIELDS, [line for _, lines in drafts for line in lines])
    return invoices


def _insert(model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence]) -> None:
    """Insert rows (the values of fields) in one statement: a binary COPY on PostgreSQL, one INSERT elsewhere."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        model.objects.bulk_create([model(**dict(zip(fields, row, strict=True))) for row in rows])
        return
    columns = [model._meta.get_field(name) for name in fields]
    with connection.cursor() as cursor, connection.wrap_database_errors, cursor.cursor.copy(
            f"COPY {model._meta.db_table} ({', '.join(c.column for c in columns)}) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types([column.db_type(connection).split("(")[0] for column in columns])
        for row in rows:
            copy.write_row(row)


def _store_invoices(invoices: list[Invoice]) -> None:
    """Insert new invoices, giving them their ids (taken from the table's sequence on PostgreSQL)."""
    if connection.vendor != "postgresql":
        Invoice.objects.bulk_create(invoices)
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                       [Invoice._meta.db_table, len(invoices)])
        for invoice, (pk,) in zip(invoices, cursor.fetchall(), strict=True):
            invoice.pk = invoice.id = pk
    now = timezone.now()
    fields = [field.attname for field in Invoice._meta.concrete_fields]
    for invoice in invoices:
        invoice.created_at = now
        invoice._state.adding, invoice._state.db = False, connection.alias
    _insert(Invoice, fields, [[getattr(invoice, name) for name in fields] for invoice in invoices])


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
    notify(kind=Kind.INVOICE_ISSUED, tenant_id=invoice.tenant_id,
           title=f"{invoice.get_kind_display()} {invoice.display_number} issued: {invoice.total} {invoice.currency}",
           link=f"/billing/invoices/{invoice.pk}/", data={"invoice": invoice.pk, "number": invoice.display_number,
                                                           "total": str(invoice.total), "currency": invoice.currency})
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
    and the units it counted are counted again by the next invoice run (a new invoice of its month, if it was
    last month's; else as adjustments on the next one). Earlier or paid invoices get a credit note."""
    billing = TenantBilling.objects.select_for_update().get(tenant_id=invoice.tenant_id)
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if invoice.status != InvoiceStatus.ISSUED or invoice.kind != InvoiceKind.INVOICE:
        raise InvoiceState("only an issued, unpaid invoice can be voided; a paid one is corrected by a credit note")
    if invoice.credit_notes.exists():
        raise InvoiceState(f"{invoice.display_number} is credited already")
    if billing.counted_end != invoice.period_end:
        raise InvoiceState("only the latest invoice can be voided; correct an earlier one with a credit note")
    if invoice.lines.exclude(resource_type="").filter(units=None).exists():
        raise InvoiceState(f"{invoice.display_number} was made before usage sums were kept: correct it with a "
                           "credit note")
    billing.counted_end = invoice.prior_end
    billing.save(update_fields=["counted_end"])
    for line in invoice.lines.exclude(units=None):
        UsageMonth.objects.filter(resource_type=line.resource_type, resource_id=line.resource_id, meter=line.meter,
                                  rate_id=line.rate_id, month=line.usage_month).update(
            invoiced_units=F("invoiced_units") - line.units)
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
