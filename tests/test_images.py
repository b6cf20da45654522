"""The image library end to end: uploads (chunked, resumable), URL imports, inspection in the worker, deletion.

The panel runs as a live server, so the worker's transfers go over real HTTP with
signed URLs, as they would from a worker on another machine.
"""

import asyncio
import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
import warnings
from datetime import timedelta
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from cloudpanel.celery import app as celery_app
from images import store, transfer
from images.choices import ImageStatus
from images.exceptions import UploadBusy
from images.models import Image, ImageCopy
from images.tasks import expire_stale_images, inspect_image
from instances.models import Instance
from tenants import quotas
from tenants.choices import Role
from tenants.models import AuditEvent
from tenants.services import create_api_token, set_quota
from tests.conftest import token_client
from tests.factories import make_boot_kernel, make_host, make_tenant, make_user, wait_for
from tests.test_image_fetch import serve

pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1 << 20


def qcow2(tmp_path: Path, name: str = "disk.qcow2", fmt: str = "qcow2", *options: str) -> Path:
    path = tmp_path / name
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *options, str(path), "64M"], check=True)
    return path


def upload(client, path: Path, *, chunk: int | None = None, **fields) -> dict:
    """Create an upload for the file and send it (in chunks with Content-Range, or whole); the image as JSON."""
    data = path.read_bytes()
    created = client.post("/api/v1/images/", {"name": path.name, "size": len(data), "filename": path.name, **fields},
                          format="json")
    assert created.status_code == 201, created.content
    image = created.json()
    step = chunk or len(data)
    for start in range(0, len(data), step):
        piece = data[start:start + step]
        headers = {"HTTP_CONTENT_RANGE": f"bytes {start}-{start + len(piece) - 1}/{len(data)}"} if chunk else {}
        response = client.put(f"/api/v1/images/{image['id']}/data/", piece, content_type="application/octet-stream",
                              **headers)
        assert response.status_code == 200, response.content
    return client.get(f"/api/v1/images/{image['id']}/").json()


def stored(image_dirs, image: dict) -> Path:
    return image_dirs / image["uuid"]


def test_a_qcow2_uploaded_in_chunks_is_inspected_by_the_worker_and_published(panel, member_api, image_dirs,
                                                                            tmp_path):
    # Given a real qcow2 made with qemu-img
    path = qcow2(tmp_path)
    # When it is uploaded in 64 KiB chunks
    image = upload(member_api, path, chunk=64 * 1024, declared_format="qcow2", min_disk_gib=1)
    # Then the worker fetched it over HTTP, inspected it and published it
    assert image["status"] == "available", image["status_reason"]
    assert (image["disk_format"], image["source_format"], image["virtual_size"]) == ("qcow2", "qcow2", 64 * MIB)
    assert image["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert image["size"] == path.stat().st_size == image["received_bytes"]
    assert stored(image_dirs, image).read_bytes() == path.read_bytes()
    # and the audit log holds the first and the last chunk, not every one between
    chunks = AuditEvent.objects.filter(action="image.data", target_id=str(image["id"]))
    assert chunks.count() == 2


def test_a_whole_file_in_one_request_and_the_upload_page(panel, member, member_api, image_dirs, tmp_path):
    raw = tmp_path / "disk.img"
    raw.write_bytes(os.urandom(3 * MIB))
    image = upload(member_api, raw)
    assert (image["status"], image["disk_format"], image["virtual_size"]) == ("available", "raw", 3 * MIB)
    browser = Client()
    browser.force_login(member)
    page = browser.get("/images/").content.decode()
    assert "disk.img" in page and "Available" in page and "3.0\xa0MB" in page


def test_a_chunk_out_of_order_or_cut_short_leaves_the_upload_where_it_was_and_it_resumes(panel, member_api,
                                                                                       image_dirs, tmp_path):
    data = os.urandom(2 * MIB)
    created = member_api.post("/api/v1/images/", {"name": "cut", "size": len(data)}, format="json").json()
    url = f"/api/v1/images/{created['id']}/data/"
    first = member_api.put(url, data[:MIB], content_type="application/octet-stream",
                           HTTP_CONTENT_RANGE=f"bytes 0-{MIB - 1}/{len(data)}")
    assert first.status_code == 200 and first.json()["received_bytes"] == MIB
    # A chunk that skips ahead is refused with where the upload stands
    skipped = member_api.put(url, data[MIB + 10:], content_type="application/octet-stream",
                             HTTP_CONTENT_RANGE=f"bytes {MIB + 10}-{len(data) - 1}/{len(data)}")
    assert skipped.status_code == 409 and f"stands at byte {MIB}" in skipped.json()["detail"]
    # A chunk whose connection drops half-way (sent by hand to the live server)
    token = member_api._credentials["HTTP_AUTHORIZATION"]
    address = urlsplit(panel.url)
    with socket.create_connection((address.hostname, address.port)) as conn:
        conn.sendall((f"PUT {url} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {token}\r\n"
                      f"Content-Type: application/octet-stream\r\nContent-Length: {MIB}\r\n"
                      f"Content-Range: bytes {MIB}-{2 * MIB - 1}/{len(data)}\r\n\r\n").encode() + data[MIB:MIB + 1000])
        conn.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: conn.recv(4096), b"")).decode(errors="replace")
    assert " 400 " in answer.split("\r\n")[0] and "ended after 1000" in answer
    # Then nothing of the cut chunk was kept, and the upload resumes from the last whole chunk
    image = Image.objects.get(pk=created["id"])
    assert image.received_bytes == MIB and image.status == ImageStatus.UPLOADING
    assert (image_dirs / f"{image.uuid}.part").stat().st_size == MIB
    done = member_api.put(url, data[MIB:], content_type="application/octet-stream",
                          HTTP_CONTENT_RANGE=f"bytes {MIB}-{len(data) - 1}/{len(data)}")
    assert done.status_code == 200
    image.refresh_from_db()
    assert image.status == ImageStatus.AVAILABLE and image.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("filename", ["../../etc/passwd", "x" * 300 + ".qcow2", "<script>alert(1)</script>.img"])
def test_upload_filenames_never_become_paths_and_are_escaped(panel, member, member_api, image_dirs, tmp_path,
                                                           filename):
    path = qcow2(tmp_path)
    image = upload(member_api, path, filename=filename, name=f"<b>{filename[:40]}</b>".replace("\x00", ""))
    assert image["status"] == "available"
    # Stored under the image's generated name only
    assert sorted(p.name for p in image_dirs.iterdir()) == [image["uuid"]]
    assert "/" not in image["filename"] and "\x00" not in image["filename"] and len(image["filename"]) <= 255
    browser = Client()
    browser.force_login(member)
    for page in ("/images/", f"/images/{image['id']}/"):
        html = browser.get(page).content.decode()
        assert "<script>alert" not in html and "<b>" not in html and "&lt;b&gt;" in html


@pytest.mark.parametrize(("make", "reason"), [
    (lambda tmp: qcow2(tmp, "over.qcow2", "qcow2", "-b", str(qcow2(tmp, "base.qcow2")), "-F", "qcow2"),
     "backing file"),
    (lambda tmp: qcow2(tmp, "ext.qcow2", "qcow2", "-o", f"data_file={tmp / 'data.raw'}"), "external"),
    (lambda tmp: qcow2(tmp, "flat.vmdk", "vmdk", "-o", "subformat=monolithicFlat"), "VMDK"),
])
def test_refused_uploads_end_in_error_with_the_reason_and_keep_no_bytes(panel, member_api, image_dirs, tmp_path,
                                                                       make, reason):
    path = make(tmp_path)
    image = upload(member_api, path)
    assert image["status"] == "error" and reason in image["status_reason"], image["status_reason"]
    assert image["size"] is None and not any(image_dirs.iterdir())


def test_a_name_with_control_characters_is_refused_with_the_reason(member_api):
    response = member_api.post("/api/v1/images/", {"name": "a\x07b", "size": 10}, format="json")
    assert response.status_code == 400 and "control characters" in response.json()["name"][0]
    # a file name with a NUL byte as well, and nothing is made
    response = member_api.post("/api/v1/images/", {"name": "disk", "size": 10, "filename": "evil\x00.qcow2"},
                               format="json")
    assert response.status_code == 400 and "NUL" in response.json()["filename"][0]
    assert not Image.objects.exists()


def test_a_declared_format_that_differs_is_refused(panel, member_api, image_dirs, tmp_path):
    image = upload(member_api, qcow2(tmp_path), declared_format="raw")
    assert image["status"] == "error" and "declared" in image["status_reason"]


@pytest.mark.parametrize("fmt", ["vmdk", "vdi", "vhdx"])
def test_vmdk_vdi_and_vhdx_are_converted_to_qcow2(panel, member_api, image_dirs, tmp_path, fmt):
    image = upload(member_api, qcow2(tmp_path, f"disk.{fmt}", fmt))
    assert image["status"] == "available", image["status_reason"]
    assert (image["source_format"], image["disk_format"], image["virtual_size"]) == (fmt, "qcow2", 64 * MIB)
    data = stored(image_dirs, image).read_bytes()
    assert data[:4] == b"QFI\xfb" and image["sha256"] == hashlib.sha256(data).hexdigest()


def box(tmp_path: Path, metadata: dict, disk: Path) -> Path:
    path = tmp_path / "test.box"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("metadata.json")
        content = json.dumps(metadata).encode()
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
        archive.add(disk, arcname="box.img")
        archive.add(disk, arcname="../../escape.img")  # never extracted by its own path
    return path


def test_a_vagrant_box_for_libvirt_is_unpacked(panel, member_api, image_dirs, tmp_path):
    disk = qcow2(tmp_path)
    image = upload(member_api, box(tmp_path, {"provider": "libvirt", "format": "qcow2", "virtual_size": 1}, disk))
    assert image["status"] == "available", image["status_reason"]
    assert (image["source_format"], image["disk_format"]) == ("box", "qcow2")
    assert stored(image_dirs, image).read_bytes() == disk.read_bytes()
    assert not (tmp_path.parent / "escape.img").exists()


def test_a_box_for_another_provider_is_refused(panel, member_api, tmp_path):
    image = upload(member_api, box(tmp_path, {"provider": "virtualbox"}, qcow2(tmp_path)))
    assert image["status"] == "error" and "libvirt provider" in image["status_reason"]


# --- URL imports ----------------------------------------------------------------------------------------


@pytest.fixture
def mirror(settings, tmp_path):
    """A local HTTP server with files, allowlisted as an internal mirror."""
    files: dict[str, bytes] = {}

    def answer(path):
        if path.startswith("/redirect"):
            return 302, {"Location": "http://127.0.0.1:1/secret"}, b""
        return (200, {}, files[path]) if path in files else (404, {}, b"")

    server = serve(answer)
    port = server.server_address[1]
    settings.CLOUDPANEL_IMPORT_ALLOW = [f"127.0.0.1:{port}"]
    yield files, f"http://127.0.0.1:{port}"
    server.shutdown()


def test_an_import_verifies_its_checksum_and_publishes(panel, member_api, image_dirs, mirror, tmp_path):
    files, base = mirror
    data = qcow2(tmp_path).read_bytes()
    files["/disk.qcow2"] = data
    digest = hashlib.sha512(data).hexdigest()
    created = member_api.post("/api/v1/images/", {"name": "imported", "url": f"{base}/disk.qcow2",
                                                  "checksum": f"sha512:{digest}"}, format="json")
    assert created.status_code == 201, created.content
    image = Image.objects.get(pk=created.json()["id"])
    assert image.status == ImageStatus.AVAILABLE, image.status_reason
    assert image.received_bytes == image.expected_bytes == len(data) == image.size
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert stored(image_dirs, {"uuid": str(image.uuid)}).read_bytes() == data


def test_an_import_with_the_wrong_checksum_publishes_nothing(panel, member_api, image_dirs, mirror, tmp_path):
    files, base = mirror
    files["/disk.qcow2"] = qcow2(tmp_path).read_bytes()
    created = member_api.post("/api/v1/images/", {"name": "bad", "url": f"{base}/disk.qcow2",
                                                  "checksum": "sha256:" + "0" * 64}, format="json").json()
    image = Image.objects.get(pk=created["id"])
    assert image.status == ImageStatus.ERROR and "checksum does not match" in image.status_reason
    assert not any(image_dirs.iterdir())


def test_an_import_over_the_size_cap_is_refused(panel, member_api, image_dirs, mirror, settings):
    files, base = mirror
    files["/big.img"] = b"\0" * (2 * MIB)
    settings.CLOUDPANEL_IMAGE_MAX_DOWNLOAD_GIB = 0  # nothing fits
    created = member_api.post("/api/v1/images/", {"name": "big", "url": f"{base}/big.img"}, format="json").json()
    image = Image.objects.get(pk=created["id"])
    assert image.status == ImageStatus.ERROR and "over the 0 bytes allowed" in image.status_reason


def test_an_allowed_mirror_that_redirects_to_loopback_is_refused_at_the_hop(panel, member_api, mirror):
    _files, base = mirror
    created = member_api.post("/api/v1/images/", {"name": "hop", "url": f"{base}/redirect"}, format="json").json()
    image = Image.objects.get(pk=created["id"])
    assert image.status == ImageStatus.ERROR and "127.0.0.1" in image.status_reason


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "http://127.0.0.1/x.img", "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/x.img", "http://[::1]/x.img", "http://2130706433/x.img", "ftp://93.184.216.34/x.img",
])
def test_imports_of_internal_or_odd_urls_are_refused_at_once(member_api, url):
    response = member_api.post("/api/v1/images/", {"name": "no", "url": url}, format="json")
    assert response.status_code == 400, response.content
    assert not Image.objects.exists()


@pytest.fixture
def small_scratch(settings, tmp_path):
    """A 1 MiB filesystem as the worker's scratch space, so that an import fills it."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    settings.CLOUDPANEL_SCRATCH_DIR = str(mount)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_during_an_import_is_an_error_and_leaves_no_partial_file(panel, member_api, image_dirs, mirror,
                                                                          small_scratch):
    files, base = mirror
    files["/big.img"] = os.urandom(3 * MIB)
    created = member_api.post("/api/v1/images/", {"name": "full", "url": f"{base}/big.img"}, format="json").json()
    image = Image.objects.get(pk=created["id"])
    assert image.status == ImageStatus.ERROR and "disk filled up" in image.status_reason
    assert list(small_scratch.iterdir()) == [] and not any(image_dirs.iterdir())


# --- quota, visibility, deletion, transfers -----------------------------------------------------------------


def test_image_storage_quota_is_checked_on_upload_and_on_the_imported_size(panel, member_api, tenant, mirror):
    set_quota(tenant=tenant, limits={"image_gib": 1})
    refused = member_api.post("/api/v1/images/", {"name": "huge", "size": 2 << 30}, format="json")
    assert refused.status_code == 409 and "Image storage: 0 of 1 GiB in use, 2 GiB more asked" in refused.json()[
        "detail"]
    set_quota(tenant=tenant, limits={"image_gib": 0})
    files, base = mirror
    files["/x.img"] = b"\0" * MIB
    refused = member_api.post("/api/v1/images/", {"name": "x", "url": f"{base}/x.img"}, format="json")
    assert refused.status_code == 409
    # An import whose size only shows once downloaded is checked then
    set_quota(tenant=tenant, limits={"image_gib": 1})
    files["/y.img"] = b"\0" * MIB
    member_api.post("/api/v1/images/", {"name": "y", "url": f"{base}/y.img"}, format="json")
    assert Image.objects.get(name="y").status == ImageStatus.AVAILABLE
    usage = member_api.get(f"/api/v1/tenants/{tenant.pk}/").json()["usage"]
    assert usage["image_gib"] == 0.0  # 1 MiB, rounded to two decimals of a GiB


def test_tenants_see_public_images_and_their_own_and_change_only_their_own(panel, admin_api, member_api, tenant,
                                                                        tmp_path):
    public = upload(admin_api, qcow2(tmp_path), visibility="public")
    own = upload(member_api, qcow2(tmp_path, "own.qcow2"))
    other_tenant = make_tenant()
    stranger = token_client(make_user(tenant=other_tenant))
    assert public["tenant"] is None and public["status"] == "available"
    assert {i["id"] for i in member_api.get("/api/v1/images/").json()["results"]} == {public["id"], own["id"]}
    assert {i["id"] for i in stranger.get("/api/v1/images/").json()["results"]} == {public["id"]}
    assert stranger.get(f"/api/v1/images/{own['id']}/").status_code == 404
    # A platform image's origin and maker are the platform's business
    seen_by_tenant, seen_by_admin = (c.get(f"/api/v1/images/{public['id']}/").json() for c in (stranger, admin_api))
    assert (seen_by_tenant["filename"], seen_by_tenant["created_by"]) == ("", None)
    assert seen_by_admin["filename"] == "disk.qcow2" and seen_by_admin["created_by"]
    assert stranger.delete(f"/api/v1/images/{own['id']}/").status_code == 404
    assert member_api.delete(f"/api/v1/images/{public['id']}/").status_code == 403
    # Only platform admins publish public images; viewers add nothing
    refused = member_api.post("/api/v1/images/", {"name": "p", "size": 1, "visibility": "public"}, format="json")
    assert refused.status_code == 403
    viewer = token_client(make_user(tenant=tenant, role=Role.VIEWER))
    assert viewer.post("/api/v1/images/", {"name": "v", "size": 1}, format="json").status_code == 403


def test_delete_removes_the_image_and_its_bytes(panel, member_api, image_dirs, tmp_path):
    image = upload(member_api, qcow2(tmp_path))
    assert stored(image_dirs, image).exists()
    assert member_api.delete(f"/api/v1/images/{image['id']}/").status_code == 204
    assert not Image.objects.filter(pk=image["id"]).exists() and not any(image_dirs.iterdir())


def test_an_abandoned_upload_can_be_deleted_with_its_partial_data(panel, member_api, image_dirs):
    created = member_api.post("/api/v1/images/", {"name": "half", "size": 10}, format="json").json()
    member_api.put(f"/api/v1/images/{created['id']}/data/", b"12345", content_type="application/octet-stream",
                   HTTP_CONTENT_RANGE="bytes 0-4/10")
    assert any(image_dirs.iterdir())
    assert member_api.delete(f"/api/v1/images/{created['id']}/").status_code == 204
    assert not any(image_dirs.iterdir())


def test_transfer_urls_are_bound_to_one_image_and_one_use(panel, member_api, tmp_path):
    image = Image.objects.get(pk=upload(member_api, qcow2(tmp_path))["id"])
    client = Client()
    path = lambda op: urlsplit(transfer.url_for(image.uuid, op)).path  # noqa: E731
    assert client.get(path(transfer.READ)).status_code == 200
    assert client.put(path(transfer.READ), b"x", content_type="application/octet-stream").status_code == 403
    assert client.delete(path(transfer.READ)).status_code == 403
    # An available image's bytes are settled: no replacing, no discarding
    assert client.put(path(transfer.WRITE), b"x", content_type="application/octet-stream").status_code == 409
    assert client.delete(path(transfer.DISCARD)).status_code == 409
    assert client.get(path(transfer.READ)[:-5] + "XXXX/").status_code == 403


# --- instances from images and templates (libvirt's test driver) -------------------------------------------


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKx4 someone@laptop"


def test_an_instance_from_an_image_gets_an_overlay_and_a_seed(panel, member_api, host, tmp_path):
    image = upload(member_api, qcow2(tmp_path))
    response = member_api.post("/api/v1/instances/", {
        "name": "from-image", "boot_source": "image", "image": image["id"], "vcpus": 1, "memory_mib": 64,
        "ssh_keys": KEY, "password": "correct horse"}, format="json")
    assert response.status_code == 202, response.content
    instance = Instance.objects.get(pk=response.json()["instance"])
    assert instance.status == "running", instance.status_reason
    # The disk is at least the image's size, the host holds a copy (the test driver keeps no bytes to verify)
    assert instance.disk_gib == 1 and instance.image_id == image["id"]
    copy = ImageCopy.objects.get(image_id=image["id"], host=host)
    assert copy.status == "available" and copy.verified_at is None
    # The seed's user-data names the host, carries the key and only a hash of the password
    assert "hostname: from-image" in instance.user_data and KEY in instance.user_data
    assert "correct horse" not in instance.user_data and "$6$" in instance.user_data
    assert "password" not in member_api.get(f"/api/v1/instances/{instance.pk}/").json()
    # The image cannot go while the instance uses it
    refused = member_api.delete(f"/api/v1/images/{image['id']}/")
    assert refused.status_code == 409 and "instance from-image" in refused.json()["detail"]


def test_a_template_gives_its_size_user_data_and_script(panel, member_api, host, tmp_path):
    image = upload(member_api, qcow2(tmp_path))
    created = member_api.post("/api/v1/templates/", {
        "name": "web", "image": image["id"], "vcpus": 2, "memory_mib": 96, "disk_gib": 3,
        "user_data": "#cloud-config\npackages: [nginx]\n", "script": "echo provisioned > /tmp/done"},
        format="json")
    assert created.status_code == 201, created.content
    response = member_api.post("/api/v1/instances/", {"name": "web-1", "template": created.json()["id"]},
                               format="json")
    assert response.status_code == 202, response.content
    instance = Instance.objects.get(pk=response.json()["instance"])
    assert (instance.vcpus, instance.memory_mib, instance.disk_gib) == (2, 96, 3)
    assert instance.status == "running", instance.status_reason
    assert "nginx" in instance.user_data and "echo provisioned" in instance.user_data
    assert "text/x-shellscript" in instance.user_data and "hostname: web-1" in instance.user_data
    refused = member_api.delete(f"/api/v1/images/{image['id']}/")
    assert refused.status_code == 409 and "template web" in refused.json()["detail"]


@pytest.mark.parametrize(("body", "reason"), [
    ({"memory_mib": 8}, "memory_mib"),
    ({"ssh_keys": "not a key"}, "line 1 of the SSH keys"),
    ({"disk_gib": 0, "image": "iso"}, "needs a disk of at least 1 GiB"),
    ({"image": "uploading"}, "uploading, not available"),
    ({"image": "foreign"}, "No such image"),
    ({"boot_source": "kernel", "boot_kernel": "public"}, "go with the image boot source"),
])
def test_bad_image_boots_are_refused_with_the_reason(panel, member_api, tenant, host, tmp_path, body, reason):
    images = {
        "disk": upload(member_api, qcow2(tmp_path))["id"],
        "iso": Image.objects.create(name="cd", tenant=tenant, status="available", disk_format="iso", size=10,
                                    virtual_size=10, sha256="0" * 64).pk,
        "uploading": Image.objects.create(name="half", tenant=tenant, expected_bytes=10).pk,
        "foreign": Image.objects.create(name="theirs", tenant=make_tenant(), status="available",
                                        disk_format="qcow2", size=10, virtual_size=10, sha256="0" * 64).pk,
    }
    request = {"name": "bad", "boot_source": "image", "vcpus": 1, "memory_mib": 64, **body}
    request["image"] = images[body.get("image", "disk")]
    if "boot_kernel" in body:  # a boot kernel of the library the member may boot, given with the image
        request["boot_kernel"] = make_boot_kernel(host).pk
    response = member_api.post("/api/v1/instances/", request, format="json")
    # another tenant's image reads as no such image: 404, like a missing one
    assert response.status_code == (404 if body.get("image") == "foreign" else 400), response.content
    assert reason in json.dumps(response.json()), response.content
    assert not Instance.objects.exists()


def test_templates_refuse_bad_user_data_and_isos(panel, member_api, tenant, tmp_path):
    image = upload(member_api, qcow2(tmp_path))
    bad = member_api.post("/api/v1/templates/", {"name": "t", "image": image["id"], "disk_gib": 1,
                                                 "user_data": "#cloud-config\n- a list\n"}, format="json")
    assert bad.status_code == 400 and "mapping" in bad.json()["detail"]
    iso = Image.objects.create(name="cd", tenant=tenant, status="available", disk_format="iso", size=10,
                               virtual_size=10, sha256="0" * 64)
    refused = member_api.post("/api/v1/templates/", {"name": "t", "image": iso.pk}, format="json")
    assert refused.status_code == 400 and "a template boots a disk image" in refused.json()["detail"]
    assert "ISO" in refused.json()["detail"]


def test_an_admin_copies_an_image_to_a_host_ahead_of_use_and_the_pages_show_it(panel, admin_user, member,
                                                                                member_api, host, tmp_path):
    image = upload(member_api, qcow2(tmp_path))
    browser = Client()
    browser.force_login(member)
    refused = browser.post(f"/images/{image['id']}/copy/", {"host": host.pk}, follow=True)
    assert "Only platform admins" in refused.content.decode() and not ImageCopy.objects.exists()
    admin = Client()
    admin.force_login(admin_user)
    admin.post(f"/images/{image['id']}/copy/", {"host": host.pk})
    assert ImageCopy.objects.get(image_id=image["id"], host=host).status == "available"
    assert host.name in admin.get(f"/images/{image['id']}/").content.decode()
    copies = member_api.get(f"/api/v1/images/{image['id']}/").json()["copies"]
    assert [(c["host_name"], c["status"]) for c in copies] == [(host.name, "available")]


def test_abandoned_uploads_and_stuck_imports_expire_and_free_their_bytes(panel, member_api, image_dirs, settings):
    created = member_api.post("/api/v1/images/", {"name": "left", "size": 10}, format="json").json()
    member_api.put(f"/api/v1/images/{created['id']}/data/", b"12345", content_type="application/octet-stream",
                   HTTP_CONTENT_RANGE="bytes 0-4/10")
    fresh = member_api.post("/api/v1/images/", {"name": "fresh", "size": 10}, format="json").json()
    stuck = Image.objects.create(name="stuck", tenant=Image.objects.get(pk=fresh["id"]).tenant,
                                 status=ImageStatus.INSPECTING)
    day_ago = timezone.now() - timedelta(hours=25)
    Image.objects.filter(pk__in=[created["id"], stuck.pk]).update(updated_at=day_ago)
    with mock.patch("images.tasks.inspect_image.apply_async") as restart:
        expire_stale_images()
    left = Image.objects.get(pk=created["id"])
    assert left.status == ImageStatus.ERROR and "stopped at byte 5" in left.status_reason
    # An inspection whose worker went away starts over once (its bytes are intact), then fails
    restart.assert_called_once_with((stuck.pk,), headers={})
    assert Image.objects.get(pk=stuck.pk).status == ImageStatus.INSPECTING
    Image.objects.filter(pk=stuck.pk).update(updated_at=day_ago)
    expire_stale_images()
    stuck = Image.objects.get(pk=stuck.pk)
    assert stuck.status == ImageStatus.ERROR and "did not finish in time, twice" in stuck.status_reason
    assert Image.objects.get(pk=fresh["id"]).status == ImageStatus.UPLOADING  # a chunk arrived recently
    assert not any(image_dirs.glob(f"{left.uuid}*"))
    # and failed images hold no quota
    assert quotas.usage_of([left.tenant_id])[left.tenant_id]["image_gib"] == 10  # the fresh upload's announced size


def test_a_panel_out_of_reach_is_retried_and_then_fails_with_the_reason(panel, member_api, settings, tmp_path):
    created = member_api.post("/api/v1/images/", {"name": "lost", "size": 4}, format="json").json()
    settings.CLOUDPANEL_PANEL_URL = "http://127.0.0.1:9"  # nothing listens: every fetch fails to connect
    # As a worker would: each retry runs (at once, eagerly) instead of surfacing as an exception
    celery_app.conf.task_eager_propagates = False
    with mock.patch("images.tasks.inspect_image.retry", wraps=inspect_image.retry) as retry:
        answer = member_api.put(f"/api/v1/images/{created['id']}/data/", b"abcd",
                                content_type="application/octet-stream")
    assert answer.status_code == 200
    image = Image.objects.get(pk=created["id"])
    assert retry.call_count == inspect_image.max_retries
    assert image.status == ImageStatus.ERROR and "Connection refused" in image.status_reason


def test_automatic_placement_of_an_image_boot_skips_hosts_that_cannot_take_it(panel, member_api, host, tmp_path):
    # Given an LXC host with far more free RAM than the test-driver host
    make_host(uri="lxc:///", memory_mib=1 << 20, name="containers")
    image = upload(member_api, qcow2(tmp_path))
    response = member_api.post("/api/v1/instances/", {"name": "placed", "boot_source": "image",
                                                      "image": image["id"], "vcpus": 1, "memory_mib": 64},
                               format="json")
    assert response.status_code == 202, response.content
    assert Instance.objects.get(name="placed").host == host


def test_bodies_over_the_limit_are_refused_before_django_reads_them(settings, db):
    settings.CLOUDPANEL_MAX_REQUEST_BYTES = 1000
    settings.CLOUDPANEL_IMAGE_MAX_DOWNLOAD_GIB = 1

    def refused(path, headers, parts, *, django_reads=False):
        if django_reads:
            return asgi_request("POST", path, None, parts, headers=headers, disconnect=True)[:2]
        with mock.patch("django.core.handlers.asgi.ASGIHandler.read_body") as read_body:
            read_body.side_effect = AssertionError("Django read a body it should not have")
            return asgi_request("POST", path, None, parts, headers=headers, disconnect=True)[:2]

    # Announced too large: refused at once
    status, body = refused("/login/", [(b"content-length", b"5000")], [b"x" * 10])
    assert status == 413 and b"over the 1000 bytes" in body
    # Chunked without a length, past the limit: refused while it comes in
    status, _ = refused("/login/", [(b"transfer-encoding", b"chunked")], [b"x" * 600, b"x" * 600, b"x"],
                        django_reads=True)
    assert status == 413
    # Image data may be as large as an image, no larger
    status, _ = refused("/api/v1/images/1/data/", [(b"content-length", str(2 << 30).encode())], [b""])
    assert status == 413


def asgi_request(method: str, path: str, key: str | None, parts: list[bytes] = (), *, length: int | None = None,
                 disconnect: bool = False, headers: list[tuple[bytes, bytes]] = ()):
    """A request through the ASGI application as uvicorn would make it, the body in several messages;
    (status or None, body, the response's body messages)."""
    from asgiref.sync import async_to_sync

    from cloudpanel.asgi import application

    @async_to_sync
    async def run():
        pending, messages = list(parts) or [b""], []

        async def receive():
            if pending:
                body = pending.pop(0)
                return {"type": "http.request", "body": body, "more_body": bool(pending) or disconnect}
            if disconnect:
                return {"type": "http.disconnect"}
            await asyncio.sleep(3600)  # the client waits for the answer

        async def send(message):
            messages.append(message)

        sent_headers = [(b"host", b"testserver"), (b"content-type", b"application/octet-stream"), *headers]
        if key is not None:
            sent_headers.append((b"authorization", f"Token {key}".encode()))
        if length is not None:
            sent_headers.append((b"content-length", str(length).encode()))
        scope = {"type": "http", "method": method, "path": path, "headers": sent_headers, "query_string": b"",
                 "server": ("testserver", 80), "client": ("127.0.0.1", 1), "scheme": "http", "root_path": "",
                 "http_version": "1.1", "asgi": {"version": "3.0"}}
        await asyncio.wait_for(application(scope, receive, send), timeout=30)
        starts = [m["status"] for m in messages if m["type"] == "http.response.start"]
        assert len(starts) <= 1, messages  # one answer at most (none when Django gave up on a client gone)
        bodies = [m.get("body", b"") for m in messages if m["type"] == "http.response.body"]
        return (starts[0] if starts else None), b"".join(bodies), bodies

    return run()


def upload_settled(image: Image) -> bool:
    """No request holds the upload's lock."""
    try:
        with store.locked_upload(image.uuid):
            return True
    except UploadBusy:
        return False


def test_under_asgi_image_data_streams_to_the_store_without_a_spooled_copy(member, tenant, image_dirs):
    _token, key = create_api_token(user=member, name="asgi", tenant=tenant)
    image = Image.objects.create(name="streamed", tenant=tenant, expected_bytes=3 * MIB)
    data = os.urandom(3 * MIB)
    parts = [data[i:i + 64 * 1024] for i in range(0, 2 * MIB, 64 * 1024)]
    path = f"/api/v1/images/{image.pk}/data/"
    with mock.patch("django.core.handlers.asgi.tempfile.SpooledTemporaryFile",
                    side_effect=AssertionError("the body was spooled")):
        # A chunk whose client goes away half-way keeps nothing (Django answers no one: the client is gone)
        status, _, _ = asgi_request("PUT", path, key, parts[:5], length=2 * MIB, disconnect=True)
        assert status is None
        assert wait_for(lambda: upload_settled(image))  # the view, still in its thread, dropped the chunk
        image.refresh_from_db()
        assert image.received_bytes == 0 and (image_dirs / f"{image.uuid}.part").stat().st_size == 0
        # A whole chunk in many messages lands as it is
        status, body, _ = asgi_request("PUT", path, key, parts, length=2 * MIB)
    image.refresh_from_db()
    assert status == 200 and image.received_bytes == 2 * MIB, body
    assert (image_dirs / f"{image.uuid}.part").read_bytes() == data[:2 * MIB]


def test_under_asgi_streamed_responses_go_out_in_parts_not_gathered_in_memory(panel, member_api, admin_user,
                                                                                tmp_path):
    raw = tmp_path / "disk.img"
    raw.write_bytes(os.urandom(3 * MIB))
    image = Image.objects.get(pk=upload(member_api, raw)["id"])
    _token, admin_key = create_api_token(user=admin_user, name="asgi", tenant=None)
    with warnings.catch_warnings():
        # Django warns when it has to gather a response's iterator into a list first
        warnings.filterwarnings("error", message="StreamingHttpResponse must consume synchronous iterators")
        status, body, parts = asgi_request("GET", urlsplit(transfer.url_for(image.uuid, transfer.READ)).path, "")
        assert status == 200 and body == raw.read_bytes() and len(parts) >= 3
        status, body, _ = asgi_request("GET", "/api/v1/audit/export/", admin_key)
        assert status == 200 and b"image.create" in body
