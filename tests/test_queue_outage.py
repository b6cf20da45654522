"""A broker outage never leaves an instance busy: the request fails with 503 and Retry-After, and what it
would have stored is not there (or, lost at the commit, the action fails with the reason)."""

from unittest import mock

import pytest
from kombu.exceptions import OperationalError

from cloudpanel import tasking
from instances.choices import ActionStatus, Status
from instances.models import Instance, InstanceAction
from tests.factories import free_port, make_boot_kernel, make_instance

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker_down(settings):
    """The broker's address is a port nothing listens on: every check really fails to connect."""
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.CELERY_TASK_ALWAYS_EAGER = False
    yield
    tasking._broker.cache_clear()


def test_with_the_broker_down_a_create_is_a_503_and_stores_nothing(member_api, host, broker_down):
    body = {"name": "web", "vcpus": 1, "memory_mib": 64, "boot_kernel": make_boot_kernel(host).pk}
    response = member_api.post("/api/v1/instances/", body, format="json")
    assert response.status_code == 503 and response["Retry-After"] == str(tasking.RETRY_AFTER_SECONDS)
    assert "task queue does not answer" in response.json()["detail"]
    assert not Instance.objects.filter(name="web").exists() and not InstanceAction.objects.exists()


def test_with_the_broker_down_an_operation_is_a_503_and_leaves_the_instance_as_it_was(member_api, tenant, host,
                                                                                       broker_down):
    instance = make_instance(tenant=tenant, host=host, status=Status.RUNNING)
    response = member_api.post(f"/api/v1/instances/{instance.pk}/reboot/")
    assert response.status_code == 503
    instance.refresh_from_db()
    assert (instance.status, instance.task_state, instance.actions.count()) == (Status.RUNNING, None, 0)


def test_a_publish_lost_at_the_commit_fails_the_action_with_the_reason_and_frees_the_instance(member_api, tenant,
                                                                                              host):
    instance = make_instance(tenant=tenant, host=host, status=Status.RUNNING)
    with mock.patch("celery.app.task.Task.apply_async", side_effect=OperationalError("Connection refused")):
        response = member_api.post(f"/api/v1/instances/{instance.pk}/reboot/")
    assert response.status_code == 503 and "could not take the work" in response.json()["detail"]
    action = instance.actions.get()
    instance.refresh_from_db()
    assert action.status == ActionStatus.FAILED and "could not take the work" in action.error
    assert (instance.status, instance.task_state) == (Status.RUNNING, None)


def test_the_check_asks_the_real_broker(settings):
    # With the test's own Redis up the check passes; pointed at a port nothing listens on, it fails
    settings.CELERY_TASK_ALWAYS_EAGER = False
    tasking.check_queue()
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(tasking.QueueUnavailable, match="does not answer"):
        tasking.check_queue()
