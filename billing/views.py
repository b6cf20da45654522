"""Billing pages: a tenant's month so far with its forecast and cost per day, invoices with their exports
and lifecycle, rate plans, a tenant's plan, and revenue per tenant and month."""

from datetime import UTC, datetime

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from billing import costs, invoicing, services
from billing.api import LIFECYCLE, archive_response, export_response
from billing.choices import InvoiceStatus
from billing.forms import MonthForm, PlanForm, PricesForm, TenantBillingForm
from billing.invoicing import rate_at
from billing.models import Invoice, RatePlan, TenantBilling
from cloudpanel.exceptions import DomainError
from cloudpanel.scoping import Need
from tenants import audit
from tenants.models import Tenant
from tenants.pages import require
from tenants.scoping import scope_of


def _chart(labels: list[str], series: dict[str, list]) -> dict:
    return {"labels": labels, "series": [{"label": name, "data": [str(v) for v in values]}
                                         for name, values in series.items()]}


@login_required
def usage(request):
    """The tenant acted for: its month so far, forecast, cost per day and latest invoices."""
    scope = scope_of(request)
    billing = month = None
    if scope.tenant is not None:
        billing = TenantBilling.objects.select_related("plan").filter(tenant=scope.tenant).first()
        month = costs.month_to_date(billing) if billing else None
    invoices = Invoice.objects.visible_to(scope).select_related("tenant")[:6] if scope.tenant else []
    chart = _chart([f"{day:%d %b}" for day, _ in month.per_day], {"Cost": [c for _, c in month.per_day]}
                   ) if month else None
    return render(request, "billing/usage.html", {"billing": billing, "month": month, "invoices": invoices,
                                                  "chart": chart})


@login_required
def invoice_list(request):
    scope = scope_of(request)
    invoices = Invoice.objects.visible_to(scope).select_related("tenant", "credits")
    status, tenant, month = request.GET.get("status"), request.GET.get("tenant"), request.GET.get("month")
    if status in InvoiceStatus.values:
        invoices = invoices.filter(status=status)
    if tenant and tenant.isascii() and tenant.isdigit() and scope.admin and scope.tenant is None:
        invoices = invoices.filter(tenant_id=int(tenant))
    form = MonthForm({"month": month}) if month else None
    if form is not None and form.is_valid():
        year, number = form.cleaned_data["month"]
        invoices = invoices.filter(period_start=datetime(year, number, 1, tzinfo=UTC))
    page = Paginator(invoices, 50).get_page(request.GET.get("page"))
    return render(request, "billing/invoices.html", {
        "page": page, "statuses": InvoiceStatus.choices, "month_error": form.errors.get("month") if form else None,
        "tenants": Tenant.objects.all() if scope.admin and scope.tenant is None else None,
        "run_form": MonthForm() if scope.admin else None})


def _invoice(request, pk: int) -> Invoice:
    return get_object_or_404(Invoice.objects.visible_to(scope_of(request)).select_related("tenant", "credits")
                             .prefetch_related("lines", "credit_notes"), pk=pk)


@login_required
def invoice_detail(request, pk: int):
    invoice = _invoice(request, pk)
    return render(request, "billing/invoice.html", {"invoice": invoice, "admin": scope_of(request).admin})


@login_required
def invoice_export(request, pk: int, kind: str):
    invoice = _invoice(request, pk)
    if kind not in ("pdf", "csv", "json"):
        raise Http404("No such format.")
    return export_response(invoice, kind)


@login_required
@require_POST
def invoice_change(request, pk: int, change: str):
    invoice = _invoice(request, pk)
    if change not in LIFECYCLE:
        raise Http404("No such change.")
    audit.note(request, action=f"invoice.{change}", target=invoice)
    require(request, scope_of(request), Need.ADMIN)
    try:
        changed = LIFECYCLE[change](invoice=invoice)
    except DomainError as exc:
        audit.refused(request, str(exc), show=False)
        messages.error(request, str(exc))
        return redirect("invoice-detail", pk=invoice.pk)
    messages.success(request, {"issue": f"Issued {changed.display_number}.", "pay": "Marked paid.",
                               "void": f"{changed.display_number} is void; its usage goes on the next run.",
                               "credit": f"Credit note {changed.display_number} issued."}[change])
    return redirect("invoice-detail", pk=changed.pk)


@login_required
@require_POST
def invoice_run(request):
    audit.note(request, action="invoice.run", platform=True)
    require(request, scope_of(request), Need.ADMIN)
    form = MonthForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(form.errors["month"]))
        return redirect("invoice-list")
    year, month = form.cleaned_data["month"]
    try:
        drafts = invoicing.invoice_month(year=year, month=month)
    except DomainError as exc:
        audit.refused(request, str(exc), show=False)
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Drafted {len(drafts)} invoice(s) for {year:04d}-{month:02d}; review and "
                                  "issue them.")
    return redirect(f"{reverse('invoice-list')}?month={year:04d}-{month:02d}")


@staff_member_required
def invoice_archive(request):
    form = MonthForm(request.GET)
    if not form.is_valid():
        messages.error(request, " ".join(form.errors["month"]))
        return redirect("invoice-list")
    year, month = form.cleaned_data["month"]
    invoices = (Invoice.objects.visible_to(scope_of(request)).filter(period_start=datetime(year, month, 1, tzinfo=UTC))
                .exclude(status=InvoiceStatus.DRAFT).order_by("number"))
    return archive_response(request, invoices, year, month)


@staff_member_required
def plan_list(request):
    form = PlanForm(request.POST or None)
    if request.method == "POST":
        audit.note(request, action="plan.create", platform=True)
        if form.is_valid():
            data = form.cleaned_data
            try:
                plan = services.create_plan(name=data["name"], currency=data["currency"].upper(),
                                            description=data["description"], effective_from=form.effective(),
                                            **form.prices())
            except DomainError as exc:
                form.add_error(None, str(exc))
                audit.refused(request, str(exc), show=False)
            else:
                audit.note(request, target=plan)
                messages.success(request, f"Created plan {plan.name}.")
                return redirect("plan-detail", pk=plan.pk)
    plans = list(RatePlan.objects.prefetch_related("versions", "tenants__tenant"))
    now = timezone.now()
    for plan in plans:  # the prices in effect now (a plan's first ones may start later)
        versions = list(plan.versions.all())
        plan.current = rate_at(versions, now) or (versions[0] if versions else None)
    return render(request, "billing/plans.html", {"plans": plans, "form": form})


@staff_member_required
def plan_detail(request, pk: int):
    plan = get_object_or_404(RatePlan.objects.prefetch_related("versions", "tenants__tenant"), pk=pk)
    form = PricesForm(request.POST or None)
    if request.method == "POST":
        audit.note(request, action="plan.prices", target=plan, platform=True)
        if form.is_valid():
            try:
                version = services.add_version(plan=plan, effective_from=form.effective(), **form.prices())
            except DomainError as exc:
                form.add_error(None, str(exc))
                audit.refused(request, str(exc), show=False)
            else:
                messages.success(request, f"New prices from {version.effective_from:%Y-%m-%d %H:%M} UTC.")
                return redirect("plan-detail", pk=plan.pk)
    return render(request, "billing/plan.html", {"plan": plan, "form": form})


@login_required
@require_POST
def tenant_billing(request, pk: int):
    scope = scope_of(request)
    tenant = get_object_or_404(Tenant.objects.in_scope(scope), pk=pk)
    audit.note(request, action="tenant.billing", target=tenant)
    require(request, scope, Need.ADMIN)
    form = TenantBillingForm(request.POST)
    if form.is_valid():
        try:
            services.set_tenant_billing(tenant=tenant, plan=form.cleaned_data["plan"],
                                        tax_rate=form.cleaned_data["tax_rate"])
        except DomainError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"{tenant.name} is billed on {form.cleaned_data['plan'].name}.")
    else:
        messages.error(request, "; ".join(" ".join(errors) for errors in form.errors.values()))
    return redirect("tenant-detail", pk=tenant.pk)


@staff_member_required
def revenue(request):
    reports = [{"report": report, "id": f"revenue-{report.currency}",
                "chart": _chart([f"{month:%b %Y}" for month in report.months],
                                {tenant: report.row(tenant) for tenant in report.tenants})}
               for report in costs.revenue(months=12)]
    return render(request, "billing/revenue.html", {"reports": reports})


def tenant_panel(request, scope, tenant: Tenant) -> str:
    """The billing card of a tenant's page: its plan and tax rate, and for platform admins the form to set them."""
    billing = TenantBilling.objects.select_related("plan").filter(tenant=tenant).first()
    form = TenantBillingForm(initial={"plan": billing.plan_id if billing else None,
                                      "tax_rate": billing.tax_rate if billing else 0}) if scope.admin else None
    return render_to_string("billing/_tenant_panel.html", {"billing": billing, "form": form, "tenant": tenant},
                            request=request)
