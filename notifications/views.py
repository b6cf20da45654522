"""The notification list (everyone, for what they can see) and subscriptions (the tenant's admins, platform
admins) with each one's delivery log."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from cloudpanel.exceptions import DomainError
from notifications import services
from notifications.api import MANAGERS
from notifications.forms import SubscriptionForm
from notifications.models import Notification, Subscription
from tenants import audit
from tenants.choices import AuditResult
from tenants.models import Tenant
from tenants.pages import refuse
from tenants.scoping import scope_of


@login_required
def notification_list(request):
    scope = scope_of(request)
    if request.method == "POST":
        services.mark_read(user=request.user)
        return redirect("notification-list")
    read_until = services.read_until(request.user)
    page = Paginator(Notification.objects.in_scope(scope).select_related("tenant"), 50).get_page(
        request.GET.get("page"))
    return render(request, "notifications/list.html", {"page": page, "read_until": read_until})


@login_required
def subscription_list(request):
    scope = scope_of(request)
    tenants, managed = Tenant.objects.managed_in(scope), scope.managed_tenant_ids
    platform_wide = managed is None
    form = SubscriptionForm(request.POST or None, tenants=tenants, platform_wide=platform_wide,
                            initial={"tenant": scope.tenant.pk if scope.tenant else None})
    if request.method == "POST":
        audit.note(request, action="subscription.create")
        if not platform_wide and not managed:
            refuse(request, MANAGERS)
        if form.is_valid():
            values = form.cleaned_data
            try:
                subscription = services.create_subscription(
                    user=request.user, tenant=values["tenant"], name=values["name"], channel=values["channel"],
                    kinds=values["kinds"], email=values["email"], url=values["url"])
            except DomainError as exc:
                form.add_error(None, str(exc))
            else:
                audit.note(request, target=subscription, tenant=subscription.tenant, result=AuditResult.OK)
                messages.success(request, f"Subscription {subscription.name} created.")
                return redirect("subscription-detail", subscription.pk)
    subscriptions = Subscription.objects.managed_by(scope).select_related("tenant")
    return render(request, "notifications/subscriptions.html", {"subscriptions": subscriptions, "form": form,
                                                                "may_subscribe": platform_wide or bool(managed)})


@login_required
def subscription_detail(request, pk: int):
    subscription = get_object_or_404(Subscription.objects.managed_by(scope_of(request)).select_related("tenant"),
                                     pk=pk)
    page = Paginator(subscription.deliveries.select_related("notification"), 50).get_page(request.GET.get("page"))
    return render(request, "notifications/subscription.html", {"subscription": subscription, "page": page})


@login_required
@require_POST
def subscription_change(request, pk: int, change: str):
    subscription = get_object_or_404(Subscription.objects.managed_by(scope_of(request)), pk=pk)
    audit.note(request, action=f"subscription.{change}", target=subscription, tenant=subscription.tenant)
    if change == "delete":
        subscription.delete()
        messages.success(request, f"Subscription {subscription.name} deleted.")
        return redirect("subscription-list")
    if change not in ("enable", "disable"):
        refuse(request, f"{change}: not a change of a subscription")
    services.set_enabled(subscription=subscription, enabled=change == "enable")
    messages.success(request, f"Subscription {subscription.name} {change}d.")
    return redirect("subscription-detail", subscription.pk)
