"""Choices of billing: the meters, and an invoice's kind and lifecycle."""

from django.db import models


class Meter(models.TextChoices):
    """What is counted, in units of size × seconds: vCPUs and GiB of RAM while an instance runs, GiB of disk
    while it exists, GiB of snapshot while it is kept, a licensed image while its instance runs, a public address
    while it is held."""

    VCPU = "vcpu", "vCPU-hours"
    RAM = "ram", "GiB-of-RAM-hours"
    DISK = "disk", "GiB-of-disk-months"
    SNAPSHOT = "snapshot", "GiB-of-snapshot-months"
    VOLUME = "volume", "GiB-of-volume-months"
    BACKUP = "backup", "GiB-of-backup-months"
    LICENCE = "licence", "Image licence hours"
    ADDRESS = "address", "Public address hours"


class InvoiceKind(models.TextChoices):
    INVOICE = "invoice", "Invoice"
    CREDIT_NOTE = "credit", "Credit note"


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    ISSUED = "issued", "Issued"
    PAID = "paid", "Paid"
    VOID = "void", "Void"
