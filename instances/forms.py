from django import forms
from django.conf import settings

from hosts.models import Host
from images.models import Image, Template
from instances.choices import BootSource
from networks.models import Network, SecurityGroup
from tenants.models import Tenant


class InstanceForm(forms.Form):
    name = forms.CharField(max_length=300)
    tenant = forms.ModelChoiceField(queryset=Tenant.objects.none())
    host = forms.ModelChoiceField(queryset=Host.objects.none(), required=False,
                                  empty_label="Automatic placement")
    vcpus = forms.IntegerField(min_value=1, max_value=256, initial=1, label="vCPUs", required=False)
    memory_mib = forms.IntegerField(min_value=16, max_value=4 * 1024 * 1024, initial=256, label="Memory (MiB)",
                                    required=False)
    disk_gib = forms.IntegerField(min_value=0, max_value=64 * 1024, initial=1, label="Disk (GiB)", required=False,
                                  help_text="A new qcow2 volume in the host's storage pool (0: none); from an "
                                            "image, at least the image's size.")
    boot_source = forms.ChoiceField(choices=BootSource.choices, initial=BootSource.KERNEL)
    template = forms.ModelChoiceField(queryset=Template.objects.none(), required=False,
                                      empty_label="No template", help_text="Its image, size, user-data and script.")
    image = forms.ModelChoiceField(queryset=Image.objects.none(), required=False, empty_label="Choose an image",
                                   help_text="A disk image boots from a copy-on-write overlay; an ISO installs "
                                             "onto an empty disk.")
    network = forms.ModelChoiceField(queryset=Network.objects.none(), required=False, empty_label="No NIC",
                                     label="NIC on network", help_text="More NICs can be plugged in later.")
    address = forms.GenericIPAddressField(required=False, label="NIC address", protocol="IPv4",
                                          help_text="Leave empty for the next free one.")
    security_groups = forms.ModelMultipleChoiceField(queryset=SecurityGroup.objects.none(), required=False,
                                                     label="NIC security groups",
                                                     help_text="None: the NIC is open.")
    ssh_keys = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), label="SSH public keys",
                               help_text="One per line, given to the guest by cloud-init.")
    password = forms.CharField(required=False, widget=forms.PasswordInput, label="Root password",
                               help_text="Optional; only its hash reaches the guest.")
    kernel = forms.CharField(max_length=500, required=False, help_text="Path on the host")
    initrd = forms.CharField(max_length=500, required=False, help_text="Path on the host")
    cmdline = forms.CharField(max_length=500, required=False, initial="console=ttyS0")
    boot_disk = forms.CharField(max_length=500, required=False, help_text="Path of a qcow2 image on the host")
    init = forms.CharField(max_length=500, required=False, label="Container command",
                           help_text="For LXC/OpenVZ, e.g. /bin/sh")

    def __init__(self, *args, tenants, hosts, images, templates, networks, security_groups, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["network"].queryset = networks
        self.fields["security_groups"].queryset = security_groups
        self.fields["image"].queryset = images
        self.fields["template"].queryset = templates
        self.fields["tenant"].queryset = tenants
        if len(tenants) == 1:
            self.fields["tenant"].initial = tenants[0].pk
        if hosts is None:
            del self.fields["host"]
        else:
            self.fields["host"].queryset = hosts
        self.fields["kernel"].initial = settings.CLOUDPANEL_DEFAULT_KERNEL
        self.fields["initrd"].initial = settings.CLOUDPANEL_DEFAULT_INITRD

    def clean(self):
        data = super().clean()
        if not data.get("template") and (data.get("vcpus") is None or data.get("memory_mib") is None):
            raise forms.ValidationError("Give the vCPUs and memory, or choose a template.")
        if data.get("address") and not data.get("network"):
            self.add_error("address", "An address goes with a network: choose one.")
        return data
