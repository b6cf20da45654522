"""Billing endpoints: rate plans (admins change them), invoices with their lifecycle and exports, the month
so far of the tenant acted for, and revenue."""

from datetime import UTC, datetime

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from billing import costs, invoicing, services
from billing.exports import invoice_csv, invoice_json, invoice_pdf, month_archive
from billing.forms import MonthForm
from billing.models import Invoice, RatePlan, TenantBilling
from billing.serializers import (
    InvoiceRunSerializer,
    InvoiceSerializer,
    MonthToDateSerializer,
    PricesSerializer,
    RatePlanCreateSerializer,
    RatePlanSerializer,
    RevenueSerializer,
    TenantBillingSerializer,
)
from cloudpanel.exceptions import NotFound
from cloudpanel.scoping import Need
from cloudpanel.streaming import streamed
from tenants import audit
from tenants.models import Tenant
from tenants.viewsets import ScopedViewSetMixin

LIFECYCLE = {"issue": invoicing.issue, "pay": invoicing.mark_paid, "void": invoicing.void,
             "credit": invoicing.credit_note}


def prices_of(data: dict) -> tuple[datetime, dict]:
    """The effective time (by default the current hour) and the prices given."""
    effective = data.pop("effective_from", None) or timezone.now().replace(minute=0, second=0, microsecond=0)
    return effective, {name: value for name, value in data.items() if name in services.PRICES}


def month_param(value: str | None) -> tuple[int, int]:
    """A month given as YYYY-MM."""
    form = MonthForm({"month": value or ""})
    if not form.is_valid():
        raise ValidationError(form.errors)
    return form.cleaned_data["month"]


def archive_response(request, invoices, year: int, month: int) -> StreamingHttpResponse:
    """The month's invoices as a ZIP of PDFs plus one CSV, sent as it is made (a download shows its progress)."""
    name = f"invoices-{year:04d}-{month:02d}"
    return streamed(request, month_archive(invoices, name=name), content_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{name}.zip"'})


def export_response(invoice: Invoice, kind: str) -> HttpResponse:
    """One invoice as a PDF, CSV or JSON download."""
    headers = {"Content-Disposition": f'attachment; filename="{invoice.display_number.replace(" ", "-")}.{kind}"'}
    if kind == "pdf":
        return HttpResponse(invoice_pdf(invoice), content_type="application/pdf", headers=headers)
    if kind == "json":
        return JsonResponse(invoice_json(invoice), json_dumps_params={"indent": 2}, headers=headers)
    return HttpResponse(invoice_csv(invoice), content_type="text/csv; charset=utf-8", headers=headers)


class RatePlanViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Rate plans with their price versions: admins see and change all; a tenant sees its own plan."""

    queryset = RatePlan.objects.none()
    serializer_class = RatePlanSerializer
    audit_name = "plan"
    platform_level = True

    def get_queryset(self):
        plans = RatePlan.objects.prefetch_related("versions")
        if self.scope.admin and self.scope.tenant is None:
            return plans
        return plans.filter(tenants__tenant_id__in=self.scope.tenant_ids or [])

    @extend_schema(request=RatePlanCreateSerializer, responses={201: RatePlanSerializer})
    def create(self, request):
        self.require(Need.ADMIN)
        data = RatePlanCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        name, currency, description = values.pop("name"), values.pop("currency"), values.pop("description")
        effective, prices = prices_of(values)
        plan = services.create_plan(name=name, currency=currency, description=description,
                                    effective_from=effective, **prices)
        audit.note(request, target=plan)
        return Response(RatePlanSerializer(plan).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=PricesSerializer, responses={201: RatePlanSerializer})
    @action(detail=True, methods=["post"])
    def prices(self, request, pk=None):
        """New prices from a whole hour on (never in the past); prices not given stay as they were."""
        plan = self.get_object()
        self.require(Need.ADMIN)
        data = PricesSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        effective, prices = prices_of(dict(data.validated_data))
        services.add_version(plan=plan, effective_from=effective, **prices)
        return Response(RatePlanSerializer(RatePlan.objects.prefetch_related("versions").get(pk=plan.pk)).data,
                        status=status.HTTP_201_CREATED)


@extend_schema_view(list=extend_schema(operation_id="v1_invoices_list", responses={200: OpenApiTypes.OBJECT}),
                    retrieve=extend_schema(responses={200: OpenApiTypes.OBJECT}))
class InvoiceViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Invoices and credit notes of the tenants in scope, with their lines; PDF and CSV downloads; admins issue,
    mark paid, void and credit them, run a month and download a month's archive."""

    queryset = Invoice.objects.none()
    serializer_class = InvoiceSerializer
    audit_name = "invoice"
    filterset_fields = ["status", "kind", "tenant", "period_start"]

    def get_queryset(self):
        return (Invoice.objects.visible_to(self.scope).select_related("tenant", "credits")
                .prefetch_related("lines"))

    def _change(self, request, change: str) -> Response:
        invoice = self.get_object()
        self.require(Need.ADMIN)
        changed = LIFECYCLE[change](invoice=invoice)
        audit.note(request, target=changed)
        return Response(invoice_json(self.get_queryset().get(pk=changed.pk)),
                        status=status.HTTP_201_CREATED if change == "credit" else status.HTTP_200_OK)

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def issue(self, request, pk=None):
        """Number the draft (no gaps) and make it immutable."""
        return self._change(request, "issue")

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def pay(self, request, pk=None):
        return self._change(request, "pay")

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def void(self, request, pk=None):
        """Cancel the tenant's latest issued, unpaid invoice; its usage is invoiced again."""
        return self._change(request, "void")

    @extend_schema(request=None, responses={201: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def credit(self, request, pk=None):
        """Credit an issued or paid invoice in full with a numbered credit note (returned)."""
        return self._change(request, "credit")

    @extend_schema(responses={(200, "application/pdf"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def pdf(self, request, pk=None):
        return export_response(self.get_object(), "pdf")

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"])
    def csv(self, request, pk=None):
        return export_response(self.get_object(), "csv")

    @extend_schema(request=InvoiceRunSerializer, responses={201: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["post"])
    def run(self, request):
        """Draft a closed month's invoices of every billed tenant that has none yet."""
        audit.note(request, platform=True)  # all tenants', whichever one the request acts for
        self.require(Need.ADMIN)
        data = InvoiceRunSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        drafts = invoicing.invoice_month(year=data.validated_data["year"], month=data.validated_data["month"])
        return Response({"drafted": len(drafts), "invoices": [invoice.pk for invoice in drafts]},
                        status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[OpenApiParameter("month", str, description="YYYY-MM", required=True)],
                   responses={(200, "application/zip"): OpenApiTypes.BINARY})
    @action(detail=False, methods=["get"])
    def archive(self, request):
        """The month's invoices and credit notes for accounting: a ZIP of PDFs plus one CSV."""
        self.require(Need.ADMIN)
        year, month = month_param(request.query_params.get("month"))
        start = datetime(year, month, 1, tzinfo=UTC)
        return archive_response(request, self.get_queryset().filter(period_start=start).exclude(status="draft")
                                .order_by("number"), year, month)


class UsageViewSet(ScopedViewSetMixin, viewsets.GenericViewSet):
    """The month so far of the tenant acted for: cost per day, the monthly fee, and the forecast to month end."""

    queryset = TenantBilling.objects.none()
    serializer_class = MonthToDateSerializer

    @extend_schema(responses={200: MonthToDateSerializer})
    def list(self, request, *args, **kwargs):
        if self.scope.tenant is None:
            raise ValidationError({"tenant": ["Say which tenant (?tenant=)."]})
        billing = TenantBilling.objects.select_related("plan").filter(tenant=self.scope.tenant).first()
        if billing is None:
            raise NotFound("The tenant has no rate plan.")
        return Response(MonthToDateSerializer(costs.month_to_date(billing)).data)


class RevenueViewSet(ScopedViewSetMixin, viewsets.GenericViewSet):
    """Invoiced revenue before tax, net of credit notes, per currency, tenant and month (platform admins)."""

    queryset = Invoice.objects.none()
    platform_level = True
    pagination_class = None  # one report per currency

    @extend_schema(parameters=[OpenApiParameter("months", int, description="how many months back (1-36)")],
                   responses={200: RevenueSerializer(many=True)})
    def list(self, request, *args, **kwargs):
        self.require(Need.ADMIN)
        try:
            months = int(request.query_params.get("months", 12))
        except ValueError:
            months = 0
        if not 1 <= months <= 36:
            raise ValidationError({"months": ["Between 1 and 36."]})
        return Response([{"currency": report.currency, "months": report.months,
                          "tenants": [{"name": tenant, "amounts": [str(a) for a in report.row(tenant)]}
                                      for tenant in report.tenants],
                          "totals": [str(total) for total in report.totals]}
                         for report in costs.revenue(months=months)])


class TenantBillingViewSet(ScopedViewSetMixin, viewsets.GenericViewSet):
    """A tenant's rate plan and tax rate (0.2 for 20 %): GET it, and platform admins PUT it. Served at
    /api/v1/tenants/{id}/billing/."""

    queryset = Tenant.objects.none()
    serializer_class = TenantBillingSerializer
    audit_name = "tenant"

    def get_queryset(self):
        return Tenant.objects.in_scope(self.scope)

    @extend_schema(request=TenantBillingSerializer, responses={200: TenantBillingSerializer})
    def billing(self, request, pk=None):
        tenant = self.get_object()
        if request.method == "GET":
            current = TenantBilling.objects.select_related("plan").filter(tenant=tenant).first()
            if current is None:
                raise NotFound("The tenant has no rate plan.")
            return Response(TenantBillingSerializer(current).data)
        self.require(Need.ADMIN)
        data = TenantBillingSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        billing = services.set_tenant_billing(tenant=tenant, plan=data.validated_data["plan"],
                                              tax_rate=data.validated_data.get("tax_rate", 0))
        return Response(TenantBillingSerializer(billing).data)
