"""Every change to networks goes through here: subnets, ports and IP address management.

Allocation takes the subnet's row lock (SELECT … FOR UPDATE) for the few statements it
needs, so concurrent requests on one subnet are served one after the other; the unique
constraints on (subnet, offset) and (network, MAC) make a duplicate impossible even so.
"""

from __future__ import annotations

import ipaddress
import re
import secrets

from django.db import IntegrityError, transaction

from networks.exceptions import AddressInUse, InvalidNetwork, SubnetFull
from networks.models import Allocation, Network, Port, ReservedRange, Subnet

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
WINDOW = 512  # offsets examined per query while looking for a free address
_MAC_TRIES = 8
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def parse_cidr(cidr: str) -> IPNetwork:
    """A network in CIDR form, host bits refused (10.0.0.5/24 is a mistake, not 10.0.0.0/24)."""
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=True)
    except ValueError as exc:
        raise InvalidNetwork(f"'{cidr[:60]}' is not a network in CIDR form: {exc}") from None
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
    (the DHCP range) to every usable address after it."""
    parsed = parse_cidr(cidr)
    usable_first, usable_last = _usable(parsed)
    gateway_offset = usable_first if gateway is None else _offset(parsed, gateway, "gateway")
    if not usable_first <= gateway_offset <= usable_last:
        raise InvalidNetwork(f"the gateway cannot be the network or broadcast address of {parsed}")
    first = _offset(parsed, pool_start, "pool start") if pool_start else gateway_offset + 1
    last = _offset(parsed, pool_end, "pool end") if pool_end else usable_last
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
    return ReservedRange.objects.create(subnet=subnet, first=low, last=high, reason=reason[:200])


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


def _taken(subnet: Subnet, low: int, high: int) -> set[int]:
    taken = set(subnet.allocations.filter(offset__gte=low, offset__lte=high).values_list("offset", flat=True))
    for first, last in subnet.reserved.filter(first__lte=high, last__gte=low).values_list("first", "last"):
        taken.update(range(max(first, low), min(last, high) + 1))
    gateway = int(ipaddress.ip_address(subnet.gateway)) - int(subnet.ip_network.network_address)
    taken.add(gateway)
    return taken


def _next_free(subnet: Subnet) -> int:
    """The first free offset from the cursor to the end of the pool, then from its start."""
    for start, stop in ((subnet.cursor, subnet.pool_last), (subnet.pool_first, subnet.cursor - 1)):
        low = max(start, subnet.pool_first)
        while low <= stop:
            high = min(low + WINDOW - 1, stop)
            taken = _taken(subnet, low, high)
            for offset in range(low, high + 1):
                if offset not in taken:
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
            if offset in _taken(locked, offset, offset):
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
