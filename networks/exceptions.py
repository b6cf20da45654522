from cloudpanel.exceptions import Conflict, DomainError


class InvalidNetwork(DomainError):
    """A network, subnet or address that cannot be; the message says why."""


class AddressInUse(Conflict):
    """The address (or MAC) is already taken on the network."""


class SubnetFull(Conflict):
    """No address is left in the subnet's pool."""


class NetworkInUse(Conflict):
    """Instances still have NICs on the network."""


class NetworkOverlap(Conflict):
    """The range overlaps another network's, or the hosts' management range (named in the message)."""


class InvalidRule(DomainError):
    """A security group or rule that cannot be; the message says why."""


class SecurityGroupInUse(Conflict):
    """NICs are in the group, or other groups' rules name it."""
