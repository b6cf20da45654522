"""A real QEMU guest: create, running through events, console both ways for two viewers, shutdown."""

import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from contextlib import suppress
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from billing import costs, metering
from billing import services as billing_services
from billing.models import TenantBilling, UsageRecord
from cloudpanel.asgi import application
from hosts import hypervisor
from hosts import services as host_services
from hosts.choices import HostState
from images import cloudinit, rootfs
from images.management.commands.add_image import add_file
from images.models import Image, ImageCopy
from instances import boot, services
from instances.choices import ActionStatus, Status
from instances.lifecycle import allowed_operations
from instances.models import Instance, InstanceAction
from networks import services as network_services
from networks.models import Allocation, NetworkHost, Port
from notifications.models import Notification
from tenants.models import AuditEvent
from tests.conftest import CONTAINER_IMAGE
from tests.factories import wait_for
from tests.test_images import upload

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.qemu]

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")  # the address the socket was opened to, as a browser sends it
HOUR = timedelta(hours=1)


async def read_until(communicator, pattern, timeout=30.0):
    """Collect console text until the regex matches; returns everything read."""
    text = ""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, text):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {pattern!r} on the console; got: {text[-800:]!r}")
        try:
            message = await communicator.receive_output(timeout=remaining)
        except TimeoutError:
            continue
        if message["type"] == "websocket.close":
            raise AssertionError(f"console closed ({message.get('code')}) before {pattern!r}; got: {text[-800:]!r}")
        text += message.get("text", "")
    return text


def test_real_guest_end_to_end(qemu_host, member, tenant, guest_kernel, listener):
    # The tenant is billed from an hour ago: the guest's run is metered from its real state history
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    plan = billing_services.create_plan(name=f"qemu-{tenant.pk}", currency="EUR", effective_from=hour - HOUR,
                                        vcpu_hour="3.6", ram_gib_hour="0.36", disk_gib_month="1")
    billing_services.set_tenant_billing(tenant=tenant, plan=plan, billed_from=hour - HOUR)

    @async_to_sync
    async def scenario():
        status = WebsocketCommunicator(application, "/ws/status/", headers=[ORIGIN, HOST])
        status.scope["user"] = member
        assert (await status.connect())[0]
        # When the instance is created (the task runs on commit)
        action = await database_sync_to_async(services.create_instance)(
            user=member, tenant=tenant, name="tiny", vcpus=1, memory_mib=256, disk_gib=1,
            boot_kernel=guest_kernel, host=qemu_host,
        )
        # Then a pushed event says it runs
        while True:
            event = await status.receive_json_from(timeout=30)
            if event["id"] == action.instance_id and event["status"] == Status.RUNNING:
                break
        await status.disconnect()
        instance = await database_sync_to_async(Instance.objects.get)(pk=action.instance_id)
        assert hypervisor.state(qemu_host.uri, str(instance.uuid)) == hypervisor.PowerState.RUNNING

        # And two viewers share its serial console, both ways
        viewers = []
        for _ in range(2):
            viewer = WebsocketCommunicator(application, f"/ws/instances/{instance.pk}/console/", headers=[ORIGIN, HOST])
            viewer.scope["user"] = member
            assert (await viewer.connect(timeout=10))[0]
            viewers.append(viewer)
        await viewers[0].send_to(text_data="\n")
        await read_until(viewers[0], r"# ", timeout=60)
        await viewers[1].send_to(text_data="echo cp-$((6*7))\n")
        for viewer in viewers:
            await read_until(viewer, r"cp-42")
        for viewer in viewers:
            await viewer.disconnect()
        return instance

    instance = scenario()
    # Both console sessions are in the audit log, opened and closed
    sessions = AuditEvent.objects.filter(action="console.open", target_id=str(instance.pk), result="ok")
    assert sessions.count() == 2 and all(s.ended_at and s.user == member for s in sessions)
    # When shut down gracefully, the guest powers itself off (ACPI)
    action = services.request_operation(instance=instance, operation="shutdown", user=member)
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED, action.error
    assert Instance.objects.get(pk=instance.pk).status == Status.STOPPED
    # When its domain is undefined by hand, outside the panel, the host's event marks it missing, with only
    # delete offered
    hypervisor.connection(qemu_host.uri).lookupByUUIDString(str(instance.uuid)).undefine()
    assert wait_for(lambda: Instance.objects.get(pk=instance.pk).status == Status.MISSING, timeout=15)
    missing = Instance.objects.get(pk=instance.pk)
    assert "outside CloudPanel" in missing.status_reason and allowed_operations(missing.status, None) == ["delete"]
    # and the tenant is told, once, of that change it did not make (its own shutdown told nothing)
    told = Notification.objects.filter(tenant=tenant).values_list("kind", "title")
    assert list(told) == [("instance.changed", "tiny is missing on its host (was stopped)")]
    services.request_operation(instance=instance, operation="delete", user=member)
    assert Instance.objects.get(pk=instance.pk).status == Status.DELETED
    with pytest.raises(hypervisor.DomainNotFound):
        hypervisor.state(qemu_host.uri, str(instance.uuid))
    # Its run is in the ledger to the second, as the events recorded it: 1 vCPU and 256 MiB while it ran
    changes = list(instance.state_changes.order_by("at", "id").values_list("to_status", "at"))
    started = next(at for status, at in changes if status == Status.RUNNING)
    stopped = next(at for status, at in changes if at > started and status == Status.STOPPED)
    seconds = int((stopped.replace(microsecond=0) - started.replace(microsecond=0)).total_seconds())
    assert seconds > 0
    metering.meter(since=hour - HOUR, until=hour + 2 * HOUR)
    counted = dict(UsageRecord.objects.filter(resource_id=instance.pk).values_list("meter").annotate(Sum("units")))
    assert counted["vcpu"] == seconds and counted["ram"] == seconds * 256
    # and its month so far prices it: 3.6 per vCPU-hour is 0.001 a second, 0.36 per GiB-hour 0.000025 a second
    # for 256 MiB; the disk's minutes add under a cent, and each day is rounded to the cent
    month = costs.month_to_date(TenantBilling.objects.select_related("plan").get(tenant=tenant))
    assert abs(sum(cost for _, cost in month.per_day) - Decimal(seconds) * Decimal("0.001025")) <= Decimal("0.015")


@pytest.fixture
def lxc_host(transactional_db):
    host = host_services.register_host(name="local-lxc", uri="lxc:///", storage_pool="default")
    host.refresh_from_db()
    assert host.state == HostState.ONLINE, host.last_error
    yield host
    for instance in Instance.objects.filter(host=host):
        with suppress(hypervisor.HypervisorError):
            hypervisor.undefine(host.uri, str(instance.uuid))
        rootfs.remove_tree(Path(settings.CLOUDPANEL_CONTAINER_DIR) / instance.root_dir_name)
    for copy in ImageCopy.objects.filter(host=host):
        with suppress(hypervisor.HypervisorError):
            hypervisor.delete_volume(host.uri, copy.pool, copy.volume)


@pytest.fixture
def container_image(panel):
    """The busybox system container built by scripts/build-container-image.sh, a public image of the library."""
    if not CONTAINER_IMAGE.exists():
        pytest.fail(f"the container image is missing at {CONTAINER_IMAGE}: run scripts/build-container-image.sh")
    return add_file(CONTAINER_IMAGE, name="busybox", declared_format="tar")


@async_to_sync
async def console_session(instance, user, command, pattern, prompt=r"# "):
    """Type a command on the instance's console through the panel's websocket; the text up to the pattern."""
    viewer = WebsocketCommunicator(application, f"/ws/instances/{instance.pk}/console/", headers=[ORIGIN, HOST])
    viewer.scope["user"] = user
    assert (await viewer.connect(timeout=10))[0]
    if prompt:
        await viewer.send_to(text_data="\n")
        await read_until(viewer, prompt, timeout=30)
    await viewer.send_to(text_data=command + "\n")
    text = await read_until(viewer, pattern, timeout=30)
    await viewer.disconnect()
    return text


def test_a_system_container_runs_the_library_image_unprivileged_in_its_own_root(lxc_host, container_image,
                                                                                member, tenant):
    # When a member starts a system container from the library's container image
    action = services.create_instance(user=member, tenant=tenant, name="sys", vcpus=1, memory_mib=64,
                                      boot_source="container", image=container_image, host=lxc_host)
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, instance.status_reason
    # Then its definition maps container root to the tenant's unprivileged range and mounts its own tree at /
    owner = boot.container_owner(tenant.pk)
    domain = ET.fromstring(hypervisor.connection(lxc_host.uri).lookupByUUIDString(str(instance.uuid)).XMLDesc())
    assert {(m.tag, m.get("start"), m.get("target")) for m in domain.find("idmap")} == {
        ("uid", "0", str(owner)), ("gid", "0", str(owner))}
    [mount] = domain.findall("devices/filesystem")
    home = Path(settings.CLOUDPANEL_CONTAINER_DIR) / instance.root_dir_name
    root = home / "rootfs"
    assert (mount.find("source").get("dir"), mount.find("target").get("dir")) == (str(root), "/")
    # (its home is its root's alone: no other host user reaches into the tree)
    assert (home.stat().st_uid, home.stat().st_mode & 0o777) == (owner, 0o700)
    assert domain.find("os/init").text == "/sbin/init" and domain.find("features/privnet") is not None
    assert (domain.findtext("cputune/period"), domain.findtext("cputune/quota")) == ("100000", "100000")
    # And inside, busybox init gave a shell on the console: root there, yet without the host's /etc/shadow
    text = console_session(instance, member, "id -u; cat /etc/shadow; touch /proof; echo done-$((6*7))", r"done-42")
    assert re.search(r"^0\r?$", text, re.M), text
    assert "can't open '/etc/shadow': No such file" in text
    # And what container root writes is owned on the host by the mapped, unprivileged uid
    assert (root / "proof").stat().st_uid == owner and (root / "bin/busybox").stat().st_uid == owner
    # When it is shut down, its init is told (SIGTERM) and powers it off; deleted, its root filesystem goes too
    action = services.request_operation(instance=instance, operation="shutdown", user=member)
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED, action.error
    assert Instance.objects.get(pk=instance.pk).status == Status.STOPPED
    services.request_operation(instance=instance, operation="delete", user=member)
    assert Instance.objects.get(pk=instance.pk).status == Status.DELETED and not home.exists()


def test_an_application_container_runs_one_program_with_its_environment(lxc_host, container_image, member,
                                                                        member_api, tenant):
    # When an application container is asked for through the API, with a program of the image and its environment
    answer = member_api.post("/api/v1/instances/", {
        "name": "app", "vcpus": 1, "memory_mib": 64, "boot_source": "container", "image": container_image.pk,
        "init": "/bin/sh -c 'while :; do read line; echo \"$GREETING $line\"; done'",
        "env": {"GREETING": "hello-from"}}, format="json")
    assert answer.status_code == 202, answer.content
    instance = Instance.objects.get(pk=answer.json()["instance"])
    assert instance.status == Status.RUNNING, instance.status_reason
    # Then the program runs inside the container's root with that environment, reachable on its console
    text = console_session(instance, member, "console-$((6*7))", re.escape("hello-from console-$((6*7))"),
                           prompt=None)
    assert "hello-from console-$((6*7))" in text
    services.request_operation(instance=instance, operation="delete", user=member)
    assert not (Path(settings.CLOUDPANEL_CONTAINER_DIR) / instance.root_dir_name).exists()


def test_image_uploaded_copied_to_the_host_booted_as_an_overlay_reads_its_seed(
        qemu_host, panel, member, member_api, tenant, guest_kernel, tmp_path):
    # Given a real qcow2, made with qemu-img from a raw disk that starts with a marker
    raw = tmp_path / "base.raw"
    with open(raw, "wb") as out:
        out.write(b"CLOUDPANEL-BASE-MARKER\n")
        out.truncate(64 << 20)
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(base)], check=True)
    # When it is uploaded through the API (in chunks) and an instance boots from it on the real host
    image = upload(member_api, base, chunk=128 * 1024)
    assert image["status"] == "available", image["status_reason"]
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKx4cpseed test@cloudpanel"
    action = services.create_instance(
        user=member, tenant=tenant, name="seeded", vcpus=1, memory_mib=256, boot_source="image",
        image=Image.objects.get(pk=image["id"]), boot_kernel=guest_kernel, ssh_keys=key, host=qemu_host,
    )
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, instance.status_reason
    # Then the host holds a verified copy, and the instance's disk is a copy-on-write overlay of it
    copy = ImageCopy.objects.get(image_id=image["id"], host=qemu_host)
    assert copy.status == "available" and copy.verified_at is not None
    overlay = hypervisor.volume_path(qemu_host.uri, qemu_host.storage_pool, instance.volume_name)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", overlay], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["backing-filename"] == copy.path
    assert info["virtual-size"] == instance.disk_gib << 30 == 1 << 30

    # And the guest mounted its NoCloud seed, took the hostname it was given, and reads the base's bytes
    @async_to_sync
    async def console():
        viewer = WebsocketCommunicator(application, f"/ws/instances/{instance.pk}/console/", headers=[ORIGIN, HOST])
        viewer.scope["user"] = member
        assert (await viewer.connect(timeout=10))[0]
        await viewer.send_to(text_data="\n")
        await read_until(viewer, r"# ", timeout=60)
        await viewer.send_to(text_data="hostname; grep -c cpseed /mnt/seed/user-data; head -c 22 /dev/vda; echo\n")
        text = await read_until(viewer, r"CLOUDPANEL-BASE-MARKER")
        await viewer.disconnect()
        return text

    text = console()
    assert re.search(r"^seeded\r?$", text, re.M) and re.search(r"^1\r?$", text, re.M), text
    # And an ISO from the library goes into the guest's CD-ROM drive, and comes out again while it runs
    iso_file = tmp_path / "install.iso"
    iso_file.write_bytes(cloudinit.build_seed(meta="instance-id: x\n", user="#cloud-config\n"))
    iso = upload(member_api, iso_file)
    assert iso["disk_format"] == "iso", iso["status_reason"]
    drive = ".//devices/disk[@device='cdrom']/target[@dev='hdc']/../source"
    # (It was made without a CD-ROM drive: none while it runs; powered off, inserting one adds the drive)
    domain = hypervisor.connection(qemu_host.uri).lookupByUUIDString(str(instance.uuid))
    assert ET.fromstring(domain.XMLDesc()).find(drive.replace("/../source", "")) is None
    refused = member_api.post(f"/api/v1/instances/{instance.pk}/media/", {"image": iso["id"]}, format="json")
    assert refused.status_code == 409 and "no CD-ROM drive" in refused.json()["detail"]
    services.request_operation(instance=instance, operation="poweroff", user=member)
    for wanted, then in ((iso["id"], "start"), (None, None)):
        answer = member_api.post(f"/api/v1/instances/{instance.pk}/media/", {"image": wanted}, format="json")
        assert answer.status_code == 202, answer.content
        done = InstanceAction.objects.get(pk=answer.json()["id"])
        assert done.status == ActionStatus.SUCCEEDED, done.error
        if then:
            services.request_operation(instance=instance, operation=then, user=member)
        live = ET.fromstring(domain.XMLDesc())
        source = live.find(drive)
        if wanted:
            assert source is not None and source.get("file") == ImageCopy.objects.get(image_id=wanted).path
        else:  # live XML may keep an empty <source index=…/> for the ejected medium
            assert source is None or source.get("file") is None
        assert Instance.objects.get(pk=instance.pk).cdrom_id == wanted
    assert domain.isActive() and Instance.objects.get(pk=instance.pk).cdrom_drive
    # When the instance and then the image are deleted, the overlay, the seed and the host's copy go too
    services.request_operation(instance=instance, operation="delete", user=member)
    for volume in (instance.volume_name, instance.seed_volume_name):
        assert hypervisor.volume_path(qemu_host.uri, qemu_host.storage_pool, volume) is None
    assert member_api.delete(f"/api/v1/images/{image['id']}/").status_code == 204
    assert hypervisor.volume_path(qemu_host.uri, copy.pool, copy.volume) is None


def test_a_guest_gets_by_dhcp_the_address_cloudpanel_allocated(qemu_host, member, tenant, guest_kernel):
    # Given a NAT network of the tenant on the real libvirtd (inside its network namespace)
    network = network_services.create_network(user=member, tenant=tenant, name="lan", kind="nat",
                                              cidr="10.91.0.0/24")
    # When an instance boots with a NIC on it, at an address chosen for it
    action = services.create_instance(
        user=member, tenant=tenant, name="dhcp", vcpus=1, memory_mib=256, boot_kernel=guest_kernel,
        host=qemu_host, nics=[(network, "10.91.0.57")],
    )
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, instance.status_reason
    assert NetworkHost.objects.get(network=network, host=qemu_host).status == "active"

    # Then the guest's DHCP client is given exactly that address (read on its serial console)
    @async_to_sync
    async def console():
        viewer = WebsocketCommunicator(application, f"/ws/instances/{instance.pk}/console/", headers=[ORIGIN, HOST])
        viewer.scope["user"] = member
        assert (await viewer.connect(timeout=10))[0]
        await viewer.send_to(text_data="\n")
        await read_until(viewer, r"# ", timeout=60)
        await viewer.send_to(text_data="udhcpc -i eth0 -n -q -t 10 -s /etc/udhcpc.script >/dev/null 2>&1; "
                                       "ip -4 -o addr show eth0\n")
        text = await read_until(viewer, r"inet \d+\.\d+\.\d+\.\d+/\d+\s", timeout=60)
        await viewer.disconnect()
        return text

    assert "inet 10.91.0.57/24" in console()
    # When the instance goes, so do its address and, unused now, the network on the host
    services.request_operation(instance=instance, operation="delete", user=member)
    assert not NetworkHost.objects.filter(network=network).exists()
    assert network.libvirt_name not in hypervisor.connection(qemu_host.uri).listNetworks()
    assert not Allocation.objects.filter(subnet__network=network).exists()


def test_a_bridge_missing_on_the_host_fails_the_network_there_and_nothing_else(qemu_host, member, tenant,
                                                                                guest_kernel):
    network = network_services.create_network(user=member, tenant=tenant, name="outside", kind="bridge",
                                              cidr="10.92.0.0/24", bridge="nosuchbr0")
    action = services.create_instance(
        user=member, tenant=tenant, name="bridged", vcpus=1, memory_mib=256, boot_kernel=guest_kernel,
        host=qemu_host, nics=[(network, None)],
    )
    action.refresh_from_db()
    assert action.status == ActionStatus.FAILED and "no bridge 'nosuchbr0'" in action.error
    placed = NetworkHost.objects.get(network=network, host=qemu_host)
    assert placed.status == "failed" and "nosuchbr0" in placed.error
    assert network.libvirt_name not in hypervisor.connection(qemu_host.uri).listNetworks()


def test_a_nic_is_plugged_into_a_running_guest_and_unplugged_again(qemu_host, member, member_api, tenant,
                                                                    guest_kernel):
    network = network_services.create_network(user=member, tenant=tenant, name="late", kind="nat",
                                              cidr="10.93.0.0/24")
    action = services.create_instance(user=member, tenant=tenant, name="hotplug", vcpus=1, memory_mib=256,
                                      boot_kernel=guest_kernel, host=qemu_host)
    instance = Instance.objects.get(pk=action.instance_id)
    assert instance.status == Status.RUNNING, instance.status_reason

    @async_to_sync
    async def console(command, pattern):
        viewer = WebsocketCommunicator(application, f"/ws/instances/{instance.pk}/console/", headers=[ORIGIN, HOST])
        viewer.scope["user"] = member
        assert (await viewer.connect(timeout=10))[0]
        await viewer.send_to(text_data="\n")
        await read_until(viewer, r"# ", timeout=60)
        await viewer.send_to(text_data=command + "\n")
        text = await read_until(viewer, pattern, timeout=60)
        await viewer.disconnect()
        return text

    console("echo booted", r"booted\r?\n")  # the guest is up before anything is plugged in
    # When a NIC on the network is plugged in while it runs
    answer = member_api.post(f"/api/v1/instances/{instance.pk}/attach-nic/", {"network": network.pk,
                                                                             "address": "10.93.0.77"}, format="json")
    assert answer.status_code == 202, answer.content
    plugged = InstanceAction.objects.get(pk=answer.json()["id"])
    assert plugged.status == ActionStatus.SUCCEEDED, plugged.error
    # Then the guest sees it and DHCP gives it the address CloudPanel allocated
    text = console("for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 0.5; done; "
                   "ip link set eth0 up; udhcpc -i eth0 -n -q -t 10 -s /etc/udhcpc.script >/dev/null 2>&1; "
                   "ip -4 -o addr show eth0", r"inet \d+\.\d+\.\d+\.\d+/\d+\s")
    assert "inet 10.93.0.77/24" in text
    # When it is unplugged, the guest lets go of it, its address is free and the unused network leaves the host
    port = instance.ports.get()
    answer = member_api.post(f"/api/v1/instances/{instance.pk}/detach-nic/", {"port": port.pk}, format="json")
    unplugged = InstanceAction.objects.get(pk=answer.json()["id"])
    assert unplugged.status == ActionStatus.SUCCEEDED, unplugged.error
    assert not instance.ports.exists() and not Allocation.objects.filter(subnet__network=network).exists()
    assert network.libvirt_name not in hypervisor.connection(qemu_host.uri).listNetworks()


def probe(address: str, port: int) -> str:
    """Connect to the guest from the network namespace's side (the network's gateway address):
    "open", "refused" (the guest answered: the filter let it through) or "dropped" (no answer)."""
    code = ("import socket, sys\n"
            "try:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)\n    print('open')\n"
            "except ConnectionRefusedError:\n    print('refused')\n"
            "except OSError:\n    print('dropped')\n")
    netns = os.environ.get("CLOUDPANEL_NETNS", "cloudpanel")
    return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code, address, str(port)],
                          capture_output=True, text=True, check=True).stdout.strip()


def probe_until(address: str, port: int, wanted: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while (got := probe(address, port)) != wanted and time.monotonic() < deadline:
        time.sleep(0.5)
    return got


def test_security_groups_are_enforced_on_a_running_guest_and_changes_reach_it(qemu_host, member, member_api,
                                                                               tenant, guest_kernel):
    # Given a group letting SSH in from the network itself, and SMTP only from a range the probe is not in
    network = network_services.create_network(user=member, tenant=tenant, name="guarded", kind="nat",
                                              cidr="10.94.0.0/24")
    group = member_api.post("/api/v1/security-groups/", {"name": "web"}, format="json").json()
    for port, remote in ((22, "10.94.0.0/24"), (25, "192.0.2.0/24")):
        answer = member_api.post("/api/v1/security-group-rules/", {
            "group": group["id"], "direction": "ingress", "protocol": "tcp", "port_min": port,
            "remote_cidr": remote}, format="json")
        assert answer.status_code == 201, answer.content
    # When a guest boots with a NIC in the group
    answer = member_api.post("/api/v1/instances/", {
        "name": "guarded", "vcpus": 1, "memory_mib": 256, "boot_kernel": guest_kernel.pk,
        "networks": [{"network": network.pk, "address": "10.94.0.9", "security_groups": [group["id"]]}]}, format="json")
    assert answer.status_code == 202, answer.content
    instance = Instance.objects.get(pk=answer.json()["instance"])
    assert instance.status == Status.RUNNING, instance.status_reason
    port = instance.ports.get()
    assert port.filter_status == "active"
    # Then what a rule allows reaches the guest (which answers a closed port with a reset), the rest is dropped
    assert probe_until("10.94.0.9", 22, "refused", 60) == "refused"  # DHCP got through the filter too
    assert probe("10.94.0.9", 80) == "dropped"
    assert probe("10.94.0.9", 25) == "dropped"  # allowed from 192.0.2.0/24 only
    # When a rule is added, the running guest gets it at once
    answer = member_api.post("/api/v1/security-group-rules/", {
        "group": group["id"], "direction": "ingress", "protocol": "tcp", "port_min": 80}, format="json")
    assert answer.status_code == 201, answer.content
    assert probe_until("10.94.0.9", 80, "refused", 10) == "refused"
    assert Port.objects.get(pk=port.pk).filter_status == "active"
    # When the rule is deleted, it is gone again
    assert member_api.delete(f"/api/v1/security-group-rules/{answer.json()['id']}/").status_code == 204
    assert probe_until("10.94.0.9", 80, "dropped", 10) == "dropped"
    # When the NIC leaves every group, it is open and its filter leaves the host
    answer = member_api.patch(f"/api/v1/ports/{port.pk}/", {"security_groups": []}, format="json")
    assert answer.status_code == 200 and answer.json()["filter_status"] == "none", answer.content
    assert probe_until("10.94.0.9", 8080, "refused", 10) == "refused"
    conn = hypervisor.connection(qemu_host.uri)
    assert port.filter_name not in conn.listNWFilters()
    # When it joins again and the instance is deleted, the filter goes with it
    assert member_api.patch(f"/api/v1/ports/{port.pk}/", {"security_groups": [group["id"]]},
                            format="json").json()["filter_status"] == "active"
    assert port.filter_name in conn.listNWFilters()
    assert probe("10.94.0.9", 8080) == "dropped"
    services.request_operation(instance=instance, operation="delete", user=member)
    assert port.filter_name not in conn.listNWFilters()
