from cloudpanel.exceptions import DomainError


class UnsafeImage(DomainError):
    """The file is refused before any tool opens it; the message says why."""
