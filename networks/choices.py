"""Choices of network provisioning."""

from django.db import models


class NetworkKind(models.TextChoices):
    NAT = "nat", "NAT with DHCP"
    ROUTED = "routed", "Routed"
    ISOLATED = "isolated", "Isolated"
    BRIDGE = "bridge", "Bridged to a host bridge"
    VLAN = "vlan", "VLAN on a host bridge"


class ProvisionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    ACTIVE = "active", "Active"
    FAILED = "failed", "Failed"
