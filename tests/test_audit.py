"""The audit log: requests (refused ones too), sign-ins, console sessions; its page, API and CSV export."""

import csv
import io
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from cloudpanel.asgi import application
from instances.choices import Operation, Status
from instances.lifecycle import SPECIAL
from instances.models import Instance
from networks.security import create_group
from networks.services import create_network, create_port
from tenants.choices import Role
from tenants.models import AuditEvent
from tests.conftest import token_client
from tests.factories import make_boot_kernel, make_instance, make_tenant, make_user

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")  # the address the socket was opened to, as a browser sends it


def test_viewer_posting_any_operation_is_refused_audited_and_never_reaches_the_hypervisor(client, tenant, host):
    viewer = make_user(tenant=tenant, role=Role.VIEWER)
    instance = make_instance(tenant=tenant, host=host, status=Status.RUNNING)
    api = token_client(viewer, tenant)
    client.force_login(viewer)
    network = create_network(user=None, tenant=tenant, name="lan", kind="nat", cidr="10.70.0.0/24")
    port = create_port(network=network)
    port.instance = instance
    port.save(update_fields=["instance"])
    group = create_group(user=None, tenant=tenant, name="web")
    operations = [op.value for op in Operation if op not in SPECIAL]
    # every other change of the tenant's a viewer could try through the API: method, path, body
    changes = [("post", f"/api/v1/instances/{instance.pk}/media/", {"image": None}),
               ("post", f"/api/v1/instances/{instance.pk}/attach-nic/", {"network": network.pk}),
               ("post", f"/api/v1/instances/{instance.pk}/detach-nic/", {"port": port.pk}),
               ("delete", f"/api/v1/instances/{instance.pk}/", None),
               ("patch", f"/api/v1/ports/{port.pk}/", {"security_groups": [group.pk]}),
               ("post", "/api/v1/security-group-rules/", {"group": group.pk, "direction": "ingress"}),
               ("delete", f"/api/v1/security-groups/{group.pk}/", None),
               ("delete", f"/api/v1/networks/{network.pk}/", None)]
    with mock.patch("hosts.hypervisor.connections.connection") as conn, \
            mock.patch("networks.tasks.sync_filters.apply_async") as filters:
        for operation in operations:
            assert api.post(f"/api/v1/instances/{instance.pk}/{operation}/").status_code == 403
            client.post(f"/instances/{instance.pk}/op/{operation}/")
        for method, path, body in changes:
            assert getattr(api, method)(path, body, format="json").status_code == 403, path
    conn.assert_not_called()
    filters.assert_not_called()
    assert instance.actions.count() == 0 and not port.security_groups.exists() and group.rules.count() == 2
    refused = AuditEvent.objects.filter(user=viewer, result="refused")
    assert refused.count() == 2 * len(operations) + len(changes)
    event = refused.filter(channel="api", action="instance.poweroff").get()
    assert (event.tenant, event.target_type, event.target_id, event.status_code) == (
        tenant, "instance", str(instance.pk), 403)
    assert "only allows reading" in event.detail
    page_event = refused.filter(channel="web", action="instance.reboot").get()
    assert page_event.target_name == instance.name and "only allows reading" in page_event.detail


def test_accepted_operation_is_audited_with_who_what_where_and_the_result(member_api, member, tenant, host):
    # Given a stopped instance that exists on the (test driver) host
    body = {"name": "audited", "vcpus": 1, "memory_mib": 64, "boot_kernel": make_boot_kernel(host).pk}
    instance = Instance.objects.get(pk=member_api.post("/api/v1/instances/", body, format="json").json()["instance"])
    assert member_api.post(f"/api/v1/instances/{instance.pk}/poweroff/").status_code == 202
    # When it is started
    response = member_api.post(f"/api/v1/instances/{instance.pk}/start/", REMOTE_ADDR="198.51.100.7")
    assert response.status_code == 202
    event = AuditEvent.objects.get(action="instance.start", channel="api")
    assert (event.user, event.username, event.tenant, event.tenant_name) == (member, member.username, tenant,
                                                                             tenant.name)
    assert (event.address, event.result, event.status_code, event.method) == ("198.51.100.7", "ok", 202, "POST")
    assert event.path == f"/api/v1/instances/{instance.pk}/start/" and not event.on_behalf
    # And how the operation ended in the worker is recorded too
    done = AuditEvent.objects.get(action="instance.start", channel="worker")
    assert (done.user, done.tenant, done.target_id, done.result) == (member, tenant, str(instance.pk), "ok")


def test_failed_operation_outcome_is_audited_with_the_error(member_api, member, tenant, host):
    from hosts import hypervisor

    instance = make_instance(tenant=tenant, host=host, status=Status.STOPPED)
    with mock.patch("hosts.hypervisor.start", side_effect=hypervisor.HypervisorError("no such kernel")):
        assert member_api.post(f"/api/v1/instances/{instance.pk}/start/").status_code == 202
    done = AuditEvent.objects.get(action="instance.start", channel="worker")
    assert done.result == "failed" and "no such kernel" in done.detail and done.user == member


def test_refusals_of_rolled_back_requests_are_still_recorded(member_api, tenant, host):
    from tenants import services

    services.set_quota(tenant=tenant, limits={"instances": 0})
    body = {"name": "x", "vcpus": 1, "memory_mib": 64, "boot_kernel": make_boot_kernel(host).pk}
    assert member_api.post("/api/v1/instances/", body, format="json").status_code == 409
    event = AuditEvent.objects.get(action="instance.create", channel="api")
    assert event.result == "refused" and "Quota exceeded" in event.detail and event.tenant == tenant


def test_another_tenants_object_is_audited_without_naming_it(member_api, host):
    other = make_instance(tenant=make_tenant(), host=host, status=Status.RUNNING)
    assert member_api.post(f"/api/v1/instances/{other.pk}/reboot/").status_code == 404
    event = AuditEvent.objects.get(action="instance.reboot")
    assert event.result == "refused" and event.status_code == 404
    assert event.target_id == str(other.pk) and event.target_name == "" and event.tenant_name != other.tenant.name


def test_sign_in_attempts_and_sign_out_are_audited(client):
    user = make_user(password="right-password-1")
    client.post("/login/", {"username": user.username, "password": "wrong"}, REMOTE_ADDR="192.0.2.5")
    client.post("/login/", {"username": user.username, "password": "right-password-1"}, REMOTE_ADDR="192.0.2.5")
    client.post("/logout/")
    rows = list(AuditEvent.objects.order_by("id").values_list("action", "username", "result", "address"))
    assert rows == [("login", "", "refused", "192.0.2.5"), ("login", user.username, "ok", "192.0.2.5"),
                    ("logout", user.username, "ok", "127.0.0.1")]
    # The name a failed attempt gave is kept as what it is: a claim
    assert AuditEvent.objects.order_by("id").first().detail == f"user name given: {user.username}"


def test_console_sessions_are_audited_with_their_duration(member, tenant, host):
    instance = make_instance(tenant=tenant, host=host, status=Status.RUNNING)
    other = make_instance(tenant=make_tenant(), host=host, status=Status.RUNNING)

    @async_to_sync
    async def scenario():
        with mock.patch("hosts.hypervisor.Console"):
            viewer = WebsocketCommunicator(application, f"/ws/instances/{instance.pk}/console/", headers=[ORIGIN, HOST])
            viewer.scope["user"] = member
            assert (await viewer.connect())[0]
            await viewer.disconnect()
            foreign = WebsocketCommunicator(application, f"/ws/instances/{other.pk}/console/", headers=[ORIGIN, HOST])
            foreign.scope["user"] = member
            return await foreign.connect()

    assert scenario() == (False, 4404)
    opened = AuditEvent.objects.get(action="console.open", result="ok")
    assert (opened.user, opened.tenant, opened.target_id, opened.channel) == (member, tenant, str(instance.pk),
                                                                             "console")
    assert opened.ended_at is not None and opened.duration.total_seconds() >= 0
    refused = AuditEvent.objects.get(action="console.open", result="refused")
    assert refused.status_code == 4404 and refused.target_id == str(other.pk) and refused.tenant is None


def test_viewers_cannot_open_a_console(tenant, host):
    viewer = make_user(tenant=tenant, role=Role.VIEWER)
    instance = make_instance(tenant=tenant, host=host, status=Status.RUNNING)

    @async_to_sync
    async def scenario():
        with mock.patch("hosts.hypervisor.Console") as console:
            communicator = WebsocketCommunicator(application, f"/ws/instances/{instance.pk}/console/",
                                                 headers=[ORIGIN, HOST])
            communicator.scope["user"] = viewer
            return await communicator.connect(), console.called

    assert scenario() == ((False, 4403), False)
    assert AuditEvent.objects.get(action="console.open").result == "refused"


def test_audit_page_filters_and_exports_csv_for_admins(client, admin_user, tenant, host):
    member = make_user(tenant=tenant)
    instance = make_instance(tenant=tenant, host=host, status=Status.STOPPED, name="=cmd")
    client.force_login(member)
    client.post(f"/instances/{instance.pk}/op/suspend/")  # refused: it is stopped
    client.post(f"/instances/{instance.pk}/op/start/")
    client.force_login(admin_user)
    page = client.get("/audit/?result=refused")
    assert page.status_code == 200
    assert [e.action for e in page.context["page"].object_list] == ["instance.suspend"]
    assert "cannot suspend" in page.context["page"].object_list[0].detail
    assert len(client.get(f"/audit/?username={member.username}&channel=web").context["page"].object_list) == 2
    assert client.get("/audit/?since=not-a-date").status_code == 200
    export = client.get(f"/audit/export.csv?username={member.username}&channel=web")
    assert export["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert rows[0][:3] == ["time_utc", "user", "tenant"] and len(rows) == 3
    assert {r[5] for r in rows[1:]} == {"instance.suspend", "instance.start"}
    assert all(r[8] == "'=cmd" for r in rows[1:])  # a formula-looking name is not a formula in a spreadsheet


def test_audit_log_is_for_admins_and_each_tenant_admin_sees_their_own(client, host):
    a, b = make_tenant(), make_tenant()
    boss_a, member_a = make_user(tenant=a, role=Role.ADMIN), make_user(tenant=a)
    member_b = make_user(tenant=b)
    for user, tenant in ((member_a, a), (member_b, b)):
        instance = make_instance(tenant=tenant, host=host, status=Status.STOPPED)
        token_client(user, tenant).post(f"/api/v1/instances/{instance.pk}/start/")
    api = token_client(boss_a, a)
    events = api.get("/api/v1/audit/").json()["results"]
    assert {e["tenant"] for e in events} == {a.pk} and events
    assert api.get("/api/v1/audit/export/").status_code == 200
    assert token_client(member_a, a).get("/api/v1/audit/").status_code == 403
    client.force_login(member_a)
    assert client.get("/audit/").status_code == 403
    assert client.get("/audit/export.csv").status_code == 403
    client.force_login(boss_a)
    assert {e.tenant_id for e in client.get("/audit/").context["page"].object_list} == {a.pk}


def test_bad_time_filters_are_refused_clearly_and_a_plain_until_date_includes_that_day(client, admin_api,
                                                                                      admin_user):
    from django.utils import timezone

    AuditEvent.objects.create(channel="web", action="marker.today", result="ok")
    today = timezone.now().date().isoformat()
    client.force_login(admin_user)
    for bad in ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00+05:00", "not-a-time"):
        page = client.get("/audit/", {"since": bad})
        assert page.status_code == 200 and page.context["filter"].errors and not page.context["page"].object_list
        assert client.get("/audit/export.csv", {"since": bad}).status_code == 400
        assert admin_api.get("/api/v1/audit/", {"since": bad}).status_code == 400
    listed = client.get("/audit/", {"until": today, "action": "marker"}).context["page"].object_list
    assert [e.action for e in listed] == ["marker.today"]
