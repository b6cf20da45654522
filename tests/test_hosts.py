"""Hosts: registration, probing, failures, enable/disable, removal, and who may do it."""

from unittest import mock

import pytest

from hosts.choices import HostState
from hosts.models import Host
from instances.choices import Status
from tests.conftest import token_client
from tests.factories import make_boot_kernel, make_instance, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_registering_a_host_probes_it(admin_api):
    response = admin_api.post("/api/v1/hosts/", {"name": "node1", "uri": "test:///default"}, format="json")
    assert response.status_code == 201, response.content
    host = Host.objects.get(pk=response.json()["id"])
    assert host.state == HostState.ONLINE and host.technology == "test"
    assert host.cpus > 0 and host.memory_mib > 0 and host.libvirt_version
    assert "default-pool" in [pool["name"] for pool in host.pools]


@pytest.mark.parametrize("uri", ["not a uri", "http://example.com/", "ftp:///x", ""])
def test_malformed_uri_is_refused_with_a_reason(admin_api, uri):
    response = admin_api.post("/api/v1/hosts/", {"name": "bad", "uri": uri}, format="json")
    assert response.status_code == 400
    assert not Host.objects.exists()


def test_unreachable_host_shows_the_error_and_the_worker_survives(admin_api):
    # Given a host whose libvirt socket does not exist
    bad = admin_api.post("/api/v1/hosts/", {"name": "gone", "uri": "qemu+unix:///system?socket=/nonexistent/sock"},
                         format="json")
    # Then it is registered, offline, with the reason
    host = Host.objects.get(pk=bad.json()["id"])
    assert host.state == HostState.OFFLINE and "cannot connect" in host.last_error
    # And the next task still works
    good = admin_api.post("/api/v1/hosts/", {"name": "ok", "uri": "test:///default"}, format="json")
    assert Host.objects.get(pk=good.json()["id"]).state == HostState.ONLINE


def test_duplicate_uri_is_refused(admin_api, host):
    response = admin_api.post("/api/v1/hosts/", {"name": "again", "uri": host.uri}, format="json")
    assert response.status_code == 400 and "already registered" in response.json()["detail"]


def test_disabled_host_takes_no_new_instances(admin_api, tenant, host):
    assert admin_api.post(f"/api/v1/hosts/{host.pk}/disable/").json()["enabled"] is False
    response = admin_api.post("/api/v1/instances/", {"name": "x", "tenant": tenant.pk, "vcpus": 1, "memory_mib": 64,
                                                     "boot_kernel": make_boot_kernel(host).pk}, format="json")
    assert response.status_code == 400 and f"host '{host.name}' is disabled" in response.json()["detail"]
    assert admin_api.post(f"/api/v1/hosts/{host.pk}/enable/").json()["enabled"] is True


def test_removing_a_host_with_instances_is_refused_with_their_names(admin_api, tenant, host):
    make_instance(tenant=tenant, host=host, name="keeper")
    response = admin_api.delete(f"/api/v1/hosts/{host.pk}/")
    assert response.status_code == 409 and "keeper" in response.json()["detail"]
    assert Host.objects.filter(pk=host.pk).exists()


def test_removing_a_host_whose_instances_are_deleted_keeps_their_history(admin_api, tenant, host):
    gone = make_instance(tenant=tenant, host=host, status=Status.DELETED)
    gone.state_changes.create(from_status="running", to_status="deleted", at=gone.created_at, cause="action")
    assert admin_api.delete(f"/api/v1/hosts/{host.pk}/").status_code == 204
    gone.refresh_from_db()
    assert gone.host is None and gone.state_changes.count() == 1


def test_hosts_are_for_platform_admins_only(member, host):
    api = token_client(member)
    assert api.get("/api/v1/hosts/").status_code == 403
    with mock.patch("hosts.hypervisor.connections.connection") as conn:
        assert api.post("/api/v1/hosts/", {"name": "n", "uri": "test:///default"}, format="json").status_code == 403
        assert api.post(f"/api/v1/hosts/{host.pk}/disable/").status_code == 403
    conn.assert_not_called()


def test_host_pages_render_and_register(client, admin_user, host):
    client.force_login(admin_user)
    assert client.get("/hosts/").status_code == 200
    assert host.name in client.get(f"/hosts/{host.pk}/").content.decode()
    response = client.post("/hosts/", {"name": "n2", "uri": "nonsense", "accelerator": "auto",
                                       "storage_pool": "default"})
    assert response.status_code == 200 and "not a libvirt URI" in response.content.decode()
    response = client.post(f"/hosts/{host.pk}/disable/")
    assert response.status_code == 302 and not Host.objects.get(pk=host.pk).enabled
    member = make_user()
    client.force_login(member)
    assert client.get("/hosts/").status_code == 302  # to the admin login
