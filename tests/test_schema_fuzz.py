"""The OpenAPI schema is the truth: every operation, fuzzed from the schema as a platform admin, a tenant admin, a
member and a viewer, answers without a server error, and every answer matches the schema."""

import uuid

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tenants.choices import Role
from tenants.services import add_member, create_api_token
from tests.factories import make_boot_kernel, make_host, make_instance, make_library_image, make_tenant

pytestmark = pytest.mark.django_db

schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
# Explicit examples, then generated cases, valid and invalid; the coverage phase (every boundary of every
# parameter) is left to a longer run: it would take minutes here.
schema.config.phases.update(phases=["examples", "fuzzing"])
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
ROLES = ("platform_admin", Role.ADMIN, Role.MEMBER, Role.VIEWER)


@pytest.fixture
def in_test_transaction():
    """Requests served inside the test's transaction, as Django's test client serves them: the WSGI handler must
    not close the connection when each ends."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture
def world(db, in_test_transaction):
    """Something of everything for the fuzzer to find: a host, an instance, images, a boot kernel, two tenants."""
    tenant, other = make_tenant(), make_tenant()
    host = make_host()
    make_instance(tenant=tenant, host=host)
    make_instance(tenant=other, host=host)
    make_library_image(tenant=tenant)
    make_boot_kernel(host)
    return tenant


def token_for(role: str, tenant) -> str:
    """An API token of a new user in the role (no password: hashing one would dominate the run)."""
    user = get_user_model().objects.create(username=f"fuzz-{uuid.uuid4().hex[:8]}", is_staff=role == "platform_admin")
    if role == "platform_admin":
        return create_api_token(user=user, name="fuzz", tenant=None, expires_at=None)[1]
    add_member(tenant=tenant, user=user, role=role)
    return create_api_token(user=user, name="fuzz", tenant=tenant, expires_at=None)[1]


@pytest.fixture(params=ROLES)
def token(request, world):
    return token_for(request.param, world)


@schema.parametrize()
@settings(max_examples=3, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_schema_says(case, token):
    case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=CHECKS)
