from django.db import models


class Technology(models.TextChoices):
    QEMU = "qemu", "QEMU/KVM"
    LXC = "lxc", "LXC"
    XEN = "xen", "Xen"
    OPENVZ = "openvz", "OpenVZ"
    VBOX = "vbox", "VirtualBox"
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
