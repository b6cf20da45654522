"""Overview, instance and action pages."""

import re

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from cloudpanel.exceptions import DomainError
from cloudpanel.scoping import Need
from hosts import guests
from hosts import services as host_services
from hosts.choices import HostState
from hosts.models import Host, HostDomain
from images.choices import DISK_FORMATS, DiskFormat, ImageStatus
from images.models import BootKernel, Image, Template
from instances import (
    backups,
    evacuation,
    maintenance,
    migration,
    plans,
    rebuild,
    resizing,
    services,
    snapshots,
    volumes,
)
from instances.choices import BootSource, MaintenancePolicy, Operation, Status
from instances.exceptions import InvalidOperation
from instances.filtersets import InstanceFilterSet
from instances.forms import AdoptForm, InstanceForm, VolumeForm
from instances.lifecycle import SPECIAL, allowed_operations
from instances.models import Backup, Instance, InstanceAction, ServerGroup, Volume
from networks import security
from networks.models import Network, Port, SecurityGroup
from tenants import audit
from tenants.pages import object_write, operated_tenants, require_create
from tenants.scoping import scope_of


@login_required
def overview(request):
    scope = scope_of(request)
    instances = Instance.objects.in_scope(scope).live()
    by_status = {row["status"]: row["n"] for row in instances.values("status").annotate(n=Count("id"))}
    shown = [(s.value, s.label, by_status[s.value]) for s in Status if by_status.get(s.value)]
    hosts = host_services.with_allocations(list(Host.objects.all())) if scope.admin else []
    actions = InstanceAction.objects.in_scope(scope).select_related("instance", "user")[:15]
    chart = {"keys": [v for v, _, _ in shown], "labels": [lb for _, lb, _ in shown], "values": [n for _, _, n in shown]}
    return render(request, "overview.html", {
        "status_counts": shown, "chart": chart, "total": sum(by_status.values()), "hosts": hosts,
        "actions": actions,
    })


@login_required
def instance_list(request):
    scope = scope_of(request)
    queryset = Instance.objects.in_scope(scope).select_related("host", "tenant")
    if not request.GET.get("status"):
        queryset = queryset.live()
    filterset = InstanceFilterSet(request.GET, queryset=queryset)
    page = Paginator(filterset.qs, 50).get_page(request.GET.get("page"))
    return render(request, "instances/list.html", {
        "page": page, "filter": filterset, "statuses": Status.choices,
        "can_create": scope.may_create,
    })


@login_required
def instance_new(request):
    scope = scope_of(request)
    tenants = operated_tenants(scope)
    hosts = Host.objects.filter(enabled=True) if scope.admin else None
    available = Image.objects.visible_to(scope).filter(status=ImageStatus.AVAILABLE)
    images = available.filter(disk_format__in=DISK_FORMATS)
    templates = Template.objects.visible_to(scope).select_related("image")
    wanted = request.GET.get("template", "")
    chosen = templates.filter(pk=int(wanted)).first() if re.fullmatch(r"\d{1,18}", wanted) else None
    initial = {"boot_source": BootSource.IMAGE, "template": chosen, "vcpus": chosen.vcpus,
               "memory_mib": chosen.memory_mib, "disk_gib": chosen.disk_gib} if chosen else None
    form = InstanceForm(request.POST or None, tenants=tenants, hosts=hosts, images=images, templates=templates,
                        networks=Network.objects.visible_to(scope),
                        security_groups=SecurityGroup.objects.in_scope(scope), initial=initial,
                        boot_kernels=BootKernel.objects.visible_to(scope).filter(kernel__status=ImageStatus.AVAILABLE),
                        container_images=available.filter(disk_format=DiskFormat.ROOTFS), admin=scope.admin,
                        server_groups=ServerGroup.objects.in_scope(scope).select_related("tenant"),
                        offers=guests.offers(list(Host.objects.filter(enabled=True, state=HostState.ONLINE))))
    if request.method == "POST":
        audit.note(request, action="instance.create")
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        network, address, groups = data.pop("network"), data.pop("address") or None, data.pop("security_groups")
        data["nics"] = [services.NicRequest(network, address, list(groups))] if network else []
        data["init_env"] = data.pop("env")
        data["start"] = not data.pop("leave_stopped")
        data["host_tags"] = data["host_tags"].replace(",", " ").split()
        audit.note(request, tenant=data["tenant"])
        dry_run = request.POST.get("dry_run") == "1"
        if dry_run:
            audit.skip(request)  # a plan changes nothing
        try:
            if dry_run:
                plan = plans.for_create(lambda: services.create_instance(user=request.user, **data), data["tenant"].pk)
                return render(request, "instances/new.html", {"form": form, "template_sizes": _sizes(templates),
                                                              "plan": plan.shown_to(scope.admin),
                                                              "retype_password": bool(data.get("password"))})
            action = services.create_instance(user=request.user, **data)
        except DomainError as exc:
            form.add_error(None, str(exc))
            audit.refused(request, str(exc), show=False)
        else:
            audit.note(request, target=action.instance)
            messages.success(request, f"Creating {action.instance.name}.")
            return redirect("instance-detail", pk=action.instance_id)
    return render(request, "instances/new.html", {"form": form, "template_sizes": _sizes(templates)})


def _sizes(templates) -> dict[int, dict[str, int]]:
    """Each template's size, for the form to fill in."""
    return {t.pk: {"vcpus": t.vcpus, "memory_mib": t.memory_mib, "disk_gib": t.disk_gib} for t in templates}


def _plan_page(request, instance: Instance, plan: plans.Plan, *, title: str, confirm: str, url: str,
               fields: list[tuple[str, object]]):
    """A plan, with a button that asks for it for real (the same fields, without the dry run)."""
    audit.skip(request)  # a plan changes nothing
    return render(request, "instances/plan.html", {
        "instance": instance, "plan": plan.shown_to(scope_of(request).admin), "title": title, "confirm": confirm,
        "action_url": url, "fields": fields})


@login_required
def instance_detail(request, pk: int):
    scope = scope_of(request)
    instance = get_object_or_404(
        Instance.objects.in_scope(scope).select_related("host", "tenant", "image", "template", "cdrom", "boot_kernel"),
        pk=pk)
    media = instance.host is not None and instance.host.can.cdrom
    return render(request, "instances/detail.html", {
        "instance": instance,
        "nics": instance.ports.select_related("network").prefetch_related("addresses", "security_groups"),
        "security_groups": SecurityGroup.objects.filter(tenant_id=instance.tenant_id),
        "networks": Network.objects.visible_to(scope).filter(
            Q(tenant__isnull=True) | Q(tenant_id=instance.tenant_id)),
        "isos": Image.objects.visible_to(scope).filter(status=ImageStatus.AVAILABLE, disk_format=DiskFormat.ISO)
        if media else None,
        "operations": allowed_operations(instance.status, instance.task_state),
        "all_operations": [op for op in Operation if op not in SPECIAL],
        "can_operate": scope.can_operate(instance.tenant_id),
        "display": instance.host is not None and instance.host.can.graphics,
        "serial_console": instance.host is None or instance.host.can.serial_console,
        "rebuild_images": Image.objects.visible_to(scope).filter(
            status=ImageStatus.AVAILABLE, disk_format__in=[f for f in DISK_FORMATS if f != DiskFormat.ISO])
        if instance.boot_source == BootSource.IMAGE and scope.can_operate(instance.tenant_id) else None,
        "snapshots": instance.snapshots.live()[:50] if instance.host is not None and instance.host.can.snapshots
        else None,
        "volumes": instance.volumes.all() if instance.host is not None and instance.host.can.volumes else None,
        "backups": instance.backups.live().select_related("parent")[:100]
        if instance.host is not None and instance.host.can.backups or instance.backups.exists() else None,
        "backs_up": instance.host is not None and instance.host.can.backups and bool(instance.disk_gib)
        and instance.boot_source in (BootSource.IMAGE, BootSource.KERNEL) and instance.status != Status.PENDING,
        "free_volumes": Volume.objects.in_scope(scope).filter(
            tenant_id=instance.tenant_id, host_id=instance.host_id, instance__isnull=True,
            status="available", task_state__isnull=True)
        if instance.host is not None and instance.host.can.volumes else None,
        "actions": instance.actions.select_related("user")[:20],
        "maintenance_policies": MaintenancePolicy.choices,
        "migration": instance.actions.in_flight().filter(operation=Operation.MIGRATE).select_related(
            "target_host").first(),
        "migration_hosts": Host.objects.filter(technology=instance.host.technology).exclude(pk=instance.host_id)
        if scope.admin and instance.host is not None and (instance.host.can.live_migration
                                                          or instance.host.can.cold_migration) else None,
        "history": instance.state_changes.order_by("-at", "-id")[:50],
    })


def _instance_page(instance: Instance) -> str:
    return reverse("instance-detail", args=[instance.pk])


@object_write(Instance.objects.in_scope, action="instance.{operation}", back=_instance_page,
              choices={"operation": [op for op in Operation.values if op not in SPECIAL]})
def instance_operation(request, instance: Instance, operation: str):
    services.request_operation(instance=instance, operation=operation, user=request.user)
    if operation == Operation.DELETE and instance.status == Status.DELETED:
        return redirect("instance-list")
    return redirect(_instance_page(instance))


@object_write(lambda scope: Instance.objects.in_scope(scope).select_related("host"), action="instance.media",
              back=_instance_page)
def instance_media(request, instance: Instance):
    """Insert the chosen ISO into the CD-ROM drive, or eject it (no image)."""
    image = None
    if request.POST.get("image"):
        image = Image.objects.visible_to(scope_of(request)).filter(pk=_digits(request.POST["image"])).first()
        if image is None:
            raise InvalidOperation("No such image.")
    services.change_media(instance=instance, image=image, user=request.user)
    return redirect(_instance_page(instance))


def _digits(value: str) -> int | None:
    return int(value) if re.fullmatch(r"\d{1,18}", value or "") else None


@object_write(lambda scope: Instance.objects.in_scope(scope).select_related("host"), action="instance.{change}_nic",
              back=_instance_page, choices={"change": ("attach", "detach", "groups")})
def instance_nic(request, instance: Instance, change: str):
    """Plug a NIC on the chosen network in (change "attach"), unplug one of the instance's (change "detach"), or
    set one's security groups (change "groups")."""
    wanted = {_digits(g) for g in request.POST.getlist("security_groups")}
    groups = list(SecurityGroup.objects.filter(tenant_id=instance.tenant_id, pk__in=wanted))
    if len(groups) != len(wanted):
        raise InvalidOperation("No such security group.")
    if change == "attach":
        network = Network.objects.visible_to(scope_of(request)).filter(
            pk=_digits(request.POST.get("network", ""))).first()
        if network is None:
            raise InvalidOperation("Choose a network.")
        services.attach_nic(instance=instance, network=network, user=request.user, security_groups=groups,
                            address=request.POST.get("address", "").strip() or None)
        return redirect(_instance_page(instance))
    port = instance.ports.filter(pk=_digits(request.POST.get("port", ""))).first()
    if port is None:
        raise InvalidOperation("No such NIC on this instance.")
    if change == "groups":
        security.set_port_groups(port=port, groups=groups)
        messages.success(request, "Security groups changed; the host applies them now.")
    else:
        services.detach_nic(instance=instance, port=port, user=request.user)
    return redirect(_instance_page(instance))


@object_write(lambda scope: Instance.objects.in_scope(scope).select_related("host", "tenant", "image"),
              action="instance.resize", back=_instance_page)
def instance_resize(request, instance: Instance):
    """Resize to the vCPUs, RAM and disk given in the form."""
    wanted = {size: _digits(request.POST.get(size, "").strip()) for size in ("vcpus", "memory_mib", "disk_gib")}
    if any(value is None for value in wanted.values()):
        raise InvalidOperation("Give the vCPUs, the RAM in MiB and the disk in GiB as whole numbers.")
    if request.POST.get("dry_run") == "1":
        plan = plans.for_resize(instance, lambda: resizing.resize(instance=instance, user=request.user, **wanted))
        return _plan_page(request, instance, plan, title=f"Resize {instance.name}?", confirm="Resize now",
                          url=reverse("instance-resize", args=[instance.pk]), fields=list(wanted.items()))
    resizing.resize(instance=instance, user=request.user, **wanted)
    messages.success(request, "Resizing.")
    return redirect(_instance_page(instance))


@object_write(lambda scope: Instance.objects.in_scope(scope).select_related("host", "tenant", "image"),
              action="instance.save_image", back=_instance_page)
def instance_save_image(request, instance: Instance):
    action = rebuild.save_as_image(instance=instance, name=request.POST.get("name", "")[:255], user=request.user)
    messages.success(request, f"Saving the disk as the image {action.image.name}: it shows in the library once "
                              "inspected.")
    return redirect(_instance_page(instance))


@object_write(lambda scope: Instance.objects.in_scope(scope).select_related("host", "tenant", "image"),
              action="instance.clone", back=_instance_page)
def instance_clone(request, instance: Instance):
    action = rebuild.clone(instance=instance, name=request.POST.get("name", "")[:63], user=request.user)
    messages.success(request, f"Cloning into {action.instance.name}: its disk is copied first.")
    return redirect(_instance_page(action.instance))


@object_write(lambda scope: Instance.objects.in_scope(scope).select_related("host", "tenant"),
              action="instance.migrate", back=_instance_page, need=Need.ADMIN)
def instance_migrate(request, instance: Instance):
    """Move it to the chosen host (or the one placement picks): live if it runs, cold if stopped."""
    host = None
    if request.POST.get("host"):
        host = Host.objects.filter(pk=_digits(request.POST["host"])).first()
        if host is None:
            raise InvalidOperation("That host no longer exists.")
    if request.POST.get("dry_run") == "1":
        plan = plans.for_migration(instance, lambda: migration.migrate(instance=instance, host=host,
                                                                       user=request.user))
        return _plan_page(request, instance, plan, title=f"Migrate {instance.name} to {plan.host}?",
                          confirm="Migrate now", url=reverse("instance-migrate", args=[instance.pk]),
                          fields=[("host", plan.host_id)])  # the host shown, not another placement's
    action = migration.migrate(instance=instance, host=host, user=request.user)
    messages.success(request, f"Migrating {instance.name} to {action.target_host.name}.")
    return redirect(_instance_page(instance))


@object_write(lambda scope: Instance.objects.in_scope(scope).select_related("host", "tenant"),
              action="instance.maintenance_policy", back=_instance_page)
def instance_maintenance_policy(request, instance: Instance):
    maintenance.set_policy(instance=instance, policy=request.POST.get("policy", "")[:10])
    messages.success(request, f"When its host goes into maintenance, {instance.name} is "
                              f"{'shut down' if instance.on_host_maintenance == 'stop' else 'migrated'}.")
    return redirect(_instance_page(instance))


@object_write(lambda scope: Instance.objects.in_scope(scope).select_related("host", "tenant"),
              action="instance.migrate_cancel", back=_instance_page, need=Need.ADMIN)
def instance_migrate_cancel(request, instance: Instance):
    migration.cancel(instance=instance)
    messages.success(request, f"Cancelling the migration of {instance.name}: it stays on {instance.host.name}.")
    return redirect(_instance_page(instance))


@object_write(lambda scope: Instance.objects.in_scope(scope).select_related("host", "tenant"),
              action="instance.rename", back=_instance_page)
def instance_rename(request, instance: Instance):
    rebuild.rename(instance=instance, name=request.POST.get("name", "")[:300], user=request.user)
    return redirect(_instance_page(instance))


@object_write(lambda scope: Instance.objects.in_scope(scope).select_related("host", "tenant"),
              action="instance.rebuild", back=_instance_page)
def instance_rebuild(request, instance: Instance):
    """Reinstall from the chosen image of the library."""
    image = Image.objects.visible_to(scope_of(request)).filter(pk=_digits(request.POST.get("image", ""))).first()
    if image is None:
        raise InvalidOperation("Choose an image to rebuild from.")
    rebuild.rebuild(instance=instance, user=request.user, image=image,
                    ssh_keys=request.POST.get("ssh_keys", "")[:20000])
    messages.success(request, f"Rebuilding {instance.name} from {image.name}.")
    return redirect(_instance_page(instance))


@object_write(lambda scope: Instance.objects.in_scope(scope).select_related("host", "tenant"),
              action="instance.snapshot", back=_instance_page)
def instance_snapshot(request, instance: Instance):
    """Take a snapshot (name, description): with the memory of a guest that runs, of the disks of a stopped one."""
    snapshots.take(instance=instance, name=request.POST.get("name", "").strip(),
                   description=request.POST.get("description", "").strip(), user=request.user)
    messages.success(request, "Taking the snapshot.")
    return redirect(_instance_page(instance))


@object_write(lambda scope: Instance.objects.in_scope(scope).select_related("host"),
              action="instance.snapshot_{change}", back=_instance_page, choices={"change": ("revert", "delete")})
def instance_snapshot_change(request, instance: Instance, change: str):
    """Revert to one of the instance's snapshots, or delete one."""
    snapshot = instance.snapshots.live().filter(pk=_digits(request.POST.get("snapshot", ""))).first()
    if snapshot is None:
        raise InvalidOperation("No such snapshot of this instance.")
    if change == "revert":
        snapshots.revert(instance=instance, snapshot=snapshot, user=request.user)
    else:
        snapshots.delete(instance=instance, snapshot=snapshot, user=request.user)
    return redirect(_instance_page(instance))


@object_write(lambda scope: Instance.objects.in_scope(scope).select_related("host"),
              action="instance.attach_volume", back=_instance_page)
def instance_attach_volume(request, instance: Instance):
    """Attach one of the tenant's volumes on the instance's host."""
    volume = Volume.objects.in_scope(scope_of(request)).live().filter(
        pk=_digits(request.POST.get("volume", ""))).select_related("host", "instance").first()
    if volume is None:
        raise InvalidOperation("No such volume.")
    volumes.attach(volume=volume, instance=instance, user=request.user)
    return redirect(_instance_page(instance))


@object_write(lambda scope: Instance.objects.in_scope(scope).select_related("host", "tenant"),
              action="instance.backup", back=_instance_page)
def instance_backup(request, instance: Instance):
    """Back the instance up now, or set its schedule (every so many hours, keeping the newest few)."""
    if "every_hours" in request.POST:
        every, keep = _digits(request.POST.get("every_hours", "")), _digits(request.POST.get("keep", ""))
        if every is None or keep is None:
            raise InvalidOperation("Give the hours between backups (0: none) and how many to keep, as whole numbers.")
        backups.set_schedule(instance=instance, every_hours=every, keep=keep)
        messages.success(request, f"Backed up every {every} h, the newest {keep} kept." if every else
                         "No scheduled backups.")
    else:
        backups.take(instance=instance, user=request.user, name=request.POST.get("name", "")[:63])
        messages.success(request, "Backing up.")
    return redirect(_instance_page(instance))


def _backup_page(backup: Backup) -> str:
    return _instance_page(backup.instance) if backup.instance_id else reverse("instance-list")


@object_write(lambda scope: Backup.objects.in_scope(scope).live().select_related("instance__host", "tenant"),
              action="backup.{change}", back=_backup_page, choices={"change": ("restore", "delete")})
def backup_change(request, backup: Backup, change: str):
    """Restore a backup (over its instance, or into a new one when a name is given), or delete it."""
    if change == "delete":
        backups.delete(backup=backup)
        return redirect(_backup_page(backup))
    name = request.POST.get("name", "").strip()[:63]
    if name:
        action = backups.restore_new(backup=backup, name=name, user=request.user)
        messages.success(request, f"Restoring into the new instance {action.instance.name}.")
        return redirect(_instance_page(action.instance))
    backups.restore_over(backup=backup, user=request.user)
    return redirect(_backup_page(backup))


@staff_member_required
@require_POST
def instance_adopt(request, pk: int):
    """Adopt a domain made outside the panel into the chosen tenant (platform admins)."""
    domain = get_object_or_404(HostDomain.objects.select_related("host"), pk=pk)
    audit.note(request, action="instance.adopt", target=domain.host, platform=True)
    form = AdoptForm(request.POST)
    try:
        if not form.is_valid():
            raise InvalidOperation(" ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items()))
        instance = services.adopt_domain(domain=domain, tenant=form.cleaned_data["tenant"],
                                         name=form.cleaned_data["name"], user=request.user)
    except DomainError as exc:
        audit.refused(request, str(exc))
        return redirect("host-detail", pk=domain.host_id)
    messages.success(request, f"{domain.name} is now the instance {instance.name} of {instance.tenant}.")
    return redirect(_instance_page(instance))


@object_write(lambda scope: InstanceAction.objects.in_scope(scope).select_related("instance"),
              action="action.retry", back=lambda action: _instance_page(action.instance),
              owner=lambda action: action.instance.tenant_id, target=lambda action: action.instance)
def action_retry(request, action: InstanceAction):
    services.retry_action(action=action, user=request.user)
    return redirect(_instance_page(action.instance))


@login_required
def action_list(request):
    actions = InstanceAction.objects.in_scope(scope_of(request)).select_related("instance", "user")
    page = Paginator(actions, 50).get_page(request.GET.get("page"))
    return render(request, "instances/actions.html", {"page": page})


ROW, TOP, WIDTH = 56, 40, 960
COLUMNS = {"network": 150, "instance": 480, "host": 810}


@login_required
def topology(request):
    """Networks, instances and hosts as a graph: what is connected to what, at a glance (SVG)."""
    scope = scope_of(request)
    instances = list(Instance.objects.in_scope(scope).live().select_related("host").order_by("host__name", "name"))
    networks = list(Network.objects.visible_to(scope).order_by("name"))
    ports = Port.objects.filter(instance__in=instances).values_list("network_id", "instance_id")
    hosts = sorted({i.host for i in instances if i.host is not None}, key=lambda h: h.name)
    nodes, place = [], {}
    for kind, items in (("network", networks), ("instance", instances), ("host", hosts)):
        for row, item in enumerate(items):
            place[(kind, item.pk)] = (COLUMNS[kind], TOP + row * ROW)
            nodes.append({"kind": kind, "item": item, "x": COLUMNS[kind], "y": TOP + row * ROW})
    edges = [(place[("network", n)], place[("instance", i)]) for n, i in ports if ("network", n) in place]
    edges += [(place[("instance", i.pk)], place[("host", i.host_id)]) for i in instances if i.host_id]
    height = TOP + ROW * max(len(networks), len(instances), len(hosts), 1)
    return render(request, "networks/topology.html", {
        "nodes": nodes, "edges": [{"x1": a[0], "y1": a[1], "x2": b[0], "y2": b[1]} for a, b in edges],
        "width": WIDTH, "height": height, "columns": COLUMNS, "empty": not (networks or instances),
    })


DISK_IMAGES = [f for f in DISK_FORMATS if f != DiskFormat.ISO]


@login_required
def volume_list(request):
    """The tenant's volumes with their attachments; a POST makes one."""
    scope = scope_of(request)
    instances = Instance.objects.in_scope(scope).live().filter(host__technology__in=volumes.TECHNOLOGIES)
    form = VolumeForm(request.POST or None, tenants=operated_tenants(scope), instances=instances, admin=scope.admin,
                      images=Image.objects.visible_to(scope).filter(status=ImageStatus.AVAILABLE,
                                                                    disk_format__in=DISK_IMAGES),
                      initial={"tenant": scope.tenant})
    if request.method == "POST":
        audit.note(request, action="volume.create")
        require_create(request, scope)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        data["tenant"] = data.get("tenant") or scope.tenant
        try:
            if data["tenant"] is None:
                raise InvalidOperation("Choose the tenant the volume belongs to.")
            audit.note(request, tenant=data["tenant"])
            volume = volumes.create(user=request.user, **data)
        except DomainError as exc:
            form.add_error(None, str(exc))
            audit.refused(request, str(exc), show=False)
        else:
            audit.note(request, target=volume)
            messages.success(request, f"Making the volume {volume.name}.")
            return redirect("volume-list")
    shown = list(Volume.objects.in_scope(scope).live().select_related("host", "instance", "tenant")[:500])
    candidates = list(instances.exclude(status__in=[Status.PENDING, Status.ERROR, Status.MISSING]))
    for volume in shown:
        volume.can_operate = scope.can_operate(volume.tenant_id)
        volume.attach_to = [i for i in candidates if (i.host_id, i.tenant_id) == (volume.host_id, volume.tenant_id)]
    return render(request, "instances/volumes.html", {
        "volumes": shown, "form": form, "can_add": scope.may_create,
    })


@object_write(lambda scope: Volume.objects.in_scope(scope).live().select_related("host", "instance", "tenant"),
              action="volume.{change}", back=lambda volume: reverse("volume-list"),
              choices={"change": ("attach", "detach", "extend", "delete")})
def volume_change(request, volume: Volume, change: str):
    """Attach the volume to an instance, detach it, extend it or delete it (back to the instance's page when asked
    from there)."""
    instance = volume.instance
    if change == "attach":
        instance = Instance.objects.in_scope(scope_of(request)).filter(
            pk=_digits(request.POST.get("instance", ""))).select_related("host").first()
        if instance is None:
            raise InvalidOperation("No such instance.")
        volumes.attach(volume=volume, instance=instance, user=request.user)
    elif change == "detach":
        volumes.detach(volume=volume, user=request.user)
    elif change == "extend":
        size = _digits(request.POST.get("size_gib", ""))
        if not size:
            raise InvalidOperation("Give the new size in GiB (a whole number, larger than now).")
        volumes.extend(volume=volume, size_gib=size, user=request.user)
    else:
        volumes.delete(volume=volume, user=request.user)
    if request.POST.get("next") == "instance" and instance is not None:
        return redirect(_instance_page(instance))
    return redirect("volume-list")


@staff_member_required
def host_maintenance(request, pk: int):
    """A host's maintenance: the plan for each of its instances, then each one's progress; enter or leave it."""
    host = get_object_or_404(Host, pk=pk)
    if request.method == "POST":
        audit.note(request, action="host.maintenance", target=host, platform=True)
        choice = request.POST.get("enter")
        if choice not in ("0", "1"):
            messages.error(request, "Choose to enter maintenance or to leave it.")
        elif choice == "1":
            steps = maintenance.enter(host=host, user=request.user)
            refused = [f"{step.instance.name}: {step.outcome}" for step in steps if step.outcome]
            messages.success(request, f"{host.name} is in maintenance: nothing new is placed on it.")
            if refused:
                messages.error(request, "Not asked for: " + "; ".join(refused))
        else:
            maintenance.leave(host=host)
            messages.success(request, f"{host.name} takes new instances again.")
        return redirect("host-maintenance", pk=host.pk)
    return render(request, "instances/maintenance.html", {
        "host": host, "steps": maintenance.with_progress(host, maintenance.plan(host))})


@staff_member_required
def host_evacuation(request, pk: int):
    """A host that is down: the plan for each of its instances, then rebuild elsewhere those that can be."""
    host = get_object_or_404(Host, pk=pk)
    if request.method == "POST":
        audit.note(request, action="host.evacuate", target=host, platform=True)
        try:
            steps = evacuation.evacuate(host=host, user=request.user,
                                        host_is_off=request.POST.get("host_is_off") == "1")
        except DomainError as exc:
            audit.refused(request, str(exc))
        else:
            moved = [step for step in steps if not step.outcome]
            messages.success(request, f"{host.name} is disabled; {len(moved)} instance{'s' if len(moved) != 1 else ''}"
                                      " being rebuilt elsewhere.")
        return redirect("host-evacuation", pk=host.pk)
    try:
        steps, refusal = evacuation.plan(host), ""
    except DomainError as exc:
        steps, refusal = [], str(exc)
    return render(request, "instances/evacuation.html", {"host": host, "steps": steps, "refusal": refusal})
