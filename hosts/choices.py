from django.db import models


class Technology(models.TextChoices):
    QEMU = "qemu", "QEMU/KVM"
    LXC = "lxc", "LXC"
    XEN = "xen", "Xen"
    OPENVZ = "openvz", "OpenVZ"
    VBOX = "vbox", "VirtualBox"
    VMWARE = "vmware", "VMware ESXi/vCenter"
    HYPERV = "hyperv", "Microsoft Hyper-V"
    BHYVE = "bhyve", "bhyve"
    VZ = "vz", "Virtuozzo"
    CH = "ch", "Cloud Hypervisor"
    TEST = "test", "libvirt test driver"


class HostState(models.TextChoices):
    NEW = "new", "Probing"
    ONLINE = "online", "Online"
    OFFLINE = "offline", "Offline"
    ERROR = "error", "Error"


class Accelerator(models.TextChoices):
    AUTO = "auto", "Auto (KVM when available)"
    KVM = "kvm", "KVM"
    TCG = "tcg", "TCG (software emulation)"


class CpuMode(models.TextChoices):
    """How a QEMU/KVM guest's CPU is described to it (per host, or per instance over its host's)."""

    DEFAULT = "", "The hypervisor's default"
    PASSTHROUGH = "host-passthrough", "Host passthrough (fastest; migrates only between identical hosts)"
    HOST_MODEL = "host-model", "Host model (close to the host's, migration-safe)"
    CUSTOM = "custom", "A named model (the most portable)"
