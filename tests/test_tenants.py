"""Tenants: switching, self-service pages, members, quotas and API tokens."""

import threading
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from hosts.models import Host
from instances.choices import Status
from instances.models import Instance
from tenants import services
from tenants.choices import Role
from tenants.models import APIToken, AuditEvent, Membership, Tenant
from tests.conftest import token_client
from tests.factories import make_boot_kernel, make_instance, make_tenant, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def create(api, **fields):
    body = {"name": "web", "vcpus": 1, "memory_mib": 128, "disk_gib": 1}
    if "boot_kernel" not in fields:  # a public boot kernel of the library, its files on every host there is
        body["boot_kernel"] = make_boot_kernel(*Host.objects.all()).pk
    body.update(fields)
    return api.post("/api/v1/instances/", body, format="json")


# --- tenants and switching ---------------------------------------------------------------


def test_a_user_in_two_tenants_switches_between_them_in_the_header(client, host):
    # Given a user who is a member of A and a viewer of B, with an instance in each
    a, b = make_tenant("alpha"), make_tenant("bravo")
    user = make_user(tenant=a)
    services.add_member(tenant=b, user=user, role=Role.VIEWER)
    in_a, in_b = make_instance(tenant=a, host=host), make_instance(tenant=b, host=host)
    client.force_login(user)
    # Then the pages show the first tenant only, and the header offers both
    page = client.get("/instances/")
    assert [i.pk for i in page.context["page"].object_list] == [in_a.pk]
    assert 'id="tenant-select"' in page.content.decode() and "bravo" in page.content.decode()
    assert client.get(f"/instances/{in_b.pk}/").status_code == 404
    # When they switch to B, they see B's instance, read-only
    response = client.post("/tenants/switch/", {"tenant": b.pk, "next": "/instances/"})
    assert response.status_code == 302 and response.url == "/instances/"
    assert [i.pk for i in client.get("/instances/").context["page"].object_list] == [in_b.pk]
    detail = client.get(f"/instances/{in_b.pk}/")
    assert detail.status_code == 200 and detail.context["can_operate"] is False
    assert 'id="terminal"' not in detail.content.decode() and "only allows reading" in detail.content.decode()
    # And a tenant they are not in cannot be chosen, nor an outside address as the next page
    other = make_tenant()
    response = client.post("/tenants/switch/", {"tenant": other.pk, "next": "https://evil.example/"}, follow=True)
    assert "No such tenant" in response.content.decode()
    assert response.redirect_chain[0][0] == "/"
    assert [i.pk for i in client.get("/instances/").context["page"].object_list] == [in_b.pk]


def test_the_api_takes_the_tenant_from_the_token_or_a_parameter(host):
    a, b, c = make_tenant(), make_tenant(), make_tenant()
    user = make_user(tenant=a)
    services.add_member(tenant=b, user=user)
    in_a, in_b = make_instance(tenant=a, host=host), make_instance(tenant=b, host=host)
    make_instance(tenant=c, host=host)
    # A token bound to A sees A only, and may not ask for B
    api_a = token_client(user, a)
    assert [r["id"] for r in api_a.get("/api/v1/instances/").json()["results"]] == [in_a.pk]
    assert api_a.get(f"/api/v1/instances/?tenant={b.pk}").status_code == 404
    assert api_a.get(f"/api/v1/instances/{in_b.pk}/").status_code == 404
    # With a session, the parameter picks the tenant; a tenant the user is not in is a 404
    api = APIClient()
    api.force_login(user)
    assert [r["id"] for r in api.get(f"/api/v1/instances/?tenant={b.pk}").json()["results"]] == [in_b.pk]
    assert api.get(f"/api/v1/instances/?tenant={c.pk}").json() == {"detail": "No such tenant."}
    assert api.get("/api/v1/instances/?tenant=999999").status_code == 404
    assert api.get("/api/v1/instances/?tenant=x").status_code == 404


def test_admin_filters_by_tenant_and_acts_on_behalf_recorded(client, admin_user, host):
    a, b = make_tenant(), make_tenant()
    in_a, in_b = make_instance(tenant=a, host=host), make_instance(tenant=b, host=host)
    client.force_login(admin_user)
    # The admin portal lists every tenant's instances and filters by tenant
    assert {i.pk for i in client.get("/instances/").context["page"].object_list} == {in_a.pk, in_b.pk}
    assert [i.pk for i in client.get(f"/instances/?tenant={b.pk}").context["page"].object_list] == [in_b.pk]
    # When acting for tenant A from the header, only A shows, and operations are recorded as on its behalf
    client.post("/tenants/switch/", {"tenant": a.pk, "next": "/"})
    assert [i.pk for i in client.get("/instances/").context["page"].object_list] == [in_a.pk]
    client.post(f"/instances/{in_a.pk}/op/start/")
    event = AuditEvent.objects.get(action="instance.start", channel="web")
    assert (event.user, event.tenant, event.on_behalf, event.result) == (admin_user, a, True, "ok")
    assert event.target_id == str(in_a.pk) and event.target_name == in_a.name
    # And back to all tenants
    client.post("/tenants/switch/", {"tenant": "", "next": "/"})
    assert len(client.get("/instances/").context["page"].object_list) == 2


def test_admin_creates_tenants_with_the_default_quota(client, admin_user, settings):
    settings.CLOUDPANEL_DEFAULT_QUOTA = {"instances": 7, "vcpus": 8, "memory_mib": 4096, "disk_gib": None}
    client.force_login(admin_user)
    response = client.post("/tenants/", {"name": "acme"})
    assert response.status_code == 302
    tenant = Tenant.objects.get(name="acme")
    assert (tenant.quota.instances, tenant.quota.vcpus, tenant.quota.disk_gib) == (7, 8, None)
    assert "already exists" in client.post("/tenants/", {"name": "acme"}).content.decode()
    member = make_user(tenant=tenant)
    client.force_login(member)
    assert client.post("/tenants/", {"name": "mine"}).status_code == 403


# --- members ---------------------------------------------------------------------------------


def test_tenant_admin_manages_members_and_keeps_an_admin(client, tenant):
    boss = make_user(tenant=tenant, role=Role.ADMIN)
    newcomer = make_user()
    client.force_login(boss)
    client.post(f"/tenants/{tenant.pk}/members/", {"username": newcomer.username, "role": "viewer"})
    membership = Membership.objects.get(tenant=tenant, user=newcomer)
    assert membership.role == Role.VIEWER
    client.post(f"/members/{membership.pk}/", {"role": "member"})
    membership.refresh_from_db()
    assert membership.role == Role.MEMBER
    response = client.post(f"/tenants/{tenant.pk}/members/", {"username": "nobody-such", "role": "member"},
                           follow=True)
    assert "No active user with this name" in response.content.decode()
    # The last admin cannot step down
    own = Membership.objects.get(tenant=tenant, user=boss)
    response = client.post(f"/members/{own.pk}/", {"role": "member"}, follow=True)
    assert "last admin" in response.content.decode()
    assert Membership.objects.get(pk=own.pk).role == Role.ADMIN
    # Removing a member revokes their tokens for the tenant
    token, key = services.create_api_token(user=newcomer, name="t", tenant=tenant)
    client.post(f"/members/{membership.pk}/remove/")
    assert not Membership.objects.filter(pk=membership.pk).exists()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/instances/").status_code == 401


def test_members_and_viewers_cannot_manage_members(client, tenant, member):
    outsider = make_user()
    client.force_login(member)
    assert client.post(f"/tenants/{tenant.pk}/members/", {"username": outsider.username}).status_code == 403
    own = Membership.objects.get(user=member)
    assert client.post(f"/members/{own.pk}/", {"role": "admin"}).status_code == 403
    assert Membership.objects.get(pk=own.pk).role == Role.MEMBER
    page = client.get(f"/tenants/{tenant.pk}/")
    assert page.status_code == 200 and page.context["can_manage"] is False
    assert AuditEvent.objects.filter(action="member.update", result="refused", status_code=403).exists()


def test_members_api(tenant):
    boss = make_user(tenant=tenant, role=Role.ADMIN)
    newcomer = make_user()
    api = token_client(boss, tenant)
    response = api.post("/api/v1/members/", {"username": newcomer.username, "role": "member"}, format="json")
    assert response.status_code == 201, response.content
    pk = response.json()["id"]
    assert api.patch(f"/api/v1/members/{pk}/", {"role": "bogus"}, format="json").status_code == 400
    assert api.patch(f"/api/v1/members/{pk}/", {"role": "viewer"}, format="json").json()["role"] == "viewer"
    assert token_client(newcomer, tenant).delete(f"/api/v1/members/{pk}/").status_code == 403
    assert api.delete(f"/api/v1/members/{pk}/").status_code == 204


# --- quotas ----------------------------------------------------------------------------------


def test_ten_concurrent_creates_against_a_quota_of_three(tenant, member, host):
    # Given a quota of three instances
    services.set_quota(tenant=tenant, limits={"instances": 3})
    clients = [token_client(member, tenant) for _ in range(10)]
    kernel = make_boot_kernel(host).pk
    results = []

    def attempt(index):
        try:
            response = create(clients[index], name=f"q{index}", boot_kernel=kernel)
            results.append((response.status_code, response.json().get("detail", "")))
        finally:
            connection.close()

    # When ten creates arrive at once
    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(10)]
    with mock.patch("instances.tasks.enqueue"):  # patched once: patching per thread would race
        [t.start() for t in threads]
        [t.join() for t in threads]
    # Then exactly three are accepted, and the rest are told why
    codes = sorted(code for code, _ in results)
    assert codes == [202] * 3 + [409] * 7, results
    assert all("Quota exceeded" in detail and "Instances: 3 of 3" in detail for code, detail in results
               if code == 409)
    assert Instance.objects.filter(tenant=tenant).count() == 3


def test_quota_is_released_when_resources_go_away(member_api, tenant, host):
    services.set_quota(tenant=tenant, limits={"instances": 1, "vcpus": 2})
    first = create(member_api, name="one").json()["instance"]
    assert create(member_api, name="two").status_code == 409
    assert member_api.delete(f"/api/v1/instances/{first}/").status_code == 202
    assert Instance.objects.get(pk=first).status == Status.DELETED
    assert create(member_api, name="two").status_code == 202
    # Every limit counts, each named in the refusal
    services.set_quota(tenant=tenant, limits={"instances": 10})
    response = create(member_api, name="big", vcpus=4, memory_mib=128)
    assert response.status_code == 409 and "vCPUs: 1 of 2 in use, 4 more asked" in response.json()["detail"]


def test_admission_counts_only_what_the_request_asks_and_is_limited(tenant, host):
    from django.test.utils import CaptureQueriesContext

    from tenants import quotas

    make_instance(tenant=tenant, host=host, vcpus=3)
    unlimited = {"instances": None, "vcpus": None, "memory_mib": None, "disk_gib": None, "image_gib": None,
                 "networks": None, "public_addresses": None}
    asked = {"instances": 1, "vcpus": 2, "memory_mib": 128, "disk_gib": 1}
    # Given no limit on what an instance takes: the tenant is locked and its quota read, nothing counted
    services.set_quota(tenant=tenant, limits=unlimited)
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        quotas.check(tenant=tenant, request=asked)
    assert len(queries) == 2
    # Given a limit on vCPUs only: the instances are counted (one query), not the images, networks or addresses
    services.set_quota(tenant=tenant, limits={**unlimited, "vcpus": 4})
    with (transaction.atomic(), CaptureQueriesContext(connection) as queries,
          pytest.raises(quotas.QuotaExceeded, match="vCPUs: 3 of 4 in use, 2 more asked")):
        quotas.check(tenant=tenant, request=asked)
    assert len(queries) == 3 and "instances_instance" in queries[2]["sql"]


def test_quota_lowered_below_use_keeps_what_exists_and_refuses_more(client, admin_user, member_api, tenant, host):
    for name in ("a", "b", "c"):
        assert create(member_api, name=name).status_code == 202
    # When an admin lowers the quota below current use from the tenant page
    client.force_login(admin_user)
    response = client.post(f"/tenants/{tenant.pk}/quota/", {"instances": 1, "vcpus": "", "memory_mib": "",
                                                             "disk_gib": 50})
    assert response.status_code == 302
    # Then the instances stay, the page shows the tenant over quota, and new ones are refused with the reason
    assert Instance.objects.filter(tenant=tenant).live().count() == 3
    page = client.get(f"/tenants/{tenant.pk}/")
    instances_line = next(line for line in page.context["lines"] if line.resource.key == "instances")
    assert instances_line.over and instances_line.used == 3 and instances_line.percent == 100
    assert "over quota" in page.content.decode().lower()
    response = create(member_api, name="d")
    assert response.status_code == 409 and "Instances: 3 of 1 in use" in response.json()["detail"]
    # And a bad limit is refused without touching the stored quota
    client.post(f"/tenants/{tenant.pk}/quota/", {"instances": -5})
    tenant.quota.refresh_from_db()
    assert tenant.quota.instances == 1 and tenant.quota.disk_gib == 50


def test_quota_is_set_by_platform_admins_only(client, tenant, admin_api):
    boss = make_user(tenant=tenant, role=Role.ADMIN)
    client.force_login(boss)
    assert client.post(f"/tenants/{tenant.pk}/quota/", {"instances": 999}).status_code == 403
    assert token_client(boss, tenant).put(f"/api/v1/tenants/{tenant.pk}/quota/", {"instances": 999},
                                          format="json").status_code == 403
    response = admin_api.put(f"/api/v1/tenants/{tenant.pk}/quota/", {"instances": 5, "vcpus": None},
                             format="json")
    assert response.status_code == 200 and response.json()["instances"] == 5
    body = token_client(boss, tenant).get(f"/api/v1/tenants/{tenant.pk}/").json()
    assert body["quota"]["instances"] == 5 and body["usage"]["instances"] == 0 and body["role"] == "admin"


# --- API tokens ------------------------------------------------------------------------------


def test_token_created_on_the_page_is_shown_once_and_stored_hashed(client, member, tenant, host):
    client.force_login(member)
    response = client.post("/tokens/", {"name": "ci", "tenant": tenant.pk, "expires_in_days": 30})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    key = response.context["created"]["key"]
    token = APIToken.objects.get(name="ci")
    assert token.digest == APIToken.digest_of(key) and token.tenant == tenant
    assert not APIToken.objects.filter(digest=key).exists() and not APIToken.objects.filter(prefix=key).exists()
    assert token.expires_at - timezone.now() > timedelta(days=29)
    assert key not in client.get("/tokens/").content.decode() and key not in str(dict(client.session))
    assert AuditEvent.objects.get(action="token.create").result == "ok"
    # A tenant the user is not in is not offered
    response = client.post("/tokens/", {"name": "sneaky", "tenant": make_tenant().pk})
    assert "Select a valid choice" in response.content.decode() and not APIToken.objects.filter(name="sneaky")
    # The key works in Authorization: Token …
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/instances/").status_code == 200
    # Revoked from the page, it stops at once
    client.post(f"/tokens/{token.pk}/revoke/")
    response = api.get("/api/v1/instances/")
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_expired_and_revoked_tokens_are_401(member, tenant):
    token, key = services.create_api_token(user=member, name="short", tenant=tenant,
                                           expires_at=timezone.now() + timedelta(minutes=5))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/instances/").status_code == 200
    APIToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = api.get("/api/v1/instances/")
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    _token, other_key = services.create_api_token(user=member, name="gone", tenant=tenant)
    assert token_client(member, tenant).delete(f"/api/v1/tokens/{_token.pk}/").status_code == 204
    api.credentials(HTTP_AUTHORIZATION=f"Token {other_key}")
    assert api.get("/api/v1/instances/").status_code == 401


def test_a_token_stops_with_its_users_membership_and_reads_the_memberships_once(tenant, django_assert_num_queries):
    member, staff = make_user(tenant=tenant), make_user(staff=True, tenant=tenant)
    clients = {user: APIClient() for user in (member, staff)}
    for user, api in clients.items():
        _, key = services.create_api_token(user=user, name="t", tenant=tenant, expires_at=None)
        api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        assert api.get("/api/v1/networks/").status_code == 200
    # A request reads the user's memberships once: for the token's check and for its scope
    statements = []

    def record(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        assert clients[member].get("/api/v1/networks/").status_code == 200
    assert len([sql for sql in statements if 'FROM "tenants_membership"' in sql]) == 1, statements
    # Once the member leaves the tenant other than through its page (which revokes their tokens too), the token
    # answers 401 with the reason
    Membership.objects.filter(tenant=tenant).delete()
    response = clients[member].get("/api/v1/networks/")
    assert response.status_code == 401
    assert response.json()["detail"] == "This token's user is no longer a member of its tenant."
    # A platform admin's token bound to the tenant still acts there (admins act for any tenant)
    assert clients[staff].get("/api/v1/networks/").status_code == 200
    assert clients[staff].get(f"/api/v1/tenants/{tenant.pk}/").status_code == 200


def test_token_api_returns_the_key_once_and_binds_it_to_one_of_your_tenants(member, tenant):
    # A token cannot make tokens (they would outlive its expiry or revocation)
    response = token_client(member, tenant).post("/api/v1/tokens/", {"name": "child"}, format="json")
    assert response.status_code == 403 and not APIToken.objects.filter(name="child").exists()
    api = APIClient()
    api.force_login(member)
    response = api.post("/api/v1/tokens/", {"name": "script"}, format="json")
    assert response.status_code == 201 and len(response.json()["key"]) == 40
    assert response.json()["tenant"] == tenant.pk
    listed = api.get(f"/api/v1/tokens/{response.json()['id']}/").json()
    assert "key" not in listed and listed["state"] == "active"
    other = make_tenant()
    response = api.post("/api/v1/tokens/", {"name": "x", "tenant": other.pk}, format="json")
    assert response.status_code == 404 and "No such tenant" in str(response.json())
    response = api.post("/api/v1/tokens/", {"name": "x", "tenant": None}, format="json")
    assert response.status_code == 400
    response = api.post("/api/v1/tokens/", {"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, format="json")
    assert response.status_code == 400 and "future" in response.json()["detail"]


def test_tokens_are_private_to_their_user_except_for_the_tenants_admins(tenant):
    alice, bob = make_user(tenant=tenant), make_user(tenant=tenant)
    boss = make_user(tenant=tenant, role=Role.ADMIN)
    token, _ = services.create_api_token(user=alice, name="alice's", tenant=tenant)
    assert token_client(bob, tenant).get(f"/api/v1/tokens/{token.pk}/").status_code == 404
    assert token_client(bob, tenant).delete(f"/api/v1/tokens/{token.pk}/").status_code == 404
    assert token_client(boss, tenant).delete(f"/api/v1/tokens/{token.pk}/").status_code == 204
    token.refresh_from_db()
    assert token.state == "revoked"


def test_ids_of_platform_objects_in_a_members_body_are_refused(member_api, host):
    # A member may not pick the host: placement does (with a host id in the body: 400, nothing created)
    response = create(member_api, host=host.pk)
    assert response.status_code == 400 and "Only platform admins choose a host" in str(response.json())
    assert create(member_api, host=10**9).json() == response.json()  # same answer: no hint whether it exists
    assert member_api.post("/api/v1/instances/", [1, 2], format="json").status_code == 400
    assert not Instance.objects.exists()
