"""Roles as DRF permissions: who may change what they can see (get_queryset decides what they see)."""

from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated

from cloudpanel.scoping import READ_ONLY, Need


class ChangesOwn(BasePermission):
    """Changing an object takes an operator's role in the tenant owning it (the view's owner_of), or for a
    platform object (no tenant), a platform admin."""

    message = READ_ONLY

    def has_object_permission(self, request, view, obj) -> bool:
        if request.method in SAFE_METHODS:
            return True
        owner = view.owner_of(obj)
        if view.scope.allows(Need.CHANGE, owner):
            return True
        self.message = view.scope.refusal(Need.CHANGE, owner)
        return False


OPERATORS = [IsAuthenticated, ChangesOwn]
