"""IP address management: subnets, pools, reserved ranges, MACs, and allocation under concurrency."""

import threading

import pytest
from django.db import close_old_connections

from networks import services
from networks.exceptions import AddressInUse, InvalidNetwork, NetworkOverlap, SubnetFull
from networks.models import Allocation, Network
from tests.factories import make_tenant


@pytest.fixture
def network(db):
    return Network.objects.create(name="lan", tenant=make_tenant())


def test_a_subnet_defaults_its_gateway_and_pool_and_hands_out_addresses_in_order(network):
    subnet = services.add_subnet(network=network, cidr="10.0.0.0/24")
    assert (subnet.gateway, subnet.pool_first, subnet.pool_last) == ("10.0.0.1", 2, 254)
    ports = [services.create_port(network=network) for _ in range(3)]
    addresses = [services.allocate(port=p, subnet=subnet).address for p in ports]
    assert addresses == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert all(p.mac.startswith("52:54:00:") and len(p.mac) == 17 for p in ports)


@pytest.mark.parametrize(("address", "error", "reason"), [
    ("10.0.0.0", InvalidNetwork, "network or broadcast"),
    ("10.0.0.255", InvalidNetwork, "network or broadcast"),
    ("10.0.1.5", InvalidNetwork, "outside 10.0.0.0/24"),
    ("10.0.0.1", AddressInUse, "in use or reserved"),  # the gateway
    ("10.0.0.20", AddressInUse, "in use or reserved"),  # reserved
    ("10.0.0.9", AddressInUse, "in use or reserved"),  # taken below
    ("not-an-ip", InvalidNetwork, "not an IP address"),
])
def test_a_chosen_address_must_be_free_and_inside(network, address, error, reason):
    subnet = services.add_subnet(network=network, cidr="10.0.0.0/24")
    services.reserve(subnet=subnet, first="10.0.0.20", last="10.0.0.29", reason="printers")
    services.allocate(port=services.create_port(network=network), subnet=subnet, address="10.0.0.9")
    with pytest.raises(error, match=reason):
        services.allocate(port=services.create_port(network=network), subnet=subnet, address=address)
    assert Allocation.objects.count() == 1


def test_reserved_ranges_are_skipped_released_addresses_return_and_a_full_pool_says_so(network):
    subnet = services.add_subnet(network=network, cidr="192.168.5.0/29", pool_start="192.168.5.2",
                                 pool_end="192.168.5.6")
    services.reserve(subnet=subnet, first="192.168.5.3", last="192.168.5.4")
    ports = [services.create_port(network=network) for _ in range(3)]
    got = [services.allocate(port=p, subnet=subnet).address for p in ports[:2]]
    assert got == ["192.168.5.2", "192.168.5.5"]
    services.allocate(port=ports[2], subnet=subnet)  # .6: the pool is now full
    with pytest.raises(SubnetFull):
        services.allocate(port=services.create_port(network=network), subnet=subnet)
    services.release(port=ports[0])
    again = services.allocate(port=services.create_port(network=network), subnet=subnet)
    assert again.address == "192.168.5.2"  # the cursor wrapped around to the freed address


def test_ipv6_and_bad_subnets(network):
    v6 = services.add_subnet(network=network, cidr="fd00:1::/64")
    port = services.create_port(network=network)
    assert services.allocate(port=port, subnet=v6).address == "fd00:1::2"
    for cidr, reason in (("10.0.0.5/24", "host bits"), ("10.0.0.0/31", "too small"), ("fd00:2::/64", "already")):
        with pytest.raises(InvalidNetwork, match=reason):
            services.add_subnet(network=network, cidr=cidr)
    with pytest.raises(InvalidNetwork, match="gateway"):
        services.add_subnet(network=Network.objects.create(name="x"), cidr="10.9.0.0/24", gateway="10.9.0.255")


def test_a_mac_is_unique_on_its_network(network):
    services.create_port(network=network, mac="52:54:00:aa:bb:cc")
    with pytest.raises(AddressInUse, match="52:54:00:aa:bb:cc"):
        services.create_port(network=network, mac="52:54:00:AA:BB:CC")
    other = Network.objects.create(name="other", tenant=network.tenant)
    assert services.create_port(network=other, mac="52:54:00:aa:bb:cc").mac == "52:54:00:aa:bb:cc"
    for bad in ("01:00:5e:00:00:01", "52:54:00:aa:bb", "zz:54:00:aa:bb:cc"):  # multicast, short, not hex
        with pytest.raises(InvalidNetwork, match="not a unicast MAC"):
            services.create_port(network=network, mac=bad)


@pytest.mark.django_db(transaction=True)
def test_concurrent_allocations_never_share_an_address():
    network = Network.objects.create(name="busy", tenant=make_tenant())
    subnet = services.add_subnet(network=network, cidr="10.20.0.0/16")
    ports = [services.create_port(network=network) for _ in range(8 * 25)]
    errors = []

    def client(mine):
        try:
            for port in mine:
                services.allocate(port=port, subnet=subnet)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=client, args=(ports[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    addresses = list(Allocation.objects.filter(subnet=subnet).values_list("address", flat=True))
    assert len(addresses) == len(set(addresses)) == 200


@pytest.mark.parametrize(("fields", "reason"), [
    ({"name": "bad name!"}, "the name must be"),
    ({"kind": "bridge"}, "needs the name of a host bridge"),
    ({"kind": "vlan", "bridge": "br0", "vlan_id": 4095}, "between 1 and 4094"),
    ({"kind": "vlan", "bridge": "br0", "vlan_id": 0}, "between 1 and 4094"),
    ({"kind": "vlan", "bridge": "br0"}, "between 1 and 4094"),
    ({"vlan_id": 10}, "only VLAN networks"),
    ({"bridge": "br0"}, "only bridged and VLAN"),
    ({"cidr": "fd00::/64"}, "main subnet is IPv4"),
    ({"ipv6_cidr": "10.1.0.0/24"}, "must be IPv6"),
    ({"dns_servers": "8.8.8.8, dns.example"}, "not an IP address"),
    ({"domain": "bad_domain!"}, "not a domain name"),
    ({"gateway": "10.50.1.1"}, "outside"),
])
def test_bad_networks_are_refused_with_the_reason(db, fields, reason):
    request = {"user": None, "tenant": make_tenant(), "name": "net", "kind": "nat", "cidr": "10.50.0.0/24", **fields}
    with pytest.raises(InvalidNetwork, match=reason):
        services.create_network(**request)
    assert not Network.objects.exists()


def test_overlaps_within_a_tenant_or_with_the_management_range_are_refused_by_name(db, settings):
    settings.CLOUDPANEL_MANAGEMENT_CIDRS = ["192.168.100.0/24"]
    acme, globex = make_tenant(), make_tenant()
    made = services.create_network(user=None, tenant=acme, name="web", kind="vlan", cidr="10.0.0.0/16",
                                   ipv6_cidr="fd00:1::/64", bridge="br0", vlan_id=42, dns_servers="1.1.1.1 9.9.9.9")
    assert made.dns_servers == "1.1.1.1,9.9.9.9" and made.subnets.count() == 2
    with pytest.raises(NetworkOverlap, match="10.0.5.0/24 overlaps 10.0.0.0/16 of network web"):
        services.create_network(user=None, tenant=acme, name="db", kind="nat", cidr="10.0.5.0/24")
    with pytest.raises(NetworkOverlap, match="fd00:1::/64 overlaps fd00:1::/64"):
        services.create_network(user=None, tenant=acme, name="v6", kind="nat", cidr="10.9.0.0/24",
                                ipv6_cidr="fd00:1::/64")
    with pytest.raises(NetworkOverlap, match="management range 192.168.100.0/24"):
        services.create_network(user=None, tenant=globex, name="m", kind="isolated", cidr="192.168.0.0/16")
    # Another tenant may use the same range; shared networks are checked among themselves
    services.create_network(user=None, tenant=globex, name="web", kind="nat", cidr="10.0.0.0/16")
    services.create_network(user=None, tenant=None, name="public", kind="routed", cidr="10.0.0.0/24")
    with pytest.raises(NetworkOverlap, match="of network public"):
        services.create_network(user=None, tenant=None, name="public2", kind="routed", cidr="10.0.0.128/25")
