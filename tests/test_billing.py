"""Billing: the ledger metered from the state history, invoices priced from it, and their lifecycle.

Every amount below is worked out by hand in the comments next to it.
"""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import override_settings

from billing import invoicing, metering, services
from billing.exceptions import InvalidBilling, InvoiceState, PeriodOpen
from billing.models import ImmutableInvoice, Invoice, InvoiceLine, UsageMonth, UsageRecord
from images.models import Image
from instances.choices import Cause, Status
from instances.models import Instance, InstanceStateChange
from tests.factories import make_host, make_instance, make_tenant

pytestmark = pytest.mark.django_db(transaction=True)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def history(instance: Instance, *changes: tuple[str, str]) -> None:
    """The instance's status changes: (to_status, when), from its creation on."""
    status = Status.PENDING
    for to_status, when in changes:
        InstanceStateChange.objects.create(instance=instance, from_status=status, to_status=to_status, at=at(when),
                                           cause=Cause.EVENT)
        status = to_status


@pytest.fixture
def billed():
    """A tenant on a plan from 2026 on: 0.01 per vCPU-hour, 0.005 per GiB-of-RAM-hour, 0.10 per
    GiB-of-disk-month, 0.5 per licensed-image hour, 0.004 per public-address hour; 20 % tax."""
    tenant = make_tenant()
    plan = services.create_plan(name=f"standard-{tenant.pk}", currency="EUR", effective_from=at("2026-01-01 00:00"),
                                vcpu_hour="0.01", ram_gib_hour="0.005", disk_gib_month="0.10",
                                licence_hour="0.5", address_hour="0.004")
    services.set_tenant_billing(tenant=tenant, plan=plan, tax_rate="0.2", billed_from=at("2026-01-01 00:00"))
    return tenant, plan


def vm(tenant, **fields) -> Instance:
    return make_instance(tenant=tenant, host=make_host(uri=f"test:///default?{tenant.pk}-{fields.get('name')}"),
                         **{"vcpus": 2, "memory_mib": 1024, "disk_gib": 10, **fields})


def lines_of(invoice: Invoice) -> dict[str, tuple[Decimal, Decimal]]:
    return {line.description: (line.quantity, line.amount) for line in invoice.lines.all()}


def test_a_month_is_prorated_to_the_second_across_a_leap_day_and_a_month_boundary(billed):
    tenant, _ = billed
    # Runs from 28 Feb 2028 22:30 (a leap year) until 1 March 01:15, then stays stopped (its disk stays)
    web = vm(tenant, name="web")
    history(web, (Status.RUNNING, "2028-02-28 22:30:00"), (Status.STOPPED, "2028-03-01 01:15:00"))
    metering.meter(since=at("2028-02-01 00:00"), until=at("2028-04-01 00:00"))
    february, = invoicing.invoice_month(year=2028, month=2, now=at("2028-04-01 00:00"))
    # 1.5 h on the 28th + 24 h on the 29th = 25.5 h: 2 vCPUs → 51 vCPU-hours × 0.01 = 0.51;
    # 1 GiB → 25.5 GiB-hours × 0.005 = 0.1275 → 0.13; disk 10 GiB × 91,800 s of February's 2,505,600 s
    # (29 days) = 0.366379 GiB-months × 0.10 = 0.0366… → 0.04. Subtotal 0.68, tax 0.136 → 0.14, total 0.82.
    assert lines_of(february) == {
        "web · vCPU-hours": (Decimal("51.000000"), Decimal("0.51")),
        "web · GiB-of-RAM-hours": (Decimal("25.500000"), Decimal("0.13")),
        "web · GiB-of-disk-months": (Decimal("0.366379"), Decimal("0.04")),
    }
    assert (february.subtotal, february.tax, february.total) == (Decimal("0.68"), Decimal("0.14"), Decimal("0.82"))
    march, = invoicing.invoice_month(year=2028, month=3, now=at("2028-04-03 00:00"))
    # 1.25 h: 2.5 vCPU-hours → 0.025 → 0.03; 1.25 GiB-hours → 0.00625 → 0.01; the disk all March: 10 GiB-months
    # → 1.00. Subtotal 1.04, tax 0.208 → 0.21, total 1.25.
    assert lines_of(march) == {
        "web · vCPU-hours": (Decimal("2.500000"), Decimal("0.03")),
        "web · GiB-of-RAM-hours": (Decimal("1.250000"), Decimal("0.01")),
        "web · GiB-of-disk-months": (Decimal("10.000000"), Decimal("1.00")),
    }
    assert (march.subtotal, march.tax, march.total) == (Decimal("1.04"), Decimal("0.21"), Decimal("1.25"))
    # The lines add up exactly to the subtotal
    for invoice in (february, march):
        assert sum(line.amount for line in invoice.lines.all()) == invoice.subtotal


def test_a_price_change_in_the_middle_of_a_month_prices_each_hour_at_its_own_rate(billed):
    tenant, plan = billed
    services.add_version(plan=plan, effective_from=at("2028-05-15 12:00"), vcpu_hour="0.02", ram_gib_hour="0",
                         disk_gib_month="0", now=at("2028-05-01 00:00"))
    app = vm(tenant, name="app", vcpus=4, disk_gib=0)
    history(app, (Status.RUNNING, "2028-05-15 10:00:00"), (Status.STOPPED, "2028-05-15 14:30:00"))
    metering.meter(since=at("2028-05-01 00:00"), until=at("2028-06-01 00:00"))
    may, = invoicing.invoice_month(year=2028, month=5, now=at("2028-06-03 00:00"))
    # Before 12:00: 2 h × 4 vCPUs = 8 vCPU-hours × 0.01 = 0.08, and 2 GiB-hours × 0.005 = 0.01;
    # from 12:00: 2.5 h × 4 = 10 vCPU-hours × 0.02 = 0.20, and RAM at 0 → 0.00. Subtotal 0.29, tax 0.058 → 0.06.
    assert lines_of(may) == {
        "app · vCPU-hours": (Decimal("8.000000"), Decimal("0.08")),
        "app · GiB-of-RAM-hours": (Decimal("2.000000"), Decimal("0.01")),
        "app · vCPU-hours · price from 2028-05-15 12:00": (Decimal("10.000000"), Decimal("0.20")),
        "app · GiB-of-RAM-hours · price from 2028-05-15 12:00": (Decimal("2.500000"), Decimal("0.00")),
    }
    assert (may.subtotal, may.tax, may.total) == (Decimal("0.29"), Decimal("0.06"), Decimal("0.35"))


def test_metering_twice_or_concurrently_counts_once(billed):
    tenant, _ = billed
    db = vm(tenant, name="db")
    history(db, (Status.RUNNING, "2028-06-01 00:00:00"), (Status.STOPPED, "2028-06-01 05:00:00"))
    window = {"since": at("2028-06-01 00:00"), "until": at("2028-06-02 00:00")}
    assert metering.meter(**window) > 0
    rows = UsageRecord.objects.count()
    assert metering.meter(**window) == 0 and UsageRecord.objects.count() == rows
    # The same state event delivered twice (recorded twice) changes nothing either
    InstanceStateChange.objects.create(instance=db, from_status=Status.RUNNING, to_status=Status.STOPPED,
                                       at=at("2028-06-01 05:00:00"), cause=Cause.RECONCILE)
    assert metering.meter(**window) == 0
    # Two runs at once after a late event: one of them writes the correction, never both
    InstanceStateChange.objects.create(instance=db, from_status=Status.STOPPED, to_status=Status.RUNNING,
                                       at=at("2028-06-01 08:00:00"), cause=Cause.EVENT)
    InstanceStateChange.objects.create(instance=db, from_status=Status.RUNNING, to_status=Status.STOPPED,
                                       at=at("2028-06-01 09:00:00"), cause=Cause.EVENT)
    barrier, errors = threading.Barrier(2), []

    def run():
        try:
            barrier.wait()
            metering.meter(**window)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    vcpu = UsageRecord.objects.filter(resource_id=db.pk, meter="vcpu")
    assert sum(r.units for r in vcpu) == 6 * 3600 * 2  # 5 h + 1 h at 2 vCPUs, in vCPU-seconds
    assert vcpu.filter(interval_start=at("2028-06-01 08:00")).count() == 1
    # and the month's sum, which invoices count, is the ledger's: both runs added to it in place
    assert UsageMonth.objects.get(resource_id=db.pk, meter="vcpu").units == 6 * 3600 * 2


def test_a_late_event_after_the_invoice_is_issued_goes_on_the_next_invoice_as_an_adjustment(billed):
    tenant, _ = billed
    job = vm(tenant, name="job", disk_gib=0)
    history(job, (Status.RUNNING, "2028-07-31 22:00:00"), (Status.STOPPED, "2028-07-31 23:00:00"))
    metering.meter(since=at("2028-07-01 00:00"), until=at("2028-08-03 00:00"))
    july, = invoicing.invoice_month(year=2028, month=7, now=at("2028-08-03 00:00"))
    invoicing.issue(invoice=july)
    issued_total = july.total
    # A run of the 31st learnt only now (say, reconciled after the host came back): 30 min more
    InstanceStateChange.objects.create(instance=job, from_status=Status.STOPPED, to_status=Status.RUNNING,
                                       at=at("2028-07-31 23:30:00"), cause=Cause.RECONCILE)
    InstanceStateChange.objects.create(instance=job, from_status=Status.RUNNING, to_status=Status.STOPPED,
                                       at=at("2028-08-01 00:00:00"), cause=Cause.RECONCILE)
    metering.meter(since=at("2028-07-01 00:00"), until=at("2028-09-01 00:00"))
    july.refresh_from_db()
    assert july.total == issued_total and july.lines.count() == 2  # the issued invoice never changes
    august, = invoicing.invoice_month(year=2028, month=8, now=at("2028-09-03 00:00"))
    # 0.5 h × 2 vCPUs = 1 vCPU-hour → 0.01; 0.5 GiB-hours → 0.0025 → 0.00 (half-up at the third decimal: 0.0025
    # rounds to 0.00 since 0.0025 is below 0.005)
    assert lines_of(august) == {
        "job · vCPU-hours · adjustment for 2028-07": (Decimal("1.000000"), Decimal("0.01")),
        "job · GiB-of-RAM-hours · adjustment for 2028-07": (Decimal("0.500000"), Decimal("0.00")),
    }
    assert all(line.adjustment for line in august.lines.all())


def test_an_issued_invoice_is_never_edited_numbers_have_no_gaps_and_corrections_are_credit_notes(billed):
    tenant, _ = billed
    box = vm(tenant, name="box", disk_gib=0)
    history(box, (Status.RUNNING, "2028-09-10 00:00:00"), (Status.STOPPED, "2028-09-10 10:00:00"))
    metering.meter(since=at("2028-09-01 00:00"), until=at("2028-10-01 00:00"))
    september, = invoicing.invoice_month(year=2028, month=9, now=at("2028-10-03 00:00"))
    assert invoicing.invoice_month(year=2028, month=9, now=at("2028-10-03 00:00")) == []  # once per month
    with pytest.raises(PeriodOpen, match="2028-10 closes at 2028-11-03 00:00 UTC"):
        invoicing.invoice_month(year=2028, month=10, now=at("2028-11-01 12:00"))
    invoicing.issue(invoice=september)
    september.refresh_from_db()
    with pytest.raises(ImmutableInvoice):
        september.subtotal = Decimal("0.01")
        september.save()
    line = september.lines.first()
    with pytest.raises(ImmutableInvoice):
        line.amount = Decimal("0")
        line.save()
    with pytest.raises(ImmutableInvoice):
        line.delete()
    with pytest.raises(InvoiceState):
        invoicing.issue(invoice=september)
    note = invoicing.credit_note(invoice=september)
    assert (note.total, note.credits_id) == (-september.total, september.pk)
    assert note.number == september.number + 1 and note.display_number == f"CN-{note.number:06d}"
    assert sum(line.amount for line in note.lines.all()) == note.subtotal
    with pytest.raises(InvoiceState, match="already credited"):
        invoicing.credit_note(invoice=september)
    with pytest.raises(InvoiceState, match="credited already"):  # a credited invoice is never also voided
        invoicing.void(invoice=september)
    invoicing.mark_paid(invoice=september)
    with pytest.raises(InvoiceState):
        invoicing.void(invoice=september)


def test_concurrent_issues_take_consecutive_numbers(billed):
    tenant, _ = billed
    tenants = [tenant] + [make_tenant() for _ in range(5)]
    for other in tenants[1:]:
        services.set_tenant_billing(tenant=other, plan=billed[1], tax_rate="0", billed_from=at("2028-10-01 00:00"))
        history(vm(other, name=f"w{other.pk}"), (Status.RUNNING, "2028-10-01 00:00:00"))
    history(vm(tenant, name="w"), (Status.RUNNING, "2028-10-01 00:00:00"))
    metering.meter(since=at("2028-10-01 00:00"), until=at("2028-11-01 00:00"))
    drafts = invoicing.invoice_month(year=2028, month=10, now=at("2028-11-05 00:00"))
    assert len(drafts) == 6
    barrier = threading.Barrier(len(drafts))

    def run(invoice):
        barrier.wait()
        invoicing.issue(invoice=invoice)
        connection.close()

    threads = [threading.Thread(target=run, args=(d,)) for d in drafts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == list(range(numbers[0], numbers[0] + 6))


def test_a_void_invoice_gives_its_usage_back_to_a_new_invoice_of_the_month(billed):
    tenant, _ = billed
    history(vm(tenant, name="v", disk_gib=0), (Status.RUNNING, "2028-11-01 00:00:00"),
            (Status.STOPPED, "2028-11-01 01:00:00"))
    metering.meter(since=at("2028-11-01 00:00"), until=at("2028-12-01 00:00"))
    first, = invoicing.invoice_month(year=2028, month=11, now=at("2028-12-05 00:00"))
    invoicing.void(invoice=invoicing.issue(invoice=first))
    again, = invoicing.invoice_month(year=2028, month=11, now=at("2028-12-05 00:00"))
    assert again.pk != first.pk and again.total == first.total and again.total > 0


def test_zero_rates_no_usage_licences_addresses_and_very_large_quantities(billed, settings):
    tenant, plan = billed
    # No usage: no invoice, unless zero invoices are wanted
    idle = make_tenant()
    services.set_tenant_billing(tenant=idle, plan=plan, billed_from=at("2027-12-01 00:00"))
    assert invoicing.invoice_month(year=2028, month=1, tenant_ids={idle.pk}, now=at("2028-03-01 00:00")) == []
    settings.CLOUDPANEL_BILLING_ZERO_INVOICES = True
    zero, = invoicing.invoice_month(year=2028, month=1, tenant_ids={idle.pk}, now=at("2028-03-01 00:00"))
    assert (zero.total, zero.lines.count()) == (Decimal("0.00"), 0)
    # 256 vCPUs and 4 TiB of RAM running all January from a licensed image, at a very high price
    big = make_tenant()
    costly = services.create_plan(name="costly", currency="USD", effective_from=at("2028-01-01 00:00"),
                                  vcpu_hour="999999.999999", licence_hour="0.01")
    services.set_tenant_billing(tenant=big, plan=costly, billed_from=at("2028-01-01 00:00"))
    image = Image.objects.create(name="licensed", tenant=big, status="available", licensed=True)
    history(vm(big, name="huge", vcpus=256, memory_mib=4 * 1024 * 1024, disk_gib=0, image=image, licensed=True),
            (Status.RUNNING, "2028-01-01 00:00:00"), (Status.STOPPED, "2028-02-01 00:00:00"))
    metering.meter(since=at("2028-01-01 00:00"), until=at("2028-02-01 00:00"), tenant_ids={big.pk})
    invoice, = invoicing.invoice_month(year=2028, month=1, tenant_ids={big.pk}, now=at("2028-02-05 00:00"))
    # 744 h: 190,464 vCPU-hours × 999,999.999999 = 190,463,999,999.809536 → 190,463,999,999.81;
    # the licence 744 h × 0.01 = 7.44; RAM 3,047,424 GiB-hours at a zero rate. Subtotal 190,464,000,007.25.
    assert lines_of(invoice) == {
        "huge · vCPU-hours": (Decimal("190464.000000"), Decimal("190463999999.81")),
        "huge · GiB-of-RAM-hours": (Decimal("3047424.000000"), Decimal("0.00")),
        "huge · Image licence hours": (Decimal("744.000000"), Decimal("7.44")),
    }
    assert invoice.subtotal == invoice.total == Decimal("190464000007.25")


def test_public_addresses_are_billed_while_held(billed):
    from networks.services import allocate, create_network, create_port

    tenant, _ = billed
    shared = create_network(user=None, tenant=None, name="public", kind="nat", cidr="198.51.100.0/24")
    port = create_port(network=shared)
    port.instance = vm(tenant, name="edge")
    port.save(update_fields=["instance"])
    allocation = allocate(port=port, subnet=shared.subnets.get(), address="198.51.100.7")
    hold = tenant.address_holds.get()
    assert (hold.address, hold.allocation_id, hold.ended_at) == ("198.51.100.7", allocation.pk, None)
    tenant.address_holds.update(started_at=at("2028-12-01 00:00"))
    port.delete()
    tenant.address_holds.update(ended_at=at("2028-12-01 10:00"))
    metering.meter(since=at("2028-12-01 00:00"), until=at("2029-01-01 00:00"))
    december, = invoicing.invoice_month(year=2028, month=12, now=at("2029-01-05 00:00"))
    # 10 h × 0.004 = 0.04
    assert lines_of(december) == {"198.51.100.7 (public) · Public address hours": (Decimal("10.000000"),
                                                                                   Decimal("0.04"))}


@pytest.mark.parametrize(("change", "reason"), [
    ({"effective_from": at("2028-01-01 00:30")}, "whole hour"),
    ({"effective_from": at("2020-01-01 00:00")}, "never in the past"),
    ({"vcpu_hour": "-1"}, "zero or more"),
    ({"vcpu_hour": "0.0000001"}, "at most 6 decimal places"),
    ({"monthly_fee": "1.001"}, "at most 2 decimal places"),
    ({"vcpu_hour": "NaN"}, "zero or more"),
    ({"vcpu_hour": "cheap"}, "decimal number"),
    ({"effective_from": at("2031-01-01 00:00")}, "already has prices from 2031-01-01 00:00"),
])
def test_bad_prices_are_refused_with_the_reason(billed, change, reason):
    _, plan = billed
    services.add_version(plan=plan, effective_from=at("2031-01-01 00:00"), vcpu_hour="0.02")
    with pytest.raises(InvalidBilling, match=reason):
        services.add_version(plan=plan, **{"effective_from": at("2030-01-01 00:00"), **change})
    assert plan.versions.count() == 2
    assert not InvoiceLine.objects.exists()


def test_the_books_close_by_themselves_once_last_month_is_over(billed):
    from django.utils import timezone

    from billing.tasks import close_books

    tenant, _ = billed
    this_month = invoicing.month_bounds(timezone.now().year, timezone.now().month)[0]
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    steady = vm(tenant, name="steady", disk_gib=0)
    Instance.objects.filter(pk=steady.pk).update(created_at=last_month)
    day = f"{last_month:%Y-%m-%d}"
    history(steady, (Status.RUNNING, f"{day} 00:00:00"), (Status.STOPPED, f"{day} 03:00:00"))
    with override_settings(CLOUDPANEL_BILLING_GRACE_HOURS=0):
        close_books()
        close_books()  # again: nothing more
    invoice = Invoice.objects.get(tenant=tenant)
    # 3 h × 2 vCPUs × 0.01 = 0.06, 3 GiB-hours × 0.005 = 0.015 → 0.02; with 20 % tax 0.096 → 0.10
    assert (invoice.status, invoice.subtotal, invoice.total) == ("issued", Decimal("0.08"), Decimal("0.10"))
    assert invoice.period_start == last_month and invoice.number


def test_usage_before_a_tenant_got_its_plan_and_licences_dropped_later_are_not_rebilled(billed):
    tenant, plan = billed
    late = make_tenant()
    services.set_tenant_billing(tenant=late, plan=plan, billed_from=at("2028-03-15 12:00"))
    image = Image.objects.create(name="licensed", tenant=late, status="available", licensed=True)
    app = vm(late, name="app", disk_gib=0, image=image, licensed=True)
    history(app, (Status.RUNNING, "2028-03-15 10:00:00"), (Status.STOPPED, "2028-03-15 13:00:00"))
    metering.meter(since=at("2028-03-01 00:00"), until=at("2028-04-01 00:00"))
    # Only from 12:00, when the tenant got its plan: 1 h × 2 vCPUs = 2 vCPU-hours → 0.02; 1 GiB-hour → 0.005
    # → 0.01; licence 1 h × 0.5 = 0.50
    march, = invoicing.invoice_month(year=2028, month=3, tenant_ids={late.pk}, now=at("2028-04-05 00:00"))
    assert lines_of(march) == {"app · vCPU-hours": (Decimal("2.000000"), Decimal("0.02")),
                               "app · GiB-of-RAM-hours": (Decimal("1.000000"), Decimal("0.01")),
                               "app · Image licence hours": (Decimal("1.000000"), Decimal("0.50"))}
    # The image stops being licensed (or goes): what was metered stays, no negative correction follows
    Image.objects.filter(pk=image.pk).update(licensed=False)
    assert metering.meter(since=at("2028-03-01 00:00"), until=at("2028-04-01 00:00")) == 0
    # And nothing of February, before the plan, is ever invoiced
    assert invoicing.invoice_month(year=2028, month=2, tenant_ids={late.pk}, now=at("2028-04-05 00:00")) == []


def test_a_run_stores_exactly_what_it_priced_whatever_is_hardest(billed, settings):
    """The lines of a run, read back from the database, are the ones it priced, with what is hardest to get
    right: a month boundary, a price change in the middle of a month, disk-months, licences, late usage in
    both directions (adjustments up and down), huge quantities, half cents, a monthly fee and a tenant without
    usage."""
    tenant, plan = billed
    services.add_version(plan=plan, effective_from=at("2029-02-01 12:00"), now=at("2029-01-01 00:00"),
                         vcpu_hour="0.013", disk_gib_month="0.0991", monthly_fee="2.50")
    image = Image.objects.create(name="licensed", tenant=tenant, status="available", licensed=True)
    small = vm(tenant, name="small", vcpus=3, memory_mib=1536, disk_gib=7, image=image, licensed=True)
    history(small, (Status.RUNNING, "2029-01-30 22:17:13"), (Status.STOPPED, "2029-02-02 03:04:05"))
    huge = vm(tenant, name="huge", vcpus=32767, memory_mib=2**31 - 1, disk_gib=2**31 - 1)  # beyond the forms
    history(huge, (Status.RUNNING, "2029-02-01 00:00:01"), (Status.STOPPED, "2029-02-28 23:59:59"))
    settings.CLOUDPANEL_BILLING_ZERO_INVOICES = True
    idle = make_tenant()
    services.set_tenant_billing(tenant=idle, plan=plan, billed_from=at("2029-01-01 00:00"))
    metering.meter(since=at("2029-01-01 00:00"), until=at("2029-03-01 00:00"))
    invoicing.invoice_month(year=2029, month=1, now=at("2029-02-05 00:00"))
    # Learnt late: the small one stopped for an hour on the 30th (less January), and another one ran in January
    for to_status, when in ((Status.STOPPED, "2029-01-30 23:00:00"), (Status.RUNNING, "2029-01-31 00:00:00")):
        InstanceStateChange.objects.create(instance=small, from_status=Status.RUNNING, to_status=to_status,
                                           at=at(when), cause=Cause.RECONCILE)
    history(vm(tenant, name="late", disk_gib=0), (Status.RUNNING, "2029-01-15 10:00:00"),
            (Status.STOPPED, "2029-01-15 11:30:00"))
    metering.meter(since=at("2029-01-01 00:00"), until=at("2029-03-01 00:00"))

    invoices = invoicing.invoice_month(year=2029, month=2, now=at("2029-03-05 00:00"))

    fields = ("position", "description", "quantity", "unit", "unit_price", "amount", "adjustment", "units", "rate_id",
              "usage_month")
    stored = {invoice.tenant_id: (invoice.subtotal, invoice.tax, invoice.total,
                                  list(invoice.lines.order_by("position").values_list(*fields)))
              for invoice in Invoice.objects.filter(pk__in=[i.pk for i in invoices])}
    assert {i.tenant_id: (i.subtotal, i.tax, i.total) for i in invoices} == {
        tenant_id: figures[:3] for tenant_id, figures in stored.items()}
    subtotal, tax, total, ours = stored[tenant.pk]
    by_name = {line[1]: line for line in ours}
    assert [line[0] for line in ours] == list(range(1, len(ours) + 1))
    assert subtotal == sum(line[5] for line in ours) and (tax, total) == (invoicing.money(subtotal * Decimal("0.2")),
                                                                          subtotal + tax)
    # The late one, in January: 1.5 h × 2 vCPUs = 3 vCPU-hours × 0.01 = 0.03; 1.5 GiB-hours × 0.005 = 0.0075
    # → 0.01 (half a cent rounds up)
    assert by_name["late · vCPU-hours · adjustment for 2029-01"][2:7] == (
        Decimal("3.000000"), "vCPU-hours", Decimal("0.010000"), Decimal("0.03"), True)
    assert by_name["late · GiB-of-RAM-hours · adjustment for 2029-01"][5] == Decimal("0.01")
    # The huge one: 32,767 vCPUs for 43,199 s at 0.01 (before the change at 12:00), then 2,375,999 s at 0.013:
    # 393,194.898056 vCPU-hours → 3,931.95; 21,626,210.898056 → 281,140.74
    huge_cpu = [line for line in ours if line[1].startswith("huge · vCPU-hours")]
    assert [(line[2], line[5]) for line in huge_cpu] == [(Decimal("393194.898056"), Decimal("3931.95")),
                                                         (Decimal("21626210.898056"), Decimal("281140.74"))]
    assert any(line[6] and line[5] < 0 for line in ours)  # a negative adjustment (the hour the small one stopped)
    assert any("price from" in line[1] for line in ours)
    # A month pays the fee in effect at its start: none in February (the 2.50 fee starts on the 1st at 12:00),
    # so the tenant without usage gets a zero invoice; in March it pays its fee alone
    assert not [line for line in ours if line[1].startswith("Monthly fee")]
    assert stored[idle.pk] == (Decimal("0.00"), Decimal("0.00"), Decimal("0.00"), [])
    march, = invoicing.invoice_month(year=2029, month=3, tenant_ids={idle.pk}, now=at("2029-04-05 00:00"))
    assert list(march.lines.values_list(*fields)) == [(1, f"Monthly fee · {plan.name}", Decimal("1.000000"), "month",
                                                      Decimal("2.500000"), Decimal("2.50"), False, None, None, None)]
    assert (march.subtotal, march.tax, march.total) == (Decimal("2.50"), Decimal("0.00"), Decimal("2.50"))


def test_an_amount_beyond_what_an_invoice_holds_fails_the_run_whole(billed):
    tenant, _ = billed
    costly = services.create_plan(name="absurd", currency="EUR", effective_from=at("2029-01-01 00:00"),
                                  vcpu_hour="999999999999")
    services.set_tenant_billing(tenant=tenant, plan=costly)
    history(vm(tenant, name="busy", vcpus=256, disk_gib=0), (Status.RUNNING, "2029-05-01 00:00:00"),
            (Status.STOPPED, "2029-06-01 00:00:00"))
    metering.meter(since=at("2029-05-01 00:00"), until=at("2029-06-01 00:00"))
    # 190,464 vCPU-hours × 999,999,999,999 ≈ 1.9 × 10^17: more than an amount's 16 digits
    with pytest.raises(InvalidBilling, match="beyond what an invoice holds"):
        invoicing.invoice_month(year=2029, month=5, now=at("2029-06-05 00:00"))
    assert not Invoice.objects.filter(tenant=tenant).exists() and not UsageMonth.objects.filter(
        tenant=tenant).exclude(invoiced_units=0).exists()
