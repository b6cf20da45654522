"""Rate plans, their price versions and tenants' billing settings: every change goes through here."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.exceptions import InvalidBilling
from billing.models import RatePlan, RateVersion, TenantBilling
from tenants.models import Tenant

PRICES = ("vcpu_hour", "ram_gib_hour", "disk_gib_month", "snapshot_gib_month", "volume_gib_month", "backup_gib_month",
          "licence_hour", "address_hour", "monthly_fee")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_LIMIT = Decimal("1000000000000")


def _price(name: str, value: object) -> Decimal:
    try:
        price = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise InvalidBilling(f"the price {name} must be a decimal number") from None
    if not price.is_finite() or price < 0 or price >= _LIMIT:
        raise InvalidBilling(f"the price {name} must be zero or more, and under {_LIMIT:,}")
    places = 2 if name == "monthly_fee" else 6
    if price != price.quantize(Decimal(1).scaleb(-places)):
        raise InvalidBilling(f"the price {name} has at most {places} decimal places")
    return price


def add_version(*, plan: RatePlan, effective_from: datetime, now: datetime | None = None,
                **prices: object) -> RateVersion:
    """New prices from a whole hour on, never before the current hour: usage already metered keeps the
    prices it was metered at, and no issued invoice changes. Prices not given stay what they were."""
    unknown = set(prices) - set(PRICES)
    if unknown:
        raise InvalidBilling(f"unknown prices: {', '.join(sorted(unknown))}")
    if timezone.is_naive(effective_from):
        raise InvalidBilling("give the time prices take effect with its time zone")
    if effective_from != effective_from.replace(minute=0, second=0, microsecond=0):
        raise InvalidBilling("prices take effect on a whole hour")
    hour = (now or timezone.now()).replace(minute=0, second=0, microsecond=0)
    if effective_from < hour and plan.versions.exists():
        raise InvalidBilling("a price change takes effect from the current hour on, never in the past")
    before = plan.versions.filter(effective_from__lt=effective_from).order_by("effective_from").last()
    values = {name: getattr(before, name) for name in PRICES} if before else {}
    values.update({name: _price(name, value) for name, value in prices.items()})
    try:
        with transaction.atomic():
            return RateVersion.objects.create(plan=plan, effective_from=effective_from, **values)
    except IntegrityError:
        raise InvalidBilling(f"{plan.name} already has prices from {effective_from:%Y-%m-%d %H:%M}") from None


@transaction.atomic
def create_plan(*, name: str, currency: str, effective_from: datetime, description: str = "",
                **prices: object) -> RatePlan:
    """A plan with its first prices."""
    if not name.strip():
        raise InvalidBilling("give the plan a name")
    if not _CURRENCY.match(currency):
        raise InvalidBilling("the currency is a three-letter ISO 4217 code, like EUR")
    try:
        with transaction.atomic():
            plan = RatePlan.objects.create(name=name.strip()[:100], currency=currency,
                                           description=description.strip()[:255])
    except IntegrityError:
        raise InvalidBilling(f"a plan named '{name.strip()}' already exists") from None
    add_version(plan=plan, effective_from=effective_from, **prices)
    return plan


def set_tenant_billing(*, tenant: Tenant, plan: RatePlan, tax_rate: object = 0,
                       billed_from: datetime | None = None) -> TenantBilling:
    """The tenant's plan and tax rate. Its usage is billed from when it first got a plan (or billed_from)."""
    try:
        rate = Decimal(str(tax_rate))
    except (InvalidOperation, ValueError):
        raise InvalidBilling("the tax rate is a decimal number, like 0.2 for 20 %") from None
    if not rate.is_finite() or not 0 <= rate <= 1 or rate != rate.quantize(Decimal("0.0001")):
        raise InvalidBilling("the tax rate lies between 0 and 1 (0.2 for 20 %), with at most 4 decimal places")
    current = TenantBilling.objects.select_related("plan").filter(tenant=tenant).first()
    if current is not None and current.plan.currency != plan.currency and tenant.usage_months.exists():
        raise InvalidBilling(f"{tenant.name} is billed in {current.plan.currency}; a plan in another currency "
                             "would mix currencies on its invoices")
    billing, _ = TenantBilling.objects.update_or_create(
        tenant=tenant, defaults={"plan": plan, "tax_rate": rate},
        create_defaults={"plan": plan, "tax_rate": rate, **({"billed_from": billed_from} if billed_from else {})})
    return billing
