"""Factory functions for test data (no JSON fixtures)."""

import itertools
import time
import uuid

from django.contrib.auth import get_user_model

from hosts.choices import HostState
from hosts.models import Host
from instances.choices import Status
from instances.models import Instance
from tenants.choices import Role
from tenants.models import Tenant
from tenants.services import add_member

_seq = itertools.count(1)


def make_user(*, staff: bool = False, tenant: Tenant | None = None, role: str = Role.MEMBER, password: str = "pw"):
    user = get_user_model().objects.create_user(
        username=f"user{next(_seq)}-{uuid.uuid4().hex[:6]}", password=password, is_staff=staff
    )
    if tenant is not None:
        add_member(tenant=tenant, user=user, role=role)
    return user


def make_tenant(name: str | None = None) -> Tenant:
    return Tenant.objects.create(name=name or f"tenant-{next(_seq)}-{uuid.uuid4().hex[:6]}")


def make_host(*, uri: str | None = None, cpus: int = 16, memory_mib: int = 8192, **fields) -> Host:
    """An online host; the default URI is libvirt's per-process test driver."""
    uri = uri or "test:///default"
    defaults = {"name": f"host-{next(_seq)}", "technology": uri.split(":", 1)[0].split("+", 1)[0],
                "state": HostState.ONLINE, "cpus": cpus, "memory_mib": memory_mib, "storage_pool": "default-pool"}
    defaults.update(fields)
    return Host.objects.create(uri=uri, **defaults)


def make_instance(*, tenant: Tenant, host: Host, status: str = Status.STOPPED, **fields) -> Instance:
    defaults = {"name": f"vm-{next(_seq)}", "vcpus": 1, "memory_mib": 128, "kernel": "/boot/vmlinuz"}
    defaults.update(fields)
    return Instance.objects.create(tenant=tenant, host=host, status=status, **defaults)


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll until predicate() is true or the timeout passes; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
