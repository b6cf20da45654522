"""Billing through the API and the pages: plans and prices, a tenant's plan, the invoice run and lifecycle,
exports, the month so far with its forecast, and revenue. Amounts are worked out by hand next to them."""

import io
import zipfile
from datetime import UTC, datetime
from decimal import Decimal
from unittest import mock

import pytest
from rest_framework.test import APIClient

from billing import costs, invoicing, metering, services
from billing.exceptions import InvalidBilling, InvoiceState
from billing.models import Invoice, TenantBilling, UsageRecord
from instances.choices import Cause, Status
from instances.models import Instance, InstanceStateChange
from tenants.choices import Role
from tests.factories import make_host, make_instance, make_tenant, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ran(instance: Instance, start: str, stop: str | None = None) -> None:
    InstanceStateChange.objects.create(instance=instance, from_status=Status.STOPPED, to_status=Status.RUNNING,
                                       at=at(start), cause=Cause.EVENT)
    if stop:
        InstanceStateChange.objects.create(instance=instance, from_status=Status.RUNNING, to_status=Status.STOPPED,
                                           at=at(stop), cause=Cause.EVENT)


def api(user, tenant=None) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    if tenant is not None:
        client.defaults["QUERY_STRING"] = f"tenant={tenant.pk}"
    return client


@pytest.fixture
def shop():
    """A tenant with a member and a viewer, and a platform admin; a 2-vCPU, 1 GiB instance without a disk."""
    tenant = make_tenant()
    member, viewer = make_user(tenant=tenant), make_user(tenant=tenant, role=Role.VIEWER)
    vm = make_instance(tenant=tenant, host=make_host(uri=f"test:///default?{tenant.pk}"), vcpus=2, memory_mib=1024,
                       disk_gib=0, name="web")
    Instance.objects.filter(pk=vm.pk).update(created_at=at("2024-12-01 00:00"))  # before the months below
    return {"tenant": tenant, "member": member, "viewer": viewer, "admin": make_user(staff=True), "vm": vm}


def test_plans_prices_and_a_tenants_plan_through_the_api(shop):
    admin = api(shop["admin"])
    created = admin.post("/api/v1/plans/", {"name": "standard", "currency": "EUR", "vcpu_hour": "0.01",
                                            "monthly_fee": "5.00", "effective_from": "2025-01-01T00:00:00Z"},
                         format="json")
    assert created.status_code == 201, created.content
    plan = created.json()
    assert plan["versions"][0]["vcpu_hour"] == "0.010000" and plan["versions"][0]["monthly_fee"] == "5.00"
    # A price change in the past, a negative price, a bad currency, a duplicate name: 400 with the reason
    past = admin.post(f"/api/v1/plans/{plan['id']}/prices/", {"vcpu_hour": "0.02",
                                                             "effective_from": "2025-02-01T00:00:00Z"}, format="json")
    assert past.status_code == 400 and "never in the past" in past.json()["detail"]
    assert admin.post(f"/api/v1/plans/{plan['id']}/prices/", {"vcpu_hour": "-1"}, format="json").status_code == 400
    bad = admin.post("/api/v1/plans/", {"name": "x", "currency": "euro"}, format="json")
    assert bad.status_code == 400
    again = admin.post("/api/v1/plans/", {"name": "standard", "currency": "EUR"}, format="json")
    assert again.status_code == 400 and "already exists" in again.json()["detail"]
    # From the current hour on: a new version; the old prices stay for the hours before it
    newer = admin.post(f"/api/v1/plans/{plan['id']}/prices/", {"vcpu_hour": "0.02"}, format="json")
    assert newer.status_code == 201 and [v["vcpu_hour"] for v in newer.json()["versions"]] == ["0.010000",
                                                                                              "0.020000"]
    # The tenant's plan and tax rate: admins set them; its members read them
    url = f"/api/v1/tenants/{shop['tenant'].pk}/billing/"
    assert api(shop["member"]).get(url).status_code == 404  # no plan yet
    assert admin.put(url, {"plan": plan["id"], "tax_rate": "1.5"}, format="json").status_code == 400
    assert admin.put(url, {"plan": 999999, "tax_rate": "0.2"}, format="json").status_code == 400
    assert api(shop["member"]).put(url, {"plan": plan["id"], "tax_rate": "0"}, format="json").status_code == 403
    assert admin.put(url, {"plan": plan["id"], "tax_rate": "0.2"}, format="json").status_code == 200
    shown = api(shop["member"]).get(url).json()
    assert (shown["plan_name"], shown["currency"], shown["tax_rate"]) == ("standard", "EUR", "0.2000")
    # and the member sees its own plan among the plans, nothing else
    other = services.create_plan(name="hidden", currency="USD", effective_from=at("2025-01-01 00:00"))
    names = [p["name"] for p in api(shop["member"]).get("/api/v1/plans/").json()["results"]]
    assert names == ["standard"] and other.name not in names


def test_an_invoice_runs_is_issued_paid_credited_and_exported_through_the_api(shop):
    plan = services.create_plan(name="std", currency="EUR", effective_from=at("2025-01-01 00:00"), vcpu_hour="0.01",
                                ram_gib_hour="0.005", monthly_fee="5.00")
    services.set_tenant_billing(tenant=shop["tenant"], plan=plan, tax_rate="0.2", billed_from=at("2025-01-01 00:00"))
    ran(shop["vm"], "2025-01-10 00:00:00", "2025-01-10 10:00:00")
    metering.meter(since=at("2025-01-01 00:00"), until=at("2025-02-01 00:00"))
    admin, member = api(shop["admin"]), api(shop["member"])
    assert member.post("/api/v1/invoices/run/", {"year": 2025, "month": 1}, format="json").status_code == 403
    open_month = admin.post("/api/v1/invoices/run/", {"year": 2099, "month": 1}, format="json")
    assert open_month.status_code == 409 and "closes at" in open_month.json()["detail"]
    assert admin.post("/api/v1/invoices/run/", {"year": 2025, "month": 13}, format="json").status_code == 400
    assert admin.post("/api/v1/invoices/run/", {"year": 9999, "month": 12}, format="json").status_code == 400
    run = admin.post("/api/v1/invoices/run/", {"year": 2025, "month": 1}, format="json")
    assert run.status_code == 201 and run.json()["drafted"] == 1
    assert admin.post("/api/v1/invoices/run/", {"year": 2025, "month": 1}, format="json").json()["drafted"] == 0
    pk = run.json()["invoices"][0]
    # 10 h × 2 vCPUs × 0.01 = 0.20; 10 GiB-hours × 0.005 = 0.05; fee 5.00 → 5.25, tax 1.05, total 6.30
    assert member.get(f"/api/v1/invoices/{pk}/").status_code == 404  # a tenant sees it once it is issued
    assert member.get("/api/v1/invoices/").json()["count"] == 0
    draft = admin.get(f"/api/v1/invoices/{pk}/").json()
    assert (draft["status"], draft["subtotal"], draft["tax"], draft["total"]) == ("draft", "5.25", "1.05", "6.30")
    assert [line["amount"] for line in draft["lines"]] == ["0.05", "0.20", "5.00"]  # RAM, vCPUs, fee
    assert member.post(f"/api/v1/invoices/{pk}/issue/").status_code == 404  # a draft is not theirs to see yet
    issued = admin.post(f"/api/v1/invoices/{pk}/issue/").json()
    assert issued["status"] == "issued" and issued["number"].startswith("INV-")
    assert admin.post(f"/api/v1/invoices/{pk}/issue/").status_code == 409
    assert admin.patch(f"/api/v1/invoices/{pk}/", {"total": "0"}, format="json").status_code == 405
    assert admin.post(f"/api/v1/invoices/{pk}/pay/").json()["status"] == "paid"
    assert admin.post(f"/api/v1/invoices/{pk}/void/").status_code == 409  # paid: only a credit note corrects it
    note = admin.post(f"/api/v1/invoices/{pk}/credit/")
    assert note.status_code == 201
    assert (note.json()["kind"], note.json()["total"], note.json()["credits"]) == ("credit", "-6.30",
                                                                                  issued["number"])
    # Exports: the PDF and CSV of one invoice, and the month's archive for accounting
    pdf = member.get(f"/api/v1/invoices/{pk}/pdf/")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    csv_text = member.get(f"/api/v1/invoices/{pk}/csv/").content.decode()
    assert "web · vCPU-hours" in csv_text and "6.30" in csv_text
    assert member.get("/api/v1/invoices/archive/?month=2025-01").status_code == 403
    assert admin.get("/api/v1/invoices/archive/?month=2025-1x").status_code == 400
    archive = admin.get("/api/v1/invoices/archive/?month=2025-01")
    assert archive.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))).namelist()
    assert sorted(names) == sorted([f"{issued['number']}.pdf", f"{note.json()['number']}.pdf",
                                    "invoices-2025-01.csv"])
    # Nothing of it is another tenant's to see
    stranger = make_user(tenant=make_tenant())
    assert api(stranger).get(f"/api/v1/invoices/{pk}/").status_code == 404
    assert api(stranger).get("/api/v1/invoices/").json()["count"] == 0


def test_the_month_so_far_its_forecast_and_cost_per_day(shop):
    plan = services.create_plan(name="std", currency="EUR", effective_from=at("2028-01-01 00:00"), vcpu_hour="0.01",
                                ram_gib_hour="0.005", monthly_fee="5.00")
    billing = services.set_tenant_billing(tenant=shop["tenant"], plan=plan, billed_from=at("2028-01-01 00:00"))
    ran(shop["vm"], "2028-03-01 00:00:00")  # still running
    metering.meter(since=at("2028-03-01 00:00"), until=at("2028-03-03 10:00"))
    month = costs.month_to_date(TenantBilling.objects.select_related("plan").get(pk=billing.pk),
                                now=at("2028-03-03 10:30"))
    # An hour costs 2 × 0.01 + 1 × 0.005 = 0.025: 24 h a day → 0.60; the 3rd until 10:00 → 0.25
    assert month.per_day == [(at("2028-03-01 00:00").date(), Decimal("0.60")),
                             (at("2028-03-02 00:00").date(), Decimal("0.60")),
                             (at("2028-03-03 00:00").date(), Decimal("0.25"))]
    assert month.so_far == Decimal("6.45")  # 1.45 + the 5.00 fee
    # 686 hours are left after 10:00 on the 3rd (28 days and 14 hours), each at 0.025 → 17.15 more
    assert (month.hourly, month.metered_until, month.forecast) == (Decimal("0.025"), at("2028-03-03 10:00"),
                                                                   Decimal("23.60"))
    # Nothing ran for hours: the forecast adds nothing but what is already counted
    idle = costs.month_to_date(billing, now=at("2028-03-20 00:00"))
    assert idle.hourly == 0 and idle.forecast == idle.so_far == Decimal("6.45")
    # The API and the page show the same figures for the tenant acted for
    with mock.patch("billing.costs.timezone.now", return_value=at("2028-03-03 10:30")):
        shown = api(shop["viewer"], shop["tenant"]).get("/api/v1/usage/").json()
        page = APIClient()
        page.force_login(shop["viewer"])
        html = page.get("/billing/").content.decode()
    assert (shown["so_far"], shown["forecast"], shown["fee"]) == ("6.45", "23.60", "5.00")
    assert [day["cost"] for day in shown["days"]] == ["0.60", "0.60", "0.25"]
    assert "6.45 EUR" in html and "23.60 EUR" in html and 'id="day-chart"' in html
    assert api(shop["admin"]).get("/api/v1/usage/").status_code == 400  # acting across tenants: name one


def test_revenue_counts_issued_and_paid_invoices_net_of_credit_notes(shop):
    plan = services.create_plan(name="std", currency="EUR", effective_from=at("2025-01-01 00:00"),
                                monthly_fee="10.00")
    second = make_tenant("second")
    for tenant in (shop["tenant"], second):
        services.set_tenant_billing(tenant=tenant, plan=plan, billed_from=at("2025-01-01 00:00"))
    january = invoicing.invoice_month(year=2025, month=1, now=at("2025-03-01 00:00"))
    february = invoicing.invoice_month(year=2025, month=2, now=at("2025-03-05 00:00"))
    for invoice in january + february:
        invoicing.issue(invoice=invoice)
    # The second tenant's January is credited; the first's February voided and drafted again, not issued
    invoicing.credit_note(invoice=next(i for i in january if i.tenant_id == second.pk))
    invoicing.void(invoice=next(i for i in february if i.tenant_id == shop["tenant"].pk))
    invoicing.invoice_month(year=2025, month=2, now=at("2025-03-06 00:00"))
    report, = costs.revenue(months=3, now=at("2025-03-10 00:00"))
    assert report.months == [at("2025-01-01 00:00").date(), at("2025-02-01 00:00").date(),
                             at("2025-03-01 00:00").date()]
    assert dict(report.rows) == {shop["tenant"].name: [Decimal("10.00"), Decimal("0.00"), Decimal("0.00")],
                                 "second": [Decimal("0.00"), Decimal("10.00"), Decimal("0.00")]}
    assert report.totals == [Decimal("10.00"), Decimal("10.00"), Decimal("0.00")]
    assert Invoice.objects.filter(status="draft").count() == 1


def test_pages_create_a_plan_set_a_tenants_plan_and_refuse_bad_input(shop):
    client = APIClient()
    client.force_login(shop["admin"])
    response = client.post("/billing/plans/", {"name": "page plan", "currency": "eur", "vcpu_hour": "0.0100001"})
    assert response.status_code == 200 and "Ensure that there are no more than 6 decimal places" in \
        response.content.decode()
    response = client.post("/billing/plans/", {"name": "page plan", "currency": "EUR", "vcpu_hour": "0.01",
                                               "monthly_fee": "2.50"})
    assert response.status_code == 302
    plan = services.RatePlan.objects.get(name="page plan")
    response = client.post(f"/billing/plans/{plan.pk}/", {"effective_from": "2020-01-01T00:00",
                                                          "vcpu_hour": "0.02"})
    assert response.status_code == 200 and "never in the past" in response.content.decode()
    response = client.post(f"/billing/tenants/{shop['tenant'].pk}/", {"plan": plan.pk, "tax_rate": "0.19"})
    assert response.status_code == 302
    billing = TenantBilling.objects.get(tenant=shop["tenant"])
    assert (billing.plan_id, billing.tax_rate) == (plan.pk, Decimal("0.1900"))
    page = client.get(f"/tenants/{shop['tenant'].pk}/").content.decode()
    assert "page plan" in page and "tax 19 %" in page
    member = APIClient()
    member.force_login(shop["member"])
    assert member.post(f"/billing/tenants/{shop['tenant'].pk}/", {"plan": plan.pk, "tax_rate": "0"}
                       ).status_code == 403
    assert TenantBilling.objects.get(tenant=shop["tenant"]).tax_rate == Decimal("0.1900")


def test_a_plan_change_mid_month_keeps_the_old_prices_and_a_currency_change_waits(shop):
    old = services.create_plan(name="old", currency="EUR", effective_from=at("2025-01-01 00:00"), vcpu_hour="0.01")
    new = services.create_plan(name="new", currency="EUR", effective_from=at("2025-01-01 00:00"), vcpu_hour="0.02")
    dollars = services.create_plan(name="dollars", currency="USD", effective_from=at("2025-01-01 00:00"))
    # Billed from a time within an hour: metering starts there, and metering again changes nothing
    services.set_tenant_billing(tenant=shop["tenant"], plan=old, tax_rate="0.075",
                                billed_from=at("2025-03-01 10:23:45"))
    ran(shop["vm"], "2025-03-01 00:00:00", "2025-03-01 12:00:00")
    assert metering.meter(since=at("2025-03-01 00:00"), until=at("2025-03-01 13:00")) > 0
    assert metering.meter(since=at("2025-03-01 00:00"), until=at("2025-03-01 13:00")) == 0
    # 10:23:45 to 12:00 is 5,775 s at 2 vCPUs
    assert sum(UsageRecord.objects.filter(resource_id=shop["vm"].pk, meter="vcpu").values_list("units", flat=True)
               ) == 5775 * 2
    # A change to a plan in another currency would mix currencies; one in the same currency is fine
    with pytest.raises(InvalidBilling, match="another currency"):
        services.set_tenant_billing(tenant=shop["tenant"], plan=dollars)
    services.set_tenant_billing(tenant=shop["tenant"], plan=new, tax_rate="0.075")
    ran(shop["vm"], "2025-03-02 00:00:00", "2025-03-02 01:00:00")
    metering.meter(since=at("2025-03-01 00:00"), until=at("2025-04-01 00:00"))
    # The month so far prices each hour at the plan it was metered on: 3.208333 vCPU-hours × 0.01, then 2 × 0.02
    month = costs.month_to_date(TenantBilling.objects.select_related("plan").get(tenant=shop["tenant"]),
                                now=at("2025-03-02 05:00"))
    assert month.per_day[:2] == [(at("2025-03-01 00:00").date(), Decimal("0.03")),
                                 (at("2025-03-02 00:00").date(), Decimal("0.04"))]
    invoice, = invoicing.invoice_month(year=2025, month=3, now=at("2025-04-05 00:00"))
    lines = {line.description: line.amount for line in invoice.lines.all() if line.meter == "vcpu"}
    # 3.208333 vCPU-hours × 0.01 = 0.032 → 0.03; 2 vCPU-hours × 0.02 = 0.04
    assert lines == {"web · vCPU-hours · old prices": Decimal("0.03"), "web · vCPU-hours": Decimal("0.04")}
    client = APIClient()
    client.force_login(shop["admin"])
    assert "Tax (7.5 %)" in client.get(f"/billing/invoices/{invoice.pk}/").content.decode()
    assert client.get("/billing/invoices/?tenant=²").status_code == 200
    # An invoice made before usage sums were kept cannot be voided (its usage could not be given back)
    invoicing.issue(invoice=invoice)
    invoice.lines.model.objects.filter(invoice=invoice, meter="vcpu").update(units=None)
    with pytest.raises(InvoiceState, match="credit note"):
        invoicing.void(invoice=invoice)
