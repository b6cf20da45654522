from cloudpanel.exceptions import Conflict, DomainError


class InstanceBusy(Conflict):
    """Another operation is in flight on this instance."""


class BackupFailed(DomainError):
    """The backup store could not take or give back a backup's bytes (the reason says why)."""


class InvalidOperation(Conflict):
    """The operation does not apply to the instance's current state."""


class InvalidInstance(DomainError):
    """The requested instance cannot be created as described."""
