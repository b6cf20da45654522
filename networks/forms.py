from django import forms

from networks.choices import NetworkKind


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
    vlan_id = forms.IntegerField(required=False, label="VLAN id", help_text="1–4094, VLAN networks only.")
    domain = forms.CharField(max_length=253, required=False, label="Domain name")
    dns_servers = forms.CharField(max_length=500, required=False, label="DNS servers",
                                  help_text="Addresses, separated by commas or spaces.")

    def __init__(self, *args, tenants, admin: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].queryset = tenants
        if not admin:
            del self.fields["shared"], self.fields["tenant"]
