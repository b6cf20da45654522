"""Rate plans and their versions, the usage ledger, and invoices with their lines.

Money is Decimal throughout. The ledger holds, per resource, meter and hour, how many units
(size × seconds) were used, as append-only revisions: metering again adds a revision only
for a difference, and the unique key makes a second writer of the same revision fail.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from billing.choices import InvoiceKind, InvoiceStatus, Meter
from cloudpanel.scoping import TenantScopedQuerySet

PRICE = {"max_digits": 18, "decimal_places": 6, "default": Decimal(0), "validators": [MinValueValidator(Decimal(0))]}


class RatePlan(models.Model):
    """Named prices in one currency; the prices themselves are in its versions."""

    name = models.CharField(max_length=100, unique=True)
    currency = models.CharField(max_length=3, validators=[RegexValidator(r"^[A-Z]{3}$", "An ISO 4217 code.")])
    description = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.currency})"


class RateVersion(models.Model):
    """The plan's prices from effective_from until the next version's. A version is added for a price change;
    one already in effect is never changed, so a past invoice's prices stay what they were."""

    plan = models.ForeignKey(RatePlan, on_delete=models.CASCADE, related_name="versions")
    effective_from = models.DateTimeField()
    vcpu_hour = models.DecimalField(**PRICE)
    ram_gib_hour = models.DecimalField(**PRICE)
    disk_gib_month = models.DecimalField(**PRICE)
    snapshot_gib_month = models.DecimalField(**PRICE)
    volume_gib_month = models.DecimalField(**PRICE)
    backup_gib_month = models.DecimalField(**PRICE)
    licence_hour = models.DecimalField(**PRICE)
    address_hour = models.DecimalField(**PRICE)
    monthly_fee = models.DecimalField(max_digits=18, decimal_places=2, default=Decimal(0),
                                      validators=[MinValueValidator(Decimal(0))])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["plan", "effective_from"]
        constraints = [models.UniqueConstraint(fields=["plan", "effective_from"], name="rate_version_once")]

    def __str__(self) -> str:
        return f"{self.plan.name} from {self.effective_from:%Y-%m-%d %H:%M}"

    PRICE_OF = {Meter.VCPU: "vcpu_hour", Meter.RAM: "ram_gib_hour", Meter.DISK: "disk_gib_month",
                Meter.SNAPSHOT: "snapshot_gib_month", Meter.VOLUME: "volume_gib_month",
                Meter.BACKUP: "backup_gib_month", Meter.LICENCE: "licence_hour",
                Meter.ADDRESS: "address_hour"}  # each meter's price field

    def price(self, meter: str) -> Decimal:
        return getattr(self, self.PRICE_OF[meter])


class TenantBilling(models.Model):
    """A tenant's plan and tax rate (0.2 for 20 %)."""

    tenant = models.OneToOneField("tenants.Tenant", on_delete=models.CASCADE, related_name="billing")
    plan = models.ForeignKey(RatePlan, on_delete=models.PROTECT, related_name="tenants")
    tax_rate = models.DecimalField(max_digits=6, decimal_places=4, default=Decimal(0),
                                   validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(1))])
    billed_from = models.DateTimeField(default=timezone.now,
                                       help_text="Usage before this is not billed (when the tenant got a plan).")
    # The end of the period of the tenant's latest (not void) invoice: months are invoiced in order.
    counted_end = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.tenant} on {self.plan}"


class UsageRecord(models.Model):
    """Units of one meter of one resource in one hour: a revision of that hour's count. Units are whole
    numbers: vCPU-seconds, MiB-of-RAM-seconds, GiB-of-disk-seconds, or seconds (licences, addresses).

    The hour's usage is the sum of its revisions. A revision is never changed; it is added to its
    month's UsageMonth in the same transaction, which is what invoices count.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="usage")
    resource_type = models.CharField(max_length=20)
    resource_id = models.BigIntegerField()
    resource_name = models.CharField(max_length=100)
    meter = models.CharField(max_length=10, choices=Meter.choices)
    interval_start = models.DateTimeField()
    revision = models.PositiveIntegerField(default=1)
    units = models.BigIntegerField()
    rate = models.ForeignKey(RateVersion, on_delete=models.PROTECT, related_name="usage")
    recorded_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["interval_start", "id"]
        constraints = [models.UniqueConstraint(fields=["resource_type", "resource_id", "meter", "interval_start",
                                                       "revision"], name="usage_revision_once")]
        indexes = [models.Index(fields=["tenant", "interval_start"], name="usage_of_tenant")]

    def __str__(self) -> str:
        return f"{self.resource_type} {self.resource_id} {self.meter} {self.interval_start:%Y-%m-%d %H}h"


class UsageMonth(models.Model):
    """A resource's units of one meter at one rate in one month: the sum of its ledger revisions, added to as
    they are written, and how many of those units invoices have counted so far. An invoice run reads these
    (a few per resource) instead of the hourly ledger; what it has not counted yet for an earlier month
    is a late revision, billed as an adjustment."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="usage_months")
    resource_type = models.CharField(max_length=20)
    resource_id = models.BigIntegerField()
    resource_name = models.CharField(max_length=100)
    meter = models.CharField(max_length=10, choices=Meter.choices)
    rate = models.ForeignKey(RateVersion, on_delete=models.PROTECT, related_name="usage_months")
    month = models.DateTimeField()
    units = models.BigIntegerField(default=0)
    invoiced_units = models.BigIntegerField(default=0)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["month", "resource_name", "id"]
        constraints = [models.UniqueConstraint(fields=["resource_type", "resource_id", "meter", "rate", "month"],
                                               name="usage_month_once")]
        indexes = [models.Index(fields=["tenant", "month"], name="usage_month_of_tenant")]

    def __str__(self) -> str:
        return f"{self.resource_type} {self.resource_id} {self.meter} {self.month:%Y-%m}"


class InvoiceSequence(models.Model):
    """The last invoice number given: locked while the next is taken, so numbers have no gaps."""

    last = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return str(self.last)


class ImmutableInvoice(ValidationError):
    """An issued invoice (or its lines) may not change: corrections go through a credit note."""


class InvoiceQuerySet(TenantScopedQuerySet):
    def visible_to(self, scope) -> InvoiceQuerySet:
        """The scope's invoices; drafts only for platform admins (a tenant sees an invoice once it is issued)."""
        invoices = self.in_scope(scope)
        return invoices if scope.admin else invoices.exclude(status=InvoiceStatus.DRAFT)


class Invoice(models.Model):
    """A tenant's invoice for a month, or a credit note against one."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="invoices")
    kind = models.CharField(max_length=7, choices=InvoiceKind.choices, default=InvoiceKind.INVOICE)
    status = models.CharField(max_length=7, choices=InvoiceStatus.choices, default=InvoiceStatus.DRAFT)
    number = models.PositiveIntegerField(null=True, blank=True, unique=True)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    currency = models.CharField(max_length=3)
    plan_name = models.CharField(max_length=100)
    tax_rate = models.DecimalField(max_digits=6, decimal_places=4)
    subtotal = models.DecimalField(max_digits=18, decimal_places=2, default=Decimal(0))
    tax = models.DecimalField(max_digits=18, decimal_places=2, default=Decimal(0))
    total = models.DecimalField(max_digits=18, decimal_places=2, default=Decimal(0))
    credits = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="credit_notes")
    # The period end of the tenant's invoice before this one, given back to the tenant if this one is voided.
    prior_end = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    issued_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)

    objects = InvoiceQuerySet.as_manager()

    LIFECYCLE = frozenset({"status", "paid_at", "voided_at"})  # what may still change once issued

    class Meta:
        ordering = ["-period_start", "-id"]
        constraints = [models.UniqueConstraint(
            fields=["tenant", "period_start"], condition=models.Q(kind="invoice") & ~models.Q(status="void"),
            name="one_invoice_per_tenant_and_month")]

    def __str__(self) -> str:
        return self.display_number

    def save(self, *args, **kwargs):
        if self.pk is not None:
            stored = Invoice.objects.filter(pk=self.pk).values_list("status", flat=True).first()
            fields = kwargs.get("update_fields")
            if stored not in (None, InvoiceStatus.DRAFT) and (fields is None or set(fields) - self.LIFECYCLE):
                raise ImmutableInvoice("an issued invoice cannot be changed; correct it with a credit note")
        super().save(*args, **kwargs)

    @property
    def last_day(self) -> datetime:
        """The period's last day (period_end is exclusive)."""
        return self.period_end - timedelta(days=1)

    @property
    def display_number(self) -> str:
        prefix = "CN" if self.kind == InvoiceKind.CREDIT_NOTE else "INV"
        return f"{prefix}-{self.number:06d}" if self.number else f"draft {self.pk}"


class InvoiceLine(models.Model):
    """Quantity × unit price, rounded to the cent on the line: the lines add up exactly to the subtotal."""

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField()
    description = models.CharField(max_length=255)
    resource_type = models.CharField(max_length=20, blank=True)
    resource_id = models.BigIntegerField(null=True, blank=True)
    meter = models.CharField(max_length=10, choices=Meter.choices, blank=True)
    adjustment = models.BooleanField(default=False, help_text="Late usage of an earlier, already invoiced month.")
    quantity = models.DecimalField(max_digits=24, decimal_places=6)
    unit = models.CharField(max_length=30)
    unit_price = models.DecimalField(max_digits=18, decimal_places=6)
    amount = models.DecimalField(max_digits=18, decimal_places=2)
    # The UsageMonth units the line counted (none for a fee or a credit), given back if its invoice is voided.
    rate = models.ForeignKey(RateVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    usage_month = models.DateTimeField(null=True, blank=True)
    units = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["invoice", "position"]

    def __str__(self) -> str:
        return self.description

    def save(self, *args, **kwargs):
        if Invoice.objects.filter(pk=self.invoice_id).exclude(status=InvoiceStatus.DRAFT).exists():
            raise ImmutableInvoice("an issued invoice's lines cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if Invoice.objects.filter(pk=self.invoice_id).exclude(status=InvoiceStatus.DRAFT).exists():
            raise ImmutableInvoice("an issued invoice's lines cannot be changed")
        return super().delete(*args, **kwargs)


class AddressHold(models.Model):
    """A public address (IPv4 on a shared network) held by a tenant's NIC, from when to when: what the address
    meter counts. Written when the address is allocated and released (billing.signals)."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="address_holds")
    allocation_id = models.BigIntegerField(unique=True)
    address = models.GenericIPAddressField()
    network_name = models.CharField(max_length=63)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"{self.address} of {self.tenant}"
