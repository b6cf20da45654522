"""Placement: which host takes an instance, as filters and weights, each a small function.

A filter keeps a host or drops it with the reason; every host a filter kept is scored by the weights of the
strategy (settings.CLOUDPANEL_PLACEMENT_STRATEGY: "spread" puts each instance on the host with most RAM left,
"pack" on the one with least that fits, so that others stay free). The decision lists every host with why it
was kept or dropped and its score, for the instance page and the API.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from django.conf import settings

from hosts import guests
from hosts.guests import Guest
from hosts.models import Host

GIB = 1 << 30
TAG = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")


class Held(NamedTuple):
    """What a host's instances hold of it (see hosts.services.holding)."""

    vcpus: int = 0
    memory_mib: int = 0
    disk_gib: int = 0


def pool_bytes(host: Host) -> int | None:
    """The capacity of the host's storage pool as last probed, or None if the probe did not see it."""
    return next((pool["capacity_bytes"] for pool in host.pools if pool.get("name") == host.storage_pool
                 and pool.get("capacity_bytes")), None)


def capacity_error(host: Host, wanted: Held, used: Held, *, new: bool = True) -> str | None:
    """Why the host cannot take `wanted` on top of `used`, or None if it can. new: a new instance (a disabled or
    unreachable host takes none); else one of its own starting again."""
    if new and not host.schedulable:
        return f"host '{host.name}' is {host.unschedulable_reason}"
    if wanted.vcpus > host.cpus:
        return f"{wanted.vcpus} vCPUs exceed host '{host.name}' ({host.cpus} CPUs)"
    if wanted.memory_mib > host.memory_mib:
        return f"{wanted.memory_mib} MiB of RAM exceed host '{host.name}' ({host.memory_mib} MiB)"
    cpu_limit = int(host.cpus * settings.CLOUDPANEL_CPU_ALLOCATION_RATIO)
    if used.vcpus + wanted.vcpus > cpu_limit:
        return (f"host '{host.name}' has {max(0, cpu_limit - used.vcpus)} vCPUs left ({used.vcpus} of {cpu_limit} "
                f"allocated), {wanted.vcpus} asked")
    memory_limit = int(host.memory_mib * settings.CLOUDPANEL_RAM_ALLOCATION_RATIO)
    if used.memory_mib + wanted.memory_mib > memory_limit:
        return (f"host '{host.name}' has {max(0, memory_limit - used.memory_mib)} MiB of RAM left "
                f"({used.memory_mib} of {memory_limit} MiB allocated), {wanted.memory_mib} MiB asked")
    pool = pool_bytes(host)
    if wanted.disk_gib and pool is not None and (used.disk_gib + wanted.disk_gib) * GIB > pool:
        return (f"host '{host.name}' has {max(0, pool // GIB - used.disk_gib)} GiB of disk left in its pool "
                f"'{host.storage_pool}' ({used.disk_gib} of {pool // GIB} GiB allocated), {wanted.disk_gib} GiB asked")
    return None


def parse_tags(text: str | Collection[str]) -> list[str]:
    """Tags from a comma- or space-separated text (or a list): lower-case words of letters, digits, '.', '_', '-';
    ValueError naming the first that is not one."""
    words = text.replace(",", " ").split() if isinstance(text, str) else [str(word).strip() for word in text]
    tags = []
    for word in words:
        tag = word.lower()
        if not TAG.fullmatch(tag):
            raise ValueError(f"'{word[:40]}' is not a tag: letters, digits, '.', '_' and '-', at most 32")
        if tag not in tags:
            tags.append(tag)
    if len(tags) > 32:
        raise ValueError("at most 32 tags")
    return tags


@dataclass(frozen=True)
class Group:
    """A server group, as placement sees it: its name, its policy and the hosts its other instances are on (with
    one instance's name on each)."""

    name: str
    affinity: bool  # together on one host (else each apart)
    members: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageNeed:
    """A library image an instance's disk is made from: a host without a copy needs room for one."""

    name: str
    gib: int  # what a copy takes
    cached_on: frozenset[int] = frozenset()  # the hosts that hold a copy already


@dataclass(frozen=True)
class Request:
    """What the instance needs of a host."""

    vcpus: int
    memory_mib: int
    disk_gib: int = 0
    technologies: frozenset[str] | None = None  # any of these (None: any technology)
    tags: frozenset[str] = frozenset()  # the host must carry every one
    among: frozenset[int] | None = None  # only these hosts (None: any)
    group: Group | None = None  # the server group it belongs to, with where its other instances are
    networks: tuple[tuple[str, str], ...] = ()  # (name, host tag) of each network of its reached by tagged hosts
    image: ImageNeed | None = None  # the library image its disk is made from
    guest: Guest | None = None  # the architecture, machine type and CPU it asks for

    @property
    def wanted(self) -> Held:
        return Held(self.vcpus, self.memory_mib, self.disk_gib)


@dataclass(frozen=True)
class Verdict:
    """One host in a decision: kept (with its score) or dropped (with the reason)."""

    host_id: int
    host: str
    kept: bool
    reason: str = ""
    score: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {"host_id": self.host_id, "host": self.host, "kept": self.kept, "reason": self.reason,
                "score": None if self.score is None else round(self.score, 4)}


@dataclass
class Decision:
    """The host chosen (None: none fits) and why, host by host, best first."""

    host: Host | None
    strategy: str
    verdicts: list[Verdict] = field(default_factory=list)

    def reasons(self) -> str:
        """Why each host was dropped, for a refusal."""
        return "; ".join(v.reason for v in self.verdicts if not v.kept) or "no host is online and enabled"

    def as_dict(self) -> dict[str, object]:
        return {"host": self.host.name if self.host else None, "strategy": self.strategy,
                "hosts": [verdict.as_dict() for verdict in self.verdicts]}


Filter = Callable[[Host, Request, Held], str | None]


def is_schedulable(host: Host, request: Request, used: Held) -> str | None:
    return None if host.schedulable else f"host '{host.name}' is {host.unschedulable_reason}"


def runs_technology(host: Host, request: Request, used: Held) -> str | None:
    if request.technologies is None or host.technology in request.technologies:
        return None
    return f"host '{host.name}' runs {host.get_technology_display()}, which cannot boot it"


def has_tags(host: Host, request: Request, used: Held) -> str | None:
    missing = sorted(request.tags - set(host.tag_list))
    return f"host '{host.name}' lacks the tag{'s' if len(missing) > 1 else ''} {', '.join(missing)}" if missing \
        else None


def keeps_group(host: Host, request: Request, used: Held) -> str | None:
    """Affinity: the host its group's instances are on (any, for the first); anti-affinity: none of those."""
    group = request.group
    if group is None or not group.members:
        return None
    if group.affinity and host.pk not in group.members:
        return f"server group '{group.name}' keeps its instances together, on another host"
    if not group.affinity and host.pk in group.members:
        return (f"host '{host.name}' runs '{group.members[host.pk]}' of server group '{group.name}', whose "
                "instances are kept apart")
    return None


def reaches_networks(host: Host, request: Request, used: Held) -> str | None:
    """A bridged or VLAN network is reached by the hosts with its bridge: those carrying its tag."""
    missing = [(name, tag) for name, tag in request.networks if tag not in host.tag_list]
    if not missing:
        return None
    name, tag = missing[0]
    return f"host '{host.name}' does not reach network '{name}' (the hosts that do carry the tag {tag})"


def has_room(host: Host, request: Request, used: Held) -> str | None:
    """vCPUs and RAM under the allocation ratios, disk within the pool's free space."""
    return capacity_error(host, request.wanted, used, new=False)


def gets_image(host: Host, request: Request, used: Held) -> str | None:
    """A host without a copy of the library image needs room in its pool for one, besides the instance's disk."""
    image, pool = request.image, pool_bytes(host)
    if image is None or host.pk in image.cached_on or pool is None:
        return None
    if (used.disk_gib + request.disk_gib + image.gib) * GIB <= pool:
        return None
    return (f"host '{host.name}' has no copy of the image {image.name} and no room for one ({image.gib} GiB) "
            f"beside the disk in its pool '{host.storage_pool}'")


def runs_guest(host: Host, request: Request, used: Held) -> str | None:
    """Its architecture, machine type, CPU and vCPUs, as the host's capabilities offer them."""
    if request.guest is None:
        return None
    return guests.refusal(host, replace(request.guest, vcpus=max(request.vcpus, request.guest.vcpus)))


FILTERS: tuple[Filter, ...] = (is_schedulable, runs_technology, runs_guest, has_tags, reaches_networks, keeps_group,
                               has_room, gets_image)


def _ram_left(host: Host, request: Request, used: Held) -> float:
    """MiB of RAM the host would have left with the instance on it (under the allocation ratio), vCPUs left as the
    tie-break (a thousandth each)."""
    ram = host.memory_mib * settings.CLOUDPANEL_RAM_ALLOCATION_RATIO - used.memory_mib - request.memory_mib
    cpu = host.cpus * settings.CLOUDPANEL_CPU_ALLOCATION_RATIO - used.vcpus - request.vcpus
    return ram + cpu / 1000


WEIGHTS: dict[str, Callable[[Host, Request, Held], float]] = {
    "spread": _ram_left,  # the most RAM left: instances spread over the hosts
    "pack": lambda host, request, used: -_ram_left(host, request, used),  # the least: hosts filled one by one
}


def decide(hosts: list[Host], request: Request, used: dict[int, Held], *, strategy: str | None = None) -> Decision:
    """Filter the hosts, weigh those kept, and choose the best (ties: the host first by name)."""
    strategy = strategy or settings.CLOUDPANEL_PLACEMENT_STRATEGY
    weigh = WEIGHTS[strategy]
    kept, dropped = [], []
    for host in sorted(hosts, key=lambda h: h.name):
        if request.among is not None and host.pk not in request.among:
            continue
        held = used.get(host.pk, Held())
        reason = next((why for check in FILTERS if (why := check(host, request, held))), None)
        if reason:
            dropped.append(Verdict(host.pk, host.name, False, reason))
        else:
            kept.append(Verdict(host.pk, host.name, True, score=weigh(host, request, held)))
    kept.sort(key=lambda verdict: -(verdict.score or 0.0))
    chosen = next((host for host in hosts if kept and host.pk == kept[0].host_id), None)
    return Decision(chosen, strategy, kept + dropped)
