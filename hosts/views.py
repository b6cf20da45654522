"""Host pages, for platform admins."""

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from cloudpanel.exceptions import DomainError
from hosts import architectures, capabilities, guests, hypervisor, services
from hosts.choices import Technology
from hosts.forms import HostEditForm, HostForm
from hosts.models import Host
from tenants import audit
from tenants.models import Tenant


@staff_member_required
def host_list(request):
    form = HostForm(request.POST or None)
    if request.method == "POST":
        audit.note(request, action="host.create", platform=True)
    if request.method == "POST" and form.is_valid():
        try:
            host = services.register_host(**form.cleaned_data)
        except DomainError as exc:
            form.add_error("uri", str(exc))
        else:
            messages.success(request, f"Host {host.name} registered; probing it now.")
            return redirect("host-detail", pk=host.pk)
    hosts = services.with_allocations(list(Host.objects.all()))
    return render(request, "hosts/list.html", {"hosts": hosts, "form": form})


@staff_member_required
def host_detail(request, pk: int):
    host = get_object_or_404(Host, pk=pk)
    form = HostEditForm(request.POST or None, initial={
        "name": host.name, "accelerator": host.accelerator, "storage_pool": host.storage_pool,
        "allowed_paths": host.allowed_paths, "tags": host.tags, "cpu_mode": host.cpu_mode, "cpu_model": host.cpu_model,
        "os_templates": host.os_templates})
    if not host.can.architectures:
        del form.fields["cpu_mode"], form.fields["cpu_model"]
    if not host.can.host_template:
        del form.fields["os_templates"]
    if request.method == "POST":
        audit.note(request, action="host.update", target=host, platform=True)
    if request.method == "POST" and form.is_valid():
        try:
            services.update_host(host=host, **form.cleaned_data)
        except DomainError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Host settings saved.")
            return redirect("host-detail", pk=host.pk)
    services.with_allocations([host])
    instances = host.instances.live().select_related("tenant")[:200]
    unmanaged = host.domains.exclude(uuid__in=host.instances.values("uuid"))  # deleted ones' leftovers included
    return render(request, "hosts/detail.html", {"host": host, "form": form, "instances": instances,
                                                 "unmanaged": unmanaged, "tenants": Tenant.objects.order_by("name"),
                                                 "guests": guests.table(host)})


@staff_member_required
def technologies(request):
    """Every technology: the hosts that provide it and what CloudPanel does with it, from the capability table the
    code reads; the architectures QEMU hosts offer; the drivers libvirt no longer has."""
    hosts = list(Host.objects.order_by("name"))
    rows = [{"technology": technology, "schemes": hypervisor.schemes_of(technology), "row": capabilities.of(technology),
             "features": capabilities.features(technology),
             "hosts": [h for h in hosts if h.technology == technology]} for technology in Technology]
    arches = [{"name": name, "arch": arch, "hosts": [h for h in hosts if name in guests.offered_arches(h)
                                                     and h.can.architectures]}
              for name, arch in architectures.ARCHES.items()]
    return render(request, "hosts/technologies.html", {
        "rows": rows, "labels": [label for _, label in capabilities.FEATURES], "arches": arches,
        "removed": hypervisor.REMOVED_DRIVERS})


@staff_member_required
@require_POST
def host_command(request, pk: int, command: str):
    host = get_object_or_404(Host, pk=pk)
    audit.note(request, action=f"host.{command}"[:60], target=host, platform=True)
    try:
        if command == "enable":
            services.set_enabled(host=host, enabled=True)
            messages.success(request, f"{host.name} accepts new instances again.")
        elif command == "disable":
            services.set_enabled(host=host, enabled=False)
            messages.success(request, f"{host.name} no longer accepts new instances.")
        elif command == "probe":
            services.request_probe(host=host)
            messages.success(request, f"Probing {host.name}.")
        elif command == "delete":
            services.delete_host(host=host)
            messages.success(request, f"Host {host.name} removed.")
            return redirect("host-list")
        else:
            audit.refused(request, f"Unknown command '{command}'.")
    except DomainError as exc:
        audit.refused(request, str(exc))
    return redirect("host-detail", pk=host.pk)
