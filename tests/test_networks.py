"""Networks through the API on libvirt's test driver: creation, NICs with their addresses, deletion rules."""

import pytest

from hosts import hypervisor
from instances import services
from instances.models import Instance, InstanceAction
from networks import services as network_services
from networks.models import NetworkHost
from tests.conftest import token_client
from tests.factories import make_boot_kernel, make_host, make_instance, make_tenant, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_instances_get_nics_with_their_addresses_and_a_network_in_use_stays(member_api, host):
    created = member_api.post("/api/v1/networks/", {"name": "lan", "cidr": "10.30.0.0/24",
                                                    "ipv6_cidr": "fd00:30::/64", "dns_servers": "1.1.1.1"},
                              format="json")
    assert created.status_code == 201, created.content
    network = created.json()
    assert [s["cidr"] for s in network["subnets"]] == ["10.30.0.0/24", "fd00:30::/64"]
    body = {"name": "web", "vcpus": 1, "memory_mib": 64, "boot_kernel": make_boot_kernel(host).pk,
            "networks": [{"network": network["id"], "address": "10.30.0.40"}, {"network": network["id"]}]}
    response = member_api.post("/api/v1/instances/", body, format="json")
    assert response.status_code == 202, response.content
    instance = member_api.get(f"/api/v1/instances/{response.json()['instance']}/").json()
    assert instance["status"] == "running", instance["status_reason"]
    assert [n["addresses"] for n in instance["nics"]] == [["10.30.0.40", "fd00:30::2"], ["10.30.0.2", "fd00:30::3"]]
    assert all(n["mac"].startswith("52:54:00:") for n in instance["nics"])
    assert member_api.get(f"/api/v1/networks/{network['id']}/").json()["on_hosts"][0]["status"] == "active"
    # A second instance joining the network already on the host has its address pinned there, live
    joined = member_api.post("/api/v1/instances/", {**body, "name": "web-b", "networks": [
        {"network": network["id"], "address": "10.30.0.41"}]}, format="json")
    assert joined.status_code == 202, joined.content
    joined_nic = member_api.get(f"/api/v1/instances/{joined.json()['instance']}/").json()["nics"][0]
    pins = hypervisor.dhcp_hosts(host.uri, f"cp-net-{network['id']}")
    assert (joined_nic["mac"], "10.30.0.41") in pins and len(pins) == 3
    assert member_api.delete(f"/api/v1/instances/{joined.json()['instance']}/").status_code == 202
    # The same address again is a conflict; one outside the subnet is refused; nothing is kept
    taken = member_api.post("/api/v1/instances/", {**body, "name": "web2", "networks": [
        {"network": network["id"], "address": "10.30.0.40"}]}, format="json")
    assert taken.status_code == 409 and "10.30.0.40 is already in use" in taken.json()["detail"]
    outside = member_api.post("/api/v1/instances/", {**body, "name": "web3", "networks": [
        {"network": network["id"], "address": "10.31.0.5"}]}, format="json")
    assert outside.status_code == 400 and "outside 10.30.0.0/24" in outside.json()["detail"]
    assert member_api.get("/api/v1/instances/?name=web").json()["count"] == 1
    # A network in use cannot go; once its instance is deleted it can
    refused = member_api.delete(f"/api/v1/networks/{network['id']}/")
    assert refused.status_code == 409 and "in use by web" in refused.json()["detail"]
    assert member_api.delete(f"/api/v1/instances/{instance['id']}/").status_code == 202
    assert member_api.get(f"/api/v1/networks/{network['id']}/").json()["on_hosts"] == []
    assert member_api.delete(f"/api/v1/networks/{network['id']}/").status_code == 204


@pytest.mark.parametrize(("body", "status", "reason"), [
    ({"kind": "vlan", "bridge": "br0", "vlan_id": 5000}, 400, "between 1 and 4094"),
    ({"cidr": "10.40.0.0/16"}, 409, "overlaps 10.40.0.0/24 of network first"),
    ({"cidr": "10.40.5.7/24"}, 400, "host bits"),
    ({"shared": True}, 403, "platform admins"),
])
def test_bad_networks_get_a_clear_refusal(member_api, body, status, reason):
    assert member_api.post("/api/v1/networks/", {"name": "first", "cidr": "10.40.0.0/24"},
                           format="json").status_code == 201
    response = member_api.post("/api/v1/networks/", {"name": "second", "cidr": "10.41.0.0/24", **body},
                               format="json")
    assert response.status_code == status and reason in str(response.json()), response.content


def test_another_tenants_network_is_not_there_and_shared_ones_are(member_api, admin_api, tenant, host):
    stranger = token_client(make_user(tenant=make_tenant()))
    theirs = stranger.post("/api/v1/networks/", {"name": "theirs", "cidr": "10.50.0.0/24"}, format="json").json()
    shared = admin_api.post("/api/v1/networks/", {"name": "public", "cidr": "10.60.0.0/24", "shared": True},
                            format="json").json()
    assert member_api.get(f"/api/v1/networks/{theirs['id']}/").status_code == 404
    names = {n["name"] for n in member_api.get("/api/v1/networks/").json()["results"]}
    assert names == {"public"}
    kernel = make_boot_kernel(host).pk
    refused = member_api.post("/api/v1/instances/", {"name": "x", "vcpus": 1, "memory_mib": 64, "boot_kernel": kernel,
                                                     "networks": [{"network": theirs["id"]}]}, format="json")
    assert refused.status_code == 404 and "No such network" in str(refused.json())
    on_shared = member_api.post("/api/v1/instances/", {"name": "y", "vcpus": 1, "memory_mib": 64,
                                                       "boot_kernel": kernel, "networks": [{"network": shared["id"]}]},
                                format="json")
    assert on_shared.status_code == 202, on_shared.content


def test_a_nic_that_cannot_be_plugged_in_gives_its_address_back(member_api, host):
    network = member_api.post("/api/v1/networks/", {"name": "lan", "cidr": "10.70.0.0/24"}, format="json").json()
    kernel = make_boot_kernel(host).pk
    created = member_api.post("/api/v1/instances/", {"name": "vm", "vcpus": 1, "memory_mib": 64,
                                                     "boot_kernel": kernel}, format="json").json()
    # libvirt's test driver cannot hot-plug devices: the operation fails with its reason
    answer = member_api.post(f"/api/v1/instances/{created['instance']}/attach-nic/",
                             {"network": network["id"], "address": "10.70.0.9"}, format="json")
    assert answer.status_code == 202, answer.content
    action = member_api.get(f"/api/v1/actions/{answer.json()['id']}/").json()
    assert action["status"] == "failed" and "not supported" in action["error"]
    # and the address is free again, the instance has no NIC
    assert member_api.get(f"/api/v1/instances/{created['instance']}/").json()["nics"] == []
    again = member_api.post("/api/v1/instances/", {"name": "vm2", "vcpus": 1, "memory_mib": 64,
                                                   "boot_kernel": kernel,
                                                   "networks": [{"network": network["id"], "address": "10.70.0.9"}]},
                            format="json")
    assert again.status_code == 202, again.content
    # Unplugging a NIC of another instance is refused without touching it
    other = member_api.post(f"/api/v1/instances/{created['instance']}/detach-nic/", {"port": 999999},
                            format="json")
    assert other.status_code == 404 and "No such NIC" in str(other.json())


def test_network_and_public_address_quotas(member_api, admin_api, tenant, host):
    from tenants.services import set_quota

    set_quota(tenant=tenant, limits={"networks": 1, "public_addresses": 1})
    assert member_api.post("/api/v1/networks/", {"name": "a", "cidr": "10.80.0.0/24"}, format="json").status_code == 201
    refused = member_api.post("/api/v1/networks/", {"name": "b", "cidr": "10.81.0.0/24"}, format="json")
    assert refused.status_code == 409 and "Networks: 1 of 1 in use" in refused.json()["detail"]
    shared = admin_api.post("/api/v1/networks/", {"name": "provider", "cidr": "10.82.0.0/24", "shared": True},
                            format="json").json()
    body = {"vcpus": 1, "memory_mib": 64, "boot_kernel": make_boot_kernel(host).pk,
            "networks": [{"network": shared["id"]}]}
    assert member_api.post("/api/v1/instances/", {"name": "one", **body}, format="json").status_code == 202
    refused = member_api.post("/api/v1/instances/", {"name": "two", **body}, format="json")
    assert refused.status_code == 409 and "Public addresses: 1 of 1 in use" in refused.json()["detail"]
    usage = member_api.get(f"/api/v1/tenants/{tenant.pk}/").json()["usage"]
    assert (usage["networks"], usage["public_addresses"]) == (1, 1)


def test_the_seed_tells_the_guest_dhcp_on_pinned_networks_and_static_addresses_on_bridged_ones(member, tenant,
                                                                                                host):
    from images import cloudinit
    from instances import services as instance_services
    from instances.models import Instance
    from instances.tasks import _nic_configs
    from networks.services import create_network

    nat = create_network(user=member, tenant=tenant, name="nat", kind="nat", cidr="10.90.0.0/24",
                         ipv6_cidr="fd00:90::/64")
    bridged = create_network(user=member, tenant=tenant, name="outside", kind="bridge", bridge="br0",
                             cidr="192.0.2.0/24", gateway="192.0.2.254", dns_servers="192.0.2.53")
    action = instance_services.create_instance(user=member, tenant=tenant, name="two-nics", vcpus=1, memory_mib=64,
                                               boot_kernel=make_boot_kernel(host),
                                               nics=[(nat, None), (bridged, "192.0.2.10")])
    ports = list(Instance.objects.get(pk=action.instance_id).ports.order_by("position"))
    config = cloudinit.network_config(_nic_configs(Instance.objects.get(pk=action.instance_id)))
    # IPv4 by the DHCP server that pins it, IPv6 as allocated (DHCPv6 cannot pin an address to a MAC)
    assert config["ethernets"]["eth0"] == {"match": {"macaddress": ports[0].mac}, "set-name": "eth0", "dhcp4": True,
                                           "addresses": ["fd00:90::2/64"]}
    assert config["ethernets"]["eth1"] == {
        "match": {"macaddress": ports[1].mac}, "set-name": "eth1", "addresses": ["192.0.2.10/24"],
        "routes": [{"to": "default", "via": "192.0.2.254"}], "nameservers": {"addresses": ["192.0.2.53"]}}
    assert cloudinit.network_config([]) == cloudinit.NETWORK_CONFIG


def test_a_network_stays_on_a_host_while_an_instance_migrates_to_it(member, tenant, host):
    # Given a network on the host, used by one instance there, and an instance of another host on its way to it
    network = network_services.create_network(user=None, tenant=tenant, name="lan", kind="nat", cidr="10.32.0.0/24")
    kernel = make_boot_kernel(host)
    here = services.create_instance(user=member, tenant=tenant, name="here", vcpus=1, memory_mib=64,
                                    boot_kernel=kernel, host=host, nics=[services.NicRequest(network, None, [])])
    elsewhere = make_host(uri="test:///elsewhere", name="elsewhere")
    coming = make_instance(tenant=tenant, host=elsewhere, name="coming", status="running")
    services.attach_nics(coming, [services.NicRequest(network, None, [])])
    InstanceAction.objects.create(instance=coming, operation="migrate", status="running", target_host=host)
    # When the one instance there is deleted
    services.request_operation(instance=Instance.objects.get(pk=here.instance_id), operation="delete", user=member)
    # Then the network stays on the host for the one arriving
    assert NetworkHost.objects.filter(network=network, host=host).exists()
    assert network.libvirt_name in hypervisor.connection(host.uri).listNetworks()
