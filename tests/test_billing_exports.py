"""Invoice exports: JSON, CSV, the PDF document and a month's ZIP archive.

The metered invoice is the February 2028 one of tests/test_billing.py plus a monthly fee of 12.00:
disk 0.366379 GiB-months → 0.04, RAM 25.5 GiB-hours → 0.13, 51 vCPU-hours → 0.51 (lines by
meter name), the fee 12.00. Subtotal 12.68, tax 20 % 2.536 → 2.54, total 15.22.
"""

import csv
import io
import zipfile
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from pypdf import PdfReader

from billing import invoicing, metering, services
from billing.exports import invoice_csv, invoice_json, invoice_pdf, month_archive
from billing.models import Invoice, InvoiceLine, RatePlan
from instances.choices import Status
from tests.factories import make_tenant
from tests.test_billing import at, history, vm

pytestmark = pytest.mark.django_db(transaction=True)

MULLER = "Müller & Søn"


@pytest.fixture
def plan() -> RatePlan:
    return services.create_plan(name="standard", currency="EUR", effective_from=at("2026-01-01 00:00"),
                                vcpu_hour="0.01", ram_gib_hour="0.005", disk_gib_month="0.10", monthly_fee="12.00")


def metered(plan: RatePlan, name: str) -> Invoice:
    """A draft for February 2028 of a new tenant with a VM running from 28 Feb 22:30 to 1 March 01:15."""
    tenant = make_tenant(name)
    services.set_tenant_billing(tenant=tenant, plan=plan, tax_rate="0.2", billed_from=at("2026-01-01 00:00"))
    history(vm(tenant, name="web"), (Status.RUNNING, "2028-02-28 22:30:00"), (Status.STOPPED, "2028-03-01 01:15:00"))
    metering.meter(since=at("2028-02-01 00:00"), until=at("2028-04-01 00:00"), tenant_ids={tenant.pk})
    invoice, = invoicing.invoice_month(year=2028, month=2, tenant_ids={tenant.pk}, now=at("2028-04-01 00:00"))
    return Invoice.objects.get(pk=invoice.pk)


@pytest.fixture
def muller(plan) -> Invoice:
    return metered(plan, MULLER)


def draft(tenant, lines: list[tuple[str, str, str, str, str]], *, tax_rate: str = "0.2000") -> Invoice:
    """A draft for March 2027 made directly from (description, quantity, unit, unit price, amount)."""
    subtotal = sum((Decimal(line[4]) for line in lines), Decimal("0.00"))
    tax = invoicing.money(subtotal * Decimal(tax_rate))
    invoice = Invoice.objects.create(tenant=tenant, period_start=at("2027-03-01 00:00"),
                                     period_end=at("2027-04-01 00:00"), currency="EUR", plan_name="standard",
                                     tax_rate=Decimal(tax_rate), subtotal=subtotal, tax=tax, total=subtotal + tax)
    InvoiceLine.objects.bulk_create([InvoiceLine(
        invoice=invoice, position=position, description=description, quantity=Decimal(quantity), unit=unit,
        unit_price=Decimal(price), amount=Decimal(amount))
        for position, (description, quantity, unit, price, amount) in enumerate(lines, 1)])
    return Invoice.objects.get(pk=invoice.pk)


def pages(data: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]


def flat(text: str) -> str:
    """The text without its whitespace: wrapped lines and cells extract with breaks in between."""
    return "".join(text.split())


def test_json_has_every_field_with_exact_decimals_and_the_lines_add_up(muller):
    invoice = invoicing.issue(invoice=muller)
    data = invoice_json(Invoice.objects.get(pk=invoice.pk))
    issued = invoice.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ")

    def line(position, description, meter, quantity, unit, unit_price, amount, resource=True):
        return {"position": position, "description": description, "resource_type": "instance" if resource else "",
                "resource_id": data["lines"][0]["resource_id"] if resource else None, "meter": meter,
                "adjustment": False, "quantity": quantity, "unit": unit, "unit_price": unit_price, "amount": amount}

    assert data == {
        "number": "INV-000001", "id": invoice.pk, "kind": "invoice", "status": "issued",
        "tenant": {"id": invoice.tenant_id, "name": MULLER},
        "period_start": "2028-02-01T00:00:00Z", "period_end": "2028-03-01T00:00:00Z",
        "currency": "EUR", "plan": "standard", "tax_rate": "0.2000",
        "subtotal": "12.68", "tax": "2.54", "total": "15.22",
        "issued_at": issued, "paid_at": None, "voided_at": None, "credits": None,
        "lines": [
            line(1, "web · GiB-of-disk-months", "disk", "0.366379", "GiB-months", "0.100000", "0.04"),
            line(2, "web · GiB-of-RAM-hours", "ram", "25.500000", "GiB-hours", "0.005000", "0.13"),
            line(3, "web · vCPU-hours", "vcpu", "51.000000", "vCPU-hours", "0.010000", "0.51"),
            line(4, "Monthly fee · standard", "", "1.000000", "month", "12.000000", "12.00", resource=False),
        ],
    }
    assert isinstance(data["lines"][0]["resource_id"], int)
    assert sum(Decimal(line["amount"]) for line in data["lines"]) == Decimal(data["subtotal"])
    note = invoice_json(invoicing.credit_note(invoice=invoice))
    assert (note["number"], note["kind"], note["credits"], note["total"]) == ("CN-000002", "credit", "INV-000001",
                                                                              "-15.22")
    assert [line["amount"] for line in note["lines"]] == ["-0.04", "-0.13", "-0.51", "-12.00"]


def test_csv_parses_its_amounts_add_up_and_the_summary_rows_are_right(muller):
    rows = list(csv.DictReader(io.StringIO(invoice_csv(muller))))
    lines, summary = rows[:-3], rows[-3:]
    assert list(rows[0]) == ["invoice", "kind", "status", "tenant", "period_start", "period_end", "currency",
                             "position", "description", "resource_type", "resource_id", "meter", "adjustment",
                             "quantity", "unit", "unit_price", "amount"]
    assert rows[0] == {
        "invoice": f"draft {muller.pk}", "kind": "invoice", "status": "draft", "tenant": MULLER,
        "period_start": "2028-02-01T00:00:00Z", "period_end": "2028-03-01T00:00:00Z", "currency": "EUR",
        "position": "1", "description": "web · GiB-of-disk-months", "resource_type": "instance",
        "resource_id": rows[0]["resource_id"], "meter": "disk", "adjustment": "no", "quantity": "0.366379",
        "unit": "GiB-months", "unit_price": "0.100000", "amount": "0.04"}
    assert rows[0]["resource_id"].isdigit()
    assert [(row["position"], row["description"], row["amount"]) for row in lines] == [
        ("1", "web · GiB-of-disk-months", "0.04"), ("2", "web · GiB-of-RAM-hours", "0.13"),
        ("3", "web · vCPU-hours", "0.51"), ("4", "Monthly fee · standard", "12.00")]
    assert lines[3]["resource_id"] == "" and lines[3]["meter"] == ""
    assert [(row["position"], row["description"], row["amount"], row["unit"], row["tenant"]) for row in summary] == [
        ("", "Subtotal", "12.68", "", MULLER), ("", "Tax 20 %", "2.54", "", MULLER), ("", "Total", "15.22", "", MULLER)]
    assert sum(Decimal(row["amount"]) for row in lines) == Decimal(summary[0]["amount"]) == muller.subtotal
    # A credit note's negative amounts stay numbers, not text
    invoicing.issue(invoice=muller)
    note = invoicing.credit_note(invoice=muller)
    rows = list(csv.DictReader(io.StringIO(invoice_csv(note))))
    assert [row["amount"] for row in rows] == ["-0.04", "-0.13", "-0.51", "-12.00", "-12.68", "-2.54", "-15.22"]
    assert rows[0]["quantity"] == "-0.366379" and rows[0]["invoice"] == "CN-000002"


@pytest.mark.parametrize(("rate", "label", "tax"), [
    ("0.1900", "Tax 19 %", "1.90"), ("0.0750", "Tax 7.5 %", "0.75"), ("0.0000", "Tax 0 %", "0.00"),
    ("1.0000", "Tax 100 %", "10.00"), ("0.2125", "Tax 21.25 %", "2.13")])  # of 10.00, half up
def test_the_tax_row_names_the_rate_as_a_percent(rate, label, tax):
    invoice = draft(make_tenant(), [("fee", "1", "month", "10.00", "10.00")], tax_rate=rate)
    rows = list(csv.reader(io.StringIO(invoice_csv(invoice))))
    assert (rows[-2][8], rows[-2][16]) == (label, tax)
    assert f"{label} {tax} EUR" in pages(invoice_pdf(invoice))[0]


def test_csv_text_cells_that_a_spreadsheet_would_run_are_quoted():
    tenant = make_tenant('=HYPERLINK("http://evil.example","x")')
    invoice = draft(tenant, [("+cmd|' /C calc'!A0", "1", "@unit", "1.00", "1.00"), ("-2+3", "1", "h", "1", "1.00")])
    rows = list(csv.DictReader(io.StringIO(invoice_csv(invoice))))
    assert rows[0]["tenant"] == '\'=HYPERLINK("http://evil.example","x")'
    assert [(row["description"], row["unit"]) for row in rows[:2]] == [("'+cmd|' /C calc'!A0", "'@unit"),
                                                                       ("'-2+3", "h")]
    assert [row["amount"] for row in rows] == ["1.00", "1.00", "2.00", "0.40", "2.40"]


def test_the_pdf_names_issuer_tenant_lines_and_total(muller, settings):
    settings.CLOUDPANEL_BILLING_ISSUER = "Wolkenbank GmbH"
    invoice = Invoice.objects.get(pk=invoicing.issue(invoice=muller).pk)
    data = invoice_pdf(invoice)
    reader = PdfReader(io.BytesIO(data))
    text, = pages(data)
    for expected in ("Wolkenbank GmbH", "Invoice INV-000001", "Bill to", MULLER, "1 February 2028 – 29 February 2028",
                     "web · GiB-of-disk-months", "web · GiB-of-RAM-hours", "web · vCPU-hours",
                     "Monthly fee · standard", "51 vCPU-hours", "0.366379 GiB-months", "25.5 GiB-hours",
                     "Subtotal", "12.68 EUR", "Tax 20 %", "2.54 EUR", "Total", "15.22 EUR", "Page 1 of 1",
                     "Wolkenbank GmbH · INV-000001"):
        assert expected in text, expected
    assert "VOID" not in text and "Paid" not in text and "not issued" not in text
    assert flat(f"Issue date {invoice.issued_at.day} {invoice.issued_at:%B %Y}") in flat(text)
    assert reader.metadata.title == "Invoice INV-000001" and reader.metadata.author == "Wolkenbank GmbH"
    assert reader.metadata.creation_date.replace(microsecond=0) == invoice.issued_at.replace(microsecond=0)
    assert data == invoice_pdf(Invoice.objects.get(pk=invoice.pk))  # the same invoice gives the same bytes


def test_a_long_invoice_paginates_with_the_header_on_every_page():
    tenant = make_tenant(MULLER)
    lines = [(f"vm-{i:03d} · vCPU-hours", f"{i}.5", "vCPU-hours", "0.010000", f"{Decimal(i) * 2 + 1:.2f}")
             for i in range(1, 121)]
    long_words = " ".join(["a rather long server name"] * 10)[:255]
    lines[40] = (long_words, "1", "hours", "0.5", "0.50")
    lines[80] = ("x" * 255, "1", "hours", "0.5", "0.50")  # no space to wrap at
    invoice = draft(tenant, lines)
    assert invoice.subtotal == Decimal("14395.00")  # 2 × (1 + … + 120) + 120, less 83 and 163 plus 2 × 0.50
    texts = pages(invoice_pdf(invoice))
    count = len(texts)
    assert count > 1
    for number, text in enumerate(texts, 1):
        assert f"Page {number} of {count}" in text and f"CloudPanel · draft {invoice.pk}" in text
        if "vm-" in text:  # the totals may go on a page of their own
            assert "Description" in text and "Unit price (EUR)" in text and "Amount (EUR)" in text
    assert "Draft invoice (not issued)" in texts[0]
    everything = flat("".join(texts))
    for description, *_ in lines:
        assert flat(description) in everything, description
    assert "Total" in texts[-1] and "17,274.00 EUR" in texts[-1]  # 14,395.00 + 20 % tax 2,879.00
    assert "14,395.00 EUR" in texts[-1]


def test_drafts_void_paid_invoices_and_credit_notes_show_their_state(plan, muller):
    draft_text = pages(invoice_pdf(muller))[0]
    assert "Draft invoice (not issued)" in draft_text and "not issued" in draft_text
    assert "VOID" not in draft_text and "Paid" not in draft_text

    paid = invoicing.mark_paid(invoice=invoicing.issue(invoice=muller))
    paid_text = pages(invoice_pdf(paid))[0]
    assert "Invoice INV-000001" in paid_text and f"Paid on {paid.paid_at.day} {paid.paid_at:%B %Y}" in paid_text
    assert "VOID" not in paid_text

    note = invoicing.credit_note(invoice=paid)
    note_text = pages(invoice_pdf(note))[0]
    assert "Credit note CN-000002 (credits INV-000001)" in note_text
    assert "-15.22 EUR" in note_text and "Credit: web · vCPU-hours" in note_text and "-12.00" in note_text

    other = metered(plan, "Облако Σύννεφο")
    voided = invoicing.void(invoice=invoicing.issue(invoice=other))
    void_text = pages(invoice_pdf(voided))[0]
    assert "Invoice INV-000003" in void_text and "Облако Σύννεφο" in void_text
    assert f"VOID · voided on {voided.voided_at.day} {voided.voided_at:%B %Y}" in void_text
    assert "Paid" not in void_text


def archive_of(count: int) -> tuple[list[Invoice], bytes, int]:
    """`count` invoices of different tenants: the first a draft, the rest issued, the last of them credited."""
    invoices = [draft(make_tenant(f"tenant {count}-{i}"), [("fee", "1", "month", "10.00", "10.00"),
                                                   ("vm · vCPU-hours", "2.5", "vCPU-hours", "0.01", "0.03")])
                for i in range(count)]
    invoices[1:] = [invoicing.issue(invoice=invoice) for invoice in invoices[1:]]
    invoices.append(invoicing.credit_note(invoice=invoices[-1]))
    with CaptureQueriesContext(connection) as queries:
        parts = list(month_archive(Invoice.objects.filter(pk__in=[i.pk for i in invoices]).order_by("pk"),
                                   name="2027-03"))
    assert len(parts) == len(invoices) + 1 and all(parts)  # sent as it is made: a part per invoice, then the rest
    return invoices, b"".join(parts), len(queries.captured_queries)


def test_the_month_archive_holds_a_pdf_each_and_a_csv_in_a_fixed_number_of_queries():
    few, _, few_queries = archive_of(2)
    invoices, data, queries = archive_of(5)
    assert few_queries == queries == 2  # the invoices with tenants and credited invoices, then all their lines
    archive = zipfile.ZipFile(io.BytesIO(data))
    draft_name = f"draft-{invoices[0].pk}.pdf"
    names = [draft_name] + [f"{invoice.display_number}.pdf" for invoice in invoices[1:]]
    assert archive.namelist() == names + ["2027-03.csv"]
    assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    for name, invoice in zip(names, invoices, strict=True):
        text, = pages(archive.read(name))
        assert invoice.tenant.name in text and f"{invoice.total:,.2f} EUR" in text
    rows = list(csv.DictReader(io.StringIO(archive.read("2027-03.csv").decode())))
    assert len(rows) == len(invoices) == 6
    assert [row["number"] for row in rows] == [f"draft {invoices[0].pk}", "INV-000003", "INV-000004", "INV-000005",
                                               "INV-000006", "CN-000007"]
    note = invoices[-1]
    assert rows[-1] == {
        "number": "CN-000007", "kind": "credit", "status": "issued", "tenant": "tenant 5-4",
        "period_start": "2027-03-01T00:00:00Z", "period_end": "2027-04-01T00:00:00Z", "currency": "EUR",
        "plan": "standard", "subtotal": "-10.03", "tax_rate": "0.2000", "tax": "-2.01", "total": "-12.04",
        "issued_at": note.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"), "paid_at": "", "credits": "INV-000006"}
    assert (rows[0]["status"], rows[0]["issued_at"], rows[0]["credits"]) == ("draft", "", "")


def test_a_web_process_loads_the_pdf_library_only_for_a_pdf():
    # Given a fresh process set up as the web tier is (Django, the ASGI app, every route)
    import subprocess
    import sys
    from pathlib import Path

    program = ("import sys, django; django.setup(); import cloudpanel.asgi; from django.urls import get_resolver; "
               "get_resolver().url_patterns; print('fpdf' in sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", program], cwd=Path(__file__).resolve().parent.parent,
                            capture_output=True, text=True, check=True).stdout.split()[-1]
    # Then fpdf (some 30 MiB) is not loaded until an invoice is rendered as a PDF
    assert loaded == "False"
