"""Network pages: the list with a form to add one, a network's subnets, reserved ranges, NICs and hosts, the
topology, and security groups with their rules."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from cloudpanel.exceptions import DomainError
from cloudpanel.scoping import READ_ONLY
from networks import security, services
from networks.exceptions import InvalidNetwork
from networks.forms import NetworkForm, ReserveForm, SecurityGroupForm, SecurityRuleForm
from networks.models import Network, ReservedRange, SecurityGroup
from tenants import audit
from tenants.models import Tenant
from tenants.scoping import scope_of


@login_required
def network_list(request):
    scope = scope_of(request)
    can_add = scope.admin or (scope.tenant is not None and scope.can_operate(scope.tenant.pk))
    form = NetworkForm(request.POST or None, tenants=Tenant.objects.in_scope(scope), admin=scope.admin,
                       initial={"tenant": scope.tenant})
    if request.method == "POST":
        audit.note(request, action="network.create")
        if not can_add:
            raise PermissionDenied(READ_ONLY)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        shared, tenant = data.pop("shared", False), data.pop("tenant", None) or scope.tenant
        try:
            if shared and not scope.admin:
                raise PermissionDenied("Only platform admins make shared networks.")
            if not shared and tenant is None:
                raise InvalidNetwork("Choose the tenant the network belongs to, or make it shared.")
            owner = None if shared else tenant
            audit.note(request, tenant=owner)
            network = services.create_network(user=request.user, tenant=owner, **{
                k: (v or None) if k in ("gateway", "pool_start", "pool_end", "vlan_id") else (v or "")
                for k, v in data.items()})
        except DomainError as exc:
            form.add_error(None, str(exc))
            audit.refused(request, str(exc), show=False)
        else:
            audit.note(request, target=network)
            messages.success(request, f"Network {network.name} created.")
            return redirect("network-detail", pk=network.pk)
    networks = (Network.objects.visible_to(scope).select_related("tenant").prefetch_related("subnets")
                .annotate(nics=Count("ports", distinct=True)))
    return render(request, "networks/list.html", {"networks": networks, "form": form, "can_add": can_add})


@login_required
def network_detail(request, pk: int):
    scope = scope_of(request)
    network = get_object_or_404(Network.objects.visible_to(scope).select_related("tenant"), pk=pk)
    ports = network.ports.filter(instance__isnull=False).select_related("instance").prefetch_related("addresses")
    if network.tenant_id is None and not scope.admin:  # a shared network: only the tenant's own NICs
        ports = ports.filter(instance__tenant_id__in=scope.tenant_ids or [])
    can_change = scope.can_change(network.tenant_id)
    subnets = network.subnets.prefetch_related("reserved")
    form = ReserveForm(request.POST or None, subnets=subnets)
    if request.method == "POST":
        audit.note(request, action="network.reserve", target=network)
        if not can_change:
            raise PermissionDenied("Your role does not allow changing this network.")
        if form.is_valid():
            try:
                services.reserve(subnet=form.cleaned_data["subnet"], first=form.cleaned_data["start"],
                                 last=form.cleaned_data["end"], reason=form.cleaned_data["reason"])
            except DomainError as exc:
                form.add_error(None, str(exc))
                audit.refused(request, str(exc), show=False)
            else:
                messages.success(request, "Range reserved: those addresses are no longer handed out.")
                return redirect("network-detail", pk=pk)
    return render(request, "networks/detail.html", {
        "network": network, "subnets": subnets, "ports": ports, "form": form,
        "on_hosts": network.on_hosts.select_related("host") if scope.admin else None,
        "can_change": can_change,
    })


@login_required
@require_POST
def network_unreserve(request, pk: int, range_pk: int):
    scope = scope_of(request)
    network = get_object_or_404(Network.objects.visible_to(scope), pk=pk)
    audit.note(request, action="network.unreserve", target=network)
    if not scope.can_change(network.tenant_id):
        audit.refused(request, "Your role does not allow changing this network.")
        return redirect("network-detail", pk=pk)
    services.unreserve(reserved=get_object_or_404(ReservedRange, pk=range_pk, subnet__network=network))
    messages.success(request, "The range is handed out again.")
    return redirect("network-detail", pk=pk)


@login_required
@require_POST
def network_delete(request, pk: int):
    scope = scope_of(request)
    network = get_object_or_404(Network.objects.visible_to(scope), pk=pk)
    audit.note(request, action="network.delete", target=network)
    if not scope.can_change(network.tenant_id):
        audit.refused(request, "Your role does not allow deleting this network.")
        return redirect("network-detail", pk=pk)
    try:
        services.delete_network(network=network)
    except DomainError as exc:
        audit.refused(request, str(exc))
        return redirect("network-detail", pk=pk)
    messages.success(request, f"Deleted network {network.name}.")
    return redirect("network-list")


@login_required
def security_group_list(request):
    scope = scope_of(request)
    can_add = scope.admin or (scope.tenant is not None and scope.can_operate(scope.tenant.pk))
    form = SecurityGroupForm(request.POST or None, tenants=Tenant.objects.in_scope(scope), admin=scope.admin)
    if request.method == "POST":
        audit.note(request, action="security_group.create")
        if not can_add:
            raise PermissionDenied(READ_ONLY)
    if request.method == "POST" and form.is_valid():
        tenant = form.cleaned_data.get("tenant") or scope.tenant
        try:
            if tenant is None:
                raise InvalidNetwork("Choose the tenant the group belongs to.")
            if not scope.can_operate(tenant.pk):
                raise PermissionDenied(READ_ONLY)
            audit.note(request, tenant=tenant)
            group = security.create_group(user=request.user, tenant=tenant, name=form.cleaned_data["name"],
                                          description=form.cleaned_data["description"])
        except DomainError as exc:
            form.add_error(None, str(exc))
            audit.refused(request, str(exc), show=False)
        else:
            audit.note(request, target=group)
            messages.success(request, f"Security group {group.name} created: add the traffic it lets in.")
            return redirect("security-group-detail", pk=group.pk)
    groups = (SecurityGroup.objects.in_scope(scope).select_related("tenant")
              .annotate(rule_count=Count("rules", distinct=True), nic_count=Count("ports", distinct=True)))
    return render(request, "networks/security_groups.html", {"groups": groups, "form": form, "can_add": can_add})


@login_required
def security_group_detail(request, pk: int):
    scope = scope_of(request)
    group = get_object_or_404(SecurityGroup.objects.in_scope(scope).select_related("tenant"), pk=pk)
    can_change = scope.can_change(group.tenant_id)
    form = SecurityRuleForm(request.POST or None, groups=SecurityGroup.objects.filter(tenant_id=group.tenant_id))
    if request.method == "POST":
        audit.note(request, action="security_rule.create", target=group)
        if not can_change:
            raise PermissionDenied(READ_ONLY)
        if form.is_valid():
            try:
                security.add_rule(group=group, **form.cleaned_data)
            except DomainError as exc:
                form.add_error(None, str(exc))
                audit.refused(request, str(exc), show=False)
            else:
                messages.success(request, "Rule added; NICs in the group get it now.")
                return redirect("security-group-detail", pk=pk)
    ports = (group.ports.live()
             .select_related("instance", "network").prefetch_related("addresses"))
    return render(request, "networks/security_group.html", {
        "group": group, "rules": group.rules.select_related("remote_group"), "ports": ports, "form": form,
        "can_change": can_change,
    })


@login_required
@require_POST
def security_group_delete(request, pk: int):
    scope = scope_of(request)
    group = get_object_or_404(SecurityGroup.objects.in_scope(scope), pk=pk)
    audit.note(request, action="security_group.delete", target=group)
    if not scope.can_change(group.tenant_id):
        audit.refused(request, READ_ONLY)
        return redirect("security-group-detail", pk=pk)
    try:
        security.delete_group(group=group)
    except DomainError as exc:
        audit.refused(request, str(exc))
        return redirect("security-group-detail", pk=pk)
    messages.success(request, f"Deleted security group {group.name}.")
    return redirect("security-group-list")


@login_required
@require_POST
def security_rule_delete(request, pk: int, rule_pk: int):
    scope = scope_of(request)
    group = get_object_or_404(SecurityGroup.objects.in_scope(scope), pk=pk)
    audit.note(request, action="security_rule.delete", target=group)
    if not scope.can_change(group.tenant_id):
        audit.refused(request, READ_ONLY)
        return redirect("security-group-detail", pk=pk)
    security.delete_rule(rule=get_object_or_404(group.rules, pk=rule_pk))
    messages.success(request, "Rule deleted; NICs in the group lose it now.")
    return redirect("security-group-detail", pk=pk)
