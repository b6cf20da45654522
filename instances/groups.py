"""Server groups: a tenant's instances placed together on one host (affinity) or each on another (anti-affinity).

Placement keeps the rule for a create and for a migration (hosts.placement.keeps_group): the first instance of a
group goes where placement finds room; the others follow it (affinity) or avoid every host a member is on
(anti-affinity), and a create or migration that cannot keep the rule is refused naming the group. The group's
row is locked while a member is placed, so that two members placed at once see each other.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from cloudpanel.exceptions import Conflict
from hosts import placement as placing
from instances.choices import GroupPolicy
from instances.exceptions import InvalidInstance
from instances.models import Instance, ServerGroup, check_name
from tenants.models import Tenant


def create(*, tenant: Tenant, name: str, policy: str, user: AbstractBaseUser | None) -> ServerGroup:
    """A new server group of the tenant (its name unique there)."""
    name = name.strip()
    check_name(name)
    if policy not in GroupPolicy.values:
        raise InvalidInstance(f"the policy is one of: {', '.join(GroupPolicy.values)}")
    try:
        with transaction.atomic():
            return ServerGroup.objects.create(tenant=tenant, name=name, policy=policy)
    except IntegrityError:
        raise InvalidInstance(f"a server group named '{name}' already exists in {tenant}") from None


def delete(*, group: ServerGroup) -> None:
    """Remove the group; refused while instances are in it (named)."""
    with transaction.atomic():
        names = list(Instance.objects.live().filter(server_group=group).values_list("name", flat=True)[:20])
        if names:
            raise Conflict(f"server group '{group.name}' still has instances: {', '.join(names)}")
        Instance.objects.filter(server_group=group).update(server_group=None)  # deleted ones: their history stays
        group.delete()


def for_placement(group: ServerGroup | None, *, excluding: int | None = None) -> placing.Group | None:
    """Inside the caller's transaction: the group as placement sees it, its row locked (None: no group)."""
    if group is None:
        return None
    ServerGroup.objects.select_for_update().filter(pk=group.pk).first()
    members = Instance.objects.live().filter(server_group=group, host__isnull=False)
    if excluding is not None:
        members = members.exclude(pk=excluding)
    return placing.Group(name=group.name, affinity=group.policy == GroupPolicy.AFFINITY,
                         members=dict(members.values_list("host_id", "name")))
