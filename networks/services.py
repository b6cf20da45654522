"""Every change to networks goes through here: subnets, ports and IP address management.

Allocation takes the subnet's row lock (SELECT … FOR UPDATE) for the few statements it
needs, so concurrent requests on one subnet are served one after the other; the unique
constraints on (subnet, offset) and (network, MAC) make a duplicate impossible even so.
"""

from __future__ import annotations

import ipaddress
import re
import secrets

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction

from hosts import placement as placing
from networks.choices import NetworkKind
from networks.exceptions import AddressInUse, InvalidNetwork, NetworkInUse, NetworkOverlap, SubnetFull
from networks.models import Allocation, Network, Port, ReservedRange, Subnet
from tenants import quotas
from tenants.models import Tenant

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
WINDOW = 512  # offsets examined per query while looking for a free address
_MAC_TRIES = 8
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


# IPv6 ranges that spell IPv4 addresses another way (mapped, compatible, translated, NAT64, 6to4): a subnet
# there could overlap an IPv4 range unseen, so none is taken.
_EMBEDDED_IPV4 = tuple(ipaddress.ip_network(n) for n in (
    "::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16"))


def parse_cidr(cidr: str) -> IPNetwork:
    """A network in CIDR form, host bits refused (10.0.0.5/24 is a mistake, not 10.0.0.0/24)."""
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=True)
    except ValueError as exc:
        raise InvalidNetwork(f"'{cidr[:60]}' is not a network in CIDR form: {exc}") from None
    embedding = next((e for e in _EMBEDDED_IPV4 if network.version == 6 and network.overlaps(e)), None)
    if embedding is not None:
        raise InvalidNetwork(f"{network} overlaps {embedding}, where IPv6 addresses spell IPv4 ones: give IPv4 "
                             "ranges as the IPv4 subnet, and IPv6 ones from elsewhere (say fd00::/8)")
    if network.num_addresses < 4:
        raise InvalidNetwork(f"{network} is too small: give at least a /30 (or a /126)")
    return network


def _offset(network: IPNetwork, address: str, what: str) -> int:
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        raise InvalidNetwork(f"the {what} '{address[:60]}' is not an IP address") from None
    if parsed not in network:
        raise InvalidNetwork(f"the {what} {parsed} is outside {network}")
    return int(parsed) - int(network.network_address)


def _usable(network: IPNetwork) -> tuple[int, int]:
    """The first and last offsets a host may have: IPv4 keeps its network and broadcast addresses out."""
    last = network.num_addresses - 1
    return (1, last - 1) if network.version == 4 else (1, min(last, (1 << 63) - 1))


@transaction.atomic
def add_subnet(*, network: Network, cidr: str, gateway: str | None = None, pool_start: str | None = None,
               pool_end: str | None = None) -> Subnet:
    """Give the network an IPv4 or IPv6 range. The gateway defaults to the first host address, the pool
    (the DHCP range) to every other usable address."""
    parsed = parse_cidr(cidr)
    usable_first, usable_last = _usable(parsed)
    gateway_offset = usable_first if gateway is None else _offset(parsed, gateway, "gateway")
    if not usable_first <= gateway_offset <= usable_last:
        raise InvalidNetwork(f"the gateway cannot be the network or broadcast address of {parsed}")
    # By default every usable address but the gateway's (which the allocator never hands out anyway).
    first = _offset(parsed, pool_start, "pool start") if pool_start else \
        usable_first + 1 if gateway_offset == usable_first else usable_first
    last = _offset(parsed, pool_end, "pool end") if pool_end else \
        usable_last - 1 if gateway_offset == usable_last else usable_last
    if not usable_first <= first <= last <= usable_last:
        raise InvalidNetwork(f"the pool must lie within the usable addresses of {parsed}, start before its end")
    try:
        with transaction.atomic():
            return Subnet.objects.create(
                network=network, cidr=str(parsed), version=parsed.version,
                gateway=str(parsed.network_address + gateway_offset), pool_first=first, pool_last=last, cursor=first,
            )
    except IntegrityError:
        raise InvalidNetwork(f"{network} already has an IPv{parsed.version} subnet") from None


def reserve(*, subnet: Subnet, first: str, last: str, reason: str = "") -> ReservedRange:
    """Keep a range of the subnet's addresses out of allocation."""
    parsed = subnet.ip_network
    low, high = _offset(parsed, first, "range start"), _offset(parsed, last, "range end")
    if low > high:
        raise InvalidNetwork("the range must start before it ends")
    usable_first, usable_last = _usable(parsed)
    if not usable_first <= low <= high <= usable_last:
        raise InvalidNetwork(f"the range must lie within the usable addresses of {parsed}")
    return ReservedRange.objects.create(subnet=subnet, first=low, last=high, reason=reason[:200])


def unreserve(*, reserved: ReservedRange) -> None:
    """Give a reserved range back to allocation."""
    reserved.delete()


def new_mac() -> str:
    """A random address in the 52:54:00 range that QEMU/KVM guests use."""
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def create_port(*, network: Network, mac: str | None = None) -> Port:
    """A place on the network with a MAC that no other port of it has (a generated one if none is given)."""
    if mac is not None:
        mac = mac.strip().lower()
        if not _MAC.match(mac) or int(mac[:2], 16) & 1:
            raise InvalidNetwork(f"'{mac[:40]}' is not a unicast MAC address (like 52:54:00:12:34:56)")
    for _ in range(_MAC_TRIES if mac is None else 1):
        try:
            with transaction.atomic():
                return Port.objects.create(network=network, mac=mac or new_mac())
        except IntegrityError:
            if mac is not None:
                raise AddressInUse(f"the MAC {mac} is already on {network}") from None
    raise AddressInUse(f"no free MAC found on {network} after {_MAC_TRIES} tries")


def _first_free(subnet: Subnet, low: int, high: int) -> int | None:
    """The first offset from low to high that no address holds, no reserved range covers and is not the gateway:
    one query (the window's offsets generated in SQL, each looked up in the unique index of allocations)."""
    gateway = int(ipaddress.ip_address(subnet.gateway)) - int(subnet.ip_network.network_address)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""WITH RECURSIVE window_offsets(n) AS (SELECT %s UNION ALL SELECT n + 1 FROM window_offsets WHERE n < %s)
            SELECT n FROM window_offsets
            WHERE n <> %s
              AND NOT EXISTS (SELECT 1 FROM {Allocation._meta.db_table} a WHERE a.subnet_id = %s AND a."offset" = n)
              AND NOT EXISTS (SELECT 1 FROM {ReservedRange._meta.db_table} r
                              WHERE r.subnet_id = %s AND n BETWEEN r."first" AND r."last")
            ORDER BY n LIMIT 1""",
            [low, high, gateway, subnet.pk, subnet.pk])
        row = cursor.fetchone()
    return row[0] if row else None


def _next_free(subnet: Subnet) -> int:
    """The first free offset from the cursor to the end of the pool, then from its start."""
    for start, stop in ((subnet.cursor, subnet.pool_last), (subnet.pool_first, subnet.cursor - 1)):
        low = max(start, subnet.pool_first)
        while low <= stop:
            high = min(low + WINDOW - 1, stop)
            offset = _first_free(subnet, low, high)
            if offset is not None:
                return offset
            low = high + 1
    raise SubnetFull(f"no free address is left in the pool of {subnet}")


def allocate(*, port: Port, subnet: Subnet, address: str | None = None) -> Allocation:
    """An address for the port: the one asked for, or the next free one of the pool."""
    if subnet.network_id != port.network_id:
        raise InvalidNetwork("the subnet belongs to another network than the port")
    with transaction.atomic():
        locked = Subnet.objects.select_for_update().get(pk=subnet.pk)
        parsed = locked.ip_network
        if address is None:
            offset = _next_free(locked)
        else:
            offset = _offset(parsed, address, "address")
            usable_first, usable_last = _usable(parsed)
            if not usable_first <= offset <= usable_last:
                raise InvalidNetwork(f"{address} is the network or broadcast address of {parsed}")
            if _first_free(locked, offset, offset) is None:
                raise AddressInUse(f"{address} is already in use or reserved on {locked.network}")
        try:
            with transaction.atomic():
                allocation = Allocation.objects.create(subnet=locked, port=port, offset=offset,
                                                       address=str(parsed.network_address + offset))
        except IntegrityError:
            raise AddressInUse(f"{parsed.network_address + offset} is already in use, or the port already "
                               f"has an address in {parsed}") from None
        if address is None:
            locked.cursor = offset + 1 if offset < locked.pool_last else locked.pool_first
            locked.save(update_fields=["cursor"])
    return allocation


def release(*, port: Port) -> None:
    """The port goes: its addresses are free again."""
    port.delete()


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_BRIDGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                     r"[A-Za-z0-9])?)*$")


def _dns_servers(text: str) -> str:
    servers = [s for s in re.split(r"[\s,]+", text.strip()) if s]
    for server in servers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise InvalidNetwork(f"the DNS server '{server[:60]}' is not an IP address") from None
    return ",".join(servers)


_SHARED_LOCK = 0x6E657473  # an advisory lock key of our own ("nets")


def _lock_shared_networks() -> None:
    """Shared networks have no tenant row to lock: PostgreSQL takes an advisory lock until the transaction ends
    (SQLite, the embedded default, runs one writing transaction at a time anyway)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SHARED_LOCK])


def _check_overlaps(*, tenant: Tenant | None, cidrs: list[IPNetwork]) -> None:
    """A new range may overlap neither the tenant's other networks (or, for a shared one, the other shared
    networks) nor the hosts' management ranges: the 409 names what it overlaps."""
    for cidr in cidrs:
        for managed in settings.CLOUDPANEL_MANAGEMENT_CIDRS:
            managed = ipaddress.ip_network(managed, strict=False)
            if managed.version == cidr.version and managed.overlaps(cidr):
                raise NetworkOverlap(f"{cidr} overlaps the hosts' management range {managed}")
        neighbours = Subnet.objects.filter(network__tenant=tenant, version=cidr.version).select_related("network")
        for subnet in neighbours:
            if subnet.ip_network.overlaps(cidr):
                raise NetworkOverlap(f"{cidr} overlaps {subnet.cidr} of network {subnet.network.name}")


def create_network(*, user: AbstractBaseUser | None, tenant: Tenant | None, name: str, kind: str, cidr: str,
                   gateway: str | None = None, pool_start: str | None = None, pool_end: str | None = None,
                   ipv6_cidr: str = "", bridge: str = "", vlan_id: int | None = None, domain: str = "",
                   dns_servers: str = "", host_tag: str = "") -> Network:
    """A network of a tenant (or a shared one, without a tenant) with its IPv4 subnet and an optional IPv6 one.

    Checked here: the name; a bridge for bridged and VLAN networks (host_tag: the tag of the hosts that have it,
    which placement keeps instances on it to); a VLAN id in 1–4094 for VLAN ones only; the domain and DNS servers;
    no overlap with the tenant's other networks or the management ranges. Checked on the hosts when it is
    provisioned: that the bridge exists there.
    """
    if not _NAME.match(name):
        raise InvalidNetwork("the name must be 1–63 letters, digits, dots, dashes or underscores")
    if kind not in NetworkKind.values:
        raise InvalidNetwork(f"unknown network kind '{kind[:20]}'")
    if kind in (NetworkKind.BRIDGE, NetworkKind.VLAN):
        if not _BRIDGE.match(bridge):
            raise InvalidNetwork("a bridged or VLAN network needs the name of a host bridge (up to 15 characters)")
    elif bridge or host_tag:
        raise InvalidNetwork("only bridged and VLAN networks use a host bridge, and a tag for the hosts that have it")
    try:
        tags = placing.parse_tags(host_tag)
    except ValueError as exc:
        raise InvalidNetwork(f"host tag: {exc}") from None
    if len(tags) > 1:
        raise InvalidNetwork("give one host tag: the one every host with the bridge carries")
    if kind == NetworkKind.VLAN:
        if vlan_id is None or not 1 <= vlan_id <= 4094:
            raise InvalidNetwork("a VLAN id must be between 1 and 4094")
    elif vlan_id is not None:
        raise InvalidNetwork("only VLAN networks take a VLAN id")
    if domain and not _DOMAIN.match(domain):
        raise InvalidNetwork(f"'{domain[:60]}' is not a domain name")
    v4 = parse_cidr(cidr)
    if v4.version != 4:
        raise InvalidNetwork("the main subnet is IPv4; give IPv6 as the optional second one")
    v6 = parse_cidr(ipv6_cidr) if ipv6_cidr else None
    if v6 is not None and v6.version != 6:
        raise InvalidNetwork("the second subnet must be IPv6")
    with transaction.atomic():
        if tenant is not None:
            # The tenant's row lock also orders this tenant's network changes: overlaps are checked in turn.
            quotas.check(tenant=tenant, request={"networks": 1})
        else:
            _lock_shared_networks()
        _check_overlaps(tenant=tenant, cidrs=[c for c in (v4, v6) if c is not None])
        try:
            with transaction.atomic():
                network = Network.objects.create(name=name, tenant=tenant, kind=kind, bridge=bridge,
                                                 host_tag=tags[0] if tags else "",
                                                 vlan_id=vlan_id, domain=domain, dns_servers=_dns_servers(dns_servers),
                                                 created_by=user)
        except IntegrityError:
            raise InvalidNetwork(f"a network named '{name}' already exists there") from None
        add_subnet(network=network, cidr=str(v4), gateway=gateway, pool_start=pool_start, pool_end=pool_end)
        if v6 is not None:
            add_subnet(network=network, cidr=str(v6))
    return network


def delete_network(*, network: Network) -> None:
    """Remove a network that nothing uses; refused with the list of instances on it."""
    with transaction.atomic():
        users = list(Port.objects.filter(network=network, instance__isnull=False)
                     .values_list("instance__name", flat=True).distinct()[:20])
        if users:
            raise NetworkInUse(f"{network.name} is in use by {', '.join(users)}; remove their NICs first")
        network.ports.all().delete()
        network.delete()
