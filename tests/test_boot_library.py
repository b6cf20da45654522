"""Tenants boot the library only; paths on a host are platform admins', under the host's allowed directories.

Creates over the API and the page, a host's allowed directories, boot kernels and the images they use,
uploads of kernels, initrds and container root filesystems (hostile archives refused), unpacking a
container's tree, and the LXC builder's isolation.
"""

import io
import json
import os
import tarfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from unittest import mock

import pytest
from django.db.models import Q

from hosts import hypervisor
from hosts.hypervisor import DomainSpec, IdMap, Technology
from hosts.hypervisor.domain_xml import domain_xml
from images import rootfs
from images.exceptions import UnpackStopped, UnsafeImage
from images.models import BootKernel
from instances.models import Instance
from tenants.choices import Role
from tenants.models import AuditEvent
from tests.conftest import token_client
from tests.factories import make_boot_kernel, make_host, make_instance, make_library_image, make_tenant, make_user
from tests.test_images import qcow2, upload

pytestmark = pytest.mark.django_db(transaction=True)

OWNER = 1 << 20  # host uid of container root: the default CLOUDPANEL_CONTAINER_ID_BASE
GIB = 1 << 30
ADMIN_ONLY = "only platform admins boot from paths on a host"


def instance_body(**fields) -> dict:
    return {"name": "probe", "vcpus": 1, "memory_mib": 64, **fields}


# --- tenants never name host paths -----------------------------------------------------------------------


HOSTILE_PATHS = ["/etc/shadow", "/dev/vda", "/var/lib/libvirt/images/{victim}", "../../etc/shadow", "/k"]


@pytest.mark.parametrize("role", [Role.MEMBER, Role.ADMIN])
@pytest.mark.parametrize("source", ["kernel", "disk", "image", "container"])
@pytest.mark.parametrize("field", ["kernel", "initrd", "boot_disk"])
def test_a_tenant_naming_a_host_path_through_the_api_is_refused_and_audited(tenant, host, role, source, field):
    # Given a member or tenant admin, the public library to boot from, and another tenant's disk on the host
    user = make_user(tenant=tenant, role=role)
    api = token_client(user, tenant)
    library = {"kernel": {"boot_kernel": make_boot_kernel().pk}, "disk": {},
               "image": {"image": make_library_image().pk},
               "container": {"image": make_library_image(disk_format="rootfs").pk}}[source]
    victim = make_instance(tenant=make_tenant(), host=host)
    for value in HOSTILE_PATHS:
        # When they ask for an instance booting that path
        body = instance_body(boot_source=source, **library, **{field: value.format(victim=victim.volume_name)})
        response = api.post("/api/v1/instances/", body, format="json")
        # Then it is refused with the reason, and the refusal is in the audit log
        assert response.status_code == 400, (value, response.content)
        assert ADMIN_ONLY in response.json()["detail"], value
        event = AuditEvent.objects.filter(user=user, action="instance.create").latest("id")
        assert (event.result, event.channel, event.status_code, event.tenant) == ("refused", "api", 400, tenant)
        assert ADMIN_ONLY in event.detail
    # and nothing was created
    assert not Instance.objects.filter(tenant=tenant).exists()
    assert AuditEvent.objects.filter(user=user, action="instance.create", result="refused").count() == len(
        HOSTILE_PATHS)


def test_the_page_takes_no_host_path_from_a_tenant(client, member, tenant, host):
    # Given a member on the create page, with a public boot kernel to boot
    public = make_boot_kernel(host)
    client.force_login(member)
    # When they post host paths along with it (fields the page does not offer them)
    response = client.post("/instances/new/", {
        "name": "paged", "tenant": tenant.pk, "vcpus": 1, "memory_mib": 64, "disk_gib": 0, "boot_source": "kernel",
        "boot_kernel": public.pk, "kernel": "/etc/shadow", "initrd": "/etc/shadow", "boot_disk": "/etc/shadow"})
    # Then no instance holds the path: either the page ignored it and booted the boot kernel, or refused the form
    assert not Instance.objects.filter(Q(kernel__contains="shadow") | Q(initrd__contains="shadow")
                                       | Q(boot_disk__contains="shadow")).exists()
    created = Instance.objects.filter(name="paged").first()
    if created is None:
        assert response.status_code == 200 and response.context["form"].errors
    else:
        assert response.status_code == 302, response.content
        assert (created.kernel, created.initrd, created.boot_disk, created.boot_kernel_id) == ("", "", "", public.pk)
        assert created.status == "running", created.status_reason


def test_the_page_offers_tenants_no_disk_boot_and_refuses_one(client, member, tenant, host):
    client.force_login(member)
    # Given the create page as a member: no path fields and no disk boot source
    form = client.get("/instances/new/").context["form"]
    assert not {"kernel", "initrd", "boot_disk"} & set(form.fields)
    assert "disk" not in [value for value, _label in form.fields["boot_source"].choices]
    # When they post a disk boot from a host device anyway
    response = client.post("/instances/new/", {"name": "disked", "tenant": tenant.pk, "vcpus": 1, "memory_mib": 64,
                                               "disk_gib": 0, "boot_source": "disk", "boot_disk": "/dev/vda"})
    # Then the form comes back with the error, nothing is created, and the refusal is audited
    assert response.status_code == 200 and "boot_source" in response.context["form"].errors
    assert not Instance.objects.exists()
    assert AuditEvent.objects.get(user=member, channel="web", action="instance.create").result == "refused"


# Every string field a request could carry, each set to a host path; those that are not fields are ignored.
HOST_PATH = "/etc/shadow"
PATH_FIELDS = ("kernel", "initrd", "boot_disk", "disk_path", "cdrom_path", "seed_path", "root_dir", "path", "file",
               "source", "bridge", "volume", "pool")


@pytest.fixture
def host_calls(monkeypatch):
    """Every domain definition built and every device change sent to a host, as the text of their arguments."""
    seen: list[str] = []

    def spy(name):
        real = getattr(hypervisor, name)

        def call(*args, **kwargs):
            seen.append(f"{name}: {args!r} {kwargs!r}")
            return real(*args, **kwargs)

        monkeypatch.setattr(hypervisor, name, call)

    for name in ("define", "change_media", "attach_interface", "create_volume", "upload_volume"):
        spy(name)
    return seen


@pytest.mark.parametrize("role", [Role.MEMBER, Role.ADMIN])
def test_no_create_or_attach_path_lets_a_tenant_put_a_host_path_into_a_definition(client, tenant, host, role,
                                                                                   host_calls):
    # Given a tenant's operator, the library (a boot kernel, a disk image, an ISO, a template, a container image),
    # a network, and a host that would even allow an admin the path (so only the tenant rule stands in the way)
    host.allowed_paths = "/etc"
    host.save(update_fields=["allowed_paths"])
    user = make_user(tenant=tenant, role=role)
    api = token_client(user, tenant)
    boot_kernel = make_boot_kernel(host)
    disk = make_library_image(hosts=(host,), virtual_size=GIB)
    iso = make_library_image(disk_format="iso", hosts=(host,))
    template = api.post("/api/v1/templates/", {"name": "t", "image": disk.pk, "disk_gib": 1, **dict.fromkeys(
        PATH_FIELDS, HOST_PATH)}, format="json")
    assert template.status_code == 201, template.content
    network = api.post("/api/v1/networks/", {"name": "lan", "kind": "isolated", "cidr": "10.77.0.0/24"},
                       format="json").json()
    hostile = dict.fromkeys(PATH_FIELDS, HOST_PATH)
    # When they try every way in: each boot source and a template over the API, the page, media and NICs
    bodies = [
        {"boot_source": "kernel", "boot_kernel": boot_kernel.pk, "cdrom_drive": True},  # (media goes into it)
        {"boot_source": "image", "image": disk.pk, "boot_kernel": boot_kernel.pk},
        {"boot_source": "image", "image": iso.pk, "disk_gib": 1},
        {"template": template.json()["id"]},
        {"boot_source": "container", "image": make_library_image(disk_format="rootfs").pk},
        {"boot_source": "disk"},
    ]
    for number, body in enumerate(bodies):
        api.post("/api/v1/instances/", instance_body(name=f"walk-{number}", **body, **hostile), format="json")
        # (the same without the fields that exist: only library objects are taken; a volume is an id, a path in
        # its place a 400)
        api.post("/api/v1/instances/", instance_body(name=f"lib-{number}", **body, **{
            k: v for k, v in hostile.items() if k not in ("kernel", "initrd", "boot_disk", "volume")}), format="json")
    client.force_login(user)
    client.post("/instances/new/", {"name": "paged", "tenant": tenant.pk, "vcpus": 1, "memory_mib": 64,
                                    "disk_gib": 1, "boot_source": "kernel", "boot_kernel": boot_kernel.pk, **hostile})
    running = Instance.objects.get(name="lib-0")
    assert running.status == "running", running.status_reason
    for operation, body in (("media", {"image": iso.pk}), ("attach-nic", {"network": network["id"]})):
        answer = api.post(f"/api/v1/instances/{running.pk}/{operation}/", {**body, **hostile}, format="json")
        assert answer.status_code == 202, answer.content

    # (libvirt's test driver cannot change media or plug NICs: what counts is what the host was asked to take)
    assert any(call.startswith("change_media") and iso.copies.get().path in call for call in host_calls)
    assert any(call.startswith("attach_interface") for call in host_calls)
    # Then libraries were booted and attached, and no host path reached a definition or a device on the host
    assert Instance.objects.filter(status="running").count() >= 4
    assert host_calls and not [call for call in host_calls if HOST_PATH in call]
    assert not Instance.objects.filter(Q(kernel__contains=HOST_PATH) | Q(initrd__contains=HOST_PATH)
                                       | Q(boot_disk__contains=HOST_PATH)).exists()


# --- platform admins, under a host's allowed directories -----------------------------------------------


def admin_body(tenant, host, **fields) -> dict:
    return instance_body(name="admin-boot", tenant=tenant.pk, host=host.pk, **fields)


@pytest.mark.parametrize(("allowed", "fields", "reason"), [
    ("", {"kernel": "/srv/boot/vmlinuz"}, "allows (none: an admin sets them on the host's page)"),
    ("/srv/boot\n/opt/kernels", {"kernel": "/etc/shadow"}, "kernel /etc/shadow is not under a directory "
                                                           "{host} allows (/srv/boot, /opt/kernels)"),
    ("/srv/boot", {"kernel": "/srv/bootleg/vmlinuz"}, "allows (/srv/boot)"),
    ("/srv/boot", {"kernel": "/srv/boot/vmlinuz", "initrd": "/etc/shadow"}, "initrd /etc/shadow is not under"),
    ("/srv/boot", {"boot_source": "disk", "boot_disk": "/srv/boot"}, "boot disk /srv/boot is not under"),
    ("/srv/boot", {"kernel": "/srv/boot/../../etc/shadow"}, "absolute, normalised path"),
    ("/srv/boot", {"kernel": "/srv/boot/./vmlinuz"}, "absolute, normalised path"),
    ("/srv/boot", {"kernel": "//srv/boot/vmlinuz"}, "absolute, normalised path"),
    ("/srv/boot", {"kernel": "srv/boot/vmlinuz"}, "absolute, normalised path"),
    ("/srv/boot", {"boot_source": "disk", "boot_disk": "/srv/boot/../../dev/vda"}, "absolute, normalised path"),
])
def test_an_admins_path_outside_the_hosts_allowed_directories_is_refused(admin_api, tenant, host, allowed, fields,
                                                                         reason):
    host.allowed_paths = allowed
    host.save(update_fields=["allowed_paths"])
    response = admin_api.post("/api/v1/instances/", admin_body(tenant, host, **fields), format="json")
    assert response.status_code == 400, response.content
    assert reason.format(host=host.name) in response.json()["detail"]
    assert not Instance.objects.exists()


def test_an_admins_path_under_an_allowed_directory_boots(admin_api, tenant, host):
    # Given a host that allows /srv/boot
    host.allowed_paths = "/srv/boot"
    host.save(update_fields=["allowed_paths"])
    # When a platform admin boots a kernel and an initrd from there
    with mock.patch.object(hypervisor, "define", wraps=hypervisor.define) as built:
        response = admin_api.post("/api/v1/instances/", admin_body(
            tenant, host, kernel="/srv/boot/vmlinuz", initrd="/srv/boot/initrd.img", cmdline="console=ttyS0 quiet"),
            format="json")
    # Then it is accepted and runs, defined on the host from those paths
    assert response.status_code == 202, response.content
    instance = Instance.objects.get(pk=response.json()["instance"])
    assert instance.status == "running", instance.status_reason
    assert (instance.kernel, instance.initrd, instance.boot_kernel) == ("/srv/boot/vmlinuz", "/srv/boot/initrd.img",
                                                                        None)
    spec = built.call_args.args[1]
    assert (spec.kernel, spec.initrd, spec.cmdline) == ("/srv/boot/vmlinuz", "/srv/boot/initrd.img",
                                                        "console=ttyS0 quiet")
    live = ET.fromstring(hypervisor.connection(host.uri).lookupByUUIDString(str(instance.uuid)).XMLDesc())
    assert live.findtext("name") == instance.domain_name
    # (the test driver's definition carries no kernel; a QEMU host's, from the same spec, boots that one)
    qemu = ET.fromstring(domain_xml(Technology.QEMU, spec))
    assert (qemu.findtext("os/kernel"), qemu.findtext("os/initrd")) == ("/srv/boot/vmlinuz", "/srv/boot/initrd.img")
    # And the tenant's own users see that it boots from the host, not where on it
    member_view = token_client(make_user(tenant=tenant), tenant).get(f"/api/v1/instances/{instance.pk}/").json()
    assert (member_view["kernel"], member_view["initrd"], member_view["boot_disk"]) == ("(on the host)",
                                                                                        "(on the host)", "")
    assert admin_api.get(f"/api/v1/instances/{instance.pk}/").json()["kernel"] == "/srv/boot/vmlinuz"


@pytest.mark.parametrize("env", [{"A\n": "x"}, {"\ud800": "x"}, {"1X": "x"}, {"A": "x\x00"},
                                 {f"V{i}": "x" for i in range(65)}])
def test_a_containers_environment_is_names_and_text_only(member_api, env):
    library = make_library_image(disk_format="rootfs")
    body = json.dumps(instance_body(boot_source="container", image=library.pk, env=env))  # \ud800 escaped as is
    response = member_api.post("/api/v1/instances/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert not Instance.objects.exists()


def test_the_page_boots_an_image_with_its_own_loader_unless_a_kernel_is_chosen(client, member, tenant, host):
    # Given the create page, which offers a boot kernel first, and a disk image of the library
    boot_kernel = make_boot_kernel(host)
    disk = make_library_image(hosts=(host,), virtual_size=GIB)
    client.force_login(member)
    form = client.get("/instances/new/").context["form"]
    assert form["boot_kernel"].value() == boot_kernel.pk and form["image_kernel"].value() is None
    # When an image boot is posted as the browser sends the form (the kernel boot's choice included)
    fields = {"tenant": tenant.pk, "vcpus": 1, "memory_mib": 64, "disk_gib": 1, "boot_source": "image",
              "image": disk.pk, "boot_kernel": boot_kernel.pk}
    assert client.post("/instances/new/", {"name": "own-loader", **fields}).status_code == 302
    # Then the image boots its own loader; only a kernel chosen for the image boots with one
    assert client.post("/instances/new/", {"name": "with-kernel", **fields,
                                           "image_kernel": boot_kernel.pk}).status_code == 302
    assert Instance.objects.get(name="own-loader").boot_kernel is None
    assert Instance.objects.get(name="with-kernel").boot_kernel == boot_kernel


@pytest.mark.parametrize("allowed", ["/", "relative/dir", "/a/../b", "/srv/./boot", "//srv", "/srv/boot\n/",
                                     "/srv/\x00boot"])
def test_a_host_allows_only_absolute_normalised_directories(admin_api, host, allowed):
    host.allowed_paths = "/srv/boot"
    host.save(update_fields=["allowed_paths"])
    response = admin_api.patch(f"/api/v1/hosts/{host.pk}/", {"allowed_paths": allowed}, format="json")
    assert response.status_code == 400, response.content
    host.refresh_from_db()
    assert host.allowed_paths == "/srv/boot"


def test_allowed_directories_are_stored_one_a_line_without_trailing_slashes(admin_api, member_api, host):
    response = admin_api.patch(f"/api/v1/hosts/{host.pk}/", {"allowed_paths": "/srv/boot/\n\n /opt/k \n/srv/boot"},
                               format="json")
    assert response.status_code == 200, response.content
    host.refresh_from_db()
    assert host.allowed_dirs == ["/srv/boot", "/opt/k"]
    # and tenants change no host
    assert member_api.patch(f"/api/v1/hosts/{host.pk}/", {"allowed_paths": "/"}, format="json").status_code in (403,
                                                                                                                 404)
    host.refresh_from_db()
    assert host.allowed_dirs == ["/srv/boot", "/opt/k"]


# --- the library's boot kernels and container images -----------------------------------------------------


@pytest.mark.parametrize(("body", "missing"), [
    (lambda other: {"boot_source": "kernel", "boot_kernel": make_boot_kernel(tenant=other).pk}, "boot kernel"),
    (lambda other: {"boot_source": "container",
                    "image": make_library_image(tenant=other, disk_format="rootfs").pk}, "image"),
])
def test_another_tenants_boot_kernel_or_container_image_reads_as_missing(member_api, host, body, missing):
    response = member_api.post("/api/v1/instances/", instance_body(**body(make_tenant())), format="json")
    assert response.status_code == 404, response.content
    assert response.json()["detail"] == f"No such {missing}."
    assert not Instance.objects.exists()


def test_public_boot_kernels_and_container_images_are_accepted(member_api, tenant, host):
    # A public boot kernel boots on the test-driver host
    public = make_boot_kernel(host)
    response = member_api.post("/api/v1/instances/", instance_body(boot_kernel=public.pk), format="json")
    assert response.status_code == 202, response.content
    instance = Instance.objects.get(pk=response.json()["instance"])
    assert (instance.boot_kernel, instance.kernel, instance.tenant) == (public, "", tenant)
    assert instance.status == "running", instance.status_reason
    # A public container image is accepted onto an LXC host (a remote one: its own worker would unpack it)
    containers = make_host(uri="lxc+ssh://containers.invalid/system", name="containers")
    image = make_library_image(disk_format="rootfs")
    response = member_api.post("/api/v1/instances/", instance_body(name="ct", boot_source="container",
                                                                   image=image.pk), format="json")
    assert response.status_code == 202, response.content
    container = Instance.objects.get(pk=response.json()["instance"])
    assert (container.host, container.image, container.boot_source) == (containers, image, "container")


def test_boot_kernels_are_made_of_kernel_and_initrd_images_the_tenant_may_use(member_api, tenant):
    theirs = make_library_image(tenant=make_tenant(), disk_format="kernel")
    disk = make_library_image(tenant=tenant, disk_format="qcow2")
    kernel = make_library_image(tenant=tenant, disk_format="kernel")

    def create(**fields):
        return member_api.post("/api/v1/boot-kernels/", {"name": "mine", **fields}, format="json")

    assert create(kernel=theirs.pk).status_code == 404
    wrong = create(kernel=disk.pk)
    assert wrong.status_code in (400, 409) and "is not a Linux kernel" in wrong.json()["detail"], wrong.content
    wrong = create(kernel=kernel.pk, initrd=disk.pk)
    assert wrong.status_code in (400, 409) and "is not an initrd" in wrong.json()["detail"], wrong.content
    assert create(kernel=kernel.pk, visibility="public").status_code == 403
    assert not BootKernel.objects.exists()
    # while their own kernel image makes one
    made = create(kernel=kernel.pk)
    assert made.status_code == 201, made.content
    assert BootKernel.objects.get().kernel == kernel


def test_images_and_boot_kernels_in_use_are_not_deleted_until_free(member_api, tenant, host):
    boot_kernel = make_boot_kernel(host, tenant=tenant)
    # The images of a boot kernel stay while it does
    for image in (boot_kernel.kernel, boot_kernel.initrd):
        refused = member_api.delete(f"/api/v1/images/{image.pk}/")
        assert refused.status_code == 409 and f"boot kernel {boot_kernel.name}" in refused.json()["detail"]
    # A boot kernel stays while an instance boots it
    response = member_api.post("/api/v1/instances/", instance_body(name="booted", boot_kernel=boot_kernel.pk),
                               format="json")
    assert response.status_code == 202, response.content
    instance = Instance.objects.get(pk=response.json()["instance"])
    refused = member_api.delete(f"/api/v1/boot-kernels/{boot_kernel.pk}/")
    assert refused.status_code == 409 and "booted" in refused.json()["detail"]
    # Once the instance is deleted, the boot kernel goes, and then its images
    assert member_api.delete(f"/api/v1/instances/{instance.pk}/").status_code == 202
    instance.refresh_from_db()
    assert instance.status == "deleted", instance.status_reason
    assert member_api.delete(f"/api/v1/boot-kernels/{boot_kernel.pk}/").status_code == 204
    assert not BootKernel.objects.exists()
    assert member_api.delete(f"/api/v1/images/{boot_kernel.kernel_id}/").status_code == 204


# --- uploads of kernels, initrds and container root filesystems -------------------------------------------


def test_the_real_guest_kernel_and_initrd_upload_and_make_a_boot_kernel(panel, member_api, guest):
    kernel = upload(member_api, Path(guest["kernel"]), declared_format="kernel")
    assert (kernel["status"], kernel["disk_format"]) == ("available", "kernel"), kernel["status_reason"]
    initrd = upload(member_api, Path(guest["initrd"]), declared_format="initrd")
    assert (initrd["status"], initrd["disk_format"]) == ("available", "initrd"), initrd["status_reason"]
    made = member_api.post("/api/v1/boot-kernels/", {"name": "guest", "kernel": kernel["id"], "initrd": initrd["id"],
                                                     "cmdline": "console=ttyS0 quiet"}, format="json")
    assert made.status_code == 201, made.content
    assert (made.json()["kernel"], made.json()["initrd"]) == (kernel["id"], initrd["id"])


def polyglot(tmp_path: Path) -> Path:
    """A qcow2 that also carries a bzImage's boot signature and setup header."""
    path = qcow2(tmp_path)
    with path.open("r+b") as handle:
        handle.seek(0x1FE)
        handle.write(b"\x55\xaa\xeb\x66HdrS\x0f\x02")
    return path


def random_bytes(tmp_path: Path) -> Path:
    path = tmp_path / "random.bin"
    path.write_bytes(b"\x00" + os.urandom(64 * 1024 - 1))  # a first byte no kernel or initrd magic starts with
    return path


@pytest.mark.parametrize(("make", "declared", "reason"), [
    (qcow2, "kernel", "not a Linux kernel"),
    (random_bytes, "kernel", "not a Linux kernel"),
    (polyglot, "kernel", "also a qcow2 image"),
    (random_bytes, "initrd", "not an initrd"),
    (qcow2, "initrd", "not an initrd"),
])
def test_a_file_that_is_not_what_it_is_declared_as_is_refused(panel, member_api, image_dirs, tmp_path, make,
                                                              declared, reason):
    image = upload(member_api, make(tmp_path), declared_format=declared)
    assert image["status"] == "error" and reason in image["status_reason"], image["status_reason"]
    assert image["disk_format"] != declared and not any(image_dirs.iterdir())


class Zeros:
    """size zero bytes, read as a file."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


def entry(name: str, data: bytes | Zeros = b"", *, kind: bytes = tarfile.REGTYPE, linkname: str = "",
           **attrs) -> tuple[tarfile.TarInfo, object]:
    """A tar member: its header and, for a regular file, its data (bytes or a file)."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    if kind == tarfile.REGTYPE:
        info.size = data.left if isinstance(data, Zeros) else len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, (data if isinstance(data, Zeros) else io.BytesIO(data)) if kind == tarfile.REGTYPE else None


def directory(name: str, **attrs):
    return entry(name, kind=tarfile.DIRTYPE, **attrs)


def symlink(name: str, target: str):
    return entry(name, kind=tarfile.SYMTYPE, linkname=target)


def archive(path: Path, *members) -> Path:
    """A gzip-compressed tar of the members, written as a stream (a large member never sits in memory)."""
    with tarfile.open(path, "w:gz", compresslevel=6) as tar:
        tar.copybufsize = 1 << 20
        for info, data in members:
            if isinstance(data, io.BytesIO):
                data.seek(0)  # a member of a parameter list may be written more than once
            tar.addfile(info, data)
    return path


BUSYBOX, INIT, HOSTNAME, NOTES = b"\x7fELF" + b"b" * 2000, b"#!/bin/sh\nexec /bin/sh\n", b"box\n", b"hello\n"


def good_members():
    return [
        directory("."), directory("bin"), directory("sbin"), directory("etc"), directory("usr"),
        directory("usr/bin"), directory("home"), directory("home/user", uid=1000, gid=1000),
        entry("bin/busybox", BUSYBOX, mode=0o755),
        symlink("bin/sh", "/bin/busybox"),  # absolute: resolved inside the container's root
        symlink("usr/bin/env", "../../bin/busybox"),
        entry("bin/ls", kind=tarfile.LNKTYPE, linkname="bin/busybox"),  # a hard link to an earlier file
        entry("sbin/init", INIT, mode=0o755),
        entry("etc/hostname", HOSTNAME),
        entry("home/user/notes", NOTES, uid=1000, gid=1000),
    ]


GOOD_SIZE = len(BUSYBOX) + len(INIT) + len(HOSTNAME) + len(NOTES)


def test_a_container_root_filesystem_is_inspected_and_published(panel, member_api, tmp_path):
    image = upload(member_api, archive(tmp_path / "rootfs.tar.gz", *good_members()), declared_format="tar")
    assert image["status"] == "available", image["status_reason"]
    assert (image["disk_format"], image["virtual_size"]) == ("rootfs", GOOD_SIZE)


@pytest.mark.parametrize(("members", "reason"), [
    ([entry("../escape", b"x")], "climbs out of the tree with '..'"),
    ([entry("/etc/evil", b"x")], "has an absolute name"),
    ([directory("dev"), entry("dev/mem", kind=tarfile.CHRTYPE, devmajor=1, devminor=1)], "is a device node"),
    ([entry("run-pipe", kind=tarfile.FIFOTYPE)], "is not a file, directory or link"),
    ([symlink("lib", "/etc"), entry("lib/evil", b"x")], "lies behind a symlink of the archive"),
    ([symlink("up", "../../..")], "points out of the tree"),
    ([entry("shadow", kind=tarfile.LNKTYPE, linkname="/etc/shadow")], "target '/etc/shadow' has an absolute name"),
    ([entry("etc-motd", b"x", uid=70000)], "is owned by 70000:0"),
], ids=["dotdot", "absolute", "device", "fifo", "behind-symlink", "symlink-out", "hardlink-out", "owner"])
def test_hostile_container_archives_are_refused_and_keep_no_bytes(panel, member_api, image_dirs, tmp_path, members,
                                                                 reason):
    path = archive(tmp_path / "evil.tar.gz", *good_members(), *members)
    image = upload(member_api, path, declared_format="tar")
    assert image["status"] == "error" and reason in image["status_reason"], image["status_reason"]
    assert image["size"] is None and not any(image_dirs.iterdir())


def test_a_decompression_bomb_is_refused_at_its_header(panel, member_api, image_dirs, tmp_path, settings):
    # Given a cap of 1 GiB unpacked, and about 1 MiB of gzip that unpacks to 1 GiB and a byte of zeros
    settings.CLOUDPANEL_ROOTFS_MAX_GIB = 1
    path = archive(tmp_path / "bomb.tar.gz", entry("zeros", Zeros(GIB + 1)))
    assert path.stat().st_size < 8 << 20
    # When it is uploaded as a container image, then it is refused as too large, and nothing is kept
    image = upload(member_api, path, declared_format="tar")
    assert image["status"] == "error", image["status_reason"]
    assert f"larger than the {GIB} bytes allowed" in image["status_reason"]
    assert image["size"] is None and not any(image_dirs.iterdir())


def pax(path: Path, *members, pax_headers: dict | None = None) -> Path:
    """A bzip2-compressed pax archive of the members, with global headers if given."""
    with tarfile.open(path, "w:bz2", format=tarfile.PAX_FORMAT, pax_headers=pax_headers) as tar:
        for info, data in members:
            tar.addfile(info, data)
    return path


def sparse(name: str, **headers: str):
    """A member that claims to be a GNU sparse file, through its pax headers."""
    info, data = entry(name, b"x" * 64)
    info.pax_headers = headers
    return info, data


@pytest.mark.parametrize(("members", "headers", "reason"), [
    # a sparse file claiming a size below zero (which would let any amount through the cap)
    ([sparse("hole", **{"GNU.sparse.map": "0,0", "GNU.sparse.size": "-1000000000000"})], None, "sparse files"),
    # a sparse map larger than the member, which would write far more than it says
    ([sparse("hole", **{"GNU.sparse.map": "0,209715200", "GNU.sparse.size": "1"})], None, "sparse files"),
    ([entry("f", b"x")], {f"k{i}": "v" for i in range(1000)}, "global headers"),  # copied into every member
    ([entry("a/" * 3000 + "f", b"x")], None, "longer than 4096 characters"),  # checked in time linear in length
    ([entry("a", b"x"), entry("a/b", b"y")], None, "lies under a file"),
    ([entry("d/f", b"x"), symlink("d", "/etc")], None, "replaces an earlier member of another kind"),
    ([symlink("s", "/etc"), entry("h", kind=tarfile.LNKTYPE, linkname="s/shadow")], None, "behind a symlink"),
    ([entry("a", b"x"), entry("h", kind=tarfile.LNKTYPE, linkname="a/")], None, "does not name an earlier file"),
    ([entry("f", b"x", pax_headers={"mtime": "1e400"})], None, "impossible size or time"),
    ([symlink(".", "/etc")], None, "named as a directory but is none"),
], ids=["sparse-negative", "sparse-map", "global-header", "long-name", "under-file", "replace-implicit-dir",
        "hardlink-behind-symlink", "hardlink-slash", "mtime", "root-symlink"])
def test_archives_that_would_cheat_the_checks_are_refused_quickly_and_in_little_memory(tmp_path, members, headers,
                                                                                       reason):
    path = pax(tmp_path / "cheat.tar.bz2", *good_members(), *members, pax_headers=headers)
    started = time.monotonic()
    with pytest.raises(UnsafeImage, match=reason):
        rootfs.inspect_archive(path, max_bytes=GIB)
    assert time.monotonic() - started < 5
    # and the worker that unpacks an image checks it the same way, leaving nothing behind
    home = tmp_path / "unpacked" / "home"
    home.parent.mkdir()
    with path.open("rb") as stream, pytest.raises(UnsafeImage, match=reason):
        rootfs.unpack(stream.read, home, owner=OWNER, max_bytes=GIB)
    assert list(home.parent.iterdir()) == []


# --- unpacking a container's tree (as root, in a scratch directory) -------------------------------------


def unpack(path: Path, home: Path) -> Path:
    with path.open("rb") as stream:
        return rootfs.unpack(stream.read, home, owner=OWNER, max_bytes=GIB)


def test_unpacking_shifts_owners_into_the_containers_range_and_follows_no_symlink(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    outside = tmp_path / f"outside-{uuid.uuid4().hex}"
    path = archive(work / "rootfs.tar.gz", *good_members(), symlink("etc/elsewhere", str(outside / "planted")))
    home = work / "home"
    tree = unpack(path, home)
    # The tree lies in a home only the container's root may enter
    assert tree == home / "rootfs" and (home.stat().st_uid, home.stat().st_mode & 0o777) == (OWNER, 0o700)
    owners = {name: (os.lstat(tree / name).st_uid, os.lstat(tree / name).st_gid)
              for name in ("", "bin/busybox", "bin/sh", "sbin/init", "home/user", "home/user/notes")}
    assert owners == {"": (OWNER, OWNER), "bin/busybox": (OWNER, OWNER), "bin/sh": (OWNER, OWNER),
                      "sbin/init": (OWNER, OWNER), "home/user": (OWNER + 1000, OWNER + 1000),
                      "home/user/notes": (OWNER + 1000, OWNER + 1000)}
    assert (tree / "bin/sh").is_symlink() and os.readlink(tree / "bin/sh") == "/bin/busybox"
    assert os.readlink(tree / "usr/bin/env") == "../../bin/busybox"
    assert os.readlink(tree / "etc/elsewhere") == str(outside / "planted")
    assert os.lstat(tree / "bin/ls").st_ino == os.lstat(tree / "bin/busybox").st_ino
    assert (tree / "sbin/init").read_bytes() == INIT
    # Nothing outside the tree was made or touched
    assert not os.path.lexists(outside)
    assert sorted(p.name for p in work.iterdir()) == ["home", "rootfs.tar.gz"]


@pytest.mark.parametrize(("members", "reason"), [
    (lambda outside: [symlink("x", str(outside)), entry("x/pwned", b"owned")], "behind a symlink"),
    (lambda outside: [entry(f"../{outside.name}/pwned", b"owned")], "climbs out of the tree"),
    (lambda outside: [symlink("x", str(outside)), directory("x")], "replaces an earlier member of another kind"),
    (lambda outside: [directory("x"), symlink("x", str(outside))], "replaces an earlier member of another kind"),
    (lambda outside: [entry("x", b"x"), entry("y", kind=tarfile.LNKTYPE, linkname=f"../{outside.name}/pwned")],
     "climbs out of the tree"),
], ids=["behind-symlink", "dotdot", "replace-symlink", "replace-directory", "hardlink-out"])
def test_unpacking_a_hostile_archive_leaves_nothing_inside_or_outside(tmp_path, members, reason):
    # Given an existing directory next to where the tree goes, which the archive aims at
    work = tmp_path / "work"
    work.mkdir()
    outside = work / f"outside-{uuid.uuid4().hex}"
    outside.mkdir()
    path = archive(work / "evil.tar.gz", *good_members(), *members(outside))
    # When it is unpacked, then it is refused and neither the tree nor anything in the outside directory is left
    with pytest.raises(UnsafeImage, match=reason):
        unpack(path, work / "home")
    assert not os.path.lexists(work / "home")
    assert list(outside.iterdir()) == []


def test_an_unpack_whose_operation_ended_stops_and_a_second_attempt_never_shares_a_tree(tmp_path):
    # Given a container image of many members
    path = archive(tmp_path / "many.tar.gz", *good_members(), *(entry(f"etc/f{i}", b"x") for i in range(3000)))
    home = tmp_path / "containers" / "home"
    home.parent.mkdir()
    # When its operation is no longer in flight (the heartbeat says so), the unpacking stops and keeps nothing
    with mock.patch.object(rootfs, "BEAT_SECONDS", 0), path.open("rb") as stream, \
            pytest.raises(UnpackStopped):
        rootfs.unpack(stream.read, home, owner=OWNER, max_bytes=GIB, beat=lambda: False)
    assert list(home.parent.iterdir()) == []
    # And an attempt that finds another's tree in place is refused without touching it
    with path.open("rb") as stream:
        rootfs.unpack(stream.read, home, owner=OWNER, max_bytes=GIB)
    with path.open("rb") as stream, pytest.raises(UnsafeImage, match="could not be unpacked"):
        rootfs.unpack(stream.read, home, owner=OWNER, max_bytes=GIB)
    assert [p.name for p in home.parent.iterdir()] == ["home"] and (home / "rootfs/etc/f2999").exists()


# --- the builder: a container gets its own root, user namespace and network namespace ---------------------


def lxc_spec(**fields) -> DomainSpec:
    return DomainSpec(name=f"cp-{uuid.uuid4()}", uuid=str(uuid.uuid4()), vcpus=1, memory_mib=64, init="/sbin/init",
                      **fields)


ROOT_DIR = "/var/lib/cloudpanel/containers/cp-1"


@pytest.mark.parametrize("fields", [
    {"idmap": IdMap(target=OWNER)},
    {"root_dir": "/", "idmap": IdMap(target=OWNER)},
    {"root_dir": "relative/cp-1", "idmap": IdMap(target=OWNER)},
    {"root_dir": ROOT_DIR},
    {"root_dir": ROOT_DIR, "idmap": IdMap(target=0)},
    {"root_dir": ROOT_DIR, "idmap": IdMap(target=OWNER, count=0)},
], ids=["no-root", "host-root", "relative-root", "no-idmap", "root-is-host-root", "empty-idmap"])
def test_the_lxc_builder_refuses_a_container_without_its_own_root_or_user_namespace(fields):
    with pytest.raises(hypervisor.UnsafeDefinition):
        domain_xml(Technology.LXC, lxc_spec(**fields))


def test_a_container_definition_maps_root_away_and_has_its_own_tree_and_network():
    xml = ET.fromstring(domain_xml(Technology.LXC, lxc_spec(root_dir=ROOT_DIR + "/",
                                                                      idmap=IdMap(target=OWNER))))
    assert [(e.tag, e.get("start"), e.get("target"), e.get("count")) for e in xml.find("idmap")] == [
        ("uid", "0", str(OWNER), "65536"), ("gid", "0", str(OWNER), "65536")]
    assert xml.find("features/privnet") is not None
    [filesystem] = xml.findall(".//filesystem")
    assert (filesystem.get("type"), filesystem.find("source").get("dir"), filesystem.find("target").get("dir")) == (
        "mount", ROOT_DIR, "/")
    assert not [g for g in xml.iter("graphics") if g.get("listen") is not None or g.find("listen") is not None]
    assert list(xml.iter("hostdev")) == []  # no device of the host
    # and a QEMU guest's display listens on no address or port at all: libvirt hands the panel a socket to it
    qemu = ET.fromstring(domain_xml(Technology.QEMU, lxc_spec(kernel="/srv/boot/vmlinuz")))
    [graphics] = qemu.iter("graphics")
    assert graphics.attrib == {"type": "vnc", "sharePolicy": "force-shared"}
    assert [listen.attrib for listen in graphics] == [{"type": "none"}]
