"""Networks on hosts, from the worker that drives the host.

A network is defined and started on a host when an instance there needs it, with a DHCP
host entry pinning each of those instances' MACs to the address CloudPanel allocated; it
is torn down from the host when no instance there uses it any more. A failure (say, a
host bridge that does not exist there) marks the network failed on that host only.
"""

from __future__ import annotations

from contextlib import suppress

from django.db import transaction

from hosts import hypervisor
from hosts.models import Host
from hosts.specs import DhcpHost, IPRange, NetworkSpec
from networks import firewall, security
from networks.choices import NetworkKind, ProvisionStatus
from networks.models import Allocation, Network, NetworkHost, Port

OWN_BRIDGE = (NetworkKind.NAT, NetworkKind.ROUTED, NetworkKind.ISOLATED)
DHCP_RANGE_MAX = 65534


def _pins(network: Network, host: Host) -> list[tuple[int, DhcpHost]]:
    """(IP version, entry) for every address of the network's ports held by instances on the host."""
    allocations = (Allocation.objects.filter(port__in=Port.objects.live(), port__network=network,
                                             port__instance__host=host)
                   .select_related("port__instance", "subnet"))
    return [(a.subnet.version, DhcpHost(mac=a.port.mac, address=a.address, name=a.port.instance.name))
            for a in allocations]


def spec_for(network: Network, host: Host) -> NetworkSpec:
    """What the host should run for the network."""
    if network.kind not in OWN_BRIDGE:
        return NetworkSpec(name=network.libvirt_name, uuid=_uuid(network), kind=network.kind, bridge=network.bridge,
                           vlan_id=network.vlan_id)
    pins = _pins(network, host)
    ranges = []
    for subnet in network.subnets.all():
        base = subnet.ip_network.network_address
        ranges.append(IPRange(
            gateway=subnet.gateway, prefix=subnet.ip_network.prefixlen,
            # libvirt refuses ranges of 65,535 addresses or more (an IPv6 /64 has far more)
            dhcp_start=str(base + subnet.pool_first),
            dhcp_end=str(base + min(subnet.pool_last, subnet.pool_first + DHCP_RANGE_MAX - 1)),
            hosts=tuple(pin for version, pin in pins if version == subnet.version),
            family="ipv4" if subnet.version == 4 else "ipv6",
        ))
    return NetworkSpec(name=network.libvirt_name, uuid=_uuid(network), kind=network.kind, bridge=network.own_bridge,
                       ranges=tuple(ranges), domain=network.domain,
                       dns_servers=tuple(s for s in network.dns_servers.split(",") if s))


def _uuid(network: Network) -> str:
    """Stable per network, so that every host defines the same one."""
    return f"00000000-0000-4000-8000-{network.pk:012x}"


def _lock(network: Network, host: Host) -> NetworkHost:
    """The network's row on the host, locked until the transaction ends: workers that start and tear down
    the same network on the same host take turns (a teardown never races a start)."""
    NetworkHost.objects.get_or_create(network=network, host=host)
    return NetworkHost.objects.select_for_update().get(network=network, host=host)


def ensure_on_host(*, network: Network, host: Host) -> str:
    """Define and start the network on the host (idempotent) with its DHCP pins; returns its libvirt name."""
    spec = spec_for(network, host)
    error = None
    with transaction.atomic():
        row = _lock(network, host)
        try:
            defined = hypervisor.ensure_network(host.uri, spec)
            if not defined:  # a network the host already had gets the pins it lacks, live
                pinned = hypervisor.dhcp_hosts(host.uri, spec.name)
                for part in spec.ranges:
                    for pin in part.hosts:
                        if part.family == "ipv4" and (pin.mac, pin.address) not in pinned:
                            hypervisor.set_dhcp_host(host.uri, spec.name, pin)
        except hypervisor.HypervisorError as exc:
            error = exc
        row.status, row.error = (ProvisionStatus.FAILED, str(error)[:2000]) if error else (ProvisionStatus.ACTIVE, "")
        row.save(update_fields=["status", "error", "updated_at"])
    if error is not None:
        raise hypervisor.HypervisorError(f"network {network.name} could not be started on {host.name}: {error}")
    return spec.name


def _unplug(ports: list[Port], host: Host) -> None:
    """The NICs' addresses unpinned on the host, and their filters gone from it."""
    for port in ports:
        for allocation in port.addresses.filter(subnet__version=4):
            name = port.network.libvirt_name
            with suppress(hypervisor.HypervisorError):  # not on the host (any more): nothing to unpin
                hypervisor.set_dhcp_host(host.uri, name, DhcpHost(mac=port.mac, address=allocation.address),
                                         present=False)
        firewall.remove(port, host)


def _tear_down_unused(networks: list[Network], host: Host, *, leaving: int | None = None) -> None:
    """Each network leaves the host once no instance there (but `leaving`, on its way out) has a NIC on it."""
    for network in networks:
        with transaction.atomic():
            row = _lock(network, host)
            users = Port.objects.live().filter(network=network, instance__host=host)
            # (and those of instances on their way to the host: a migration brought the network up for them)
            arriving = Port.objects.live().filter(network=network, instance__actions__operation="migrate",
                                                  instance__actions__status__in=("pending", "running"),
                                                  instance__actions__target_host=host)
            if leaving is not None:
                users, arriving = users.exclude(instance_id=leaving), arriving.exclude(instance_id=leaving)
            if not users.exists() and not arriving.exists():
                hypervisor.remove_network(host.uri, network.libvirt_name)
                row.delete()


def release_ports(*, ports: list[Port], host: Host) -> None:
    """The instance's NICs go: unpin their addresses, free them, and tear the networks down where unused."""
    networks = {port.network_id: port.network for port in ports}
    groups: set[int] = set()
    _unplug(ports, host)
    for port in ports:
        groups.update(port.security_groups.values_list("pk", flat=True))
        port.delete()
    security.members_changed(groups)
    _tear_down_unused(list(networks.values()), host)


def bring_ports(*, ports: list[Port], host: Host) -> None:
    """Before an instance moves to the host: its NICs' networks started there, their addresses pinned and their
    filters defined (the NICs keep their MACs, addresses and filters' names)."""
    for port in ports:
        name = ensure_on_host(network=port.network, host=host)
        for allocation in port.addresses.filter(subnet__version=4):
            if port.network.kind in OWN_BRIDGE:
                try:
                    hypervisor.set_dhcp_host(host.uri, name, DhcpHost(mac=port.mac, address=allocation.address,
                                                                      name=port.instance.name))
                except hypervisor.HypervisorError as exc:
                    raise hypervisor.HypervisorError(f"the address {allocation.address} could not be pinned on "
                                                     f"{host.name}: {exc}") from None
        firewall.prepare(port, host)


def nic_records(ports: list[Port]) -> list[dict]:
    """What the NICs hold on a host, written down (their network, MAC, IPv4 addresses and filter), so that a host
    can be cleaned of them later whatever becomes of the NICs meanwhile (forget_nics)."""
    return [{"network": port.network_id, "mac": port.mac, "filter": port.filter_name,
             "addresses": [a.address for a in port.addresses.filter(subnet__version=4)]} for port in ports]


def forget_nics(*, records: list[dict], host: Host, instance_id: int) -> None:
    """The NICs written down by nic_records are gone from the host: their pins and filters, and the networks no
    other instance there uses."""
    networks = {network.pk: network for network in Network.objects.filter(pk__in={r["network"] for r in records})}
    for record in records:
        network = networks.get(record["network"])
        for address in record["addresses"] if network is not None else ():
            with suppress(hypervisor.HypervisorError):  # not on the host (any more): nothing to unpin
                hypervisor.set_dhcp_host(host.uri, network.libvirt_name, DhcpHost(mac=record["mac"], address=address),
                                         present=False)
        hypervisor.remove_filter(host.uri, record["filter"])
    _tear_down_unused(list(networks.values()), host, leaving=instance_id)


def leave_host(*, ports: list[Port], host: Host, instance_id: int) -> None:
    """After the instance moved away from the host: its NICs unpinned and unfiltered there, and the networks no
    other instance there uses torn down."""
    _unplug(ports, host)
    _tear_down_unused(list({port.network_id: port.network for port in ports}.values()), host, leaving=instance_id)
