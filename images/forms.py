from django import forms

from cloudpanel.text import CONTROL
from hosts.architectures import ARCH_CHOICES, DEFAULT_ARCH
from images.choices import OsType, SourceFormat, Visibility

_FORMATS = [("", "Detect"), *SourceFormat.choices]


class OwnedForm(forms.Form):
    """A library object's form: its name, and for platform admins whether it is public or which tenant's."""

    def __init__(self, *args, tenants, admin: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].queryset = tenants
        if not admin:  # tenants' objects are their own; public ones are the platform's
            del self.fields["visibility"], self.fields["tenant"]

    def clean_name(self) -> str:
        if CONTROL.search(self.cleaned_data["name"]):
            raise forms.ValidationError("The name cannot hold control characters.")
        return self.cleaned_data["name"]


class ImageForm(OwnedForm):
    """What every new image is told: its name, owner and needs. Uploads add a file, imports a URL."""

    name = forms.CharField(max_length=255)
    visibility = forms.ChoiceField(choices=Visibility.choices, initial=Visibility.PRIVATE)
    tenant = forms.ModelChoiceField(queryset=None, required=False, empty_label="— (public images only)")
    os_type = forms.ChoiceField(choices=OsType.choices, label="OS type")
    arch = forms.ChoiceField(choices=ARCH_CHOICES, initial=DEFAULT_ARCH, label="Architecture", required=False,
                             help_text="What its guests are: they are placed on hosts that run them.")
    min_disk_gib = forms.IntegerField(min_value=0, max_value=65536, initial=0, label="Minimum disk (GiB)")
    min_memory_mib = forms.IntegerField(min_value=0, max_value=4 * 1024 * 1024, initial=0,
                                        label="Minimum RAM (MiB)")
    declared_format = forms.ChoiceField(choices=_FORMATS, required=False, label="Format",
                                        help_text="Refused if the file turns out to be another format.")
    checksum = forms.CharField(max_length=140, required=False, label="Expected checksum",
                               help_text="sha256:<hex> or sha512:<hex>; verified before the image is published.")

    def clean_arch(self) -> str:
        return self.cleaned_data["arch"] or DEFAULT_ARCH


class TemplateForm(OwnedForm):
    """A template: an image, a default size, #cloud-config user-data and a first-boot script."""

    name = forms.CharField(max_length=100)
    image = forms.ModelChoiceField(queryset=None, empty_label="Choose a disk image")
    visibility = forms.ChoiceField(choices=Visibility.choices, initial=Visibility.PRIVATE)
    tenant = forms.ModelChoiceField(queryset=None, required=False, empty_label="— (public templates only)")
    vcpus = forms.IntegerField(min_value=1, max_value=256, initial=1, label="vCPUs")
    memory_mib = forms.IntegerField(min_value=16, max_value=4 * 1024 * 1024, initial=512, label="Memory (MiB)")
    disk_gib = forms.IntegerField(min_value=1, max_value=64 * 1024, initial=10, label="Disk (GiB)")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    user_data = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 6}), label="User-data",
                                initial="#cloud-config\n", help_text="#cloud-config YAML; the instance's hostname, "
                                "SSH keys and password are added to it.")
    script = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}), label="Provisioning script",
                             help_text="A shell script run once at first boot.")

    def __init__(self, *args, images, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["image"].queryset = images


class ImportForm(ImageForm):
    url = forms.URLField(max_length=2000, label="URL", assume_scheme="https",
                         help_text="http or https; internal addresses are refused unless an admin allowed them.")

    field_order = ["url", "name"]


class BootKernelForm(OwnedForm):
    """A boot kernel: a kernel and an optional initrd, both images of the library, and a default command line."""

    name = forms.CharField(max_length=100)
    kernel = forms.ModelChoiceField(queryset=None, empty_label="Choose a kernel image")
    initrd = forms.ModelChoiceField(queryset=None, required=False, empty_label="No initrd")
    cmdline = forms.CharField(max_length=500, required=False, label="Command line",
                              help_text="Empty: the architecture's serial console (console=ttyS0; ARM: ttyAMA0).")
    arch = forms.ChoiceField(choices=ARCH_CHOICES, initial=DEFAULT_ARCH, label="Architecture", required=False,
                             help_text="What it runs on: its instances are guests of it, emulated where the host is "
                                       "another.")
    visibility = forms.ChoiceField(choices=Visibility.choices, initial=Visibility.PRIVATE)
    tenant = forms.ModelChoiceField(queryset=None, required=False, empty_label="— (public boot kernels only)")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def clean_arch(self) -> str:
        return self.cleaned_data["arch"] or DEFAULT_ARCH

    def __init__(self, *args, kernels, initrds, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kernel"].queryset = kernels
        self.fields["initrd"].queryset = initrds
