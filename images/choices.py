"""Choices of the image library."""

from django.db import models


class ImageStatus(models.TextChoices):
    UPLOADING = "uploading", "Uploading"
    IMPORTING = "importing", "Importing"
    INSPECTING = "inspecting", "Inspecting"
    AVAILABLE = "available", "Available"
    ERROR = "error", "Error"


class DiskFormat(models.TextChoices):
    """What an image is stored as: VMDK, VDI and VHDX are converted to qcow2, boxes unpacked. Kernels and
    initrds are parts of boot kernels; a container root filesystem is a tar archive that LXC containers unpack."""

    QCOW2 = "qcow2", "qcow2"
    RAW = "raw", "raw"
    ISO = "iso", "ISO"
    KERNEL = "kernel", "Linux kernel"
    INITRD = "initrd", "initrd"
    ROOTFS = "rootfs", "Container root filesystem"


class SourceFormat(models.TextChoices):
    """What was uploaded or imported."""

    QCOW2 = "qcow2", "qcow2"
    RAW = "raw", "raw"
    ISO = "iso", "ISO"
    VMDK = "vmdk", "VMDK"
    VDI = "vdi", "VDI"
    VHDX = "vhdx", "VHDX"
    BOX = "box", "Vagrant box"
    KERNEL = "kernel", "Linux kernel (bzImage, Image or zImage)"
    INITRD = "initrd", "initrd (cpio, compressed or not)"
    TAR = "tar", "Container root filesystem (tar, tar.gz, tar.xz)"


class Visibility(models.TextChoices):
    PUBLIC = "public", "Public"
    PRIVATE = "private", "Tenant"


class OsType(models.TextChoices):
    LINUX = "linux", "Linux"
    WINDOWS = "windows", "Windows"
    BSD = "bsd", "BSD"
    OTHER = "other", "Other"


# What instances boot as their disk (or install from), as opposed to the parts of boot kernels and containers.
DISK_FORMATS = (DiskFormat.QCOW2, DiskFormat.RAW, DiskFormat.ISO)
# Formats that only a declaration makes: their bytes alone would read as a raw disk.
DECLARED_ONLY = (SourceFormat.KERNEL, SourceFormat.INITRD, SourceFormat.TAR)

IN_TRANSIT = (ImageStatus.UPLOADING, ImageStatus.IMPORTING, ImageStatus.INSPECTING)


class CopyStatus(models.TextChoices):
    COPYING = "copying", "Copying"
    AVAILABLE = "available", "Available"
    ERROR = "error", "Error"
