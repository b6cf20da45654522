"""Every technology of the brief: what each host can run (its capabilities, as the probe reads them, drive placement
and the forms), each technology's definitions, an aarch64 guest booted under emulation, and the technologies page."""

import re
import shutil
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.db import transaction

from cloudpanel.asgi import application
from cloudpanel.exceptions import DomainError
from hosts import capabilities, guests, hypervisor, paths
from hosts import services as host_services
from hosts.choices import HostState, Technology
from hosts.hypervisor import DomainSpec
from hosts.hypervisor.domain_xml import domain_xml
from hosts.management.commands.technologies import markdown
from hosts.models import Host
from images import services as image_services
from images.exceptions import ImageNotReady
from images.management.commands.add_image import add_file
from instances import boot, definition, services
from instances.choices import BootSource, Status
from instances.exceptions import InvalidInstance
from instances.models import Instance
from tests.conftest import ARM_GUEST_DIR
from tests.factories import make_boot_kernel, make_host, make_instance, make_library_image, wait_for
from tests.test_qemu import HOST, ORIGIN, read_until

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
T = Technology


def spec(**fields) -> DomainSpec:
    return DomainSpec(**{"name": "cp-t", "uuid": str(uuid.uuid4()), "vcpus": 1, "memory_mib": 128, **fields})


def schema_valid(tmp_path: Path, xml: str) -> None:
    if not shutil.which("virt-xml-validate"):
        pytest.fail("virt-xml-validate (libvirt-clients) is required")
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    result = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + xml


# --- every driver: registered as its technology, or refused with the reason ---------------------------------------


@pytest.mark.parametrize(("uri", "technology", "why"), [
    ("esx://127.0.0.1:1/?no_verify=1", T.VMWARE, "libvirt's auth.conf"),  # (its credentials: none here)
    ("vpx://127.0.0.1:1/dc1/cluster1/esxi1?no_verify=1", T.VMWARE, "libvirt's auth.conf"),
    ("gsx://127.0.0.1:1/?no_verify=1", T.VMWARE, "libvirt's auth.conf"),
    ("hyperv://127.0.0.1:1/", T.HYPERV, "cannot connect"),
    ("bhyve:///system", T.BHYVE, "no connection driver available"),
    ("vz:///system", T.VZ, "no connection driver available"),
    ("parallels:///system", T.VZ, "cannot connect"),
    ("ch:///system", T.CH, "no connection driver available"),
])
def test_every_libvirt_driver_registers_as_its_technology_and_a_failed_probe_says_why(admin_api, uri, technology,
                                                                                      why):
    response = admin_api.post("/api/v1/hosts/", {"name": "far", "uri": uri}, format="json")
    assert response.status_code == 201, response.content
    host = Host.objects.get(pk=response.json()["id"])
    assert host.technology == technology
    assert host.state == HostState.OFFLINE and why in host.last_error, host.last_error


def test_esx_credentials_come_from_libvirts_auth_file_never_the_panel(admin_api, tmp_path, monkeypatch):
    # Given libvirt's credentials file naming the ESXi host's user and password
    auth = tmp_path / "auth.conf"
    auth.write_text("[credentials-esxi]\nusername=root\npassword=secret\n\n[auth-esx-127.0.0.1]\ncredentials=esxi\n")
    monkeypatch.setenv("LIBVIRT_AUTH_FILE", str(auth))
    # When the host is registered, then its driver got them and went on to connect (nothing listens here)
    response = admin_api.post("/api/v1/hosts/", {"name": "esxi", "uri": "esx://127.0.0.1:1/?no_verify=1"},
                              format="json")
    host = Host.objects.get(pk=response.json()["id"])
    assert "connect" in host.last_error.lower() and "auth.conf" not in host.last_error, host.last_error
    # And the panel stored no credentials of it
    assert "secret" not in str(response.json())


@pytest.mark.parametrize("uri", ["uml:///system", "uml:///session"])
def test_user_mode_linux_is_refused_with_the_reason(admin_api, uri):
    response = admin_api.post("/api/v1/hosts/", {"name": "uml", "uri": uri}, format="json")
    assert response.status_code == 400, response.content
    assert "removed its driver in 5.0.0" in response.json()["detail"]
    assert not Host.objects.exists()


# --- definitions each driver accepts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("technology", "fields"), [
    (T.VMWARE, {"boot_disk": "[datastore1] web/web.vmdk"}),
    (T.HYPERV, {"boot_disk": r"C:\VMs\web.vhdx"}),
    (T.BHYVE, {"boot_disk": "/vm/web.img", "disk_path": "/vm/data.img"}),
    (T.VZ, {"boot_disk": "/vz/vmprivate/web/harddisk.hdd"}),
    (T.CH, {"kernel": "/srv/ch/hypervisor-fw", "boot_disk": "/srv/ch/web.raw"}),
    (T.XEN, {"boot_disk": "/var/lib/libvirt/images/overlay.qcow2"}),
    (T.OPENVZ, {"init": "/sbin/init", "boot_disk": "centos-7-x86_64"}),
    (T.QEMU, {"arch": "aarch64", "kernel": "/k", "seed_path": "/s.iso", "cdrom_drive": True}),
    (T.QEMU, {"arch": "armv7l", "kernel": "/k"}),
    (T.QEMU, {"arch": "ppc64", "kernel": "/k", "cpu_mode": "custom", "cpu_model": "POWER9"}),
    (T.QEMU, {"arch": "ppc64le", "boot_disk": "/d.qcow2"}),
    (T.QEMU, {"arch": "riscv64", "kernel": "/k"}),
    (T.QEMU, {"arch": "mips64el", "kernel": "/k"}),
    (T.QEMU, {"arch": "sparc64", "boot_disk": "/d.qcow2"}),
    (T.QEMU, {"arch": "i686", "kernel": "/k", "machine": "q35", "cpu_mode": "host-model"}),
    (T.QEMU, {"kernel": "/k", "cpu_mode": "host-passthrough"}),
])
def test_each_technologys_definition_is_schema_valid(tmp_path, technology, fields):
    schema_valid(tmp_path, domain_xml(technology, spec(title="web <1>", **fields)))


def test_xen_disks_say_they_are_qcow2_like_every_disk_the_panel_makes():
    root = ET.fromstring(domain_xml(T.XEN, spec(kernel="/k", boot_disk="/o.qcow2", disk_path="/d.qcow2")))
    assert [d.attrib for d in root.findall("devices/disk/driver")] == [{"name": "qemu", "type": "qcow2"}] * 2


def test_an_emulated_arm_guest_gets_the_cpu_console_and_buses_it_needs():
    root = ET.fromstring(domain_xml(T.QEMU, spec(arch="aarch64", kernel="/k", seed_path="/s.iso")))
    assert root.find("os/type").attrib == {"arch": "aarch64", "machine": "virt"}
    assert (root.findtext("cpu/model"), root.findtext("os/cmdline")) == ("cortex-a57", "console=ttyAMA0")
    assert root.find("features/acpi") is None  # (ARM's ACPI needs UEFI firmware)
    assert root.find("devices/disk[@device='cdrom']/target").attrib == {"dev": "sdd", "bus": "scsi"}
    # Under KVM (an ARM host's own) it gets the host's CPU: the virt machine has no default CPU for KVM
    kvm = ET.fromstring(domain_xml(T.QEMU, spec(arch="aarch64", kernel="/k"), kvm_available=True))
    assert kvm.get("type") == "kvm" and kvm.find("cpu").attrib == {"mode": "host-passthrough"}


@pytest.mark.parametrize(("technology", "fields", "reason"), [
    (T.CH, {"boot_disk": "/d.raw"}, "needs a kernel or firmware"),
    (T.OPENVZ, {"init": "/sbin/init"}, "needs an OS template"),
    (T.QEMU, {"arch": "s390x", "kernel": "/k"}, "does not describe s390x guests"),
])
def test_a_definition_a_driver_would_refuse_is_never_built(technology, fields, reason):
    with pytest.raises(DomainError, match=reason):
        domain_xml(technology, spec(**fields))


# --- paths on hosts, in the form each technology names files ----------------------------------------------------------


@pytest.mark.parametrize(("style", "directory", "path", "inside"), [
    (paths.DATASTORE, "[datastore1] images", "[datastore1] images/web/web.vmdk", True),
    (paths.DATASTORE, "[datastore1] images", "[datastore1] images/../secret/x.vmdk", False),
    (paths.DATASTORE, "[datastore1] images", "[datastore2] images/web.vmdk", False),
    (paths.DATASTORE, "[datastore1] images", "[datastore1] /images/web.vmdk", False),
    (paths.WINDOWS, r"C:\VMs", r"C:\VMs\web\web.vhdx", True),
    (paths.WINDOWS, r"C:\VMs", r"c:\vms\web.vhdx", True),  # (Windows compares without case)
    (paths.WINDOWS, r"C:\VMs", r"C:\VMs\..\Windows\System32\config\SAM", False),
    (paths.WINDOWS, r"C:\VMs", r"C:\VMsOther\web.vhdx", False),
    (paths.WINDOWS, r"C:\VMs", "C:/VMs/web.vhdx", False),
    (paths.WINDOWS, r"C:\VMs\Disks", "C:\\VMs\\Dis\u212As\\x.vhdx", False),  # (a Kelvin sign lowercases to k)
    (paths.WINDOWS, r"C:\VMs", r"C:\VMs\NUL", False),  # (Windows' devices, wherever they are named)
    (paths.WINDOWS, r"C:\VMs", r"C:\VMs\com1.vhdx", False),
    (paths.WINDOWS, r"C:\VMs", r"C:\VMs\web.vhdx:hidden", False),  # (a stream)
    (paths.WINDOWS, r"C:\VMs", "C:\\VMs\\web. \\x.vhdx", False),  # (trailing dots and spaces are trimmed)
    (paths.DATASTORE, "[datastore1] images", "[datastore1] images/./web.vmdk", False),
    (paths.WINDOWS, r"C:\VMs", r"C:\VMs\nul .vhdx", False),  # (still NUL to Windows)
    (paths.DATASTORE, "[datastore1] images", "[datastore1 ] images/web.vmdk", False),
    (paths.POSIX, "/srv/disks", "/srv/disks/web.img", True),
    (paths.POSIX, "/srv/disks", "/srv/disks/../../etc/shadow", False),
])
def test_a_host_path_is_inside_an_allowed_directory_only_in_normal_form(style, directory, path, inside):
    normal = paths.normal(style, path)
    assert (normal == path and paths.under(style, normal, paths.normal(style, directory))) is inside


@pytest.mark.parametrize(("style", "directory"), [(paths.WINDOWS, "C:\\"), (paths.WINDOWS, r"C:\VMs\AUX"),
                                                 (paths.DATASTORE, "[datastore1] ."), (paths.DATASTORE, "[..] vms")])
def test_no_whole_drive_device_or_dot_directory_is_allowed(style, directory):
    assert paths.normal(style, directory) is None


def test_vmware_and_hyperv_hosts_take_their_own_allowed_directories(admin_api):
    esx = make_host(uri="esx://esxi1/", technology=T.VMWARE)
    hyperv = make_host(uri="hyperv://hv1/", technology=T.HYPERV)
    for host, good, bad in ((esx, "[datastore1] vms", "/vmfs/volumes"), (hyperv, r"C:\VMs", "C:\\")):
        response = admin_api.patch(f"/api/v1/hosts/{host.pk}/", {"allowed_paths": good}, format="json")
        assert response.status_code == 200 and response.json()["allowed_paths"] == good, response.content
        response = admin_api.patch(f"/api/v1/hosts/{host.pk}/", {"allowed_paths": bad}, format="json")
        assert response.status_code == 400, response.content
    esx.refresh_from_db()
    boot.check_host_paths(boot.Boot(source=BootSource.DISK, boot_disk="[datastore1] vms/web/web.vmdk"), esx)
    with pytest.raises(InvalidInstance, match="not under a directory"):
        boot.check_host_paths(boot.Boot(source=BootSource.DISK, boot_disk="[datastore2] vms/web.vmdk"), esx)


# --- technologies without what the panel usually uses ----------------------------------------------------------------


def test_an_openvz_instance_is_made_from_an_os_template_its_host_lists(admin_api):
    host = make_host(uri="openvz:///system", technology=T.OPENVZ)
    response = admin_api.patch(f"/api/v1/hosts/{host.pk}/", {"os_templates": "debian-12-x86_64\ncentos-7-x86_64"},
                               format="json")
    assert response.status_code == 200, response.content
    assert admin_api.patch(f"/api/v1/hosts/{host.pk}/", {"os_templates": "../../etc/shadow"},
                           format="json").status_code == 400
    host.refresh_from_db()
    assert host.template_list == ["debian-12-x86_64", "centos-7-x86_64"]
    boot.check_on_host(boot.Boot(source=BootSource.DISK, boot_disk="centos-7-x86_64"), host)
    with pytest.raises(InvalidInstance, match="it has: debian-12-x86_64, centos-7-x86_64"):
        boot.check_on_host(boot.Boot(source=BootSource.DISK, boot_disk="ubuntu-22.04-x86_64"), host)
    # (other technologies have no templates to list)
    qemu_like = make_host(uri="xen:///system", technology=T.XEN)
    assert admin_api.patch(f"/api/v1/hosts/{qemu_like.pk}/", {"os_templates": "x"}, format="json").status_code == 400


@pytest.mark.parametrize("uri", ["vbox:///session", "esx://esxi1/", "hyperv://hv1/"])
def test_a_host_whose_driver_has_no_volume_upload_takes_no_library_copies(tenant, uri):
    host = make_host(uri=uri, technology=hypervisor.technology_of(uri).value)
    with pytest.raises(ImageNotReady, match="take no library copies"):
        image_services.request_copy(image=make_library_image(), host=host)
    with pytest.raises(DomainError):  # (nothing of the library boots there)
        services.create_instance(user=None, tenant=tenant, name="lib", vcpus=1, memory_mib=64, host=host,
                                 boot_kernel=make_boot_kernel())
    assert not Instance.objects.exists()


def test_a_guest_without_a_serial_console_is_told_so_not_connected(member, tenant):
    host = make_host(uri="esx://esxi1/", technology=T.VMWARE)
    instance = make_instance(tenant=tenant, host=host, status=Status.RUNNING)

    @async_to_sync
    async def scenario():
        with mock.patch("hosts.hypervisor.Console") as console:
            viewer = WebsocketCommunicator(application, f"/ws/instances/{instance.pk}/console/",
                                           headers=[ORIGIN, HOST])
            viewer.scope["user"] = member
            return await viewer.connect(), console.called

    assert scenario() == ((False, 4409), False)


def test_a_host_whose_driver_sends_no_events_is_followed_by_the_reconcile_not_failed(monkeypatch):
    from hosts.listener import Listener

    # Given a VMware host (its driver has no domain events) and a test-driver host whose events fail as unsupported
    esx = make_host(uri="esx://esxi1/", technology=T.VMWARE)
    quiet = make_host(uri="test:///quiet")
    asked = []

    def unsupported(uri, _callback):
        asked.append(uri)
        raise hypervisor.EventsUnsupported(f"{uri}: its driver sends no domain events")

    monkeypatch.setattr(hypervisor, "watch_lifecycle", unsupported)
    # When the listener looks at them
    Listener(rescan_seconds=0.2)._watch_hosts([esx, quiet])
    # Then neither is marked failed: the VMware one is not even asked, the other is not asked again for a while
    assert asked == ["test:///quiet"]
    assert {h.state for h in Host.objects.all()} == {HostState.ONLINE}


def test_guests_of_a_probe_written_oddly_are_ignored_not_a_crash(tenant):
    host = make_host(uri="qemu+tcp://192.0.2.8/system", technology=T.QEMU, arch="x86_64",
                     guests=["junk", {"arch": 5}, {"os_type": "hvm", "arch": "x86_64", "domain_types": ["qemu"],
                                                    "machines": ["pc"]}])
    assert guests.offered_arches(host) == ["x86_64"]
    assert guests.refusal(host, guests.Guest()) is None
    assert "no emulator for aarch64" in guests.refusal(host, guests.Guest(arch="aarch64"))
    assert [row["arch"] for row in guests.table(host)] == ["x86_64", 5]


# --- the probe: what a driver lacks, and what a QEMU host offers --------------------------------------------------


def _unsupported(call: str):
    def fail(*_args, **_kwargs):
        error = hypervisor.connections.libvirt.libvirtError(f"{call} unsupported")
        error.err = (hypervisor.connections.libvirt.VIR_ERR_NO_SUPPORT, 0,
                     f"this function is not supported by the connection driver: {call}", 2, "", None, None, 0, 0)
        raise error
    return fail


def test_a_driver_missing_optional_calls_still_comes_online_and_says_what_is_missing(admin_api, admin_client):
    # Given a driver without storage pools, capabilities, host name or version (as VirtualBox, Hyper-V and OpenVZ
    # lack some of them)
    missing = {"listAllStoragePools": "virConnectListAllStoragePools", "getCapabilities": "virConnectGetCapabilities",
               "getHostname": "virConnectGetHostname", "getVersion": "virConnectGetVersion"}
    with mock.patch.multiple(hypervisor.connections.libvirt.virConnect,
                             **{name: _unsupported(call) for name, call in missing.items()}):
        response = admin_api.post("/api/v1/hosts/", {"name": "bare", "uri": "test:///default"}, format="json")
    # Then it comes online with what it has (its capacity), and says what was missing
    host = Host.objects.get(pk=response.json()["id"])
    assert host.state == HostState.ONLINE and host.cpus > 0 and host.memory_mib > 0, host.last_error
    assert [line.split(":")[0] for line in host.missing] == ["hypervisor version", "storage pools", "capabilities",
                                                             "host name"]
    assert host.pools == [] and host.guests == []
    page = admin_client.get(f"/hosts/{host.pk}/").content.decode()
    assert "Its driver could not tell" in page and "virConnectListAllStoragePools" in page
    # And a probe that has them all again clears the list
    host_services.request_probe(host=host)
    host.refresh_from_db()
    assert host.missing == [] and host.pools


def test_a_qemu_host_offers_the_architectures_it_has_emulators_for(qemu_host, admin_client):
    arches = guests.offered_arches(qemu_host)
    assert {"x86_64", "i686", "aarch64", "armv7l"} <= set(arches), arches
    aarch64 = qemu_host.domain_caps["aarch64/qemu"]
    assert "cortex-a57" in aarch64["cpu_models"] and "custom" in aarch64["cpu_modes"] and aarch64["max_vcpus"] > 1
    assert "virt" in next(g for g in qemu_host.guests if g["arch"] == "aarch64")["machines"]
    # The host page shows them; the technologies page lists the host under each
    page = admin_client.get(f"/hosts/{qemu_host.pk}/").content.decode()
    assert 'data-guest="aarch64/qemu"' in page and 'data-guest="x86_64/qemu"' in page
    page = admin_client.get("/hosts/technologies/").content.decode()
    row = re.search(r"<th scope=\"row\">aarch64.*?</tr>", page, re.S).group(0)
    assert qemu_host.name in row


# --- what an instance asks of its host, refused naming the host's options ----------------------------------------


@pytest.mark.parametrize(("fields", "status", "reason"), [
    ({"arch": "ppc64"}, 400, "has no emulator for ppc64 guests (it offers: aarch64, armv7l, i686, x86_64)"),
    ({"machine": "pc-q99"}, 400, "has no machine type pc-q99 for x86_64 guests (it has: "),
    ({"cpu_mode": "custom", "cpu_model": "cortex-a57"}, 400, "has no CPU model cortex-a57 for x86_64 guests under TCG"),
    ({"cpu_mode": "host-passthrough"}, 400, "offers no host-passthrough CPU to x86_64 guests under TCG (it offers: "),
    ({"arch": "aarch64", "machine": "pc"}, 400, "has no machine type pc for aarch64 guests"),
    ({"arch": "s390x"}, 400, "unknown architecture 's390x' (CloudPanel describes: x86_64, i686, aarch64"),
    ({"cpu_model": "qemu64"}, 400, "a CPU model goes with the custom CPU mode"),
    ({"cpu_mode": "custom"}, 400, "a custom CPU needs the name of its model"),
    ({"machine": "pc; reboot"}, 400, "is not a name"),
    ({"cpu_mode": "turbo"}, 400, "is not a valid choice"),
])
def test_a_guest_the_host_cannot_run_is_refused_naming_its_options(qemu_host, admin_api, tenant, fields, status,
                                                                   reason):
    body = {"name": "odd", "vcpus": 1, "memory_mib": 64, "tenant": tenant.pk, "host": qemu_host.pk,
            "kernel": "/srv/boot/vmlinuz", **fields}
    response = admin_api.post("/api/v1/instances/", body, format="json")
    assert response.status_code == status, response.content
    assert reason in str(response.json()), response.json()
    assert not Instance.objects.exists()


def test_a_hosts_default_cpu_is_for_guests_of_its_own_architecture_and_fixed_when_they_are_made(
        qemu_host, tenant, admin_api, admin_user):
    # Given a host whose own guests get a named model by default
    response = admin_api.patch(f"/api/v1/hosts/{qemu_host.pk}/", {"cpu_mode": "custom", "cpu_model": "qemu64"},
                               format="json")
    assert response.status_code == 200, response.content
    qemu_host.refresh_from_db()
    # Then an aarch64 guest is not held to it (its architecture's own CPU), an x86_64 one is
    assert guests.refusal(qemu_host, guests.Guest(arch="aarch64")) is None
    assert guests.cpu_of(qemu_host, guests.Guest(arch="aarch64")) == ("", "")
    assert guests.cpu_of(qemu_host, guests.Guest()) == ("custom", "qemu64")
    # And an instance made now keeps that CPU when the host's default changes later
    qemu_host.allowed_paths = "/srv/boot"
    qemu_host.save(update_fields=["allowed_paths"])
    action = services.create_instance(user=admin_user, tenant=tenant, name="cpu", vcpus=1, memory_mib=64,
                                      host=qemu_host, kernel="/srv/boot/vmlinuz", start=False)
    made = Instance.objects.get(pk=action.instance_id)
    assert (made.status, made.arch, made.cpu_mode, made.cpu_model) == (Status.STOPPED, "x86_64", "custom", "qemu64")
    assert admin_api.patch(f"/api/v1/hosts/{qemu_host.pk}/", {"cpu_mode": ""}, format="json").status_code == 200
    qemu_host.refresh_from_db()
    assert definition.guest_fields(made, qemu_host)["cpu_model"] == "qemu64"
    arm = Instance(tenant=tenant, name="a", vcpus=1, memory_mib=64, arch="aarch64")
    built = ET.fromstring(domain_xml(T.QEMU, spec(kernel="/k", **definition.guest_fields(arm, qemu_host))))
    assert built.findtext("cpu/model") == "cortex-a57"


def test_tenants_choose_migratable_cpus_only(qemu_host, member, tenant):
    with pytest.raises(InvalidInstance, match="platform admins choose it"):
        services.create_instance(user=member, tenant=tenant, name="pinned", vcpus=1, memory_mib=64,
                                 boot_kernel=make_boot_kernel(), cpu_mode="host-passthrough")


def test_an_images_architecture_is_its_instances(qemu_host, tenant):
    image = make_library_image()
    image.arch = "aarch64"
    image.save(update_fields=["arch"])
    with pytest.raises(InvalidInstance, match="runs aarch64 guests, not x86_64"):
        services.create_instance(user=None, tenant=tenant, name="img", vcpus=1, memory_mib=64, host=qemu_host,
                                 boot_source=BootSource.IMAGE, image=image, arch="x86_64")


def test_a_boot_kernel_is_for_the_architecture_its_header_says(panel, guest):
    kernel = add_file(Path(guest["kernel"]), name="x86 kernel", declared_format="kernel")
    for wrong in ("aarch64", "i686"):  # (a 64-bit bzImage: its xloadflags say so)
        with pytest.raises(DomainError, match=f"is for x86_64, not {wrong}"):
            image_services.create_boot_kernel(user=None, tenant=None, visibility="public", name="wrong",
                                              kernel=kernel, arch=wrong)
    made = image_services.create_boot_kernel(user=None, tenant=None, visibility="public", name="right",
                                             kernel=kernel)
    assert (made.arch, made.cmdline) == ("x86_64", "console=ttyS0")


def test_a_guest_gets_no_more_vcpus_than_the_host_gives_its_architecture(qemu_host):
    most = qemu_host.domain_caps["x86_64/qemu"]["max_vcpus"]
    qemu_host.cpus = 1024  # (room enough: only the guest's limit refuses)
    qemu_host.save(update_fields=["cpus"])
    with pytest.raises(DomainError, match=f"gives x86_64 guests at most {most} vCPUs"), transaction.atomic():
        host_services.placement(vcpus=most + 1, memory_mib=64, host=qemu_host, guest=guests.Guest())
    with transaction.atomic():
        assert host_services.placement(vcpus=most, memory_mib=64, host=qemu_host, guest=guests.Guest()).host
    assert guests.vcpu_refusal(qemu_host, "x86_64", most) is None


def test_unreadable_domain_capabilities_are_noted_not_a_failed_probe():
    with mock.patch.object(hypervisor.connections.libvirt.virConnect, "getDomainCapabilities",
                           lambda *_args: "<domainCapabilities><vcpu max='many'/>"):
        info = hypervisor.probe("qemu:///system")
    assert info.guests and not info.domain_caps
    assert any("domain capabilities of x86_64" in line and "unreadable" in line for line in info.missing)


def test_an_instance_from_before_architectures_is_its_hosts_and_moves_only_to_hosts_like_it(tenant):
    arm_lxc = make_host(uri="lxc+tcp://192.0.2.21/", technology=T.LXC, arch="aarch64")
    x86_lxc = make_host(uri="lxc+tcp://192.0.2.22/", technology=T.LXC, arch="x86_64")
    legacy = make_instance(tenant=tenant, host=arm_lxc, boot_source=BootSource.CONTAINER)
    assert legacy.arch == "" and definition.guest_of(legacy).arch == "aarch64"
    assert "of its own architecture only (x86_64)" in guests.refusal(x86_lxc, definition.guest_of(legacy))
    assert guests.refusal(arm_lxc, definition.guest_of(legacy)) is None


def test_a_rebuild_keeps_the_guests_architecture(tenant):
    from instances import rebuild

    host = make_host(uri="qemu+tcp://192.0.2.23/system", technology=T.QEMU, arch="x86_64")
    x86 = make_library_image()
    instance = make_instance(tenant=tenant, host=host, boot_source=BootSource.IMAGE, image=x86, arch="x86_64",
                             disk_gib=1)
    arm = make_library_image()
    arm.arch = "aarch64"
    arm.save(update_fields=["arch"])
    with pytest.raises(DomainError, match="is an x86_64 guest; .* is for aarch64 guests"):
        rebuild.rebuild(instance=instance, user=None, image=arm)


def test_the_api_says_what_the_online_hosts_offer_guests(qemu_host, member_api, admin_api):
    make_host(uri="qemu+tcp://192.0.2.24/system", technology=T.QEMU, state=HostState.OFFLINE, guests=[
        {"os_type": "hvm", "arch": "ppc64", "domain_types": ["qemu"], "machines": ["pseries"]}])
    offered = member_api.get("/api/v1/guests/").json()
    assert offered["architectures"] == guests.offered_arches(qemu_host)  # (not the offline host's ppc64)
    assert "virt" in offered["machines"] and "cortex-a57" in offered["cpu_models"]
    assert offered["cpu_modes"] == ["host-model", "custom"]  # (host-passthrough is platform admins')
    assert admin_api.get("/api/v1/guests/").json()["cpu_modes"] == ["host-passthrough", "host-model", "custom"]


def test_a_boot_kernels_architecture_is_its_instances(qemu_host, tenant):
    arm = make_boot_kernel()
    arm.arch = "aarch64"
    arm.save(update_fields=["arch"])
    with pytest.raises(InvalidInstance, match="runs aarch64 guests, not x86_64"):
        services.create_instance(user=None, tenant=tenant, name="mixed", vcpus=1, memory_mib=64, host=qemu_host,
                                 boot_kernel=arm, arch="x86_64")


def test_placement_takes_the_host_that_offers_the_guest_and_says_why_not_the_others(qemu_host):
    # Given another QEMU host with more room whose emulators are x86 only
    x86 = make_host(uri="qemu+tcp://192.0.2.7/system", technology=T.QEMU, accelerator="tcg", cpus=64,
                    memory_mib=1 << 20, arch="x86_64",
                    guests=[{"os_type": "hvm", "arch": "x86_64", "domain_types": ["qemu"], "machines": ["pc"]}])
    with transaction.atomic():
        decision = host_services.placement(vcpus=1, memory_mib=64, technologies=[T.QEMU],
                                           guest=guests.Guest(arch="aarch64"))
        default = host_services.placement(vcpus=1, memory_mib=64, technologies=[T.QEMU], guest=guests.Guest())
    assert decision.host == qemu_host
    dropped = next(v for v in decision.verdicts if v.host_id == x86.pk)
    assert not dropped.kept and "has no emulator for aarch64 guests (it offers: x86_64)" in dropped.reason
    assert default.host == x86  # (a default guest: the roomier host)


def test_a_named_cpu_is_defined_exactly_and_a_host_default_its_tcg_lacks_is_refused(qemu_host, admin_api, tenant):
    named = Instance(tenant=tenant, name="b", vcpus=1, memory_mib=64, kernel="/k", cpu_mode="custom",
                     cpu_model="qemu64")
    built = ET.fromstring(domain_xml(T.QEMU, spec(kernel="/k", **definition.guest_fields(named, qemu_host))))
    assert (built.find("cpu").get("mode"), built.findtext("cpu/model")) == ("custom", "qemu64")
    assert built.find("cpu/model").get("fallback") == "forbid"  # (a named model migrates as it is, or not)
    # A host default its TCG gives is taken; one it does not is refused, naming those it does; the host keeps its own
    assert admin_api.patch(f"/api/v1/hosts/{qemu_host.pk}/", {"cpu_mode": "host-model"},
                           format="json").status_code == 200
    response = admin_api.patch(f"/api/v1/hosts/{qemu_host.pk}/", {"cpu_mode": "host-passthrough"}, format="json")
    assert response.status_code == 400 and "it offers: " in response.json()["detail"], response.content
    qemu_host.refresh_from_db()
    assert qemu_host.cpu_mode == "host-model"


# --- an aarch64 guest, emulated, through the panel ------------------------------------------------------------------


@pytest.fixture
def arm_kernel(panel):
    """The tiny guest built for arm64 (scripts/build-test-guest.sh with GUEST_ARCH=arm64) as a library boot kernel."""
    kernel, initrd = ARM_GUEST_DIR / "vmlinuz", ARM_GUEST_DIR / "initrd.img"
    if not (kernel.exists() and initrd.exists()):
        pytest.fail(f"the arm64 test guest is missing in {ARM_GUEST_DIR}: run GUEST_ARCH=arm64 "
                    "scripts/build-test-guest.sh")
    return image_services.create_boot_kernel(
        user=None, tenant=None, visibility="public", name="tiny arm64 guest", arch="aarch64", cmdline="console=ttyAMA0",
        kernel=add_file(kernel, name="arm64 kernel", declared_format="kernel"),
        initrd=add_file(initrd, name="arm64 initrd", declared_format="initrd"))


@pytest.mark.qemu
def test_an_aarch64_guest_boots_to_a_shell_on_its_serial_console_through_the_panel(qemu_host, arm_kernel, member,
                                                                                   tenant):
    # When a tenant creates an instance from the arm64 boot kernel (it names no architecture)
    started = time.monotonic()
    action = services.create_instance(user=member, tenant=tenant, name="arm", vcpus=1, memory_mib=256,
                                      boot_kernel=arm_kernel)
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, instance.status_reason
    # Then it is an emulated aarch64 guest on the host that offers one
    assert (instance.host, instance.arch) == (qemu_host, "aarch64")
    live = ET.fromstring(hypervisor.connection(qemu_host.uri).lookupByUUIDString(str(instance.uuid)).XMLDesc())
    assert (live.get("type"), live.find("os/type").get("arch"), live.findtext("cpu/model")) == (
        "qemu", "aarch64", "cortex-a57")

    # And its serial console in the browser's socket reaches a shell that says it is aarch64
    @async_to_sync
    async def scenario():
        viewer = WebsocketCommunicator(application, f"/ws/instances/{instance.pk}/console/", headers=[ORIGIN, HOST])
        viewer.scope["user"] = member
        assert (await viewer.connect(timeout=10))[0]
        for attempt in range(12):  # (until its shell is up: it boots in a few seconds)
            await viewer.send_to(text_data="\n")
            try:
                await read_until(viewer, r"# ", timeout=10)
                break
            except AssertionError:
                if attempt == 11:
                    raise
        await viewer.send_to(text_data="echo arch=$(uname -m)\n")
        text = await read_until(viewer, r"arch=aarch64")
        await viewer.disconnect()
        return text

    assert "arch=aarch64" in scenario()
    assert time.monotonic() - started < 120
    services.request_operation(instance=instance, operation="delete", user=member)
    assert wait_for(lambda: Instance.objects.get(pk=instance.pk).status == Status.DELETED, timeout=30)


# --- the technologies page and the README: the capability table itself -------------------------------------------


def test_the_technologies_page_is_the_capability_table(admin_client, client, member):
    make_host(uri="esx://esxi1/", technology=T.VMWARE, name="esxi-1")
    page = admin_client.get("/hosts/technologies/").content.decode()
    for technology in Technology:
        row = re.search(rf'<tr data-technology="{technology.value}">(.*?)</tr>', page, re.S).group(1)
        shown = re.findall(r'data-feature="([^"]+)">(.*?)</td>', row, re.S)
        assert [(label, "yes" in cell) for label, cell in shown] == capabilities.features(technology)
    vmware = re.search(r'<tr data-technology="vmware">(.*?)</tr>', page, re.S).group(1)
    assert "esxi-1" in vmware and "esx://" in vmware and "vpx://" in vmware
    assert "removed its driver in 5.0.0" in page
    # (a platform admin's page)
    client.force_login(member)
    assert client.get("/hosts/technologies/").status_code == 302


def test_the_readmes_technology_table_is_the_capability_table():
    readme = (ROOT / "README.md").read_text()
    table = re.search(r"<!-- technologies -->\n(.*?)\n<!-- /technologies -->", readme, re.S)
    assert table is not None, "the README's technology table is missing its markers"
    assert table.group(1) == markdown(), "run `manage.py technologies` and paste its table into the README"
