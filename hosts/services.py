"""Every change to a host goes through here."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from cloudpanel.tasking import enqueue
from hosts import guests, hypervisor, paths
from hosts import placement as placing
from hosts.choices import HostState
from hosts.events import publish_host
from hosts.exceptions import HostFull, HostInUse, InvalidHost, NoCapacity
from hosts.guests import Guest
from hosts.models import Host, HostDomain
from hosts.placement import Held, capacity_error
from notifications.choices import Kind
from notifications.services import notify


def _on_commit_publish(host_id: int) -> None:
    transaction.on_commit(lambda: publish_host(host_id))


def _probe_on_commit(host_id: int) -> None:
    from hosts import tasks

    enqueue(tasks.probe_host, host_id, host_id=host_id)


@transaction.atomic
def register_host(*, name: str, uri: str, accelerator: str = "auto", storage_pool: str = "default") -> Host:
    """Record a host and queue its first probe."""
    uri = uri.strip()
    try:
        technology = hypervisor.technology_of(uri)
    except hypervisor.HypervisorError as exc:
        raise InvalidHost(str(exc)) from None
    if Host.objects.filter(uri=uri).exists():
        raise InvalidHost(f"a host with URI {uri} is already registered")
    if Host.objects.filter(name=name).exists():
        raise InvalidHost(f"a host named '{name}' already exists")
    host = Host.objects.create(
        name=name, uri=uri, technology=technology.value, accelerator=accelerator, storage_pool=storage_pool
    )
    _probe_on_commit(host.pk)
    return host


def clean_allowed_paths(text: str, style: str = paths.POSIX) -> str:
    """Allowed host directories, one per line: each absolute and normalised (in the form the host names files),
    never the whole filesystem."""
    dirs = []
    for line in text.splitlines():
        path = line.strip()
        if not path:
            continue
        directory = paths.normal(style, path)
        if directory is not None and paths.is_root(style, directory):
            raise InvalidHost("the host's whole filesystem cannot be allowed: name the directories")
        if directory is None:
            raise InvalidHost(f"{path[:200]!r} is not an absolute, normalised directory (no '..', '.' or doubled "
                              f"separators; e.g. {paths.EXAMPLES[style]})")
        if directory not in dirs:
            dirs.append(directory)
    return "\n".join(dirs)


TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # an OpenVZ OS template (fullmatch)


def clean_templates(text: str) -> str:
    """OpenVZ OS templates of the host's cache, one per line (names, never paths)."""
    names = []
    for name in text.split():
        if not TEMPLATE_NAME.fullmatch(name):
            raise InvalidHost(f"{name[:100]!r} is not a template name (letters, digits, '.', '_', '-')")
        if name not in names:
            names.append(name)
    return "\n".join(names)


def _check_cpu(host: Host, cpu_mode: str, cpu_model: str) -> None:
    """The CPU a host gives its instances by default: one its capabilities offer for its own architecture."""
    default = Guest(cpu_mode=cpu_mode, cpu_model=cpu_model)
    why = guests.check_request(default) or (guests.refusal(host, default) if cpu_mode else None)
    if why:
        raise InvalidHost(why)


@transaction.atomic
def update_host(*, host: Host, name: str, accelerator: str, storage_pool: str,
                allowed_paths: str | None = None, tags: str | None = None, cpu_mode: str | None = None,
                cpu_model: str | None = None, os_templates: str | None = None) -> Host:
    """Change a host's display name, accelerator, storage pool, the directories admins may boot from, its tags, its
    instances' default CPU and (OpenVZ) the OS templates instances may be made from; None: unchanged."""
    if Host.objects.filter(name=name).exclude(pk=host.pk).exists():
        raise InvalidHost(f"a host named '{name}' already exists")
    host.name, host.accelerator, host.storage_pool = name, accelerator, storage_pool
    if allowed_paths is not None:
        host.allowed_paths = clean_allowed_paths(allowed_paths, host.can.path_style)
    if tags is not None:
        try:
            host.tags = " ".join(placing.parse_tags(tags))
        except ValueError as exc:
            raise InvalidHost(str(exc)) from None
    if cpu_mode is not None or cpu_model is not None:
        before = (host.cpu_mode, host.cpu_model)
        host.cpu_mode = host.cpu_mode if cpu_mode is None else cpu_mode
        host.cpu_model = cpu_model if cpu_model is not None else host.cpu_model if cpu_mode is None else ""
        if (host.cpu_mode, host.cpu_model) != before:  # (a setting kept is not asked again of a host that changed)
            _check_cpu(host, host.cpu_mode, host.cpu_model)
    if os_templates is not None:
        if os_templates.strip() and not host.can.host_template:
            raise InvalidHost(f"{host.get_technology_display()} hosts have no OS templates")
        host.os_templates = clean_templates(os_templates)
    host.save(update_fields=["name", "accelerator", "storage_pool", "allowed_paths", "tags", "cpu_mode", "cpu_model",
                             "os_templates"])
    _on_commit_publish(host.pk)
    return host


@transaction.atomic
def set_enabled(*, host: Host, enabled: bool) -> Host:
    """Enable or disable placement of new instances on a host."""
    Host.objects.filter(pk=host.pk).update(enabled=enabled)
    host.enabled = enabled
    _on_commit_publish(host.pk)
    return host


@transaction.atomic
def set_maintenance(*, host: Host, on: bool) -> Host:
    """Put the host in maintenance (no new placement) or take it out again."""
    Host.objects.filter(pk=host.pk).update(maintenance=on)
    host.maintenance = on
    _on_commit_publish(host.pk)
    return host


@transaction.atomic
def request_probe(*, host: Host) -> None:
    """Queue a fresh probe of the host."""
    _probe_on_commit(host.pk)


@transaction.atomic
def delete_host(*, host: Host) -> None:
    """Remove a host; refused while it still has instances (they are named)."""
    names = list(host.instances.live().values_list("name", flat=True)[:20])
    if names:
        raise HostInUse(f"host '{host.name}' still has instances: {', '.join(names)}")
    names = list(host.volumes.exclude(status="deleted").values_list("name", flat=True)[:20])
    if names:
        raise HostInUse(f"host '{host.name}' still has volumes: {', '.join(names)}")
    if any(any(holder([host.pk]).get(host.pk, ())) for holder in _holders):
        raise HostInUse(f"instances are on their way to host '{host.name}' (a migration): wait for them, or cancel")
    host.instances.update(host=None)  # deleted ones: keep their history
    host.volumes.update(host=None)
    host.delete()


def record_probe(*, host_id: int, info: hypervisor.HostInfo) -> None:
    """Store what a successful probe found and mark the host online."""
    pools = [asdict(p) for p in info.pools]
    Host.objects.filter(pk=host_id).update(
        state=HostState.ONLINE, last_error="", last_seen_at=timezone.now(), hostname=info.hostname,
        hypervisor_type=info.hypervisor_type, hypervisor_version=info.hypervisor_version,
        libvirt_version=info.libvirt_version, cpus=info.cpus, memory_mib=info.memory_mib,
        kvm_available=info.kvm_available, pools=pools, arch=info.arch, guests=list(info.guests),
        domain_caps=info.domain_caps, missing=list(info.missing),
    )
    publish_host(host_id)


def record_seen(*, host_id: int) -> None:
    """The host answered: it is online (back online, if it was offline or failing: that is told)."""
    with transaction.atomic():
        back = Host.objects.filter(pk=host_id, state__in=[HostState.OFFLINE, HostState.ERROR]).update(
            state=HostState.ONLINE, last_error="")
        changed = back or Host.objects.filter(pk=host_id).exclude(state=HostState.ONLINE).update(
            state=HostState.ONLINE, last_error="")
        Host.objects.filter(pk=host_id).update(last_seen_at=timezone.now())
        if back:
            _tell(host_id, Kind.HOST_ONLINE, "is back online", "")
    if changed:
        publish_host(host_id)


def _tell(host_id: int, kind: Kind, what: str, reason: str) -> None:
    name = Host.objects.filter(pk=host_id).values_list("name", flat=True).first() or f"#{host_id}"
    notify(kind=kind, title=f"Host {name} {what}", body=reason, link=f"/hosts/{host_id}/", data={"host": host_id})


def lost_hosts() -> list[Host]:
    """Hosts not heard from for CLOUDPANEL_HOST_DOWN_SECONDS (a probe or reconcile answered last at last_seen_at):
    each is marked offline with the reason, if it was not yet. Returns them all, freshly read."""
    silent = timezone.now() - timedelta(seconds=settings.CLOUDPANEL_HOST_DOWN_SECONDS)
    lost = list(Host.objects.filter(last_seen_at__lt=silent))
    for host in lost:
        reason = (f"not heard from since {host.last_seen_at:%Y-%m-%d %H:%M:%S} UTC: its libvirt or its worker does "
                  "not answer")
        # (one that answered since it was read is left alone)
        with transaction.atomic():
            lost_now = Host.objects.filter(pk=host.pk, state=HostState.ONLINE, last_seen_at__lt=silent).update(
                state=HostState.OFFLINE, last_error=reason)
            if lost_now:
                _tell(host.pk, Kind.HOST_OFFLINE, "is offline", reason)
        if lost_now:
            host.state, host.last_error = HostState.OFFLINE, reason
            publish_host(host.pk)
    return lost


def known_sizes(host_id: int) -> dict[str, tuple[int, int]]:
    """The host's domains as last read: uuid → (vCPUs, MiB of RAM)."""
    return {str(uuid): (vcpus, memory_mib) for uuid, vcpus, memory_mib in
            HostDomain.objects.filter(host_id=host_id).values_list("uuid", "vcpus", "memory_mib")}


def record_domains(*, host_id: int, domains: list[hypervisor.DomainFacts], observed_at: datetime,
                   complete: bool = True) -> None:
    """What the host holds, read at observed_at: its domains, with their names, states and sizes; complete: these
    are all of them (the others are gone). What an event recorded after observed_at is left as it is."""
    with transaction.atomic():
        known = {str(row.uuid): row for row in HostDomain.objects.filter(host_id=host_id)}
        if complete:
            HostDomain.objects.filter(host_id=host_id, seen_at__lte=observed_at).exclude(
                uuid__in=[d.uuid for d in domains]).delete()
        HostDomain.objects.bulk_create(
            [HostDomain(host_id=host_id, uuid=d.uuid, name=d.name[:255], state=d.state.value, vcpus=d.vcpus,
                        memory_mib=d.memory_mib, seen_at=observed_at) for d in domains if d.uuid not in known],
            ignore_conflicts=True)
        for d in domains:
            row = known.get(d.uuid)
            if row is not None and (row.name, row.state, row.vcpus, row.memory_mib) != (
                    d.name[:255], d.state.value, d.vcpus, d.memory_mib):
                HostDomain.objects.filter(pk=row.pk, seen_at__lte=observed_at).update(
                    name=d.name[:255], state=d.state.value, vcpus=d.vcpus, memory_mib=d.memory_mib,
                    seen_at=observed_at)


def record_domain_event(*, host_id: int, domain_uuid: str, state: str | None, observed_at: datetime) -> bool:
    """An event about one of the host's domains (state None: it is gone). False if the domain is new to us: ask
    the host its name and size (record_domains)."""
    if state is None:
        HostDomain.objects.filter(host_id=host_id, uuid=domain_uuid, seen_at__lte=observed_at).delete()
        return True
    known = HostDomain.objects.filter(host_id=host_id, uuid=domain_uuid)
    known.filter(seen_at__lte=observed_at).update(state=state, seen_at=observed_at)
    return known.exists()


def record_failure(*, host_id: int, error: hypervisor.HypervisorError) -> None:
    """The host could not be reached (offline) or refused us (error), with the reason."""
    state = HostState.OFFLINE if isinstance(error, hypervisor.HypervisorUnavailable) else HostState.ERROR
    with transaction.atomic():
        was_online = Host.objects.filter(pk=host_id, state=HostState.ONLINE).update(state=state)
        Host.objects.filter(pk=host_id).update(state=state, last_error=str(error)[:2000])
        if was_online:
            _tell(host_id, Kind.HOST_OFFLINE, "is offline" if state == HostState.OFFLINE else "fails",
                  str(error)[:2000])
    publish_host(host_id)


_LIVE = ~Q(instances__status="deleted")  # (seen from Host) instances not deleted


def holding() -> Q:
    """The instances (seen from Host) that hold their vCPUs and RAM, by settings.CLOUDPANEL_CAPACITY_POLICY:
    "running": those that run, are paused or suspended, are being created, or have an operation in flight;
    "defined": every instance not deleted. Every instance not deleted holds its disk either way."""
    if settings.CLOUDPANEL_CAPACITY_POLICY == "defined":
        return _LIVE
    return _LIVE & (Q(instances__status__in=["pending", "running", "paused", "suspended"])
                   | Q(instances__task_state__isnull=False))


# Disk space held in hosts' pools besides instances' disks (snapshots, say): each registered by the app owning them,
# as host ids → {host id: GiB}.
DiskHolder = Callable[[list[int]], Mapping[int, int]]
_disk_holders: list[DiskHolder] = []


def register_disk_holder(holder: DiskHolder) -> None:
    """Count more of the hosts' pool space as allocated (called by the app owning it, in its AppConfig.ready)."""
    _disk_holders.append(holder)


# vCPUs, RAM and disk held on hosts by what is on its way to them (an instance migrating there, say): host ids →
# {host id: Held}, registered like the disk holders.
Holder = Callable[[list[int]], Mapping[int, Held]]
_holders: list[Holder] = []


def register_holder(holder: Holder) -> None:
    """Count more of the hosts' vCPUs, RAM and disk as allocated (called by the app owning it, in AppConfig.ready)."""
    _holders.append(holder)


def allocations(host_ids: list[int], *, excluding: int | None = None) -> dict[int, Held]:
    """What each host's instances (and the registered holders: snapshots' and volumes' disk, instances migrating to
    it) hold of it, in one query each; excluding
    leaves one instance's own vCPUs, RAM and disk out (the one being started or resized)."""
    held, live = holding(), _LIVE
    if excluding is not None:
        held, live = held & ~Q(instances__pk=excluding), live & ~Q(instances__pk=excluding)
    rows = Host.objects.filter(pk__in=host_ids).values_list("pk").annotate(
        cpu=Sum("instances__vcpus", filter=held), mem=Sum("instances__memory_mib", filter=held),
        disk=Sum("instances__disk_gib", filter=live))
    totals = {pk: Held(cpu or 0, mem or 0, disk or 0) for pk, cpu, mem, disk in rows}
    for holder in _disk_holders:
        for host_id, gib in holder(host_ids).items():
            held_now = totals.get(host_id, Held())
            totals[host_id] = held_now._replace(disk_gib=held_now.disk_gib + gib)
    for extra in _holders:
        for host_id, more in extra(host_ids).items():
            held_now = totals.get(host_id, Held())
            totals[host_id] = Held(*(a + b for a, b in zip(held_now, more, strict=True)))
    return {host_id: totals.get(host_id, Held()) for host_id in host_ids}


def with_allocations(hosts: list[Host]) -> list[Host]:
    """The hosts, each with allocated_cpus and allocated_mib set for display."""
    used = allocations([host.pk for host in hosts])
    for host in hosts:
        host.allocated_cpus, host.allocated_mib = used[host.pk].vcpus, used[host.pk].memory_mib
    return hosts


def check_start(*, host_id: int, instance_id: int, vcpus: int, memory_mib: int) -> None:
    """Inside the caller's transaction: refuse (HostFull) to start (or create again) an instance that holds nothing
    now (the "running" capacity policy) on a host whose capacity others hold meanwhile. The host's row stays locked, so
    that placements and starts on it see each other."""
    if settings.CLOUDPANEL_CAPACITY_POLICY == "defined":
        return
    host = Host.objects.select_for_update().get(pk=host_id)
    used = allocations([host_id], excluding=instance_id)[host_id]
    reason = capacity_error(host, Held(vcpus, memory_mib), Held(used.vcpus, used.memory_mib), new=False)
    if reason:
        raise HostFull(reason)


def check_resize(*, host_id: int, instance_id: int, vcpus: int, memory_mib: int, disk_gib: int) -> None:
    """Inside the caller's transaction: refuse (HostFull) a new size that the instance's host could not give it
    next to what its other instances hold (whichever capacity policy: it is asked for to be used). The host's row
    stays locked, as for a placement."""
    host = Host.objects.select_for_update().get(pk=host_id)
    used = allocations([host_id], excluding=instance_id)[host_id]
    reason = capacity_error(host, Held(vcpus, memory_mib, disk_gib), used, new=False)
    if reason:
        raise HostFull(reason)


def check_pool(*, host_id: int, disk_gib: int) -> None:
    """Inside the caller's transaction: refuse (HostFull) more disk than the host's pool has left, next to what its
    instances and snapshots hold. The host's row stays locked, as for a placement."""
    host = Host.objects.select_for_update().get(pk=host_id)
    used = allocations([host_id])[host_id]
    reason = capacity_error(host, Held(0, 0, disk_gib), Held(0, 0, used.disk_gib), new=False)
    if reason:
        raise HostFull(reason)


def placement(*, vcpus: int, memory_mib: int, disk_gib: int = 0, host: Host | None = None,
              technologies: Collection[str] | None = None, among: Collection[int] | None = None,
              tags: Collection[str] = (), group: placing.Group | None = None,
              networks: Collection[tuple[str, str]] = (), image: placing.ImageNeed | None = None,
              guest: Guest | None = None) -> placing.Decision:
    """Lock the hosts and decide where a new instance goes (hosts.placement): the host given, or the best of those
    of the given technologies (any, if None) and ids (any, if None) that carry the tags, reach its networks (name,
    host tag), can get a copy of its image and run its guest (architecture, machine type, CPU). NoCapacity, with
    each host's reason, when none can take it.

    Runs inside the caller's transaction; the row locks make concurrent placements on one host see each other's
    allocations.
    """
    candidates = Host.objects.select_for_update()
    if host is not None:
        candidates = candidates.filter(pk=host.pk)
    hosts = list(candidates)  # (all of them: the decision says why each one was dropped)
    if host is not None and not hosts:
        raise NoCapacity(f"host '{host.name}' no longer exists")
    request = placing.Request(vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib,
                              technologies=None if host is not None or technologies is None
                              else frozenset(technologies),
                              tags=frozenset(tags), among=None if among is None else frozenset(among), group=group,
                              networks=tuple(networks), image=image, guest=guest)
    decision = placing.decide(hosts, request, allocations([h.pk for h in hosts]))
    if decision.host is None:
        if host is not None:
            raise NoCapacity(decision.verdicts[0].reason)
        raise NoCapacity("no host can take it: " + decision.reasons())
    return decision


def place(*, vcpus: int, memory_mib: int, disk_gib: int = 0, host: Host | None = None,
          technologies: Collection[str] | None = None, among: Collection[int] | None = None,
          guest: Guest | None = None) -> Host:
    """The host placement chooses (see placement), locked."""
    return placement(vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib, host=host, technologies=technologies,
                     among=among, guest=guest).host
