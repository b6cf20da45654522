"""Security groups on hosts, from the worker that drives the host.

A NIC in at least one group gets a network filter of its own on its host: the rules of all
its groups, with groups named as the remote end expanded into their members' addresses
(hosts/hypervisor/filter_xml.py). A change to a group, its rules or its members redefines the filters of
the NICs it touches; libvirt applies a redefined filter to running guests at once. A NIC
without groups has no filter.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import suppress

from django.db import transaction

from hosts import hypervisor
from hosts.models import Host
from hosts.specs import FilterRule, PortFilter
from networks import events, provisioning
from networks.choices import Direction, Ethertype, FilterStatus
from networks.models import Allocation, Port


def _uuid(port: Port) -> str:
    """Stable per NIC, so that redefining its filter replaces it."""
    return f"00000000-0000-4000-9000-{port.pk:012x}"


def _members(group_ids: set[int]) -> dict[int, list[tuple[int, str]]]:
    """(IP version, address) of every live NIC in each of the groups."""
    members: dict[int, list[tuple[int, str]]] = defaultdict(list)
    rows = (Allocation.objects.filter(port__in=Port.objects.live(), port__security_groups__in=group_ids)
            .values_list("port__security_groups", "subnet__version", "address"))
    for group_id, version, address in rows:
        members[group_id].append((version, address))
    return members


def spec_for(port: Port) -> PortFilter:
    """The NIC's filter as its groups say now."""
    allocations = list(port.addresses.select_related("subnet__network"))
    addresses = {a.subnet.version: a.address for a in allocations}
    # libvirt's DHCP server answers from the gateway on the networks with a bridge of their own
    server = next((a.subnet.gateway for a in allocations if a.subnet.version == 4
                   and a.subnet.network.kind in provisioning.OWN_BRIDGE and a.subnet.gateway), "")
    groups = list(port.security_groups.prefetch_related("rules"))
    members = _members({r.remote_group_id for g in groups for r in g.rules.all() if r.remote_group_id})
    rules: dict[FilterRule, None] = {}
    for group in groups:
        for rule in group.rules.all():
            family = 4 if rule.ethertype == Ethertype.IPV4 else 6
            if rule.remote_group_id:
                remotes = [f"{a}/{32 if v == 4 else 128}" for v, a in members[rule.remote_group_id] if v == family]
            else:
                remotes = [rule.remote_cidr]
            for remote in remotes:
                rules[FilterRule(direction="in" if rule.direction == Direction.INGRESS else "out", family=family,
                                 protocol=rule.protocol, remote=remote, port_min=rule.port_min,
                                 port_max=rule.port_max)] = None
    return PortFilter(name=port.filter_name, uuid=_uuid(port), mac=port.mac, ipv4=addresses.get(4, ""),
                      ipv6=addresses.get(6, ""), dhcp_server=server, rules=tuple(rules))


def _record(port: Port, status: str, error: str = "") -> None:
    Port.objects.filter(pk=port.pk).update(filter_status=status, filter_error=error[:2000])


def prepare(port: Port, host: Host) -> str:
    """Before the NIC is plugged in: its filter defined on the host. Returns the filter's name ("" when the
    NIC has no groups); a host that cannot enforce the rules fails the plug-in, it is not left open."""
    if not port.security_groups.exists():
        _record(port, FilterStatus.NONE)
        return ""
    try:
        hypervisor.define_filter(host.uri, spec_for(port))
    except hypervisor.HypervisorError as exc:
        _record(port, FilterStatus.FAILED, str(exc))
        raise
    _record(port, FilterStatus.ACTIVE)
    return port.filter_name


def sync(port_id: int) -> None:
    """Bring one NIC's filter on its host in line with its groups now, under the NIC's row lock (a create
    that plugs it in holds the same lock, so the two never interleave)."""
    with transaction.atomic():
        port = (Port.objects.live().select_for_update(of=("self",)).select_related("instance__host")
                .filter(pk=port_id).first())
        if port is None:
            return
        instance, host = port.instance, port.instance.host
        wanted = port.filter_name if port.security_groups.exists() else ""
        try:
            if wanted:
                hypervisor.define_filter(host.uri, spec_for(port))
            # not on the host yet: the create plugs the NIC in with its filter
            with suppress(hypervisor.DomainNotFound):
                hypervisor.set_interface_filter(host.uri, str(instance.uuid), port.mac, wanted)
            if not wanted:
                hypervisor.remove_filter(host.uri, port.filter_name)
        except hypervisor.HypervisorError as exc:
            _record(port, FilterStatus.FAILED, str(exc))
        else:
            _record(port, FilterStatus.ACTIVE if wanted else FilterStatus.NONE)
        events.publish_port_on_commit(port)  # pages showing the instance refresh its NICs


def remove(port: Port, host: Host) -> None:
    """The NIC left its domain: its filter leaves the host (one it never had counts as done)."""
    hypervisor.remove_filter(host.uri, port.filter_name)
