from django.db.models import F
from rest_framework import serializers

from networks.choices import Direction, Ethertype, NetworkKind, Protocol
from networks.models import Allocation, Network, NetworkHost, Port, ReservedRange, SecurityGroup, SecurityRule, Subnet


def group_id() -> serializers.IntegerField:
    """An id within the database's range: a larger number is refused, not an overflow."""
    return serializers.IntegerField(min_value=1, max_value=2**63 - 1)


class ReservedRangeSerializer(serializers.ModelSerializer):
    start = serializers.CharField(read_only=True)
    end = serializers.CharField(read_only=True)

    class Meta:
        model = ReservedRange
        fields = ["id", "start", "end", "reason"]
        read_only_fields = fields


class ReserveSerializer(serializers.Serializer):
    start = serializers.IPAddressField()
    end = serializers.IPAddressField()
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class SubnetSerializer(serializers.ModelSerializer):
    pool_start = serializers.CharField(read_only=True)
    pool_end = serializers.CharField(read_only=True)
    reserved = ReservedRangeSerializer(many=True, read_only=True)
    allocated = serializers.IntegerField(read_only=True, required=False,
                                         help_text="Addresses held by NICs (in the subnet list and detail).")

    class Meta:
        model = Subnet
        fields = ["id", "network", "cidr", "version", "gateway", "pool_start", "pool_end", "reserved", "allocated"]
        read_only_fields = fields


class NetworkHostSerializer(serializers.ModelSerializer):
    host_name = serializers.CharField(source="host.name", read_only=True)

    class Meta:
        model = NetworkHost
        fields = ["host", "host_name", "status", "error"]
        read_only_fields = fields


class NetworkSerializer(serializers.ModelSerializer):
    tenant_name = serializers.CharField(source="tenant.name", default=None, allow_null=True, read_only=True)
    subnets = SubnetSerializer(many=True, read_only=True)
    on_hosts = NetworkHostSerializer(many=True, read_only=True)

    class Meta:
        model = Network
        fields = ["id", "name", "tenant", "tenant_name", "kind", "bridge", "host_tag", "vlan_id", "domain",
                  "dns_servers", "subnets", "on_hosts", "created_at"]
        read_only_fields = fields


class NetworkCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    tenant = serializers.IntegerField(required=False, help_text="Defaults to the tenant you act in.")
    shared = serializers.BooleanField(default=False, help_text="A network for every tenant (platform admins).")
    kind = serializers.ChoiceField(choices=NetworkKind.choices, default=NetworkKind.NAT)
    cidr = serializers.CharField(max_length=43, help_text="The IPv4 subnet, e.g. 10.0.0.0/24.")
    gateway = serializers.IPAddressField(required=False, allow_null=True, default=None)
    pool_start = serializers.IPAddressField(required=False, allow_null=True, default=None)
    pool_end = serializers.IPAddressField(required=False, allow_null=True, default=None)
    ipv6_cidr = serializers.CharField(max_length=43, required=False, allow_blank=True, default="")
    bridge = serializers.CharField(max_length=15, required=False, allow_blank=True, default="")
    host_tag = serializers.CharField(max_length=32, required=False, allow_blank=True, default="",
                                     help_text="Bridged and VLAN networks: the tag of the hosts that have the "
                                               "bridge, where placement puts instances on it (empty: every host).")
    vlan_id = serializers.IntegerField(required=False, allow_null=True, default=None)
    domain = serializers.CharField(max_length=253, required=False, allow_blank=True, default="")
    dns_servers = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class NicSerializer(serializers.ModelSerializer):
    network_name = serializers.CharField(source="network.name", read_only=True)
    addresses = serializers.SerializerMethodField()
    security_groups = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = Port
        fields = ["id", "network", "network_name", "mac", "addresses", "security_groups", "filter_status",
                  "filter_error"]
        read_only_fields = fields

    def get_addresses(self, port: Port) -> list[str]:
        return [allocation.address for allocation in port.addresses.all()]


class PortSerializer(NicSerializer):
    instance_name = serializers.CharField(source="instance.name", read_only=True)

    class Meta(NicSerializer.Meta):
        fields = ["id", "instance", "instance_name", *NicSerializer.Meta.fields[1:]]
        read_only_fields = fields


class PortGroupsSerializer(serializers.Serializer):
    security_groups = serializers.ListField(child=group_id(), max_length=20,
                                            help_text="The NIC's security groups (an empty list: none, open).")


class NicRequestSerializer(serializers.Serializer):
    network = serializers.IntegerField()
    address = serializers.IPAddressField(required=False, allow_null=True, default=None,
                                         help_text="The IPv4 address; the next free one if left out.")
    security_groups = serializers.ListField(child=group_id(), max_length=20, required=False,
                                            default=list, help_text="Security groups of the NIC's.")


class SecurityRuleSerializer(serializers.ModelSerializer):
    class Meta:
        model = SecurityRule
        fields = ["id", "group", "direction", "ethertype", "protocol", "port_min", "port_max", "remote_cidr",
                  "remote_group", "description", "created_at"]
        read_only_fields = fields


class SecurityRuleCreateSerializer(serializers.Serializer):
    group = serializers.IntegerField()
    direction = serializers.ChoiceField(choices=Direction.choices)
    ethertype = serializers.ChoiceField(choices=Ethertype.choices, default=Ethertype.IPV4)
    protocol = serializers.ChoiceField(choices=Protocol.choices, default=Protocol.ANY)
    port_min = serializers.IntegerField(required=False, allow_null=True, default=None)
    port_max = serializers.IntegerField(required=False, allow_null=True, default=None)
    remote_cidr = serializers.CharField(max_length=43, required=False, allow_blank=True, default="")
    remote_group = serializers.IntegerField(required=False, allow_null=True, default=None)
    description = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")


class SecurityGroupSerializer(serializers.ModelSerializer):
    tenant_name = serializers.CharField(source="tenant.name", read_only=True)
    rules = SecurityRuleSerializer(many=True, read_only=True)

    class Meta:
        model = SecurityGroup
        fields = ["id", "name", "description", "tenant", "tenant_name", "rules", "created_at"]
        read_only_fields = fields


class SecurityGroupWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    description = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    tenant = serializers.IntegerField(required=False, help_text="Defaults to the tenant you act in (create only).")


def nic_rows(instance_ids: list[int]) -> dict[int, list[dict]]:
    """The NICs of these instances as NicSerializer writes them, by instance id, from three row queries (no model
    objects): as many queries for 500 instances as for one."""
    ports = list(Port.objects.filter(instance_id__in=instance_ids).order_by("instance_id", "position", "id").values(
        "instance_id", "id", "network", "mac", "filter_status", "filter_error", network_name=F("network__name")))
    port_ids = [port["id"] for port in ports]
    addresses: dict[int, list[str]] = {port_id: [] for port_id in port_ids}
    for port_id, address in Allocation.objects.filter(port_id__in=port_ids).values_list("port_id", "address"):
        addresses[port_id].append(address)
    groups: dict[int, list[int]] = {port_id: [] for port_id in port_ids}
    through = Port.security_groups.through.objects.filter(port_id__in=port_ids)
    for port_id, group in through.order_by("securitygroup__name", "securitygroup_id").values_list(
            "port_id", "securitygroup_id"):
        groups[port_id].append(group)
    nics: dict[int, list[dict]] = {instance_id: [] for instance_id in instance_ids}
    for port in ports:
        nics[port["instance_id"]].append({
            "id": port["id"], "network": port["network"], "network_name": port["network_name"], "mac": port["mac"],
            "addresses": addresses[port["id"]], "security_groups": groups[port["id"]],
            "filter_status": port["filter_status"], "filter_error": port["filter_error"]})
    return nics
