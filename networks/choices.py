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


class FilterStatus(models.TextChoices):
    NONE = "none", "Open (no security group)"
    PENDING = "pending", "Being applied"
    ACTIVE = "active", "Enforced"
    FAILED = "failed", "Failed"


class Direction(models.TextChoices):
    INGRESS = "ingress", "Ingress"
    EGRESS = "egress", "Egress"


class Ethertype(models.TextChoices):
    IPV4 = "IPv4", "IPv4"
    IPV6 = "IPv6", "IPv6"


class Protocol(models.TextChoices):
    ANY = "any", "Any"
    TCP = "tcp", "TCP"
    UDP = "udp", "UDP"
    ICMP = "icmp", "ICMP"
