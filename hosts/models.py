"""Hypervisor hosts."""

from django.db import models

from hosts import capabilities
from hosts.choices import Accelerator, CpuMode, HostState, Technology


class Host(models.Model):
    """A libvirt endpoint that runs instances: its URI, what a probe found, and its state."""

    name = models.CharField(max_length=100, unique=True)
    uri = models.CharField(max_length=500, unique=True)
    technology = models.CharField(max_length=10, choices=Technology.choices)
    accelerator = models.CharField(max_length=5, choices=Accelerator.choices, default=Accelerator.AUTO)
    storage_pool = models.CharField(max_length=100, blank=True, default="default")
    # Host directories under which platform admins may name kernels, initrds and disks by path; none by default.
    allowed_paths = models.TextField(blank=True, help_text="Absolute directories, one per line, under which "
                                     "platform admins may boot kernels, initrds and disks by their path on the host. "
                                     "Tenants never can.")
    # Words an instance may require of its host ("ssd", "gpu"): see hosts.placement.
    tags = models.CharField(max_length=500, blank=True)
    enabled = models.BooleanField(default=True)
    # In maintenance: no new placement, its instances moved away (instances.maintenance) until an admin ends it.
    maintenance = models.BooleanField(default=False)
    state = models.CharField(max_length=10, choices=HostState.choices, default=HostState.NEW)
    last_error = models.TextField(blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    hostname = models.CharField(max_length=255, blank=True)
    hypervisor_type = models.CharField(max_length=50, blank=True)
    hypervisor_version = models.CharField(max_length=50, blank=True)
    libvirt_version = models.CharField(max_length=50, blank=True)
    cpus = models.PositiveIntegerField(default=0)
    memory_mib = models.PositiveBigIntegerField(default=0)
    kvm_available = models.BooleanField(default=False)
    pools = models.JSONField(default=list, blank=True)
    arch = models.CharField(max_length=20, blank=True)  # its own CPU's architecture
    guests = models.JSONField(default=list, blank=True)  # what its guests can be (hypervisor.HostInfo.guests)
    domain_caps = models.JSONField(default=dict, blank=True)  # per "arch/domain type" (hypervisor.HostInfo)
    missing = models.JSONField(default=list, blank=True)  # what its driver could not tell the last probe
    # Its instances' CPU unless they ask for another (QEMU/KVM): see hosts.guests.
    cpu_mode = models.CharField(max_length=16, choices=CpuMode.choices, blank=True, default=CpuMode.DEFAULT)
    cpu_model = models.CharField(max_length=64, blank=True)
    # OpenVZ: the OS templates of its cache that instances may be made from, one per line.
    os_templates = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def allowed_dirs(self) -> list[str]:
        """The directories of allowed_paths, one per non-empty line."""
        return [line.strip() for line in self.allowed_paths.splitlines() if line.strip()]

    @property
    def template_list(self) -> list[str]:
        return self.os_templates.split()

    @property
    def tag_list(self) -> list[str]:
        return self.tags.split()

    @property
    def can(self) -> capabilities.Capabilities:
        """What its technology can do."""
        return capabilities.of(self.technology)

    @property
    def schedulable(self) -> bool:
        return self.enabled and not self.maintenance and self.state == HostState.ONLINE

    @property
    def unschedulable_reason(self) -> str:
        """Why nothing new is placed on it ("" if it takes new instances)."""
        if not self.enabled:
            return "disabled"
        if self.maintenance:
            return "in maintenance"
        return "" if self.state == HostState.ONLINE else self.get_state_display().lower()


class HostDomain(models.Model):
    """A domain on a host, as the last reconcile (or event) saw it: the panel's own and any made outside it."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="domains")
    uuid = models.UUIDField()
    name = models.CharField(max_length=255)
    state = models.CharField(max_length=10)
    vcpus = models.PositiveIntegerField()
    memory_mib = models.PositiveBigIntegerField()
    seen_at = models.DateTimeField()

    class Meta:
        ordering = ["host", "name"]
        constraints = [models.UniqueConstraint(fields=["host", "uuid"], name="host_domain_unique")]

    def __str__(self) -> str:
        return f"{self.name} on {self.host_id}"
