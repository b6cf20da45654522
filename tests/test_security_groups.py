"""Security groups: their rules through the API, the filters they become, who they reach, and refusals.

Enforcement on a real guest is in tests/test_qemu.py; libvirt's test driver has no network
filter driver, which a test here turns into a clear failure rather than an open NIC.
"""

import subprocess
import xml.etree.ElementTree as ET
from unittest import mock

import pytest

from hosts.hypervisor.filter_xml import port_filter_xml
from hosts.specs import FilterRule, PortFilter
from instances.choices import ActionStatus
from instances.models import InstanceAction
from networks import firewall, security
from networks.models import Port
from networks.services import allocate, create_network, create_port
from tests.factories import make_boot_kernel, make_host, make_instance, make_tenant

pytestmark = pytest.mark.django_db(transaction=True)


def rules_of(xml: str) -> list[tuple[str, str, str, dict]]:
    return [(r.get("action"), r.get("direction"), r[0].tag, dict(r[0].attrib))
            for r in ET.fromstring(xml).findall("rule")]


def test_a_port_filter_is_schema_valid_and_says_what_it_should(tmp_path):
    spec = PortFilter(name="cp-port-7", uuid="00000000-0000-4000-9000-000000000007", mac="52:54:00:00:00:07",
                      ipv4="10.0.0.7", ipv6="fd00::7", dhcp_server="10.0.0.1", rules=(
                          FilterRule("in", 4, "tcp", "10.0.0.0/24", 22, 22),
                          FilterRule("in", 4, "tcp", "0.0.0.0/0", 8000, 8080),
                          FilterRule("out", 6, "udp", "fd00:53::/64", 53),
                          FilterRule("in", 6, "icmp", "fd00::9/128"),
                          FilterRule("out", 4, "any")))
    xml = port_filter_xml(spec)
    path = tmp_path / "filter.xml"
    path.write_text(xml)
    result = subprocess.run(["virt-xml-validate", str(path), "nwfilter"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + xml
    rules = rules_of(xml)
    # Anti-spoofing: only its own MAC and addresses leave it (DHCP first, which runs before an address is held)
    assert ("drop", "out", "all", {"match": "no", "srcmacaddr": "52:54:00:00:00:07"}) in rules
    assert ("drop", "out", "all", {"match": "no", "srcipaddr": "10.0.0.7"}) in rules
    assert ("drop", "out", "all-ipv6", {"match": "no", "srcipaddr": "fd00::7"}) in rules
    # DHCP only as a client, to the network's server, from 0.0.0.0 or its own address; answers from the server
    assert ("drop", "out", "udp", {"srcportstart": "67"}) in rules
    assert ("accept", "out", "udp", {"srcipaddr": "0.0.0.0", "dstipaddr": "255.255.255.255", "srcportstart": "68",
                                     "dstportstart": "67"}) in rules
    assert ("accept", "out", "udp", {"srcipaddr": "10.0.0.7", "dstipaddr": "10.0.0.1", "srcportstart": "68",
                                     "dstportstart": "67"}) in rules
    assert ("accept", "in", "udp", {"srcipaddr": "10.0.0.1", "srcportstart": "67", "dstportstart": "68"}) in rules
    # IPv6 neighbour discovery: solicitations and advertisements out from its own or link-local address,
    # router advertisements in only (a guest is no router)
    assert ("accept", "out", "icmpv6", {"srcipaddr": "fe80::", "srcipmask": "10", "type": "135"}) in rules
    assert ("accept", "in", "icmpv6", {"type": "134"}) in rules
    assert not [r for r in rules if r[1] in ("out", "inout") and r[3].get("type") == "134"]
    # The groups' rules: the remote end is the source of what comes in, the destination of what goes out
    assert ("accept", "in", "tcp", {"srcipaddr": "10.0.0.0", "srcipmask": "24", "dstportstart": "22",
                                    "dstportend": "22"}) in rules
    assert ("accept", "in", "tcp", {"dstportstart": "8000", "dstportend": "8080"}) in rules  # anywhere
    assert ("accept", "out", "udp-ipv6", {"dstipaddr": "fd00:53::", "dstipmask": "64", "dstportstart": "53",
                                          "dstportend": "53"}) in rules
    assert ("accept", "in", "icmpv6", {"srcipaddr": "fd00::9", "srcipmask": "128"}) in rules
    assert ("accept", "out", "all", {}) in rules
    # And nothing else, in either family; priorities put every accept before the final drops
    assert rules[-2:] == [("drop", "inout", "all", {}), ("drop", "inout", "all-ipv6", {})]
    priorities = [int(r.get("priority")) for r in ET.fromstring(xml).findall("rule")]
    assert priorities == sorted(priorities)


def test_a_nic_without_an_address_sends_nothing_but_dhcp():
    rules = rules_of(port_filter_xml(PortFilter(name="f", uuid="00000000-0000-4000-9000-000000000001",
                                                mac="52:54:00:00:00:01")))
    assert ("drop", "out", "all", {}) in rules and ("drop", "out", "all-ipv6", {}) in rules


def test_a_new_group_lets_everything_out_and_nothing_in(member_api):
    group = member_api.post("/api/v1/security-groups/", {"name": "web", "description": "front"},
                            format="json").json()
    assert sorted((r["direction"], r["ethertype"], r["protocol"], r["remote_cidr"]) for r in group["rules"]) == [
        ("egress", "IPv4", "any", ""), ("egress", "IPv6", "any", "")]
    again = member_api.post("/api/v1/security-groups/", {"name": "web"}, format="json")
    assert again.status_code == 400 and "already exists" in again.json()["detail"]
    renamed = member_api.patch(f"/api/v1/security-groups/{group['id']}/", {"name": "front"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["description"] == "front"


@pytest.mark.parametrize(("rule", "reason"), [
    ({"protocol": "icmp", "port_min": 8}, "only TCP and UDP rules take a port range"),
    ({"protocol": "tcp", "port_min": 80, "port_max": 79}, "the first no higher than the last"),
    ({"protocol": "udp", "port_min": 70000}, "ports run from 1 to 65535"),
    ({"protocol": "tcp", "port_max": 80}, "give the first port"),
    ({"remote_cidr": "fd00::/64"}, "is an IPv6 range, but the rule is for IPv4"),
    ({"remote_cidr": "10.0.0.5/24"}, "host bits"),
    ({"remote_cidr": "nonsense"}, "not a network in CIDR form"),
    ({"remote_cidr": "10.0.0.0/8", "remote_group": "self"}, "not both"),
    ({"remote_group": "other"}, "No such security group"),
    ({"direction": "sideways"}, "not a valid choice"),
])
def test_bad_rules_are_refused_with_the_reason_and_nothing_is_kept(member_api, rule, reason):
    group = member_api.post("/api/v1/security-groups/", {"name": "g"}, format="json").json()
    other = security.create_group(user=None, tenant=make_tenant(), name="theirs")
    remote = {"self": group["id"], "other": other.pk}.get(rule.get("remote_group"))
    body = {"group": group["id"], "direction": "ingress", **rule, **({"remote_group": remote} if remote else {})}
    answer = member_api.post("/api/v1/security-group-rules/", body, format="json")
    # another tenant's group reads as no such group: 404, like a missing one
    assert answer.status_code == (404 if rule.get("remote_group") == "other" else 400), answer.content
    assert reason in answer.content.decode(), answer.content
    assert len(member_api.get(f"/api/v1/security-groups/{group['id']}/").json()["rules"]) == 2


def test_remote_groups_expand_into_their_members_addresses(tenant, host):
    network = create_network(user=None, tenant=tenant, name="lan", kind="nat", cidr="10.60.0.0/24",
                             ipv6_cidr="fd00:60::/64")
    web = security.create_group(user=None, tenant=tenant, name="web")
    db = security.create_group(user=None, tenant=tenant, name="db")
    security.add_rule(group=db, direction="ingress", protocol="tcp", port_min=5432, remote_group=web)
    security.add_rule(group=db, direction="ingress", ethertype="IPv6", protocol="tcp", port_min=5432,
                      remote_group=web)

    def nic(name: str, address: str, group) -> Port:
        port = create_port(network=network)
        port.instance = make_instance(tenant=tenant, host=host, name=name)
        port.save(update_fields=["instance"])
        for subnet in network.subnets.all():
            allocate(port=port, subnet=subnet, address=address if subnet.version == 4 else None)
        port.security_groups.add(group)
        return port

    database = nic("db-1", "10.60.0.20", db)
    nic("web-1", "10.60.0.10", web)
    nic("web-2", "10.60.0.11", web)
    rules = [r for r in firewall.spec_for(database).rules if r.port_min == 5432]
    assert sorted(r.remote for r in rules) == ["10.60.0.10/32", "10.60.0.11/32", "fd00:60::3/128",
                                               "fd00:60::4/128"]
    spec = firewall.spec_for(database)
    assert (spec.ipv4, spec.ipv6, spec.name) == ("10.60.0.20", "fd00:60::2", f"cp-port-{database.pk}")


def test_changes_mark_the_nics_they_touch_pending_and_queue_one_task_per_host(tenant, host):
    network = create_network(user=None, tenant=tenant, name="lan", kind="nat", cidr="10.61.0.0/24")
    web = security.create_group(user=None, tenant=tenant, name="web")
    db = security.create_group(user=None, tenant=tenant, name="db")
    security.add_rule(group=db, direction="ingress", protocol="tcp", port_min=5432, remote_group=web)
    second = make_host(name="second", uri="test:///default?second")
    ports = {}
    for name, on, group in (("db", host, db), ("web", second, web), ("loose", host, None)):
        port = create_port(network=network)
        port.instance = make_instance(tenant=tenant, host=on, name=name)
        port.save(update_fields=["instance"])
        if group:
            port.security_groups.add(group)
        ports[name] = port
    with mock.patch("networks.tasks.sync_filters.apply_async") as queued:
        # web gains a rule: its member's filter changes, and db's (whose rule names web) does not
        security.add_rule(group=web, direction="ingress", protocol="tcp", port_min=80)
        assert [c.args[0] for c in queued.call_args_list] == [([ports["web"].pk],)]
        assert queued.call_args.kwargs == {"headers": {"cloudpanel_host": second.pk}}  # for its host's worker
        queued.reset_mock()
        # the loose NIC joins web: itself, and db (web has a new member to let in), in one task for their host
        security.set_port_groups(port=ports["loose"], groups=[web])
        assert [c.args[0] for c in queued.call_args_list] == [([ports["db"].pk, ports["loose"].pk],)]
    assert set(Port.objects.filter(filter_status="pending").values_list("pk", flat=True)) == {
        p.pk for p in ports.values()}


def test_a_host_that_cannot_enforce_rules_fails_the_nic_instead_of_leaving_it_open(member_api, host):
    # libvirt's test driver has no network filter driver
    network = member_api.post("/api/v1/networks/", {"name": "lan", "cidr": "10.62.0.0/24"}, format="json").json()
    group = member_api.post("/api/v1/security-groups/", {"name": "web"}, format="json").json()
    kernel = make_boot_kernel(host).pk
    answer = member_api.post("/api/v1/instances/", {
        "name": "web", "vcpus": 1, "memory_mib": 64, "boot_kernel": kernel,
        "networks": [{"network": network["id"], "security_groups": [group["id"]]}]}, format="json")
    assert answer.status_code == 202, answer.content
    action = InstanceAction.objects.get(pk=answer.json()["id"])
    assert action.status == ActionStatus.FAILED and "cannot enforce firewall rules" in action.error
    nic = member_api.get(f"/api/v1/instances/{answer.json()['instance']}/").json()["nics"][0]
    assert nic["filter_status"] == "failed" and "network filter driver" in nic["filter_error"]
    # Without groups the same NIC is fine there
    plain = member_api.post("/api/v1/instances/", {
        "name": "plain", "vcpus": 1, "memory_mib": 64, "boot_kernel": kernel, "networks": [{"network": network["id"]}]},
        format="json")
    assert InstanceAction.objects.get(pk=plain.json()["id"]).status == ActionStatus.SUCCEEDED
    # Putting the running instance's NIC in a group reports the same on the NIC, and keeps the choice
    port = member_api.get(f"/api/v1/instances/{plain.json()['instance']}/").json()["nics"][0]
    changed = member_api.patch(f"/api/v1/ports/{port['id']}/", {"security_groups": [group["id"]]}, format="json")
    assert changed.status_code == 200 and changed.json()["filter_status"] == "failed"
    assert changed.json()["security_groups"] == [group["id"]]


def test_a_group_in_use_or_named_by_another_cannot_be_deleted(member_api, tenant, host):
    web = member_api.post("/api/v1/security-groups/", {"name": "web"}, format="json").json()
    db = member_api.post("/api/v1/security-groups/", {"name": "db"}, format="json").json()
    member_api.post("/api/v1/security-group-rules/", {"group": db["id"], "direction": "ingress",
                                                      "remote_group": web["id"]}, format="json")
    named = member_api.delete(f"/api/v1/security-groups/{web['id']}/")
    assert named.status_code == 409 and "the rules of db name web" in named.json()["detail"]
    network = create_network(user=None, tenant=tenant, name="lan", kind="nat", cidr="10.63.0.0/24")
    port = create_port(network=network)
    port.instance = make_instance(tenant=tenant, host=host, name="app")
    port.save(update_fields=["instance"])
    port.security_groups.add(db["id"])
    used = member_api.delete(f"/api/v1/security-groups/{db['id']}/")
    assert used.status_code == 409 and "in use by the NICs of app" in used.json()["detail"]
    port.security_groups.clear()
    assert member_api.delete(f"/api/v1/security-groups/{db['id']}/").status_code == 204
    assert member_api.delete(f"/api/v1/security-groups/{web['id']}/").status_code == 204


def test_reserved_ranges_are_never_handed_out(member_api, host):
    network = member_api.post("/api/v1/networks/", {"name": "lan", "cidr": "10.64.0.0/29"}, format="json").json()
    subnet = network["subnets"][0]["id"]
    reserved = member_api.post(f"/api/v1/subnets/{subnet}/reserved/", {"start": "10.64.0.2", "end": "10.64.0.5",
                                                                       "reason": "routers"}, format="json")
    assert reserved.status_code == 201 and reserved.json()["end"] == "10.64.0.5", reserved.content
    outside = member_api.post(f"/api/v1/subnets/{subnet}/reserved/", {"start": "10.65.0.1", "end": "10.65.0.2"},
                              format="json")
    assert outside.status_code == 400 and "outside 10.64.0.0/29" in outside.json()["detail"]
    body = {"name": "a", "vcpus": 1, "memory_mib": 64, "boot_kernel": make_boot_kernel(host).pk,
            "networks": [{"network": network["id"]}]}
    first = member_api.post("/api/v1/instances/", body, format="json").json()
    assert member_api.get(f"/api/v1/instances/{first['instance']}/").json()["nics"][0]["addresses"] == ["10.64.0.6"]
    asked = member_api.post("/api/v1/instances/", {**body, "name": "b", "networks": [
        {"network": network["id"], "address": "10.64.0.3"}]}, format="json")
    assert asked.status_code == 409 and "in use or reserved" in asked.json()["detail"]
    full = member_api.post("/api/v1/instances/", {**body, "name": "c"}, format="json")
    assert full.status_code == 409 and "no free address" in full.json()["detail"]
    listed = member_api.get(f"/api/v1/subnets/{subnet}/").json()
    assert listed["allocated"] == 1 and listed["reserved"][0]["reason"] == "routers"
    gone = member_api.delete(f"/api/v1/subnets/{subnet}/reserved/{reserved.json()['id']}/")
    assert gone.status_code == 204
    assert member_api.post("/api/v1/instances/", {**body, "name": "c"}, format="json").status_code == 202


def test_malformed_bodies_get_a_400_not_a_500(member_api, tenant, host):
    group = member_api.post("/api/v1/security-groups/", {"name": "g"}, format="json").json()
    assert member_api.patch(f"/api/v1/security-groups/{group['id']}/", ["name"], format="json").status_code == 400
    network = member_api.post("/api/v1/networks/", {"name": "lan", "cidr": "10.65.0.0/24",
                                                    "ipv6_cidr": "fd00:65::/64"}, format="json").json()
    answer = member_api.post("/api/v1/instances/", {
        "name": "x", "vcpus": 1, "memory_mib": 64, "boot_kernel": make_boot_kernel(host).pk,
        "networks": [{"network": network["id"], "security_groups": [10**20]}]}, format="json")
    assert answer.status_code == 400 and "security_groups" in answer.content.decode()
    v6 = next(s["id"] for s in network["subnets"] if s["version"] == 6)
    beyond = member_api.post(f"/api/v1/subnets/{v6}/reserved/", {"start": "fd00:65::10",
                                                                "end": "fd00:65::ffff:ffff:ffff:ffff"}, format="json")
    assert beyond.status_code == 400 and "usable addresses" in beyond.json()["detail"]
    # Filters take plain ids: another tenant's id answers like one that does not exist
    assert member_api.get("/api/v1/ports/?instance=999999").status_code == 200
    assert member_api.get("/api/v1/security-group-rules/?group=999999").json()["count"] == 0
