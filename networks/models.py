"""Networks, their subnets, ports (a NIC's place on a network) and the addresses allocated to them.

Addresses are stored with their offset from the subnet's network address, so the
allocator can look for free ones in order, in any database; uniqueness of an address (and
of a MAC) per network is a database constraint, not a hope.
"""

import ipaddress

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Count, Q

from cloudpanel.scoping import Scope, TenantScopedQuerySet
from networks.choices import Direction, Ethertype, FilterStatus, NetworkKind, Protocol, ProvisionStatus

# The status instances keep once deleted (instances.choices.Status.DELETED): their rows stay, for history.
DELETED = "deleted"


class NetworkQuerySet(TenantScopedQuerySet):
    def visible_to(self, scope: Scope) -> "NetworkQuerySet":
        """Shared networks plus the scope's own."""
        ids = scope.tenant_ids
        if ids is None:
            return self.all()
        return self.filter(Q(tenant__isnull=True) | Q(tenant_id__in=ids))

    def quota_usage(self, tenant_ids: list[int], _excluding_image: int | None = None) -> dict[int, dict[str, int]]:
        """The tenants' own networks, and the IPv4 addresses their instances hold on shared networks."""
        used: dict[int, dict[str, int]] = {}
        for row in self.filter(tenant_id__in=tenant_ids).values("tenant_id").annotate(n=Count("id")):
            used.setdefault(row["tenant_id"], {})["networks"] = row["n"]
        public = (Allocation.objects.filter(subnet__version=4, subnet__network__tenant__isnull=True,
                                            port__instance__tenant_id__in=tenant_ids)
                  .values("port__instance__tenant_id").annotate(n=Count("id")))
        for row in public:
            used.setdefault(row["port__instance__tenant_id"], {})["public_addresses"] = row["n"]
        return used


class PortQuerySet(models.QuerySet):
    def live(self) -> "PortQuerySet":
        """NICs of instances that still exist."""
        return self.filter(instance__isnull=False).exclude(instance__status=DELETED)


class Network(models.Model):
    """A tenant's network, or a shared one (no tenant) made by a platform admin."""

    name = models.CharField(max_length=63)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="networks", null=True,
                               blank=True)
    kind = models.CharField(max_length=10, choices=NetworkKind.choices, default=NetworkKind.NAT)
    bridge = models.CharField(max_length=15, blank=True, help_text="The host bridge (bridged and VLAN networks).")
    # Bridged and VLAN networks: the tag of the hosts that have the bridge (blank: every host), for placement.
    host_tag = models.CharField(max_length=32, blank=True)
    vlan_id = models.PositiveSmallIntegerField(null=True, blank=True,
                                               validators=[MinValueValidator(1), MaxValueValidator(4094)])
    domain = models.CharField(max_length=253, blank=True)
    dns_servers = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = NetworkQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="network_name_unique_per_tenant")]

    def __str__(self) -> str:
        return self.name

    @property
    def libvirt_name(self) -> str:
        """The network's name on every host (unique, whatever tenants call their networks)."""
        return f"cp-net-{self.pk}"

    @property
    def own_bridge(self) -> str:
        """The bridge libvirt makes for NAT, routed and isolated networks (at most 15 characters)."""
        return f"cpbr{self.pk}"


class Subnet(models.Model):
    """An IPv4 or IPv6 range of a network; addresses are handed out from its pool."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="subnets")
    cidr = models.CharField(max_length=43)
    version = models.PositiveSmallIntegerField(choices=[(4, "IPv4"), (6, "IPv6")])
    gateway = models.GenericIPAddressField(null=True, blank=True)
    # The allocatable offsets from the network address, both ends included (the DHCP range).
    pool_first = models.BigIntegerField()
    pool_last = models.BigIntegerField()
    # Where the next automatic allocation starts looking (it wraps around at the end of the pool).
    cursor = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["network", "version"]
        constraints = [models.UniqueConstraint(fields=["network", "version"], name="subnet_one_per_version")]

    def __str__(self) -> str:
        return self.cidr

    @property
    def ip_network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)

    @property
    def pool_start(self) -> str:
        return str(self.ip_network.network_address + self.pool_first)

    @property
    def pool_end(self) -> str:
        return str(self.ip_network.network_address + self.pool_last)


class ReservedRange(models.Model):
    """Addresses of a subnet that are never handed out automatically (nor on request)."""

    subnet = models.ForeignKey(Subnet, on_delete=models.CASCADE, related_name="reserved")
    first = models.BigIntegerField()
    last = models.BigIntegerField()
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["subnet", "first"]

    def __str__(self) -> str:
        return f"{self.start}-{self.end} of {self.subnet}"

    @property
    def start(self) -> str:
        return str(self.subnet.ip_network.network_address + self.first)

    @property
    def end(self) -> str:
        return str(self.subnet.ip_network.network_address + self.last)


class SecurityGroup(models.Model):
    """A tenant's named set of firewall rules; NICs in at least one group accept only what a rule allows."""

    name = models.CharField(max_length=63)
    description = models.CharField(max_length=255, blank=True)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="security_groups")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="security_group_name_unique")]

    def __str__(self) -> str:
        return self.name


class SecurityRule(models.Model):
    """Traffic a group lets through: a direction, an IP family, a protocol with an optional port range, and
    where the other end may be (a CIDR, another group's members, or anywhere)."""

    group = models.ForeignKey(SecurityGroup, on_delete=models.CASCADE, related_name="rules")
    direction = models.CharField(max_length=7, choices=Direction.choices)
    ethertype = models.CharField(max_length=4, choices=Ethertype.choices, default=Ethertype.IPV4)
    protocol = models.CharField(max_length=4, choices=Protocol.choices, default=Protocol.ANY)
    port_min = models.PositiveIntegerField(null=True, blank=True,
                                           validators=[MinValueValidator(1), MaxValueValidator(65535)])
    port_max = models.PositiveIntegerField(null=True, blank=True,
                                           validators=[MinValueValidator(1), MaxValueValidator(65535)])
    remote_cidr = models.CharField(max_length=43, blank=True)
    remote_group = models.ForeignKey(SecurityGroup, on_delete=models.PROTECT, null=True, blank=True,
                                     related_name="referenced_by")
    description = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["group", "direction", "id"]

    def __str__(self) -> str:
        ports = f" {self.port_min}-{self.port_max}" if self.port_min else ""
        remote = self.remote_cidr or (f"group {self.remote_group_id}" if self.remote_group_id else "anywhere")
        return f"{self.direction} {self.ethertype} {self.protocol}{ports} {remote}"


class Port(models.Model):
    """A NIC's attachment to a network: its MAC, the addresses it holds there and its security groups."""

    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="ports")
    instance = models.ForeignKey("instances.Instance", on_delete=models.CASCADE, related_name="ports", null=True,
                                 blank=True)
    position = models.PositiveSmallIntegerField(default=0)  # the NIC's order in the instance
    mac = models.CharField(max_length=17)
    security_groups = models.ManyToManyField(SecurityGroup, blank=True, related_name="ports")
    # Whether the host enforces the groups' rules on the NIC now (its network filter), and why not.
    filter_status = models.CharField(max_length=8, choices=FilterStatus.choices, default=FilterStatus.NONE)
    filter_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PortQuerySet.as_manager()

    class Meta:
        ordering = ["instance", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["network", "mac"], name="port_mac_unique_per_network")]

    def __str__(self) -> str:
        return f"{self.mac} on {self.network}"

    @property
    def filter_name(self) -> str:
        """The NIC's network filter on its host (one per NIC: the rules of all its groups, expanded)."""
        return f"cp-port-{self.pk}"


class Allocation(models.Model):
    """One address of a subnet, held by a port."""

    subnet = models.ForeignKey(Subnet, on_delete=models.CASCADE, related_name="allocations")
    port = models.ForeignKey(Port, on_delete=models.CASCADE, related_name="addresses")
    offset = models.BigIntegerField()
    address = models.GenericIPAddressField()

    class Meta:
        ordering = ["subnet", "offset"]
        constraints = [
            models.UniqueConstraint(fields=["subnet", "offset"], name="allocation_address_unique"),
            models.UniqueConstraint(fields=["port", "subnet"], name="allocation_one_per_port_and_subnet"),
        ]

    def __str__(self) -> str:
        return self.address


class NetworkHost(models.Model):
    """A network as provisioned on one host: defined and started there while instances of it need it."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="on_hosts")
    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="networks")
    status = models.CharField(max_length=10, choices=ProvisionStatus.choices, default=ProvisionStatus.PENDING)
    error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["network", "host"]
        constraints = [models.UniqueConstraint(fields=["network", "host"], name="network_once_per_host")]

    def __str__(self) -> str:
        return f"{self.network} on {self.host}"
