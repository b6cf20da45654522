"""The hot spots page (the busiest hosts, for platform admins, and instances, now) and the alert rules page."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from cloudpanel.exceptions import DomainError
from instances.models import Instance
from metrics import alerts
from metrics.api import MANAGERS
from metrics.choices import Target
from metrics.forms import AlertRuleForm
from metrics.hot import Sort, hottest
from metrics.models import AlertRule
from tenants import audit
from tenants.choices import AuditResult
from tenants.models import Tenant
from tenants.pages import refuse
from tenants.scoping import scope_of


@login_required
def hot_spots(request):
    sort = Sort(request.GET["by"]) if request.GET.get("by") in Sort.values else Sort.CPU
    found = hottest(scope=scope_of(request), sort=sort, limit=15)
    return render(request, "metrics/hot.html", {"hosts": found.hosts, "instances": found.instances, "sort": sort,
                                                "sorts": Sort.choices})


@login_required
def alert_list(request):
    scope = scope_of(request)
    tenants, managed = Tenant.objects.managed_in(scope), scope.managed_tenant_ids
    platform_wide = managed is None
    form = AlertRuleForm(request.POST or None, tenants=tenants, platform_wide=platform_wide,
                         instances=Instance.objects.in_scope(scope).live().filter(tenant__in=tenants),
                         initial={"tenant": scope.tenant.pk if scope.tenant else None})
    if request.method == "POST":
        audit.note(request, action="alert_rule.create")
        if not platform_wide and not managed:
            refuse(request, MANAGERS)
        if form.is_valid():
            values = form.cleaned_data
            instance, host = values["instance"], values.get("host")
            try:
                rule = alerts.create_rule(
                    scope=scope, user=request.user, tenant=values["tenant"], name=values["name"],
                    target=values.get("target") or Target.INSTANCE, measure=values["measure"],
                    comparison=values["comparison"], threshold=values["threshold"], seconds=values["minutes"] * 60,
                    instance_id=instance.pk if instance else None, host_id=host.pk if host else None)
            except DomainError as exc:
                form.add_error(None, str(exc))
            else:
                audit.note(request, target=rule, tenant=rule.tenant, result=AuditResult.OK)
                messages.success(request, f"Alert rule {rule.name} made: {rule.condition}.")
                return redirect("alert-list")
    rules = list(AlertRule.objects.in_scope(scope).select_related("tenant", "instance", "host"))
    firing = alerts.firing(rules)
    return render(request, "metrics/alerts.html", {
        "rules": [(rule, firing.get(rule.pk, []), platform_wide or rule.tenant_id in managed) for rule in rules],
        "form": form, "may_make": platform_wide or bool(managed)})


@login_required
@require_POST
def alert_change(request, pk: int, change: str):
    scope = scope_of(request)
    rule = get_object_or_404(AlertRule.objects.in_scope(scope), pk=pk)
    audit.note(request, action=f"alert_rule.{change}", target=rule, tenant=rule.tenant)
    if not scope.manages(rule.tenant_id):
        refuse(request, MANAGERS)
    if change == "delete":
        rule.delete()
    elif change in ("enable", "disable"):
        alerts.set_enabled(rule=rule, enabled=change == "enable")
    else:
        refuse(request, f"{change}: not a change of an alert rule")
    messages.success(request, f"Alert rule {rule.name} {change}d.")
    return redirect("alert-list")
