"""Bad input gets a 400 with its reason, never a 500, and nothing stored changes: bodies, text, paging, OPTIONS,
and address ranges spelled another way."""

import re

import pytest

from networks.models import Network
from tests.factories import make_tenant

pytestmark = pytest.mark.django_db(transaction=True)

WRITES = ["/api/v1/instances/", "/api/v1/networks/", "/api/v1/images/", "/api/v1/security-groups/",
          "/api/v1/tenants/", "/api/v1/members/", "/api/v1/plans/"]


@pytest.mark.parametrize(("body", "reason"), [
    ("[" * 5000 + "]" * 5000, "nested deeper than 32 levels"),  # beyond Python's recursion limit
    ('{"a":' * 40 + "1" + "}" * 40, "nested deeper than 32 levels"),  # parses, but deeper than allowed
    ("[1, 2]", "must be a JSON object, not list"),
    ('"text"', "must be a JSON object, not str"),
    ("null", "must be a JSON object, not null"),
    ('{"name": "\\ud800"}', "'name': ['not valid Unicode"),
    ('{"\\udfff": 1}', "'body': ['not valid Unicode"),
    ('{"name": "a\\u0000b"}', "'name': ['NUL and control characters are not allowed"),
    ('{"name": {"deeper": ["x\\u001b[31m"]}}', "'name.deeper[0]': ['NUL and control characters"),
    (b'{"name": "\xff"}', "JSON parse error"),
])
def test_bodies_that_are_not_a_clean_json_object_are_refused_with_the_reason(admin_api, body, reason):
    for path in WRITES:
        response = admin_api.generic("POST", path, body, content_type="application/json")
        assert response.status_code == 400 and reason in str(response.json()), (path, response.content[:300])


def test_text_keeps_tabs_and_line_breaks(admin_api):
    tenant = make_tenant()
    response = admin_api.post("/api/v1/security-groups/", {"name": "web", "description": "line one\r\n\tline two",
                                                           "tenant": tenant.pk}, format="json")
    assert response.status_code == 201 and response.json()["description"] == "line one\r\n\tline two"


@pytest.mark.parametrize(("query", "status", "rows"), [
    ("limit=10000", 200, 500),  # more than a page holds: a page
    ("limit=2", 200, 2),
    ("limit=9223372036854775808", 400, None),
    ("offset=9223372036854775808", 400, None),
    ("offset=1000000001", 400, None),
    ("limit=-1", 400, None),
    ("offset=x", 400, None),
    ("limit=%C2%B2", 400, None),  # "²" is a digit to Python's isdigit, not to int()
    ("offset=%D9%A1", 400, None),  # an Arabic-Indic one
])
def test_paging_parameters_are_checked_and_a_page_is_capped(admin_api, query, status, rows):
    tenant = make_tenant()
    Network.objects.bulk_create([Network(tenant=tenant, name=f"n{i}", kind="isolated") for i in range(501)])
    response = admin_api.get(f"/api/v1/networks/?{query}")
    assert response.status_code == status, response.content[:200]
    if rows is not None:
        assert len(response.json()["results"]) == rows and response.json()["count"] == 501
    else:
        assert "a whole number from 0 to" in str(response.json())


def test_options_is_answered_on_every_route_of_the_schema(admin_api):
    paths = admin_api.get("/api/schema/", {"format": "json"}).json()["paths"]
    assert len(paths) > 40
    for path in paths:
        response = admin_api.options(re.sub(r"\{[^}]+\}", "1", path))
        assert response.status_code in (200, 404) and response.json(), (path, response.content[:200])
    # (an invoice action's answer-only serializer has no fields to describe: that used to be a 500)
    assert admin_api.options("/api/v1/invoices/1/issue/").json()["name"] == "Issue"


def test_a_format_suffix_on_any_route_of_the_schema_is_a_404_not_a_500(admin_api):
    paths = admin_api.get("/api/schema/", {"format": "json"}).json()["paths"]
    for path in paths:
        suffixed = re.sub(r"\{[^}]+\}", "1", path).rstrip("/") + ".json"
        for method in ("get", "post"):
            response = getattr(admin_api, method)(suffixed)
            assert response.status_code == 404, (method, suffixed, response.status_code)


def test_a_non_object_body_on_an_object_is_refused_and_changes_nothing(admin_api, host):
    response = admin_api.patch(f"/api/v1/hosts/{host.pk}/", [{"enabled": False}], format="json")
    assert response.status_code == 400 and "must be a JSON object" in response.json()["detail"]
    host.refresh_from_db()
    assert host.enabled


@pytest.mark.parametrize("ipv6", ["::ffff:10.20.0.0/112", "::ffff:0:a14:0/112", "::a14:0/112", "64:ff9b::a14:0/120",
                                  "2002:a14::/32"])
def test_ipv6_subnets_that_spell_ipv4_addresses_are_refused(admin_api, ipv6):
    tenant = make_tenant()
    assert admin_api.post("/api/v1/networks/", {"name": "v4", "kind": "isolated", "cidr": "10.20.0.0/16",
                                                "tenant": tenant.pk}, format="json").status_code == 201
    response = admin_api.post("/api/v1/networks/", {"name": "v6", "kind": "isolated", "cidr": "10.21.0.0/24",
                                                    "ipv6_cidr": ipv6, "tenant": tenant.pk}, format="json")
    assert response.status_code == 400 and "spell IPv4 ones" in str(response.json()), response.content[:300]
    assert not Network.objects.filter(name="v6").exists()
