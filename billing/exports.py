"""An invoice as JSON, CSV and a PDF document, and a month's invoices as one ZIP archive.

Amounts stay Decimal all the way: JSON and CSV carry them as strings with their stored places,
the PDF with thousands separators and no fewer than two decimals. Dates are UTC.
"""

from __future__ import annotations

import csv
import functools
import io
import zipfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db.models import QuerySet

from billing.choices import InvoiceStatus
from billing.models import Invoice, InvoiceLine
from tenants.exports import cell

FONTS = Path("/usr/share/fonts/truetype/dejavu")  # Debian's fonts-dejavu-core: covers "·", "–" and most scripts
LINE_COLUMNS = ["invoice", "kind", "status", "tenant", "period_start", "period_end", "currency", "position",
                "description", "resource_type", "resource_id", "meter", "adjustment", "quantity", "unit",
                "unit_price", "amount"]
ARCHIVE_COLUMNS = ["number", "kind", "status", "tenant", "period_start", "period_end", "currency", "plan",
                   "subtotal", "tax_rate", "tax", "total", "issued_at", "paid_at", "credits"]
ARCHIVE_CHUNK = 500  # invoices (with their lines) in memory at a time: one more query per chunk
GREY, RED, GREEN, BLACK = (110, 110, 110), (190, 20, 20), (20, 120, 50), (0, 0, 0)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def _exact(value: Decimal) -> str:
    """The decimal as stored, never in exponent notation: "0.010000", "-12.34"."""
    return f"{value:f}"


def _figure(value: Decimal, places: int = 0) -> str:
    """The decimal with thousands separators and its trailing zeros dropped, down to `places` decimals."""
    return f"{value:,.{max(places, -value.normalize().as_tuple().exponent)}f}"


def _tax_label(invoice: Invoice) -> str:
    return f"Tax {_figure(invoice.tax_rate * 100)} %"


def _day(value: datetime) -> str:
    value = value.astimezone(UTC)
    return f"{value.day} {value:%B %Y}"


def _credits(invoice: Invoice) -> str | None:
    return invoice.credits.display_number if invoice.credits_id else None


def _lines(invoice: Invoice) -> list[InvoiceLine]:
    return list(invoice.lines.all())  # by position; prefetched ones are used as they are


def invoice_json(invoice: Invoice) -> dict:
    """The invoice and its lines, decimals as exact strings and times as ISO 8601 UTC."""
    return {
        "number": invoice.display_number,
        "id": invoice.pk,
        "kind": invoice.kind,
        "status": invoice.status,
        "tenant": {"id": invoice.tenant_id, "name": invoice.tenant.name},
        "period_start": _iso(invoice.period_start),
        "period_end": _iso(invoice.period_end),
        "currency": invoice.currency,
        "plan": invoice.plan_name,
        "tax_rate": _exact(invoice.tax_rate),
        "subtotal": _exact(invoice.subtotal),
        "tax": _exact(invoice.tax),
        "total": _exact(invoice.total),
        "issued_at": _iso(invoice.issued_at),
        "paid_at": _iso(invoice.paid_at),
        "voided_at": _iso(invoice.voided_at),
        "credits": _credits(invoice),
        "lines": [{
            "position": line.position,
            "description": line.description,
            "resource_type": line.resource_type,
            "resource_id": line.resource_id,
            "meter": line.meter,
            "adjustment": line.adjustment,
            "quantity": _exact(line.quantity),
            "unit": line.unit,
            "unit_price": _exact(line.unit_price),
            "amount": _exact(line.amount),
        } for line in _lines(invoice)],
    }


def invoice_csv(invoice: Invoice) -> str:
    """A row per line, then the subtotal, tax and total. Text cells are guarded against formulas; numbers are
    written as they are, so that a credit note's negative amounts stay numbers."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(LINE_COLUMNS)
    head = [cell(invoice.display_number), cell(invoice.kind), cell(invoice.status), cell(invoice.tenant.name),
            _iso(invoice.period_start), _iso(invoice.period_end), cell(invoice.currency)]
    for line in _lines(invoice):
        writer.writerow(head + [
            line.position, cell(line.description), cell(line.resource_type),
            "" if line.resource_id is None else line.resource_id, cell(line.meter), "yes" if line.adjustment else "no",
            _exact(line.quantity), cell(line.unit), _exact(line.unit_price), _exact(line.amount)])
    for label, value in (("Subtotal", invoice.subtotal), (_tax_label(invoice), invoice.tax), ("Total", invoice.total)):
        writer.writerow(head + ["", label, "", "", "", "", "", "", "", _exact(value)])
    return buffer.getvalue()


def _title(invoice: Invoice) -> str:
    kind = invoice.get_kind_display()
    if invoice.status == InvoiceStatus.DRAFT:
        return f"Draft {kind.lower()} (not issued)"
    credits = _credits(invoice)
    return f"{kind} {invoice.display_number}" + (f" (credits {credits})" if credits else "")


@functools.cache
def _document() -> type:
    """The PDF document class; fpdf (some 30 MiB) is loaded with the first PDF, not by every process."""
    from fpdf import FPDF

    class Document(FPDF):
        """A4 pages in DejaVu Sans, "VOID" across each page of a void invoice, the page number in the footer."""

        def __init__(self, invoice: Invoice, issuer: str) -> None:
            super().__init__(format="A4")
            self.invoice, self.issuer = invoice, issuer
            self.add_font("DejaVu", "", FONTS / "DejaVuSans.ttf")
            self.add_font("DejaVu", "B", FONTS / "DejaVuSans-Bold.ttf")
            self.set_margins(15, 15, 15)
            self.set_auto_page_break(True, margin=20)

        def header(self) -> None:
            if self.invoice.status != InvoiceStatus.VOID:
                return
            with self.local_context(), self.rotation(45, x=self.w / 2, y=self.h / 2):
                self.set_font("DejaVu", "B", 120)
                self.set_text_color(248, 210, 210)
                self.text(self.w / 2 - self.get_string_width("VOID") / 2, self.h / 2 + 15, "VOID")

        def footer(self) -> None:
            self.set_y(-13)
            self.set_font("DejaVu", "", 8)
            self.set_text_color(*GREY)
            self.cell(self.epw / 2, 5, f"{self.issuer} · {self.invoice.display_number}")
            self.cell(self.epw / 2, 5, f"Page {self.page_no()} of {{nb}}", align="R")

    return Document


def invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice (or credit note) as an A4 PDF: issuer, tenant, period, its lines on as many pages as they
    take (the table header repeated on each), subtotal, tax and total. The same invoice gives the same bytes."""
    from fpdf import FontFace, XPos, YPos

    issuer, title, currency = settings.CLOUDPANEL_BILLING_ISSUER, _title(invoice), invoice.currency
    pdf = _document()(invoice, issuer)
    pdf.set_title(title)
    pdf.set_author(issuer)
    pdf.set_lang("en")
    pdf.set_creation_date(invoice.issued_at or invoice.created_at)
    pdf.add_page()

    pdf.set_font("DejaVu", "B", 11)
    pdf.set_text_color(*GREY)
    pdf.multi_cell(0, 6, issuer, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)
    pdf.set_font("DejaVu", "B", 17)
    pdf.set_text_color(*BLACK)
    pdf.multi_cell(0, 8, title, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("DejaVu", "B", 12)
    if invoice.status == InvoiceStatus.VOID:
        pdf.set_text_color(*RED)
        pdf.multi_cell(0, 7, f"VOID · voided on {_day(invoice.voided_at)}: cancelled, not payable", align="L",
                       new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    elif invoice.status == InvoiceStatus.PAID:
        pdf.set_text_color(*GREEN)
        pdf.multi_cell(0, 7, f"Paid on {_day(invoice.paid_at)}", align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(5)

    top = pdf.get_y()
    pdf.set_font("DejaVu", "", 9)
    pdf.set_text_color(*GREY)
    pdf.cell(85, 5, "Bill to", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("DejaVu", "B", 11)
    pdf.set_text_color(*BLACK)
    pdf.multi_cell(85, 6, invoice.tenant.name, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    bottom = pdf.get_y()
    pdf.set_y(top)
    period = f"{_day(invoice.period_start)} – {_day(invoice.period_end - timedelta(days=1))}"
    issued = _day(invoice.issued_at) if invoice.issued_at else "not issued"
    for label, value in (("Issue date", issued), ("Period", period), ("Plan", invoice.plan_name),
                         ("Currency", currency)):
        pdf.set_x(pdf.l_margin + 95)
        pdf.set_font("DejaVu", "", 9)
        pdf.set_text_color(*GREY)
        pdf.cell(22, 5, label)
        pdf.set_text_color(*BLACK)
        pdf.multi_cell(63, 5, value, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_y(max(bottom, pdf.get_y()) + 8)

    pdf.set_font("DejaVu", "", 9)
    pdf.set_draw_color(190, 190, 190)
    with pdf.table(col_widths=(72, 36, 34, 38), text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT"),
                   borders_layout="HORIZONTAL_LINES", headings_style=FontFace(emphasis="B", fill_color=(235, 235, 235)),
                   line_height=5, padding=(1.2, 1.5)) as table:
        table.row(("Description", "Quantity", f"Unit price ({currency})", f"Amount ({currency})"))
        lines = _lines(invoice)
        for line in lines:
            table.row((line.description, f"{_figure(line.quantity)} {line.unit}", _figure(line.unit_price, 2),
                       _figure(line.amount, 2)))
        if not lines:
            table.row(("No charges in this period.", "", "", ""))

    pdf.ln(4)
    if pdf.will_page_break(28):
        pdf.add_page()
    left = pdf.l_margin + pdf.epw - 100
    for label, value in (("Subtotal", invoice.subtotal), (_tax_label(invoice), invoice.tax),
                         ("Total", invoice.total)):
        if label == "Total":
            pdf.line(left, pdf.get_y() + 1, left + 100, pdf.get_y() + 1)
            pdf.ln(2)
        pdf.set_x(left)
        pdf.set_font("DejaVu", "B" if label == "Total" else "", 11 if label == "Total" else 10)
        pdf.cell(40, 7, label)
        pdf.cell(60, 7, f"{_figure(value, 2)} {currency}", align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(6)
    pdf.set_font("DejaVu", "", 8)
    pdf.set_text_color(*GREY)
    pdf.multi_cell(0, 4, f"Amounts in {currency}. Dates are UTC.", align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())


def _pdf_name(invoice: Invoice) -> str:
    return f"draft-{invoice.pk}.pdf" if invoice.number is None else f"{invoice.display_number}.pdf"


class _Drain:
    """A write-only stream whose bytes are taken out as they come, so a ZIP is sent while it is made."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def month_archive(invoices: Iterable[Invoice], *, name: str) -> Iterator[bytes]:
    """A ZIP of the invoices, in parts as it is made (one per invoice): a PDF each, and `{name}.csv` with a row
    per invoice. A queryset is read in chunks with its tenants and credited invoices joined and its lines
    prefetched: one query, and one more per chunk of ARCHIVE_CHUNK invoices, however many lines they have."""
    if isinstance(invoices, QuerySet):
        invoices = (invoices.select_related("tenant", "credits").prefetch_related("lines")
                    .iterator(chunk_size=ARCHIVE_CHUNK))
    summary = io.StringIO()
    writer = csv.writer(summary)
    writer.writerow(ARCHIVE_COLUMNS)
    out = _Drain()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for invoice in invoices:
            archive.writestr(_pdf_name(invoice), invoice_pdf(invoice))
            writer.writerow([
                cell(invoice.display_number), cell(invoice.kind), cell(invoice.status), cell(invoice.tenant.name),
                _iso(invoice.period_start), _iso(invoice.period_end), cell(invoice.currency),
                cell(invoice.plan_name), _exact(invoice.subtotal), _exact(invoice.tax_rate), _exact(invoice.tax),
                _exact(invoice.total), _iso(invoice.issued_at) or "", _iso(invoice.paid_at) or "",
                cell(_credits(invoice))])
            yield out.take()
        archive.writestr(f"{name}.csv", summary.getvalue())
    yield out.take()
