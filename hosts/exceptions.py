from cloudpanel.exceptions import Conflict, DomainError


class InvalidHost(DomainError):
    """The host's settings are not usable."""


class HostInUse(Conflict):
    """The host still has instances."""


class NoCapacity(DomainError):
    """No host (or not the chosen one) can take the instance."""


class HostFull(NoCapacity, Conflict):
    """The instance's own host cannot start it now: others hold its capacity (HTTP 409)."""
