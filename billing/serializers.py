"""Rate plans, tenants' billing settings, invoices and the month so far, as the API shows and takes them."""

from rest_framework import serializers

from billing.exports import invoice_json
from billing.models import RatePlan, RateVersion, TenantBilling
from billing.services import PRICES

PRICE = {"max_digits": 18, "decimal_places": 6, "min_value": 0}


class RateVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = RateVersion
        fields = ["id", "effective_from", *PRICES]


class RatePlanSerializer(serializers.ModelSerializer):
    versions = RateVersionSerializer(many=True, read_only=True)

    class Meta:
        model = RatePlan
        fields = ["id", "name", "currency", "description", "versions"]


class PricesSerializer(serializers.Serializer):
    """Prices per vCPU-hour, GiB-of-RAM-hour, GiB-of-disk-month, GiB-of-snapshot-month, GiB-of-volume-month,
    GiB-of-backup-month, licence hour and address hour, and the monthly fee; effective from a whole hour (by default
    the current one)."""

    effective_from = serializers.DateTimeField(required=False)
    vcpu_hour = serializers.DecimalField(required=False, **PRICE)
    ram_gib_hour = serializers.DecimalField(required=False, **PRICE)
    disk_gib_month = serializers.DecimalField(required=False, **PRICE)
    snapshot_gib_month = serializers.DecimalField(required=False, **PRICE)
    volume_gib_month = serializers.DecimalField(required=False, **PRICE)
    backup_gib_month = serializers.DecimalField(required=False, **PRICE)
    licence_hour = serializers.DecimalField(required=False, **PRICE)
    address_hour = serializers.DecimalField(required=False, **PRICE)
    monthly_fee = serializers.DecimalField(required=False, max_digits=18, decimal_places=2, min_value=0)


class RatePlanCreateSerializer(PricesSerializer):
    name = serializers.CharField(max_length=100)
    currency = serializers.CharField(max_length=3)
    description = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)


class TenantBillingSerializer(serializers.ModelSerializer):
    plan_name = serializers.CharField(source="plan.name", read_only=True)
    currency = serializers.CharField(source="plan.currency", read_only=True)

    class Meta:
        model = TenantBilling
        fields = ["tenant", "plan", "plan_name", "currency", "tax_rate", "billed_from"]
        read_only_fields = ["tenant", "billed_from"]


class InvoiceSerializer(serializers.BaseSerializer):
    """An invoice with its lines, exactly as its JSON export (decimals as strings)."""

    def to_representation(self, instance):
        return invoice_json(instance)


class InvoiceRunSerializer(serializers.Serializer):
    year = serializers.IntegerField(min_value=2000, max_value=9998)
    month = serializers.IntegerField(min_value=1, max_value=12)


class DayCostSerializer(serializers.Serializer):
    day = serializers.DateField()
    cost = serializers.DecimalField(max_digits=18, decimal_places=2)


class MonthToDateSerializer(serializers.Serializer):
    currency = serializers.CharField()
    plan = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    metered_until = serializers.DateTimeField(allow_null=True)
    fee = serializers.DecimalField(max_digits=18, decimal_places=2)
    so_far = serializers.DecimalField(max_digits=18, decimal_places=2)
    forecast = serializers.DecimalField(max_digits=18, decimal_places=2)
    days = DayCostSerializer(many=True, source="day_rows")


class RevenueTenantSerializer(serializers.Serializer):
    name = serializers.CharField()
    amounts = serializers.ListField(child=serializers.DecimalField(max_digits=14, decimal_places=2),
                                    help_text="Per month, in the order of months.")


class RevenueSerializer(serializers.Serializer):
    """One currency's invoiced revenue before tax, net of credit notes, per tenant and month."""

    currency = serializers.CharField()
    months = serializers.ListField(child=serializers.DateField(), help_text="The first day of each month.")
    tenants = RevenueTenantSerializer(many=True)
    totals = serializers.ListField(child=serializers.DecimalField(max_digits=14, decimal_places=2))
