from cloudpanel.exceptions import Conflict, DomainError


class QuotaExceeded(Conflict):
    """The request would take the tenant over one of its quotas."""


class InvalidMembership(DomainError):
    """The membership change is not allowed."""


class InvalidToken(DomainError):
    """The token cannot be created as asked."""


class InvalidTenant(DomainError):
    """The tenant cannot be created or changed as asked."""
