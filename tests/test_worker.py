"""A real Celery worker process on Redis runs the operations the API queues."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from cloudpanel.celery import app as celery_app
from hosts.choices import HostState
from hosts.models import Host
from images.management.commands.add_image import add_file
from instances.choices import ActionStatus, Status
from instances.models import Instance, InstanceAction
from tests.conftest import CONTAINER_IMAGE
from tests.factories import make_boot_kernel, wait_for
from tests.test_qemu import console_session

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def worker():
    """A `celery worker` process on the test database and Redis, on a queue of its own."""
    queue = f"test-{uuid.uuid4().hex[:8]}"
    settings = connection.settings_dict
    env = dict(os.environ, CLOUDPANEL_TASK_QUEUE=queue, CLOUDPANEL_PANEL_URL=django_settings.CLOUDPANEL_PANEL_URL,
               DATABASE_URL=f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "cloudpanel", "worker", "--pool", "threads", "-c", "2",
         "-Q", queue, "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env,
    )
    celery_app.conf.task_always_eager = False
    celery_app.conf.task_default_queue = queue
    yield process
    celery_app.conf.task_default_queue = os.environ.get("CLOUDPANEL_TASK_QUEUE", "cloudpanel")
    process.terminate()
    process.wait(timeout=20)


def test_worker_probes_and_runs_operations(worker, admin_api, tenant):
    # Given a host on libvirtd's shared test driver (the worker is another process)
    response = admin_api.post("/api/v1/hosts/", {"name": "shared", "uri": "test+unix:///default",
                                                 "storage_pool": "default-pool"}, format="json")
    host_id = response.json()["id"]
    assert wait_for(lambda: Host.objects.get(pk=host_id).state == HostState.ONLINE, 30), \
        Host.objects.get(pk=host_id).last_error
    # When an instance is created (from a boot kernel whose files the host has) and suspended through the API
    kernel = make_boot_kernel(Host.objects.get(pk=host_id))
    created = admin_api.post("/api/v1/instances/", {"name": "w1", "tenant": tenant.pk, "vcpus": 1, "memory_mib": 64,
                                                    "disk_gib": 1, "boot_kernel": kernel.pk}, format="json").json()
    assert wait_for(lambda: Instance.objects.get(pk=created["instance"]).status == Status.RUNNING, 30)
    suspend = admin_api.post(f"/api/v1/instances/{created['instance']}/suspend/").json()
    # Then the worker ran both, and the actions say so
    assert wait_for(lambda: InstanceAction.objects.get(pk=suspend["id"]).status == ActionStatus.SUCCEEDED, 30)
    assert Instance.objects.get(pk=created["instance"]).status == Status.PAUSED
    delete = admin_api.post(f"/api/v1/instances/{created['instance']}/delete/").json()
    assert wait_for(lambda: InstanceAction.objects.get(pk=delete["id"]).status == ActionStatus.SUCCEEDED, 30)
    assert worker.poll() is None  # still alive


def test_a_container_made_by_the_worker_has_its_console_in_the_web_process(panel, worker, member, member_api,
                                                                          reap_qemu_guests):
    # Given the local LXC host and the busybox container image, which the worker fetches from the panel
    host = Host.objects.create(name="local-lxc", uri="lxc:///", technology="lxc", storage_pool="default",
                               state=HostState.ONLINE, cpus=2, memory_mib=4096)
    image = add_file(CONTAINER_IMAGE, name="busybox", declared_format="tar")
    # When a member asks for a system container through the API
    created = member_api.post("/api/v1/instances/", {"name": "svc", "vcpus": 1, "memory_mib": 64,
                                                     "boot_source": "container", "image": image.pk},
                              format="json").json()
    # Then the worker process unpacks and starts it, and the web side's console reaches its shell
    assert wait_for(lambda: Instance.objects.get(pk=created["instance"]).status == Status.RUNNING, 60), \
        Instance.objects.get(pk=created["instance"]).status_reason
    instance = Instance.objects.get(pk=created["instance"])
    assert instance.host == host
    assert "cp-42" in console_session(instance, member, "echo cp-$((6*7))", r"cp-42")
    delete = member_api.post(f"/api/v1/instances/{instance.pk}/delete/").json()
    assert wait_for(lambda: InstanceAction.objects.get(pk=delete["id"]).status == ActionStatus.SUCCEEDED, 30)
