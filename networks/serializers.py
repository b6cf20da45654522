from rest_framework import serializers

from networks.choices import NetworkKind
from networks.models import Network, NetworkHost, Port, Subnet


class SubnetSerializer(serializers.ModelSerializer):
    pool_start = serializers.CharField(read_only=True)
    pool_end = serializers.CharField(read_only=True)

    class Meta:
        model = Subnet
        fields = ["id", "cidr", "version", "gateway", "pool_start", "pool_end"]
        read_only_fields = fields


class NetworkHostSerializer(serializers.ModelSerializer):
    host_name = serializers.CharField(source="host.name", read_only=True)

    class Meta:
        model = NetworkHost
        fields = ["host", "host_name", "status", "error"]
        read_only_fields = fields


class NetworkSerializer(serializers.ModelSerializer):
    tenant_name = serializers.CharField(source="tenant.name", default=None, read_only=True)
    subnets = SubnetSerializer(many=True, read_only=True)
    on_hosts = NetworkHostSerializer(many=True, read_only=True)

    class Meta:
        model = Network
        fields = ["id", "name", "tenant", "tenant_name", "kind", "bridge", "vlan_id", "domain", "dns_servers",
                  "subnets", "on_hosts", "created_at"]
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
    vlan_id = serializers.IntegerField(required=False, allow_null=True, default=None)
    domain = serializers.CharField(max_length=253, required=False, allow_blank=True, default="")
    dns_servers = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class NicSerializer(serializers.ModelSerializer):
    network_name = serializers.CharField(source="network.name", read_only=True)
    addresses = serializers.SerializerMethodField()

    class Meta:
        model = Port
        fields = ["id", "network", "network_name", "mac", "addresses"]
        read_only_fields = fields

    def get_addresses(self, port: Port) -> list[str]:
        return [allocation.address for allocation in port.addresses.all()]


class NicRequestSerializer(serializers.Serializer):
    network = serializers.IntegerField()
    address = serializers.IPAddressField(required=False, allow_null=True, default=None,
                                         help_text="The IPv4 address; the next free one if left out.")
