"""Server-rendered pages, the OpenAPI schema and docs, and the token command."""

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from instances.choices import Status
from instances.models import Instance
from networks.models import Network
from networks.services import create_network
from tenants.choices import Role
from tenants.models import APIToken, AuditEvent
from tests.factories import make_boot_kernel, make_instance, make_tenant, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_pages_require_login(client):
    for url in ["/", "/instances/", "/instances/new/", "/instances/actions/"]:
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith("/login/")


def test_overview_counts_instances_by_state(client, member, tenant, host):
    make_instance(tenant=tenant, host=host, status=Status.RUNNING)
    make_instance(tenant=tenant, host=host, status=Status.STOPPED)
    make_instance(tenant=make_tenant(), host=host, status=Status.RUNNING)  # another tenant's
    client.force_login(member)
    response = client.get("/")
    assert response.status_code == 200
    assert response.context["total"] == 2
    assert response.context["chart"]["keys"] == ["stopped", "running"]


def test_create_form_shows_refusals_and_creates(client, member, host):
    client.force_login(member)
    form = {"name": "x<y>", "vcpus": 1, "memory_mib": 64, "disk_gib": 0, "boot_source": "kernel",
            "boot_kernel": make_boot_kernel(host).pk, "tenant": member.memberships.get().tenant_id}
    response = client.post("/instances/new/", form)
    assert response.status_code == 200 and "letters, digits" in response.content.decode()
    assert "&lt;y&gt;" in response.content.decode() and "x<y>" not in response.content.decode()
    response = client.post("/instances/new/", {**form, "name": "ok", "vcpus": 999})
    assert "vCPUs" in response.content.decode() and not Instance.objects.exists()
    response = client.post("/instances/new/", {**form, "name": "ok"})
    instance = Instance.objects.get(name="ok")
    assert response.status_code == 302 and response.url == f"/instances/{instance.pk}/"
    assert "host" not in client.get("/instances/new/").context["form"].fields  # members don't pick hosts


def test_detail_page_operation_and_retry_buttons(client, member, tenant, host):
    client.force_login(member)
    instance = make_instance(tenant=tenant, host=host, status=Status.STOPPED)
    page = client.get(f"/instances/{instance.pk}/")
    assert page.status_code == 200 and page.context["operations"] == ["start", "delete"]
    response = client.post(f"/instances/{instance.pk}/op/suspend/", follow=True)
    assert "cannot suspend" in response.content.decode()
    assert client.post(f"/instances/{instance.pk}/op/bogus/").status_code == 404


def test_other_tenants_pages_are_404(client, member, host):
    other = make_instance(tenant=make_tenant(), host=host)
    client.force_login(member)
    assert client.get(f"/instances/{other.pk}/").status_code == 404
    assert client.post(f"/instances/{other.pk}/op/delete/").status_code == 404
    assert other.actions.count() == 0


def test_schema_and_docs(admin_api, client, admin_user):
    schema = admin_api.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/instances/{id}/shutdown/" in paths and "/api/v1/actions/{id}/retry/" in paths
    client.force_login(admin_user)
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and "swagger-ui" in docs.content.decode()


def test_api_token_command_prints_a_working_key(admin_user):
    out = io.StringIO()
    call_command("api_token", admin_user.username, stdout=out)
    key = out.getvalue().strip()
    token = APIToken.objects.get(user=admin_user)
    assert token.digest == APIToken.digest_of(key) and key not in token.digest
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/hosts/").status_code == 200
    with pytest.raises(CommandError):
        call_command("api_token", "nobody-here")


def test_demo_command_is_idempotent():
    for _ in range(2):
        call_command("demo", stdout=io.StringIO())
    from billing.models import RatePlan, TenantBilling
    from hosts.models import Host

    assert Host.objects.filter(uri="test:///default").count() == 1
    assert RatePlan.objects.filter(name="Standard").count() == 1
    assert TenantBilling.objects.get(tenant__name="demo").plan.name == "Standard"


def test_deleted_instance_of_a_removed_host_still_shows(client, admin_user, tenant, host):
    gone = make_instance(tenant=tenant, host=host, status=Status.DELETED)
    Instance.objects.filter(pk=gone.pk).update(host=None)  # what removing its host does
    client.force_login(admin_user)
    page = client.get(f"/instances/{gone.pk}/")
    assert page.status_code == 200 and "(removed)" in page.content.decode()
    assert client.get("/instances/?status=deleted").status_code == 200


def test_the_create_form_puts_a_nic_on_a_network_and_the_page_plugs_more(client, member, tenant, host):
    from networks.services import create_network

    network = create_network(user=member, tenant=tenant, name="lan", kind="nat", cidr="10.66.0.0/24")
    client.force_login(member)
    form = {"name": "web", "vcpus": 1, "memory_mib": 64, "disk_gib": 0, "boot_source": "kernel",
            "boot_kernel": make_boot_kernel(host).pk, "tenant": tenant.pk, "address": "10.66.0.20"}
    refused = client.post("/instances/new/", form)  # an address without a network
    assert refused.status_code == 200 and "An address goes with a network" in refused.content.decode()
    created = client.post("/instances/new/", {**form, "network": network.pk})
    instance = Instance.objects.get(name="web")
    assert created.status_code == 302 and instance.status == Status.RUNNING, instance.status_reason
    page = client.get(f"/instances/{instance.pk}/").content.decode()
    assert "10.66.0.20" in page and "Plug in" in page
    # Plugging a second NIC at a taken address is refused with the reason, and keeps nothing
    refused = client.post(f"/instances/{instance.pk}/nic/attach/", {"network": network.pk, "address": "10.66.0.20"},
                          follow=True)
    assert "10.66.0.20 is already in use" in refused.content.decode() and instance.ports.count() == 1


def test_page_writes_are_refused_in_one_way_and_every_refusal_is_recorded_with_its_reason(client, tenant):
    # Given a viewer of a tenant with a network, and another tenant's network
    viewer = make_user(tenant=tenant, role=Role.VIEWER)
    client.force_login(viewer)
    network = create_network(user=None, tenant=tenant, name="lan", kind="nat", cidr="10.71.0.0/24")
    foreign = create_network(user=None, tenant=make_tenant(), name="theirs", kind="nat", cidr="10.72.0.0/24")
    # When they press a button on their tenant's network, post its "add" form, and try the other tenant's
    button = client.post(f"/networks/{network.pk}/delete/", follow=True)
    form = client.post("/networks/", {"name": "x", "kind": "nat", "cidr": "10.73.0.0/24"})
    hidden = client.post(f"/networks/{foreign.pk}/delete/")
    unknown = client.post(f"/instances/{network.pk}/op/format-disk/")
    # Then the button goes back to the network's page with the reason, the form is a 403, the other tenant's
    # network does not exist for them, an unknown operation neither; nothing changed
    assert button.redirect_chain[-1][0] == f"/networks/{network.pk}/"
    assert "only allows reading" in button.content.decode()
    assert (form.status_code, hidden.status_code, unknown.status_code) == (403, 404, 404)
    assert Network.objects.filter(pk__in=[network.pk, foreign.pk]).count() == 2
    # And every attempt is in the audit log as refused; the two on their tenant's network with what was tried, on
    # what and why (the 404s name only the page, as nothing was found to name)
    refused = {e.action: e for e in AuditEvent.objects.filter(user=viewer, result="refused")}
    assert set(refused) == {"network.delete", "network.create", "network-delete", "instance-operation"}
    refused = {action: refused[action] for action in ("network.delete", "network.create")}
    assert refused["network.delete"].target_name == "lan" and refused["network.delete"].tenant == tenant
    assert all("only allows reading" in event.detail for event in refused.values())
