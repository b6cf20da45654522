"""Placement as filters and weights: every host kept or dropped with the reason, the choice by the strategy, host
tags, and the decision stored and shown."""

import pytest

from hosts.choices import HostState
from hosts.exceptions import NoCapacity
from hosts.models import Host
from instances import groups, services
from instances.exceptions import InvalidInstance
from instances.models import Instance
from tests.conftest import token_client
from tests.factories import make_boot_kernel, make_host, make_tenant, make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fleet(db):
    """Test-driver hosts: two that fit (4 and 8 GiB), one disabled, one in maintenance, one offline; and an LXC."""
    return {  # (only the two that fit are ever reached: the others are dropped before)
        "small": make_host(name="small", memory_mib=4096, cpus=4),
        "big": make_host(uri="test+unix:///default", name="big", memory_mib=8192, cpus=8, tags="ssd"),
        "off": make_host(uri="test:///off", name="off", enabled=False),
        "serviced": make_host(uri="test:///serviced", name="serviced", maintenance=True),
        "gone": make_host(uri="test:///gone", name="gone", state=HostState.OFFLINE),
        "lxc": make_host(uri="lxc:///", name="containers"),
    }


def _kernel(fleet):
    return make_boot_kernel(fleet["small"], fleet["big"])


def _create(member, tenant, kernel, **fields):
    action = services.create_instance(user=member, tenant=tenant, name=fields.pop("name", "vm"), vcpus=1,
                                      memory_mib=fields.pop("memory_mib", 1024), boot_kernel=kernel, **fields)
    return Instance.objects.get(pk=action.instance_id)


def test_every_host_is_kept_or_dropped_with_the_reason_and_spread_takes_the_emptiest(fleet, member, tenant):
    kernel = _kernel(fleet)
    instance = _create(member, tenant, kernel)
    assert instance.host == fleet["big"]
    decision = instance.placement
    assert (decision["host"], decision["strategy"], decision["for"]) == ("big", "spread", "create")
    verdicts = {v["host"]: v for v in decision["hosts"]}
    assert set(verdicts) == {"small", "big", "off", "serviced", "gone", "containers"}
    assert verdicts["big"]["kept"] and verdicts["small"]["kept"]
    assert verdicts["big"]["score"] > verdicts["small"]["score"]  # most RAM left wins
    assert verdicts["off"]["reason"] == "host 'off' is disabled"
    assert verdicts["serviced"]["reason"] == "host 'serviced' is in maintenance"
    assert verdicts["gone"]["reason"] == "host 'gone' is offline"
    assert verdicts["containers"]["reason"] == "host 'containers' runs LXC, which cannot boot it"
    # best first: the kept ones by score, then the dropped
    assert [v["kept"] for v in decision["hosts"]] == [True, True, False, False, False, False]


def test_pack_fills_the_fullest_host_that_fits(fleet, member, tenant, settings):
    settings.CLOUDPANEL_PLACEMENT_STRATEGY = "pack"
    kernel = _kernel(fleet)
    first = _create(member, tenant, kernel, name="a", memory_mib=3072)
    second = _create(member, tenant, kernel, name="b", memory_mib=1024)
    third = _create(member, tenant, kernel, name="c", memory_mib=1024)
    assert (first.host, second.host) == (fleet["small"], fleet["small"])  # 4 GiB: the least left that fits
    assert third.host == fleet["big"]  # small is full now
    assert "has 0 MiB of RAM left" in {v["host"]: v for v in third.placement["hosts"]}["small"]["reason"]


def test_host_tags_are_required_of_the_host_and_refused_with_the_reason(fleet, member, tenant, admin_user):
    kernel = _kernel(fleet)
    assert _create(member, tenant, kernel, name="fast", host_tags=["SSD"]).host == fleet["big"]
    with pytest.raises(NoCapacity, match="host 'small' lacks the tag nvme"):
        _create(member, tenant, kernel, name="faster", host_tags=["nvme"])
    with pytest.raises(InvalidInstance, match="is not a tag"):
        _create(member, tenant, kernel, name="odd", host_tags=["no spaces; here"])
    api = token_client(member, tenant)
    answer = api.post("/api/v1/instances/", {"name": "x", "tenant": tenant.pk, "vcpus": 1, "memory_mib": 64,
                                             "boot_kernel": kernel.pk, "host_tags": ["gpu"]}, format="json")
    assert answer.status_code == 400 and "lacks the tag gpu" in answer.json()["detail"]
    # a platform admin tags hosts: through the API, checked
    admin = token_client(admin_user)
    small = fleet["small"]
    tagged = admin.patch(f"/api/v1/hosts/{small.pk}/", {"tags": "GPU, ssd"}, format="json")
    assert tagged.status_code == 200 and tagged.json()["tags"] == "gpu ssd"
    bad = admin.patch(f"/api/v1/hosts/{small.pk}/", {"tags": "gpu <b>"}, format="json")
    assert bad.status_code == 400 and "is not a tag" in bad.json()["detail"]
    assert Host.objects.get(pk=small.pk).tags == "gpu ssd"
    created = api.post("/api/v1/instances/", {"name": "y", "tenant": tenant.pk, "vcpus": 1, "memory_mib": 64,
                                              "boot_kernel": kernel.pk, "host_tags": ["gpu"]}, format="json")
    assert created.status_code == 202, created.content
    shown = api.get(f"/api/v1/instances/{created.json()['instance']}/").json()
    assert (shown["host_name"], shown["host_tags"]) == ("small", ["gpu"])


def test_the_decision_is_shown_to_platform_admins_on_the_instance_page(fleet, member, tenant, client):
    instance = _create(member, tenant, _kernel(fleet))
    admin = make_user(staff=True)
    client.force_login(admin)
    page = client.get(f"/instances/{instance.pk}/").content.decode()
    assert 'id="placement"' in page and "host &#x27;off&#x27; is disabled" in page and "chosen" in page
    client.force_login(member)
    assert 'id="placement"' not in client.get(f"/instances/{instance.pk}/").content.decode()


def test_server_groups_keep_instances_apart_or_together_and_say_which_group_refused(fleet, member, tenant):
    kernel = _kernel(fleet)
    apart = groups.create(tenant=tenant, name="web", policy="anti-affinity", user=member)
    first = _create(member, tenant, kernel, name="web-1", server_group=apart)
    second = _create(member, tenant, kernel, name="web-2", server_group=apart)
    assert {first.host, second.host} == {fleet["small"], fleet["big"]}  # (spread alone would put both on big)
    with pytest.raises(NoCapacity, match="runs 'web-1' of server group 'web', whose instances are kept apart"):
        _create(member, tenant, kernel, name="web-3", server_group=apart)
    together = groups.create(tenant=tenant, name="db", policy="affinity", user=member)
    primary = _create(member, tenant, kernel, name="db-1", server_group=together, host=fleet["small"])
    replica = _create(member, tenant, kernel, name="db-2", server_group=together)
    assert (primary.host, replica.host) == (fleet["small"], fleet["small"])  # (spread alone would pick big)
    verdicts = {v["host"]: v for v in replica.placement["hosts"]}
    assert verdicts["big"]["reason"] == "server group 'db' keeps its instances together, on another host"


def test_server_groups_through_the_api_are_the_tenants_own(fleet, member, tenant):
    kernel = _kernel(fleet)
    api = token_client(member, tenant)
    made = api.post("/api/v1/server-groups/", {"name": "web", "policy": "anti-affinity"}, format="json")
    assert made.status_code == 201, made.content
    assert api.post("/api/v1/server-groups/", {"name": "web", "policy": "affinity"},
                    format="json").status_code == 400  # (the name is taken)
    assert api.post("/api/v1/server-groups/", {"name": "x", "policy": "sideways"}, format="json").status_code == 400
    body = {"name": "a", "vcpus": 1, "memory_mib": 64, "boot_kernel": kernel.pk, "server_group": made.json()["id"]}
    created = api.post("/api/v1/instances/", body, format="json")
    assert created.status_code == 202, created.content
    shown = api.get(f"/api/v1/server-groups/{made.json()['id']}/").json()
    assert [(m["name"], m["host"]) for m in shown["members"]] == [("a", "big")]
    # another tenant's group is no such thing, and a group with members cannot go
    other = groups.create(tenant=make_tenant(), name="theirs", policy="affinity", user=None)
    assert api.post("/api/v1/instances/", {**body, "name": "b", "server_group": other.pk},
                    format="json").status_code == 404
    assert api.get(f"/api/v1/server-groups/{other.pk}/").status_code == 404
    refused = api.delete(f"/api/v1/server-groups/{made.json()['id']}/")
    assert refused.status_code == 409 and "still has instances: a" in refused.json()["detail"]


def test_bridged_networks_are_reached_by_the_hosts_with_their_tag_and_images_need_room_for_a_copy(fleet, member,
                                                                                               tenant):
    from images.models import ImageCopy
    from networks import services as network_services
    from networks.exceptions import InvalidNetwork
    from tests.factories import make_library_image

    kernel = _kernel(fleet)
    dmz = network_services.create_network(user=None, tenant=None, name="dmz", kind="bridge", bridge="br-dmz",
                                          cidr="192.0.2.0/24", host_tag="DMZ")
    assert dmz.host_tag == "dmz"
    with pytest.raises(InvalidNetwork, match="only bridged and VLAN networks"):
        network_services.create_network(user=None, tenant=tenant, name="x", kind="nat", cidr="10.90.0.0/24",
                                        host_tag="dmz")
    # only the small host has the bridge: the instance goes there, though spread would pick the big one
    Host.objects.filter(pk=fleet["small"].pk).update(tags="dmz")
    placed = _create(member, tenant, kernel, name="edge", nics=[services.NicRequest(dmz)])
    assert placed.host == fleet["small"]
    verdicts = {v["host"]: v for v in placed.placement["hosts"]}
    assert verdicts["big"]["reason"] == ("host 'big' does not reach network 'dmz' (the hosts that do carry the tag "
                                         "dmz)")
    # a NIC on it is not plugged into an instance on a host without the bridge
    other = _create(member, tenant, kernel, name="inside", host=fleet["big"])
    with pytest.raises(InvalidInstance, match="host 'big' does not reach network 'dmz'"):
        services.attach_nic(instance=other, network=dmz, address=None, user=member)
    # an image of 3 GiB: a host without a copy needs room for one beside the disk in its pool
    image = make_library_image(hosts=(fleet["big"],), virtual_size=1 << 30)
    image.size = 3 << 30
    image.save(update_fields=["size"])
    pool = [{"name": "default-pool", "capacity_bytes": 4 << 30, "available_bytes": 4 << 30}]
    Host.objects.filter(pk__in=[fleet["small"].pk, fleet["big"].pk]).update(pools=pool, memory_mib=8192)
    Host.objects.filter(pk=fleet["big"].pk).update(memory_mib=4096)  # (spread alone would pick the small one now)
    ImageCopy.objects.filter(image=image).update(status="available")
    booted = _create(member, tenant, None, name="imaged", boot_source="image", image=image, disk_gib=2)
    assert booted.host == fleet["big"]  # it holds a copy already
    verdicts = {v["host"]: v for v in booted.placement["hosts"]}
    assert verdicts["small"]["reason"] == (f"host 'small' has no copy of the image {image.name} and no room for one "
                                           "(3 GiB) beside the disk in its pool 'default-pool'")
