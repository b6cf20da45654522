"""Shared fixtures: eager tasks by default, API clients, a listener thread, the tiny guest."""

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path

import pytest
from django.db import connection
from rest_framework.test import APIClient

from cloudpanel.celery import app as celery_app
from tenants.models import Tenant
from tenants.services import create_api_token
from tests.factories import free_port, make_host, make_tenant, make_user

ROOT = Path(__file__).resolve().parent.parent
GUEST_DIR = Path(os.environ.get("CLOUDPANEL_GUEST_DIR", Path(__file__).resolve().parent.parent / ".cache/guest"))
# The busybox system container built by scripts/build-container-image.sh.
ARM_GUEST_DIR = Path(os.environ.get("CLOUDPANEL_ARM_GUEST_DIR", GUEST_DIR.parent / "guest-arm64"))
CONTAINER_IMAGE = Path(os.environ.get("CLOUDPANEL_CONTAINER_IMAGE", GUEST_DIR.parent / "container/rootfs.tar.gz"))
# Debian's installer as a bootable ISO, built by scripts/build-installer-iso.sh.
INSTALLER_ISO = Path(os.environ.get("CLOUDPANEL_INSTALLER_ISO", GUEST_DIR.parent / "installer/debian-installer.iso"))


# Modules whose tests share this machine's libvirtd (its test driver, QEMU guests, LXC), restart it, or run the
# panel's own processes: under pytest-xdist (`make test` runs three workers) they run one after the other on one
# worker, the rest of the suite spread over the others.
MACHINE_MODULES = {"test_browser", "test_faults", "test_qemu", "test_services", "test_worker"}


def pytest_configure(config):
    """Each xdist worker has a database of its own (pytest-django) and, here, its own channel-layer groups."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        from django.conf import settings

        layer = settings.CHANNEL_LAYERS["default"].get("CONFIG", {})
        if "prefix" in layer:  # (Redis)
            layer["prefix"] = f"asgi-{worker}"


@pytest.fixture(scope="session", autouse=True)
def console_service():
    """The console service, as the listener process runs it (with Redis; embedded, a console starts its own)."""
    from django.conf import settings

    from hosts import console_service

    if not settings.EMBEDDED:
        console_service.run_in_thread()


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Each test gets a channel layer object of its own: channels_redis binds its receive lock to the event loop
    that first waited on it, and a test's scenarios (async_to_sync) run on loops of their own, so a consumer a test
    left waiting would otherwise hold that lock for the next test's loop."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Each xdist worker numbers networks and NICs from a range of its own: their names on this machine's one
    libvirtd (cp-net-<id>, cp-port-<id>: its network and filter drivers serve every host URI) must not meet
    another worker's, whose database counts from 1 too."""
    from django.db import connection

    start = (int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")) + 1) * 1_000_000
    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                for table in ("networks_network", "networks_port"):
                    cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", [table, start])


@pytest.hookimpl(tryfirst=True)  # (before xdist's, which reads the groups into the tests' ids)
def pytest_collection_modifyitems(config, items):
    """Tests that share a libvirtd's guests run one after the other: the machine's, or the fleet hosts'."""
    for item in items:
        if item.get_closest_marker("qemu") and item.get_closest_marker("fleet_host"):
            item.add_marker(pytest.mark.xdist_group("fleet"))
        elif item.get_closest_marker("qemu") or item.module.__name__.rsplit(".", 1)[-1] in MACHINE_MODULES:
            item.add_marker(pytest.mark.xdist_group("machine"))


@pytest.fixture(autouse=True)
def image_dirs(settings, tmp_path):
    """Every test gets its own image store, backup store and worker scratch space."""
    settings.CLOUDPANEL_IMAGE_DIR = tmp_path / "image-store"
    settings.CLOUDPANEL_SCRATCH_DIR = str(tmp_path / "scratch")
    settings.CLOUDPANEL_BACKUP_DIR = tmp_path / "backups"
    (tmp_path / "scratch").mkdir()
    return settings.CLOUDPANEL_IMAGE_DIR


@pytest.fixture
def panel(live_server, settings):
    """The panel served over HTTP, where workers fetch and store image bytes."""
    settings.CLOUDPANEL_PANEL_URL = live_server.url
    return live_server


@pytest.fixture(autouse=True)
def eager_tasks():
    """Tasks run in-process when their transaction commits (tests that need a real worker turn this off)."""
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager = True


@pytest.fixture
def tenant(db):
    return make_tenant()


@pytest.fixture
def host(db):
    return make_host()


@pytest.fixture
def admin_user(db):
    return make_user(staff=True)


@pytest.fixture
def member(tenant):
    return make_user(tenant=tenant)


def token_client(user, tenant=None) -> APIClient:
    """An API client with a new token of the user's, bound to tenant (default: their first tenant)."""
    if tenant is None and not user.is_staff:
        tenant = Tenant.objects.filter(memberships__user=user).first()
    _token, key = create_api_token(user=user, name="test", tenant=tenant)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def admin_api(admin_user):
    return token_client(admin_user)


@pytest.fixture
def member_api(member, tenant):
    return token_client(member, tenant)


@pytest.fixture
def listener():
    """The event listener running in a thread of the test process, reconciling often."""
    from hosts.listener import Listener

    instance = Listener(rescan_seconds=0.2)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    yield instance
    instance.stop.set()
    thread.join(timeout=5)


@pytest.fixture(scope="session")
def guest():
    """Paths of the tiny test guest built by scripts/build-test-guest.sh."""
    kernel, initrd = GUEST_DIR / "vmlinuz", GUEST_DIR / "initrd.img"
    if not (kernel.exists() and initrd.exists()):
        pytest.fail(f"the tiny test guest is missing in {GUEST_DIR}: run scripts/build-test-guest.sh")
    return {"kernel": str(kernel), "initrd": str(initrd)}


@pytest.fixture
def reap_qemu_guests(transactional_db, settings):
    """Remove every QEMU domain and LXC container, disk, seed, container tree, image copy and network the test
    left, even when the test failed."""
    yield
    from django.db.models import Q

    from hosts import hypervisor
    from images import rootfs
    from images.models import ImageCopy
    from instances.models import Instance

    real = Q(host__uri__startswith="qemu") | Q(host__uri__startswith="lxc")
    for instance in Instance.objects.filter(real).select_related("host"):
        try:
            hypervisor.undefine(instance.host.uri, str(instance.uuid))
            for volume in (instance.volume_name, instance.seed_volume_name):
                hypervisor.delete_volume(instance.host.uri, instance.host.storage_pool, volume)
        except hypervisor.HypervisorError:
            pass
        rootfs.remove_tree(Path(settings.CLOUDPANEL_CONTAINER_DIR) / instance.root_dir_name)
    from networks.models import NetworkHost

    for placed in NetworkHost.objects.filter(host__uri__startswith="qemu").select_related("host", "network"):
        with suppress(hypervisor.HypervisorError):
            hypervisor.remove_network(placed.host.uri, placed.network.libvirt_name)
    for copy in ImageCopy.objects.filter(real).select_related("host"):
        with suppress(hypervisor.HypervisorError):
            hypervisor.delete_volume(copy.host.uri, copy.pool, copy.volume)


@pytest.fixture
def server(guest, reap_qemu_guests, image_dirs, settings):
    """`manage.py serve` embedded (worker and listener in-process) on the test database."""
    port = free_port()
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
               CLOUDPANEL_RECONCILE_SECONDS="5", CLOUDPANEL_METRICS_SECONDS="3", CLOUDPANEL_IMAGE_DIR=str(image_dirs),
               CLOUDPANEL_SCRATCH_DIR=settings.CLOUDPANEL_SCRATCH_DIR, CLOUDPANEL_UPLOAD_CHUNK_MIB="1")
    process = subprocess.Popen([sys.executable, "manage.py", "serve", "--port", str(port)], cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("the server did not start")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_fleet(*args: str) -> list[str]:
    """scripts/fleet.sh with these arguments; its output's words (start: the hosts' URIs)."""
    done = subprocess.run([str(ROOT / "scripts" / "fleet.sh"), *args], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.fixture(scope="session")
def fleet_uris():
    """Two extra libvirt hosts of this machine (started if they are not)."""
    uris = run_fleet("start", "2")
    assert len(uris) >= 2, uris
    return uris[:2]


def wipe_fleet_host(uri: str) -> None:
    """Everything a test left on a fleet host: domains, the panel's volumes, networks and filters."""
    from hosts import hypervisor

    conn = hypervisor.connection(uri)
    for dom in conn.listAllDomains(0):
        hypervisor.undefine(uri, dom.UUIDString())
    pool = conn.storagePoolLookupByName("default")
    pool.refresh(0)
    for volume in pool.listAllVolumes(0):
        if volume.name().startswith(("cp-", "cloudpanel-image-")):
            volume.delete(0)
    for network in conn.listAllNetworks(0):
        if network.name().startswith("cp-"):
            persistent = network.isPersistent()
            if network.isActive():
                network.destroy()
            if persistent:
                network.undefine()
    for nwfilter in conn.listAllNWFilters(0):
        if nwfilter.name().startswith("cp-"):
            nwfilter.undefine()


def _wiped(uri: str) -> None:
    from hosts import hypervisor

    try:
        wipe_fleet_host(uri)
    except hypervisor.HypervisorError:  # a host a test killed and brought back
        hypervisor.forget(uri)
        wipe_fleet_host(uri)


@pytest.fixture
def fleet(fleet_uris, reap_qemu_guests):
    """The two hosts registered (TCG), each wiped clean after the test."""
    from hosts import services as host_services
    from hosts.choices import HostState

    hosts = []
    for number, uri in enumerate(fleet_uris, start=1):
        host = host_services.register_host(name=f"fleet-{number}", uri=uri, accelerator="tcg")
        host.refresh_from_db()
        assert host.state == HostState.ONLINE, host.last_error
        hosts.append(host)
    yield hosts
    for uri in fleet_uris:
        _wiped(uri)


@pytest.fixture
def qemu_host(request, reap_qemu_guests):
    """A libvirtd with QEMU (TCG), registered as a host: the machine's own, or for a test marked fleet_host the first
    host of scripts/fleet.sh (wiped clean after the test), so that it runs beside those of the machine's libvirtd."""
    from hosts import services as host_services
    from hosts.choices import HostState

    uri = "qemu:///system"
    if request.node.get_closest_marker("fleet_host"):
        uri = request.getfixturevalue("fleet_uris")[0]
        request.addfinalizer(lambda: _wiped(uri))
    host = host_services.register_host(name="local-qemu", uri=uri, accelerator="tcg", storage_pool="default")
    host.refresh_from_db()
    assert host.state == HostState.ONLINE, host.last_error
    return host


@pytest.fixture
def guest_kernel(panel, guest):
    """The tiny guest as a public boot kernel of the library, as the demo registers it (workers fetch its files
    from the panel and copy them to the host)."""
    from images import services as image_services
    from images.management.commands.add_image import add_file

    kernel = add_file(Path(guest["kernel"]), name="guest kernel", declared_format="kernel")
    initrd = add_file(Path(guest["initrd"]), name="guest initrd", declared_format="initrd")
    return image_services.create_boot_kernel(user=None, tenant=None, visibility="public", name="tiny guest",
                                             kernel=kernel, initrd=initrd, cmdline="console=ttyS0")
