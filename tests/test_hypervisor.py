"""The driver layer: XML builders (pure, schema-valid) and the calls, on libvirt's test driver."""

import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from unittest import mock

import libvirt
import pytest

from hosts import hypervisor
from hosts.hypervisor import Accelerator, Backing, DomainSpec, PowerState, Technology
from hosts.hypervisor.domain_xml import domain_xml, raw_volume_xml, volume_xml
from hosts.hypervisor.network_xml import network_xml
from hosts.specs import DhcpHost, IPRange, NetworkSpec, Nic

TEST_URI = "test:///default"
# A container's own root filesystem and user namespace, which every LXC definition needs.
LXC_ROOT = {"root_dir": "/var/lib/cloudpanel/containers/cp-x", "idmap": hypervisor.IdMap(target=1048576)}


def spec(**fields) -> DomainSpec:
    values = {"name": f"cp-{uuid.uuid4()}", "uuid": str(uuid.uuid4()), "vcpus": 1, "memory_mib": 128}
    values.update(fields)
    return DomainSpec(**values)


@pytest.mark.parametrize(
    ("technology", "fields"),
    [
        (Technology.QEMU, {"kernel": "/boot/vmlinuz", "initrd": "/boot/initrd", "disk_path": "/var/d.qcow2"}),
        (Technology.QEMU, {"boot_disk": "/var/base.qcow2", "disk_path": "/var/d.qcow2"}),
        (Technology.XEN, {"kernel": "/boot/vmlinuz", "disk_path": "/var/d.qcow2"}),
        (Technology.XEN, {"boot_disk": "/var/base.img"}),
        (Technology.LXC, {"init": "/bin/sh", **LXC_ROOT}),
        (Technology.LXC, {"init": "/bin/sleep 'a b' 600", **LXC_ROOT}),
        (Technology.OPENVZ, {"init": "/sbin/init", "boot_disk": "debian-12-x86_64"}),
        (Technology.VBOX, {"boot_disk": "/var/base.vdi"}),
        (Technology.QEMU, {"disk_path": "/var/d.qcow2", "cdrom_path": "/var/install.iso", "boot_cdrom": True}),
        (Technology.QEMU, {"boot_disk": "/var/overlay.qcow2", "seed_path": "/var/seed.iso", "kernel": "/k"}),
        (Technology.TEST, {}),
        (Technology.TEST, {"boot_disk": "/var/o.qcow2", "cdrom_path": "/var/i.iso", "seed_path": "/var/s.iso"}),
        *[(t, {**f, "nics": (Nic("cp-net-1", "52:54:00:00:00:01"), Nic("cp-net-2", "52:54:00:00:00:02"))})
          for t, f in ((Technology.QEMU, {"kernel": "/k"}), (Technology.XEN, {"boot_disk": "/b"}),
                       (Technology.LXC, {"init": "/bin/sh", **LXC_ROOT}), (Technology.VBOX, {"boot_disk": "/b.vdi"}),
                       (Technology.TEST, {}))],
    ],
)
def test_every_builder_produces_schema_valid_xml(tmp_path, technology, fields):
    # Given a spec for the technology, when built, then libvirt's own schema accepts it.
    if not shutil.which("virt-xml-validate"):
        pytest.fail("virt-xml-validate (libvirt-clients) is required")
    xml = domain_xml(technology, spec(title="web <1>", **fields))
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    result = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + xml


@pytest.mark.parametrize(("fields", "drives"), [
    ({"kernel": "/k"}, []),  # a kernel boot: no drive it did not ask for
    ({"kernel": "/k", "cdrom_drive": True}, [("hdc", None)]),  # asked for: an empty one
    ({"disk_path": "/var/d.qcow2", "cdrom_path": "/var/i.iso", "boot_cdrom": True}, [("hdc", "/var/i.iso")]),
    ({"boot_disk": "/var/o.qcow2", "seed_path": "/var/s.iso", "kernel": "/k"}, [("hdd", "/var/s.iso")]),
])
def test_a_qemu_guest_has_a_cd_rom_drive_only_when_it_needs_or_asked_for_one(fields, drives):
    root = ET.fromstring(domain_xml(Technology.QEMU, spec(**fields)))
    found = [(disk.find("target").get("dev"), None if disk.find("source") is None else disk.find("source").get("file"))
             for disk in root.findall("./devices/disk[@device='cdrom']")]
    assert found == drives


@pytest.mark.parametrize("xml", [
    volume_xml("overlay", 10, backing=Backing("/var/lib/libvirt/images/base", "qcow2")),
    raw_volume_xml("image", 196616),
])
def test_volume_xml_is_schema_valid(tmp_path, xml):
    path = tmp_path / "volume.xml"
    path.write_text(xml)
    result = subprocess.run(["virt-xml-validate", str(path), "storagevol"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + xml


def test_metacharacters_are_escaped_not_interpreted():
    # Given a title and a cmdline full of XML metacharacters
    hostile = "x'/><devices><disk type='file'/></devices><name>evil"
    xml = domain_xml(Technology.QEMU, spec(title=hostile, kernel="/k", cmdline=hostile))
    root = ET.fromstring(xml)
    # Then they stay text: one name, no injected disk, the title round-trips
    assert len(root.findall("name")) == 1
    assert root.find("devices/disk[@device='disk']") is None and root.find("devices/disk/source") is None
    assert root.find("title").text == hostile
    assert root.find("os/cmdline").text == hostile


def test_accelerator_picks_the_domain_type():
    assert ET.fromstring(domain_xml(Technology.QEMU, spec(kernel="/k"), kvm_available=True)).get(
        "type") == "kvm"
    tcg = spec(kernel="/k", accelerator=Accelerator.TCG)
    assert ET.fromstring(domain_xml(Technology.QEMU, tcg, kvm_available=True)).get("type") == "qemu"
    assert ET.fromstring(domain_xml(Technology.QEMU, spec(kernel="/k"))).get("type") == "qemu"


@pytest.mark.parametrize("uri", ["not a uri", "foo:///system", "", "qemu"])
def test_bad_uris_are_refused_with_a_reason(uri):
    with pytest.raises(hypervisor.HypervisorError) as exc:
        hypervisor.technology_of(uri)
    assert "URI" in str(exc.value) or "driver" in str(exc.value)


def test_unreachable_host_raises_unavailable():
    with pytest.raises(hypervisor.HypervisorUnavailable) as exc:
        hypervisor.probe("qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    assert "cannot connect" in str(exc.value)


def test_probe_reports_capacity_and_pools():
    info = hypervisor.probe(TEST_URI)
    assert info.technology == Technology.TEST
    assert info.cpus > 0 and info.memory_mib > 0
    assert "default-pool" in [p.name for p in info.pools]


def test_lifecycle_round_trip_on_the_test_driver():
    # Given a defined domain with a disk volume
    s = spec()
    path = hypervisor.create_volume(TEST_URI, "default-pool", f"{s.name}.qcow2", 1)
    definition = spec(name=s.name, uuid=s.uuid, disk_path=path)
    # When driven through its lifecycle, then each step reports the state libvirt has
    for _ in range(2):  # the second: a redelivered create
        assert hypervisor.define(TEST_URI, definition, technology=Technology.TEST) == PowerState.RUNNING
    assert hypervisor.power_off(TEST_URI, s.uuid) == PowerState.STOPPED
    assert hypervisor.start(TEST_URI, s.uuid) == PowerState.RUNNING
    assert hypervisor.start(TEST_URI, s.uuid) == PowerState.RUNNING  # idempotent
    assert hypervisor.suspend(TEST_URI, s.uuid) == PowerState.PAUSED
    assert hypervisor.resume(TEST_URI, s.uuid) == PowerState.RUNNING
    assert {d.uuid: d.state for d in hypervisor.all_domains(TEST_URI)}[s.uuid] == PowerState.RUNNING
    assert hypervisor.power_off(TEST_URI, s.uuid) == PowerState.STOPPED
    hypervisor.undefine(TEST_URI, s.uuid)
    hypervisor.undefine(TEST_URI, s.uuid)  # idempotent
    hypervisor.delete_volume(TEST_URI, "default-pool", f"{s.name}.qcow2")
    with pytest.raises(hypervisor.DomainNotFound):
        hypervisor.state(TEST_URI, s.uuid)


def test_missing_pool_is_a_clear_error():
    with pytest.raises(hypervisor.HypervisorError, match="storage pool 'nope' does not exist"):
        hypervisor.create_volume(TEST_URI, "nope", "x.qcow2", 1)


def test_container_command_becomes_init_and_initargs():
    root = ET.fromstring(domain_xml(Technology.LXC, spec(init="/bin/sh -c 'echo hi; sleep 9'",
                                                                        **LXC_ROOT)))
    assert root.find("os/init").text == "/bin/sh"
    assert [a.text for a in root.findall("os/initarg")] == ["-c", "echo hi; sleep 9"]


V4 = IPRange(gateway="10.0.0.1", prefix=24, dhcp_start="10.0.0.2", dhcp_end="10.0.0.254",
             hosts=(DhcpHost(mac="52:54:00:12:34:56", address="10.0.0.7", name="web-1"),))
V6 = IPRange(gateway="fd00:1::1", prefix=64, dhcp_start="fd00:1::2", dhcp_end="fd00:1::ffff", family="ipv6",
             hosts=(DhcpHost(mac="52:54:00:12:34:56", address="fd00:1::7", name="web-1"),))


@pytest.mark.parametrize("spec", [
    NetworkSpec(name="cpnet-1", uuid=str(uuid.uuid4()), kind="nat", bridge="cpbr1", ranges=(V4, V6),
                domain="lan.example", dns_servers=("1.1.1.1",)),
    NetworkSpec(name="cpnet-2", uuid=str(uuid.uuid4()), kind="routed", bridge="cpbr2", ranges=(V4,)),
    NetworkSpec(name="cpnet-3", uuid=str(uuid.uuid4()), kind="isolated", bridge="cpbr3", ranges=(V4,)),
    NetworkSpec(name="cpnet-4", uuid=str(uuid.uuid4()), kind="bridge", bridge="br0"),
    NetworkSpec(name="cpnet-5", uuid=str(uuid.uuid4()), kind="vlan", bridge="br0", vlan_id=42),
])
def test_every_network_kind_produces_schema_valid_xml(tmp_path, spec):
    xml = network_xml(spec)
    path = tmp_path / "network.xml"
    path.write_text(xml)
    result = subprocess.run(["virt-xml-validate", str(path), "network"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + xml
    root = ET.fromstring(xml)
    if spec.kind in ("nat", "routed", "isolated"):
        assert root.find("ip/dhcp/host").attrib == {"mac": "52:54:00:12:34:56", "ip": "10.0.0.7", "name": "web-1"}
    else:
        assert root.find("ip") is None and root.find("bridge").get("name") == "br0"


def test_network_fields_stay_text():
    hostile = "x'/><forward mode='nat'/><name>evil"
    root = ET.fromstring(network_xml(NetworkSpec(name=hostile, uuid=str(uuid.uuid4()), kind="isolated",
                                                 bridge="cpbr9", domain=hostile)))
    assert root.find("forward") is None and len(root.findall("name")) == 1 and root.find("name").text == hostile


@pytest.mark.parametrize("uri", [TEST_URI, pytest.param("qemu:///system", marks=pytest.mark.qemu)])
def test_every_domain_is_read_in_one_call_asking_sizes_only_of_domains_new_to_the_caller(uri, monkeypatch):
    # Given three domains on the host, one running, two of them already known to the caller
    technology = hypervisor.technology_of(uri)
    specs = [spec(vcpus=index + 1, memory_mib=64 * (index + 1)) for index in range(3)]
    conn = hypervisor.connection(uri)
    made = [conn.defineXML(domain_xml(technology, s)) for s in specs]
    try:
        if technology == Technology.TEST:
            made[0].create()
        known = {s.uuid: (s.vcpus, s.memory_mib) for s in specs[:2]}
        infos = []
        real_info = libvirt.virDomain.info
        monkeypatch.setattr(libvirt.virDomain, "info", lambda dom: infos.append(dom.UUIDString())
                            or real_info(dom))
        # When every domain is read
        read = {d.uuid: d for d in hypervisor.all_domains(uri, known)}
        # Then each has its name, state and size; the test driver, which reports no sizes with the states, is asked
        # the size of the new one alone; QEMU reports every size with the states
        for s in specs:
            assert (read[s.uuid].name, read[s.uuid].vcpus, read[s.uuid].memory_mib) == (s.name, s.vcpus,
                                                                                         s.memory_mib)
        assert read[specs[0].uuid].state == (PowerState.RUNNING if technology == Technology.TEST
                                             else PowerState.STOPPED)
        if technology == Technology.TEST:  # (the driver's own domain "test" is new to the caller too)
            assert [u for u in infos if u in {s.uuid for s in specs}] == [specs[2].uuid]
        else:
            assert infos == []
    finally:
        for dom in made:
            if dom.isActive():
                dom.destroy()
            dom.undefine()


@pytest.mark.qemu
def test_a_driver_without_the_bulk_call_is_read_one_domain_at_a_time():
    # Given a container defined on the real LXC driver, which has no getAllDomainStats
    s = spec(init="/bin/sh", vcpus=2, memory_mib=96, **LXC_ROOT)
    conn = hypervisor.connection("lxc:///")
    dom = conn.defineXML(domain_xml(Technology.LXC, s))
    try:
        with pytest.raises(libvirt.libvirtError, match="not supported"):
            conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE)
        # When every domain is read, then it is there, with its size and state
        read = {d.uuid: d for d in hypervisor.all_domains("lxc:///")}
        assert read[s.uuid] == hypervisor.DomainFacts(s.uuid, s.name, PowerState.STOPPED, 2, 96)
    finally:
        dom.undefine()


@pytest.mark.parametrize("uri", [TEST_URI, pytest.param("qemu:///system", marks=pytest.mark.qemu)])
def test_networks_are_provisioned_idempotently_and_dhcp_hosts_pinned_live(uri):
    # Given a NAT network spec (on the real libvirtd it gets a bridge and dnsmasq in the test namespace)
    name = f"cp-test-{uuid.uuid4().hex[:8]}"
    spec = NetworkSpec(name=name, uuid=str(uuid.uuid4()), kind="nat", bridge=f"cpbr{uuid.uuid4().hex[:6]}",
                       ranges=(IPRange(gateway="10.88.0.1", prefix=24, dhcp_start="10.88.0.2",
                                       dhcp_end="10.88.0.254"),))
    host = DhcpHost(mac="52:54:00:ab:cd:ef", address="10.88.0.9", name="web-1")
    conn = hypervisor.connection(uri)
    try:
        # When it is ensured twice and a host entry added twice, then moved, then removed twice
        for _ in range(2):
            hypervisor.ensure_network(uri, spec)
        assert conn.networkLookupByName(name).isActive()
        for _ in range(2):
            hypervisor.set_dhcp_host(uri, name, host)
        entries = ET.fromstring(conn.networkLookupByName(name).XMLDesc()).findall("ip/dhcp/host")
        assert [(e.get("mac"), e.get("ip")) for e in entries] == [(host.mac, "10.88.0.9")]
        moved = DhcpHost(mac=host.mac, address="10.88.0.10", name="web-1")
        hypervisor.set_dhcp_host(uri, name, moved)
        entries = ET.fromstring(conn.networkLookupByName(name).XMLDesc()).findall("ip/dhcp/host")
        assert [(e.get("mac"), e.get("ip")) for e in entries] == [(host.mac, "10.88.0.10")]
        for _ in range(2):
            hypervisor.set_dhcp_host(uri, name, moved, present=False)
        assert ET.fromstring(conn.networkLookupByName(name).XMLDesc()).findall("ip/dhcp/host") == []
    finally:
        hypervisor.remove_network(uri, name)
        hypervisor.remove_network(uri, name)  # gone already: done
    assert name not in conn.listNetworks() + conn.listDefinedNetworks()


@pytest.mark.parametrize(("code", "falls_back"), [(libvirt.VIR_ERR_OPERATION_INVALID, True),
                                                  (libvirt.VIR_ERR_INTERNAL_ERROR, False)])
def test_a_container_whose_init_libvirt_has_not_learnt_is_stopped_with_sigterm_all_the_same(monkeypatch, code,
                                                                                            falls_back):
    # Given an LXC container whose shutdown libvirt refuses ("Init process ID is not yet known")
    dom = mock.Mock()
    dom.isActive.return_value = True
    error = libvirt.libvirtError("refused")
    error.err = (code, 0, "Requested operation is not valid: Init process ID is not yet known", 2, "", None, None,
                 0, 0)
    dom.shutdownFlags.side_effect = error
    monkeypatch.setattr(hypervisor.connections, "domain", lambda uri, uuid: dom)
    # When it is shut down: its processes get SIGTERM through a graceful destroy (never a kill); another error stays
    if falls_back:
        hypervisor.shutdown("lxc:///", "u")
        dom.destroyFlags.assert_called_once_with(libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
    else:
        with pytest.raises(hypervisor.HypervisorError):
            hypervisor.shutdown("lxc:///", "u")
        dom.destroyFlags.assert_not_called()
    # (a virtual machine's refused ACPI shutdown is not turned into a destroy)
    dom.destroyFlags.reset_mock()
    with pytest.raises(hypervisor.HypervisorError):
        hypervisor.shutdown("qemu:///system", "u")
    dom.destroyFlags.assert_not_called()
