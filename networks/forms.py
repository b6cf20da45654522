from django import forms

from networks.choices import Direction, Ethertype, NetworkKind, Protocol


class NetworkForm(forms.Form):
    """A network with its IPv4 subnet (and an optional IPv6 one)."""

    name = forms.CharField(max_length=63)
    shared = forms.BooleanField(required=False, help_text="For every tenant (platform admins only).")
    tenant = forms.ModelChoiceField(queryset=None, required=False, empty_label="— (shared networks only)")
    kind = forms.ChoiceField(choices=NetworkKind.choices, initial=NetworkKind.NAT)
    cidr = forms.CharField(max_length=43, label="IPv4 subnet", initial="10.10.0.0/24")
    gateway = forms.GenericIPAddressField(required=False, help_text="Default: the first address.")
    pool_start = forms.GenericIPAddressField(required=False, label="DHCP range start")
    pool_end = forms.GenericIPAddressField(required=False, label="DHCP range end")
    ipv6_cidr = forms.CharField(max_length=43, required=False, label="IPv6 subnet (optional)")
    bridge = forms.CharField(max_length=15, required=False, label="Host bridge",
                             help_text="Bridged and VLAN networks only, e.g. br0.")
    host_tag = forms.CharField(max_length=32, required=False, label="Hosts with the bridge",
                               help_text="Bridged and VLAN networks: the tag of the hosts that have the bridge "
                                         "(instances on it are placed there); empty: every host.")
    vlan_id = forms.IntegerField(required=False, label="VLAN id", help_text="1–4094, VLAN networks only.")
    domain = forms.CharField(max_length=253, required=False, label="Domain name")
    dns_servers = forms.CharField(max_length=500, required=False, label="DNS servers",
                                  help_text="Addresses, separated by commas or spaces.")

    def __init__(self, *args, tenants, admin: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].queryset = tenants
        if not admin:
            del self.fields["shared"], self.fields["tenant"]


class SecurityGroupForm(forms.Form):
    name = forms.CharField(max_length=63)
    description = forms.CharField(max_length=255, required=False)
    tenant = forms.ModelChoiceField(queryset=None, required=False, empty_label="— the tenant you act in")

    def __init__(self, *args, tenants, admin: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].queryset = tenants
        if not admin:
            del self.fields["tenant"]


class SecurityRuleForm(forms.Form):
    direction = forms.ChoiceField(choices=Direction.choices, initial=Direction.INGRESS,
                                  help_text="Ingress: to the instance; egress: from it.")
    ethertype = forms.ChoiceField(choices=Ethertype.choices, initial=Ethertype.IPV4, label="IP version")
    protocol = forms.ChoiceField(choices=Protocol.choices, initial=Protocol.TCP)
    port_min = forms.IntegerField(required=False, min_value=1, max_value=65535, label="First port",
                                  help_text="TCP and UDP only; empty: every port.")
    port_max = forms.IntegerField(required=False, min_value=1, max_value=65535, label="Last port",
                                  help_text="Empty: just the first port.")
    remote_cidr = forms.CharField(max_length=43, required=False, label="Remote CIDR",
                                  help_text="e.g. 0.0.0.0/0 or 192.0.2.0/24; empty: anywhere.")
    remote_group = forms.ModelChoiceField(queryset=None, required=False, empty_label="—", label="Remote group",
                                          help_text="Instead of a CIDR: the addresses of its members.")
    description = forms.CharField(max_length=255, required=False)

    def __init__(self, *args, groups, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["remote_group"].queryset = groups


class ReserveForm(forms.Form):
    subnet = forms.ModelChoiceField(queryset=None, label="Subnet", empty_label=None)
    start = forms.GenericIPAddressField(label="First address")
    end = forms.GenericIPAddressField(label="Last address")
    reason = forms.CharField(max_length=200, required=False)

    def __init__(self, *args, subnets, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["subnet"].queryset = subnets
