"""Overview, instance and action pages."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from cloudpanel.exceptions import DomainError
from cloudpanel.scoping import can_operate, is_platform_admin, operable_tenant_ids
from hosts import services as host_services
from hosts.models import Host
from instances import services
from instances.choices import Operation, Status
from instances.filtersets import InstanceFilterSet
from instances.forms import InstanceForm
from instances.lifecycle import allowed_operations
from instances.models import Instance, InstanceAction
from tenants.models import Tenant


@login_required
def overview(request):
    user = request.user
    instances = Instance.objects.visible_to(user).live()
    by_status = {row["status"]: row["n"] for row in instances.values("status").annotate(n=Count("id"))}
    shown = [(s.value, s.label, by_status[s.value]) for s in Status if by_status.get(s.value)]
    hosts = host_services.with_allocations(list(Host.objects.all())) if is_platform_admin(user) else []
    actions = InstanceAction.objects.visible_to(user).select_related("instance", "user")[:15]
    chart = {"keys": [v for v, _, _ in shown], "labels": [lb for _, lb, _ in shown], "values": [n for _, _, n in shown]}
    return render(request, "overview.html", {
        "status_counts": shown, "chart": chart, "total": sum(by_status.values()), "hosts": hosts,
        "actions": actions,
    })


@login_required
def instance_list(request):
    queryset = Instance.objects.visible_to(request.user).select_related("host", "tenant")
    if not request.GET.get("status"):
        queryset = queryset.live()
    filterset = InstanceFilterSet(request.GET, queryset=queryset)
    page = Paginator(filterset.qs, 50).get_page(request.GET.get("page"))
    return render(request, "instances/list.html", {
        "page": page, "filter": filterset, "statuses": Status.choices,
        "can_create": bool(is_platform_admin(request.user) or operable_tenant_ids(request.user)),
    })


@login_required
def instance_new(request):
    user = request.user
    admin = is_platform_admin(user)
    tenants = Tenant.objects.all() if admin else Tenant.objects.filter(pk__in=operable_tenant_ids(user))
    hosts = Host.objects.filter(enabled=True) if admin else None
    form = InstanceForm(request.POST or None, tenants=tenants, hosts=hosts)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        try:
            action = services.create_instance(user=user, **data)
        except DomainError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Creating {action.instance.name}.")
            return redirect("instance-detail", pk=action.instance_id)
    return render(request, "instances/new.html", {"form": form})


@login_required
def instance_detail(request, pk: int):
    instance = get_object_or_404(Instance.objects.visible_to(request.user).select_related("host", "tenant"), pk=pk)
    return render(request, "instances/detail.html", {
        "instance": instance,
        "operations": allowed_operations(instance.status, instance.task_state),
        "all_operations": [op for op in Operation if op != Operation.CREATE],
        "can_operate": can_operate(request.user, instance.tenant_id),
        "actions": instance.actions.select_related("user")[:20],
        "history": instance.state_changes.order_by("-at", "-id")[:50],
    })


@login_required
@require_POST
def instance_operation(request, pk: int, operation: str):
    instance = get_object_or_404(Instance.objects.visible_to(request.user), pk=pk)
    if operation not in Operation.values or operation == Operation.CREATE:
        raise Http404("no such operation")
    if not can_operate(request.user, instance.tenant_id):
        messages.error(request, "Your role in this tenant only allows reading.")
    else:
        try:
            services.request_operation(instance=instance, operation=operation, user=request.user)
        except DomainError as exc:
            messages.error(request, str(exc))
    if operation == Operation.DELETE and instance.status == Status.DELETED:
        return redirect("instance-list")
    return redirect("instance-detail", pk=instance.pk)


@login_required
@require_POST
def action_retry(request, pk: int):
    action = get_object_or_404(InstanceAction.objects.visible_to(request.user).select_related("instance"), pk=pk)
    if not can_operate(request.user, action.instance.tenant_id):
        messages.error(request, "Your role in this tenant only allows reading.")
    else:
        try:
            services.retry_action(action=action, user=request.user)
        except DomainError as exc:
            messages.error(request, str(exc))
    return redirect("instance-detail", pk=action.instance_id)


@login_required
def action_list(request):
    actions = InstanceAction.objects.visible_to(request.user).select_related("instance", "user")
    page = Paginator(actions, 50).get_page(request.GET.get("page"))
    return render(request, "instances/actions.html", {"page": page})
