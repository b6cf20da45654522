"""Domains made outside the panel: listed per host for platform admins, and adopted into a tenant (its quota and
billing from that moment)."""

import re
import uuid
from contextlib import suppress

import pytest
from django.utils import timezone

from hosts import hypervisor
from hosts.models import HostDomain
from hosts.tasks import reconcile_host
from instances.choices import BootSource, Cause, Status
from instances.models import Instance
from tenants.quotas import usage_of
from tenants.services import set_quota
from tests.conftest import token_client
from tests.factories import make_boot_kernel, make_instance, make_tenant, make_user, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hand_made(host):
    """A domain defined on the host by hand (virsh define, say), running, with 2 vCPUs and 256 MiB."""
    domain_uuid = str(uuid.uuid4())
    conn = hypervisor.connection(host.uri)
    dom = conn.defineXML(f"<domain type='test'><name>hand-{domain_uuid[:8]}</name><uuid>{domain_uuid}</uuid>"
                         "<memory unit='MiB'>256</memory><vcpu>2</vcpu><os><type>hvm</type></os></domain>")
    dom.create()
    yield domain_uuid
    with suppress(hypervisor.HypervisorError):
        hypervisor.undefine(host.uri, domain_uuid)


def domains(api, host):
    response = api.get(f"/api/v1/hosts/{host.pk}/domains/")
    assert response.status_code == 200, response.content
    return {row["uuid"]: row for row in response.json()}


def test_a_reconcile_lists_domains_made_outside_the_panel_as_unmanaged(admin_api, member_api, host, hand_made):
    made = member_api.post("/api/v1/instances/", {"name": "ours", "vcpus": 1, "memory_mib": 64,
                                                  "boot_kernel": make_boot_kernel(host).pk}, format="json")
    ours = str(Instance.objects.get(pk=made.json()["instance"]).uuid)
    reconcile_host(host.pk)
    seen = domains(admin_api, host)
    assert seen[hand_made]["managed"] is False and seen[ours]["managed"] is True
    assert (seen[hand_made]["state"], seen[hand_made]["vcpus"], seen[hand_made]["memory_mib"]) == ("running", 2, 256)
    # And only platform admins see a host's domains
    assert member_api.get(f"/api/v1/hosts/{host.pk}/domains/").status_code == 403
    # And one removed by hand leaves the list at the next reconcile
    hypervisor.undefine(host.uri, hand_made)
    reconcile_host(host.pk)
    assert hand_made not in domains(admin_api, host)


def test_an_adopted_domain_is_the_tenants_instance_from_that_moment(admin_api, tenant, member, host, hand_made):
    reconcile_host(host.pk)
    domain = HostDomain.objects.get(uuid=hand_made)
    before = timezone.now()
    response = admin_api.post("/api/v1/instances/adopt/", {"domain": domain.pk, "tenant": tenant.pk,
                                                           "name": "legacy"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["uuid"], body["status"], body["vcpus"], body["memory_mib"], body["boot_source"]) == (
        hand_made, Status.RUNNING, 2, 256, BootSource.ADOPTED)
    # Its history starts now, with the adoption: what billing meters from
    change = Instance.objects.get(pk=body["id"]).state_changes.get()
    assert (change.from_status, change.to_status, change.cause) == (Status.PENDING, Status.RUNNING, Cause.ADOPTED)
    assert change.at >= before
    # The tenant sees it, counted in its quota, and operates it
    api = token_client(member, tenant)
    used = usage_of([tenant.pk])[tenant.pk]
    assert (used["instances"], used["vcpus"], used["memory_mib"]) == (1, 2, 256)
    assert api.post(f"/api/v1/instances/{body['id']}/poweroff/").status_code == 202
    assert hypervisor.state(host.uri, hand_made) == hypervisor.PowerState.STOPPED
    assert Instance.objects.get(pk=body["id"]).status == Status.STOPPED
    # It is no longer unmanaged, and cannot be adopted twice
    assert domains(admin_api, host)[hand_made]["managed"] is True
    again = admin_api.post("/api/v1/instances/adopt/", {"domain": domain.pk, "tenant": tenant.pk, "name": "twice"},
                           format="json")
    assert again.status_code == 409 and "already an instance" in again.json()["detail"]
    # And deleting it undefines the domain
    assert api.post(f"/api/v1/instances/{body['id']}/delete/").status_code == 202
    with pytest.raises(hypervisor.DomainNotFound):
        hypervisor.state(host.uri, hand_made)


def test_adoption_is_refused_cleanly(admin_api, member_api, tenant, host, hand_made):
    reconcile_host(host.pk)
    domain = HostDomain.objects.get(uuid=hand_made)
    body = {"domain": domain.pk, "tenant": tenant.pk, "name": "legacy"}
    # Only platform admins adopt
    assert member_api.post("/api/v1/instances/adopt/", body, format="json").status_code == 403
    # Beyond the tenant's quota
    set_quota(tenant=tenant, limits={"vcpus": 1})
    refused = admin_api.post("/api/v1/instances/adopt/", body, format="json")
    assert refused.status_code in (400, 409) and "vcpus" in refused.content.decode().lower()
    # A name the tenant already uses, a bad name, an unknown domain or tenant
    set_quota(tenant=tenant, limits={"vcpus": None})
    make_instance(tenant=tenant, host=host, name="taken")
    for wrong, code, reason in (({"name": "taken"}, 400, "already exists"), ({"name": "bad name!"}, 400, "name"),
                                ({"domain": 10 ** 9}, 404, "No such domain"), ({"tenant": 10 ** 9}, 404, "")):
        answer = admin_api.post("/api/v1/instances/adopt/", {**body, **wrong}, format="json")
        assert answer.status_code == code and reason in answer.content.decode(), (wrong, answer.content)
    assert not Instance.objects.filter(uuid=hand_made).exists()


def test_the_host_page_lists_unmanaged_domains_and_adopts_one(client, admin_user, tenant, host, hand_made):
    reconcile_host(host.pk)
    client.force_login(admin_user)
    page = client.get(f"/hosts/{host.pk}/").content.decode()
    assert f'data-domain="{hand_made}"' in page and "Adopt" in page
    domain = HostDomain.objects.get(uuid=hand_made)
    response = client.post(f"/instances/adopt/{domain.pk}/", {"tenant": tenant.pk, "name": "from-page"})
    instance = Instance.objects.get(uuid=hand_made)
    assert response.status_code == 302 and response["Location"] == f"/instances/{instance.pk}/"
    assert (instance.tenant, instance.name, instance.status) == (tenant, "from-page", Status.RUNNING)
    assert f'data-domain="{hand_made}"' not in client.get(f"/hosts/{host.pk}/").content.decode()
    # The page's title is the host's name alone
    assert re.search(rf"<title>\s*{host.name}\b[^<]*</title>", page)
    # A tenant admin cannot adopt through the page: sent to the admin sign-in, nothing made
    hand_made_too = str(uuid.uuid4())
    hypervisor.connection(host.uri).defineXML(
        f"<domain type='test'><name>hand-{hand_made_too[:8]}</name><uuid>{hand_made_too}</uuid>"
        "<memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>")
    try:
        reconcile_host(host.pk)
        other = make_user(tenant=make_tenant(), role="admin")
        client.force_login(other)
        refused = client.post(f"/instances/adopt/{HostDomain.objects.get(uuid=hand_made_too).pk}/",
                              {"tenant": tenant.pk, "name": "mine"})
        assert refused.status_code == 302 and refused["Location"].startswith("/admin/login/")
        assert not Instance.objects.filter(uuid=hand_made_too).exists()
    finally:
        hypervisor.undefine(host.uri, hand_made_too)


def test_the_listener_learns_a_domain_defined_by_hand_at_once(host, listener):
    assert wait_for(lambda: host.uri in listener.watched)
    domain_uuid = str(uuid.uuid4())
    conn = hypervisor.connection(host.uri)
    conn.defineXML(f"<domain type='test'><name>late-{domain_uuid[:8]}</name><uuid>{domain_uuid}</uuid>"
                   "<memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>")
    try:
        assert wait_for(lambda: HostDomain.objects.filter(host=host, uuid=domain_uuid).exists(), timeout=5)
    finally:
        hypervisor.undefine(host.uri, domain_uuid)
    assert wait_for(lambda: not HostDomain.objects.filter(host=host, uuid=domain_uuid).exists(), timeout=5)
