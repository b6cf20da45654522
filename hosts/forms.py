from django import forms

from hosts.choices import Accelerator, CpuMode


class HostForm(forms.Form):
    name = forms.CharField(max_length=100)
    uri = forms.CharField(
        max_length=500, label="libvirt URI",
        help_text="e.g. qemu:///system, qemu+ssh://root@node1/system, lxc:///, xen:///system, "
                  "esx://esxi1/?no_verify=1, hyperv://hv1/, test:///default",
    )
    accelerator = forms.ChoiceField(choices=Accelerator.choices, initial=Accelerator.AUTO)
    storage_pool = forms.CharField(max_length=100, initial="default", required=False,
                                   help_text="libvirt storage pool that holds instance disks")


class HostEditForm(forms.Form):
    name = forms.CharField(max_length=100)
    accelerator = forms.ChoiceField(choices=Accelerator.choices)
    storage_pool = forms.CharField(max_length=100, required=False)
    allowed_paths = forms.CharField(max_length=10000, required=False, label="Allowed host directories",
                                    widget=forms.Textarea(attrs={"rows": 3, "placeholder": "/srv/kernels"}),
                                    help_text="One per line. Platform admins may boot kernels, initrds and disks by "
                                              "their path under these; tenants boot only the library. "
                                              "None by default.")
    tags = forms.CharField(max_length=500, required=False, label="Tags",
                           help_text="Words instances may require of their host (ssd, gpu), space-separated.")
    cpu_mode = forms.ChoiceField(choices=CpuMode.choices, required=False, label="Instances' CPU",
                                 help_text="QEMU/KVM: what its instances' CPU is unless they choose; host-model or a "
                                           "named model lets them migrate between hosts that differ.")
    cpu_model = forms.CharField(max_length=64, required=False, label="CPU model",
                                help_text="With a named model: one its capabilities list below.")
    os_templates = forms.CharField(max_length=10000, required=False, label="OS templates",
                                   widget=forms.Textarea(attrs={"rows": 3, "placeholder": "debian-12-x86_64"}),
                                   help_text="OpenVZ: the templates of its cache (/vz/template/cache) instances may "
                                             "be made from, one per line.")
