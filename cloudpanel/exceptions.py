"""Base classes of the domain errors every app raises from its services."""


class DomainError(Exception):
    """A request the domain refuses; the message says why and is fit to show."""


class Conflict(DomainError):
    """The request clashes with the current state (HTTP 409)."""


class NotFound(DomainError):
    """The request names an object that is not there for this user, whether it is missing or another
    tenant's (HTTP 404, the same answer for both)."""


class Forbidden(DomainError):
    """The user may see the object but their role does not allow this (HTTP 403)."""


class Unavailable(DomainError):
    """A service the request needs does not answer; nothing was done (HTTP 503, Retry-After seconds)."""

    retry_after = 30
