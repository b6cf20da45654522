"""Network pages: the list with a form to add one, a network's subnets, reserved ranges, NICs and hosts, the
topology, and security groups with their rules."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from cloudpanel.exceptions import DomainError
from cloudpanel.scoping import Need
from networks import security, services
from networks.exceptions import InvalidNetwork
from networks.forms import NetworkForm, ReserveForm, SecurityGroupForm, SecurityRuleForm
from networks.models import Network, ReservedRange, SecurityGroup
from tenants import audit
from tenants.models import Tenant
from tenants.pages import object_write, require, require_create
from tenants.scoping import scope_of


@login_required
def network_list(request):
    scope = scope_of(request)
    form = NetworkForm(request.POST or None, tenants=Tenant.objects.in_scope(scope), admin=scope.admin,
                       initial={"tenant": scope.tenant})
    if request.method == "POST":
        audit.note(request, action="network.create")
        require_create(request, scope)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        shared, tenant = data.pop("shared", False), data.pop("tenant", None) or scope.tenant
        if shared:
            require(request, scope, Need.CHANGE, None)  # a shared network is the platform's
        try:
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
    return render(request, "networks/list.html", {"networks": networks, "form": form,
                                                  "can_add": scope.may_create})


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
        require(request, scope, Need.CHANGE, network.tenant_id)
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


def _network_page(network: Network) -> str:
    return reverse("network-detail", args=[network.pk])


@object_write(Network.objects.visible_to, action="network.unreserve", back=_network_page)
def network_unreserve(request, network: Network, range_pk: int):
    services.unreserve(reserved=get_object_or_404(ReservedRange, pk=range_pk, subnet__network=network))
    messages.success(request, "The range is handed out again.")
    return redirect(_network_page(network))


@object_write(Network.objects.visible_to, action="network.delete", back=_network_page)
def network_delete(request, network: Network):
    services.delete_network(network=network)
    messages.success(request, f"Deleted network {network.name}.")
    return redirect("network-list")


@login_required
def security_group_list(request):
    scope = scope_of(request)
    form = SecurityGroupForm(request.POST or None, tenants=Tenant.objects.in_scope(scope), admin=scope.admin)
    if request.method == "POST":
        audit.note(request, action="security_group.create")
        require_create(request, scope)
    if request.method == "POST" and form.is_valid():
        tenant = form.cleaned_data.get("tenant") or scope.tenant
        if tenant is not None:
            require(request, scope, Need.CHANGE, tenant.pk)
        try:
            if tenant is None:
                raise InvalidNetwork("Choose the tenant the group belongs to.")
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
    return render(request, "networks/security_groups.html", {"groups": groups, "form": form,
                                                             "can_add": scope.may_create})


@login_required
def security_group_detail(request, pk: int):
    scope = scope_of(request)
    group = get_object_or_404(SecurityGroup.objects.in_scope(scope).select_related("tenant"), pk=pk)
    can_change = scope.can_change(group.tenant_id)
    form = SecurityRuleForm(request.POST or None, groups=SecurityGroup.objects.filter(tenant_id=group.tenant_id))
    if request.method == "POST":
        audit.note(request, action="security_rule.create", target=group)
        require(request, scope, Need.CHANGE, group.tenant_id)
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


def _group_page(group: SecurityGroup) -> str:
    return reverse("security-group-detail", args=[group.pk])


@object_write(SecurityGroup.objects.in_scope, action="security_group.delete", back=_group_page)
def security_group_delete(request, group: SecurityGroup):
    security.delete_group(group=group)
    messages.success(request, f"Deleted security group {group.name}.")
    return redirect("security-group-list")


@object_write(SecurityGroup.objects.in_scope, action="security_rule.delete", back=_group_page)
def security_rule_delete(request, group: SecurityGroup, rule_pk: int):
    security.delete_rule(rule=get_object_or_404(group.rules, pk=rule_pk))
    messages.success(request, "Rule deleted; NICs in the group lose it now.")
    return redirect(_group_page(group))
