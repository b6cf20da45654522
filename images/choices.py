"""Choices of the image library."""

from django.db import models


class ImageStatus(models.TextChoices):
    UPLOADING = "uploading", "Uploading"
    IMPORTING = "importing", "Importing"
    INSPECTING = "inspecting", "Inspecting"
    AVAILABLE = "available", "Available"
    ERROR = "error", "Error"


class DiskFormat(models.TextChoices):
    """What an image is stored as: VMDK, VDI and VHDX are converted to qcow2, boxes unpacked."""

    QCOW2 = "qcow2", "qcow2"
    RAW = "raw", "raw"
    ISO = "iso", "ISO"


class SourceFormat(models.TextChoices):
    """What was uploaded or imported."""

    QCOW2 = "qcow2", "qcow2"
    RAW = "raw", "raw"
    ISO = "iso", "ISO"
    VMDK = "vmdk", "VMDK"
    VDI = "vdi", "VDI"
    VHDX = "vhdx", "VHDX"
    BOX = "box", "Vagrant box"


class Visibility(models.TextChoices):
    PUBLIC = "public", "Public"
    PRIVATE = "private", "Tenant"


class OsType(models.TextChoices):
    LINUX = "linux", "Linux"
    WINDOWS = "windows", "Windows"
    BSD = "bsd", "BSD"
    OTHER = "other", "Other"


IN_TRANSIT = (ImageStatus.UPLOADING, ImageStatus.IMPORTING, ImageStatus.INSPECTING)


class CopyStatus(models.TextChoices):
    COPYING = "copying", "Copying"
    AVAILABLE = "available", "Available"
    ERROR = "error", "Error"
