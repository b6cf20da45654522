import re

from django import forms

from hosts.choices import CpuMode
from hosts.guests import Offers
from hosts.models import Host
from images.models import BootKernel, Image, Template
from instances.choices import CREATABLE, BootSource
from instances.models import Instance, ServerGroup
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
    server_group = forms.ModelChoiceField(queryset=ServerGroup.objects.none(), required=False,
                                          empty_label="No server group", label="Server group",
                                          help_text="Placed together with its instances, or apart from them, by the "
                                                    "group's policy.")
    host_tags = forms.CharField(max_length=500, required=False, label="Host tags",
                                help_text="Tags its host must carry (e.g. ssd), space-separated; empty: any host.")
    # (a boot from a volume: on the Volumes page's volume, through the API)
    boot_source = forms.ChoiceField(choices=[c for c in CREATABLE if c[0] != BootSource.VOLUME],
                                    initial=BootSource.KERNEL)
    boot_kernel = forms.ModelChoiceField(queryset=BootKernel.objects.none(), required=False,
                                         empty_label="Choose a boot kernel",
                                         help_text="A kernel and initrd from the library.")
    image_kernel = forms.ModelChoiceField(queryset=BootKernel.objects.none(), required=False,
                                          empty_label="None: the image's own boot loader", label="Boot kernel",
                                          help_text="Boot the image's disk with a kernel from the library instead.")
    container_image = forms.ModelChoiceField(queryset=Image.objects.none(), required=False,
                                             empty_label="Choose a container image",
                                             help_text="A root filesystem from the library: the container gets "
                                                       "its own copy, with container root an unprivileged host user.")
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
    kernel = forms.CharField(max_length=500, required=False, label="Kernel path on the host",
                             help_text="Platform admins, instead of a boot kernel: under a directory the host allows")
    initrd = forms.CharField(max_length=500, required=False, label="Initrd path on the host",
                             help_text="Platform admins: under a directory the host allows")
    cmdline = forms.CharField(max_length=500, required=False, label="Kernel command line",
                              help_text="Empty: the boot kernel's own")
    boot_disk = forms.CharField(max_length=500, required=False, label="Disk path on the host",
                                help_text="Under a directory the host allows (OpenVZ: a template of its cache)")
    init = forms.CharField(max_length=500, required=False, label="Container command",
                           help_text="A program inside the image, e.g. /bin/sleep 600; empty: its /sbin/init "
                                     "(a system container)")
    env = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), label="Environment",
                          help_text="NAME=value, one per line")
    cdrom_drive = forms.BooleanField(required=False, label="CD-ROM drive",
                                     help_text="QEMU/KVM: to insert ISOs while it runs (an ISO boot has one anyway).")
    leave_stopped = forms.BooleanField(required=False, label="Leave it stopped",
                                       help_text="Define it on its host without starting it.")
    arch = forms.ChoiceField(required=False, label="Architecture",
                             help_text="QEMU/KVM: emulated where its host is another.")
    machine = forms.CharField(max_length=64, required=False, label="Machine type",
                              help_text="QEMU/KVM: empty for the architecture's usual one (pc, virt).")
    cpu_mode = forms.ChoiceField(choices=[("", "Its host's setting"), *CpuMode.choices[1:]], required=False,
                                 label="CPU", help_text="QEMU/KVM.")
    cpu_model = forms.CharField(max_length=64, required=False, label="CPU model",
                                help_text="With a named model: one its host offers.")

    def __init__(self, *args, tenants, hosts, images, templates, networks, security_groups, boot_kernels,
                 container_images, admin: bool, offers: Offers, server_groups=None, **kwargs):
        super().__init__(*args, **kwargs)
        if not admin:  # (a host-passthrough CPU ties an instance to identical hosts: platform admins choose it)
            self.fields["cpu_mode"].choices = [c for c in self.fields["cpu_mode"].choices if c[0] != "host-passthrough"]
        self.fields["arch"].choices = [("", "Its boot kernel's or image's, else its host's own"),
                                       *((arch, arch) for arch in offers.arches)]
        self.fields["machine"].suggestions = offers.machines
        self.fields["cpu_model"].suggestions = offers.cpu_models
        if server_groups is not None:
            self.fields["server_group"].queryset = server_groups
        self.fields["boot_kernel"].queryset = self.fields["image_kernel"].queryset = boot_kernels
        self.fields["boot_kernel"].initial = boot_kernels.first()  # the form works as it comes
        self.fields["container_image"].queryset = container_images
        if not admin:  # tenants boot the library only
            for name in ("kernel", "initrd", "boot_disk"):
                del self.fields[name]
            self.fields["boot_source"].choices = [c for c in CREATABLE if c[0] not in (BootSource.DISK,
                                                                                        BootSource.VOLUME)]
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

    def clean_env(self) -> dict[str, str]:
        env = {}
        for number, line in enumerate(self.cleaned_data["env"].splitlines(), start=1):
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
                raise forms.ValidationError(f"Line {number}: write NAME=value.")
            env[name.strip()] = value
        return env

    def clean(self):
        data = super().clean()
        if not data.get("template") and (data.get("vcpus") is None or data.get("memory_mib") is None):
            raise forms.ValidationError("Give the vCPUs and memory, or choose a template.")
        if data.get("address") and not data.get("network"):
            self.add_error("address", "An address goes with a network: choose one.")
        # Each boot source takes its own library object; the other fields of the form are left out.
        source = data.get("boot_source")
        if source == BootSource.CONTAINER:
            data["image"], data["disk_gib"] = data.get("container_image"), None  # its root is its disk
        elif source != BootSource.IMAGE:
            data["image"], data["template"] = None, None
        if source == BootSource.IMAGE:
            data["boot_kernel"] = data.get("image_kernel")
        elif source != BootSource.KERNEL:
            data["boot_kernel"] = None
        if source != BootSource.CONTAINER:
            data["init"], data["env"] = "", {}
        data.pop("container_image", None)
        data.pop("image_kernel", None)
        return data


class AdoptForm(forms.Form):
    """A domain made outside the panel, put under a tenant as an instance."""

    tenant = forms.ModelChoiceField(queryset=Tenant.objects.order_by("name"), empty_label="Choose a tenant")
    name = forms.CharField(max_length=63, help_text="Its name in the tenant.")


class VolumeForm(forms.Form):
    """A new volume: empty, or a copy of a library disk image; beside an instance (on its host) or placed."""

    name = forms.CharField(max_length=63)
    tenant = forms.ModelChoiceField(queryset=Tenant.objects.none(), required=False)
    size_gib = forms.IntegerField(min_value=1, max_value=64 * 1024, required=False, label="Size (GiB)",
                                  help_text="From an image: at least its size (the default).")
    image = forms.ModelChoiceField(queryset=Image.objects.none(), required=False, empty_label="Empty",
                                   help_text="A library disk image: the volume starts as its copy.")
    instance = forms.ModelChoiceField(queryset=Instance.objects.none(), required=False,
                                      empty_label="Any host (placement)", label="Beside instance",
                                      help_text="Make it on this instance's host, to attach it there.")
    description = forms.CharField(max_length=500, required=False)

    def __init__(self, *args, tenants, images, instances, admin: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].queryset = tenants
        if not admin:  # a tenant's members make volumes in the tenant they act in
            del self.fields["tenant"]
        self.fields["image"].queryset = images
        self.fields["instance"].queryset = instances
