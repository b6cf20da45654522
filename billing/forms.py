"""Forms of the billing pages: plans and their prices, a tenant's plan, and a month to invoice."""

from datetime import UTC

from django import forms
from django.utils import timezone

from billing.models import RatePlan
from billing.services import PRICES

PRICE = {"max_digits": 18, "decimal_places": 6, "min_value": 0, "required": False}


class PricesForm(forms.Form):
    effective_from = forms.DateTimeField(
        required=False, label="Effective from (UTC)", widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="A whole hour, now or later; empty for the current hour. Prices left empty stay as they were.")
    vcpu_hour = forms.DecimalField(label="Per vCPU-hour", **PRICE)
    ram_gib_hour = forms.DecimalField(label="Per GiB-of-RAM-hour", **PRICE)
    disk_gib_month = forms.DecimalField(label="Per GiB-of-disk-month", **PRICE)
    snapshot_gib_month = forms.DecimalField(label="Per GiB-of-snapshot-month", **PRICE)
    volume_gib_month = forms.DecimalField(label="Per GiB-of-volume-month", **PRICE)
    backup_gib_month = forms.DecimalField(label="Per GiB-of-backup-month", **PRICE)
    licence_hour = forms.DecimalField(label="Per licensed-image hour", **PRICE)
    address_hour = forms.DecimalField(label="Per public-address hour", **PRICE)
    monthly_fee = forms.DecimalField(label="Monthly fee", max_digits=18, decimal_places=2, min_value=0,
                                     required=False)

    def effective(self):
        """The effective time in UTC (the form's naive value read as UTC), by default the current hour."""
        value = self.cleaned_data.get("effective_from")
        if value is None:
            return timezone.now().replace(minute=0, second=0, microsecond=0)
        return value.replace(tzinfo=UTC) if timezone.is_naive(value) else value

    def prices(self) -> dict:
        return {name: value for name, value in self.cleaned_data.items() if name in PRICES and value is not None}


class PlanForm(PricesForm):
    name = forms.CharField(max_length=100)
    currency = forms.CharField(max_length=3, initial="EUR", help_text="An ISO 4217 code, like EUR or USD.")
    description = forms.CharField(max_length=255, required=False)

    field_order = ["name", "currency", "description"]


class TenantBillingForm(forms.Form):
    plan = forms.ModelChoiceField(queryset=RatePlan.objects.all(), label="Rate plan")
    tax_rate = forms.DecimalField(max_digits=6, decimal_places=4, min_value=0, max_value=1, initial=0,
                                  help_text="0.2 for 20 %.")


class MonthForm(forms.Form):
    month = forms.CharField(widget=forms.TextInput(attrs={"type": "month"}), help_text="A closed month.")

    def clean_month(self) -> tuple[int, int]:
        value = self.cleaned_data["month"]
        try:
            year, month = (int(part) for part in value.split("-"))
        except ValueError:
            raise forms.ValidationError("Give the month as YYYY-MM.") from None
        if not (2000 <= year <= 9998 and 1 <= month <= 12):
            raise forms.ValidationError("Give the month as YYYY-MM.")
        return year, month
