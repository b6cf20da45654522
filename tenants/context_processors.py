from cloudpanel.scoping import NoSuchTenant
from tenants.models import Tenant
from tenants.scoping import scope_of


def tenancy(request) -> dict:
    """The header's tenant switcher: the current scope and the tenants one can switch to."""
    if not request.user.is_authenticated:
        return {}
    try:
        scope = scope_of(request)
    except NoSuchTenant:  # an HTML page of the API asked for a tenant that isn't the user's
        return {}
    return {
        "scope": scope,
        "switch_choices": Tenant.objects.all() if scope.admin else scope.tenants,
    }
