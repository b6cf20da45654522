"""Thin tasks over metering and invoicing, queued by the event listener."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from billing import invoicing, metering
from billing.choices import InvoiceKind, InvoiceStatus
from billing.exceptions import PeriodOpen
from billing.models import Invoice


@shared_task
def close_books() -> None:
    """Meter the ledger up to the last full hour; once last month has closed, invoice it (and issue the
    invoices unless CLOUDPANEL_BILLING_AUTO_ISSUE is off). Idempotent, so running it often is harmless."""
    metering.meter()
    now = timezone.now()
    last_month = invoicing.month_bounds(now.year, now.month)[0] - timedelta(days=1)
    try:
        invoicing.invoice_month(year=last_month.year, month=last_month.month, now=now)
    except PeriodOpen:
        return
    if settings.CLOUDPANEL_BILLING_AUTO_ISSUE:  # this run's drafts, and any an interrupted run left
        for draft in Invoice.objects.filter(kind=InvoiceKind.INVOICE, status=InvoiceStatus.DRAFT,
                                            period_end__lte=invoicing.month_bounds(now.year, now.month)[0]):
            invoicing.issue(invoice=draft)
