"""Thin tasks: each delivery's attempt, the sweep of those due, the quota check."""

from celery import shared_task

from cloudpanel.tasking import task
from notifications import delivery, services


@task
def deliver(delivery_id: int) -> None:
    """One attempt of one delivery (none if another worker has it, or it is not due)."""
    delivery.attempt(delivery_id)


@shared_task
def send_due() -> None:
    """The periodic sweep: retries whose time came, and first attempts that could not be queued."""
    for delivery_id in delivery.due_deliveries():
        deliver.delay(delivery_id)


@shared_task
def check_quotas() -> None:
    """Tell tenants whose quota use crossed 90 % or 100 %."""
    services.check_quotas()


@shared_task
def prune() -> None:
    """Drop notifications past their keeping time, with their delivery logs."""
    delivery.prune()
