"""Security groups, their rules and the NICs in them: every change goes through here.

A change is saved, then the NICs whose filters it alters are marked pending and their hosts'
workers redefine those filters (networks.firewall): the NICs in a group whose rules changed,
and the NICs in groups whose rules name a group that gained or lost a member.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from cloudpanel.exceptions import NotFound
from cloudpanel.tasking import enqueue
from networks import tasks
from networks.choices import Direction, Ethertype, FilterStatus, Protocol
from networks.exceptions import InvalidRule, SecurityGroupInUse
from networks.models import DELETED, Port, SecurityGroup, SecurityRule
from tenants.models import Tenant

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}$")


def _check_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise InvalidRule("the name must be 1–63 letters, digits, spaces, dots, dashes or underscores")
    return name


def _live_ports(group_ids: set[int]) -> list[tuple[int, int]]:
    """(port id, host id) of the NICs of live instances in any of the groups."""
    return list(Port.objects.live().filter(security_groups__in=group_ids)
                .values_list("pk", "instance__host_id").distinct())


def rules_changed(group_id: int) -> None:
    """The group's rules changed: its members' filters follow."""
    sync_ports(_live_ports({group_id}))


def _naming(group_ids: Iterable[int]) -> list[tuple[int, int]]:
    """The NICs in groups whose rules name any of these groups."""
    group_ids = set(group_ids)
    if not group_ids:
        return []
    return _live_ports(set(SecurityRule.objects.filter(remote_group__in=group_ids).values_list("group_id",
                                                                                              flat=True)))


def members_changed(group_ids: Iterable[int]) -> None:
    """NICs joined or left the groups: the filters whose rules name those groups follow (their members'
    addresses are let in, or no longer)."""
    sync_ports(_naming(group_ids))


def sync_ports(ports: Iterable[tuple[int, int]]) -> None:
    """Queue the filters of these (port id, host id) pairs to be brought in line with their groups: marked
    pending now, sent on commit, one task per host."""
    by_host: dict[int, list[int]] = defaultdict(list)
    for port_id, host_id in ports:
        by_host[host_id].append(port_id)
    if not by_host:
        return
    Port.objects.filter(pk__in=[p for ids in by_host.values() for p in ids]).update(
        filter_status=FilterStatus.PENDING, filter_error="")
    for host_id, port_ids in by_host.items():
        ids = sorted(set(port_ids))
        enqueue(tasks.sync_filters, ids, host_id=host_id)


@transaction.atomic
def create_group(*, user: AbstractBaseUser | None, tenant: Tenant, name: str, description: str = "") -> SecurityGroup:
    """A new group of the tenant. Like a new OpenStack group it lets all outgoing traffic through and nothing
    in; delete those egress rules to restrict what leaves."""
    try:
        with transaction.atomic():
            group = SecurityGroup.objects.create(tenant=tenant, name=_check_name(name),
                                                 description=description.strip()[:255], created_by=user)
    except IntegrityError:
        raise InvalidRule(f"a security group named '{name.strip()}' already exists") from None
    for ethertype in Ethertype.values:
        SecurityRule.objects.create(group=group, direction=Direction.EGRESS, ethertype=ethertype,
                                    description="all outgoing traffic")
    return group


@transaction.atomic
def rename_group(*, group: SecurityGroup, name: str, description: str) -> SecurityGroup:
    group.name, group.description = _check_name(name), description.strip()[:255]
    try:
        with transaction.atomic():
            group.save(update_fields=["name", "description"])
    except IntegrityError:
        raise InvalidRule(f"a security group named '{group.name}' already exists") from None
    return group


@transaction.atomic
def delete_group(*, group: SecurityGroup) -> None:
    """Remove a group that no NIC is in and no other group's rule names; refused with the list otherwise."""
    group = SecurityGroup.objects.select_for_update().get(pk=group.pk)
    users = list(group.ports.live().values_list("instance__name", flat=True).distinct()[:20])
    if users:
        raise SecurityGroupInUse(f"{group.name} is in use by the NICs of {', '.join(users)}; take it off them first")
    naming = list(group.referenced_by.exclude(group=group).values_list("group__name", flat=True).distinct()[:20])
    if naming:
        raise SecurityGroupInUse(f"the rules of {', '.join(naming)} name {group.name}; delete those rules first")
    group.rules.all().delete()
    group.delete()


def _check_ports(protocol: str, port_min: int | None, port_max: int | None) -> tuple[int | None, int | None]:
    if port_min is None and port_max is None:
        return None, None
    if protocol not in (Protocol.TCP, Protocol.UDP):
        raise InvalidRule("only TCP and UDP rules take a port range")
    if port_min is None:
        raise InvalidRule("give the first port of the range")
    port_max = port_min if port_max is None else port_max
    if not 1 <= port_min <= port_max <= 65535:
        raise InvalidRule("ports run from 1 to 65535, the first no higher than the last")
    return port_min, port_max


def _check_cidr(cidr: str, ethertype: str) -> str:
    if not cidr:
        return ""
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=True)
    except ValueError as exc:
        raise InvalidRule(f"'{cidr[:60]}' is not a network in CIDR form: {exc}") from None
    if f"IPv{network.version}" != ethertype:
        raise InvalidRule(f"{network} is an IPv{network.version} range, but the rule is for {ethertype}")
    return str(network)


@transaction.atomic
def add_rule(*, group: SecurityGroup, direction: str, ethertype: str = Ethertype.IPV4, protocol: str = Protocol.ANY,
             port_min: int | None = None, port_max: int | None = None, remote_cidr: str = "",
             remote_group: SecurityGroup | None = None, description: str = "") -> SecurityRule:
    """A rule letting traffic through; NICs in the group get it on their hosts (running ones at once)."""
    if direction not in Direction.values:
        raise InvalidRule(f"the direction must be one of {', '.join(Direction.values)}")
    if ethertype not in Ethertype.values:
        raise InvalidRule(f"the ethertype must be one of {', '.join(Ethertype.values)}")
    if protocol not in Protocol.values:
        raise InvalidRule(f"the protocol must be one of {', '.join(Protocol.values)}")
    port_min, port_max = _check_ports(protocol, port_min, port_max)
    if remote_cidr and remote_group is not None:
        raise InvalidRule("give a remote CIDR or a remote group, not both")
    if remote_group is not None and remote_group.tenant_id != group.tenant_id:
        raise NotFound("no such security group")
    rule = SecurityRule.objects.create(
        group=group, direction=direction, ethertype=ethertype, protocol=protocol, port_min=port_min,
        port_max=port_max, remote_cidr=_check_cidr(remote_cidr, ethertype), remote_group=remote_group,
        description=description.strip()[:255])
    rules_changed(group.pk)
    return rule


@transaction.atomic
def delete_rule(*, rule: SecurityRule) -> None:
    group_id = rule.group_id
    rule.delete()
    rules_changed(group_id)


def check_groups(groups: Iterable[SecurityGroup], tenant_id: int) -> list[SecurityGroup]:
    """Groups for a NIC of the tenant's: its own only (another tenant's reads as no such group)."""
    groups = list(groups)
    if any(group.tenant_id != tenant_id for group in groups):
        raise NotFound("no such security group")
    return groups


@transaction.atomic
def set_port_groups(*, port: Port, groups: Iterable[SecurityGroup]) -> Port:
    """Put the NIC in exactly these groups; its filter and those naming its groups follow on the host."""
    port = Port.objects.select_related("instance").get(pk=port.pk)
    if port.instance is None or port.instance.status == DELETED:
        raise InvalidRule("the NIC is not on an instance")
    groups = check_groups(groups, port.instance.tenant_id)
    before = set(port.security_groups.values_list("pk", flat=True))
    port.security_groups.set(groups)
    sync_ports([*_naming(before ^ {g.pk for g in groups}), (port.pk, port.instance.host_id)])
    return port
