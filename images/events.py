"""Image changes pushed to the pages that show them: the tenant's, the admins', everyone's for public ones."""

from django.db import transaction
from django.template.defaultfilters import filesizeformat

from cloudpanel.events import publish as send
from images.choices import Visibility
from images.models import Image

PUBLIC_GROUP = "images.public"


def groups_of(image: Image) -> list[str]:
    groups = ["admin"]
    if image.tenant_id is not None:
        groups.append(f"tenant.{image.tenant_id}")
    if image.visibility == Visibility.PUBLIC:
        groups.append(PUBLIC_GROUP)
    return groups


def payload(image: Image, *, deleted: bool = False) -> dict:
    return {
        "type": "image", "id": image.pk, "deleted": deleted, "status": image.status,
        "status_display": image.get_status_display(), "status_reason": image.status_reason,
        "progress": image.progress, "received": filesizeformat(image.received_bytes),
    }


def publish(image: Image) -> None:
    send(groups_of(image), payload(image))


def publish_on_commit(image: Image) -> None:
    groups, message = groups_of(image), payload(image)
    transaction.on_commit(lambda: send(groups, message))


def publish_deleted_on_commit(image: Image) -> None:
    groups, message = groups_of(image), payload(image, deleted=True)
    transaction.on_commit(lambda: send(groups, message))
