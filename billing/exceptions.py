from cloudpanel.exceptions import Conflict, DomainError


class InvalidBilling(DomainError):
    """A rate plan, price or billing setting that cannot be; the message says why."""


class PeriodOpen(Conflict):
    """The month has not closed yet (it closes a grace time after its end)."""


class InvoiceState(Conflict):
    """The invoice is not in a state that allows this (an issued invoice is never edited)."""
