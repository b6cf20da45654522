"""Stored resource use of hosts and instances, at three resolutions, and the sampler's last counters per host.

Samples name their host or instance by id without a foreign key: a deleted instance's history stays until its
retention ends, like every other sample's. Each row is keyed by (object, resolution, time), with no surrogate id.
"""

from django.conf import settings
from django.db import models

from cloudpanel.scoping import TenantScopedQuerySet
from metrics.choices import MEASURED, Comparison, Measure, Resolution, Target


class InstanceSample(models.Model):
    """An instance's resource use over one sample's time: CPU in % of its vCPUs, memory in bytes, disk and network
    in bytes and requests per second (None where its driver does not tell)."""

    pk = models.CompositePrimaryKey("instance_id", "resolution", "time")
    instance_id = models.IntegerField()
    resolution = models.PositiveSmallIntegerField(choices=Resolution.choices)
    time = models.DateTimeField()
    tenant_id = models.IntegerField()
    cpu = models.FloatField(null=True)
    memory_used = models.FloatField(null=True)
    memory_total = models.FloatField(null=True)
    disk_read = models.FloatField(null=True)
    disk_write = models.FloatField(null=True)
    disk_read_iops = models.FloatField(null=True)
    disk_write_iops = models.FloatField(null=True)
    net_rx = models.FloatField(null=True)
    net_tx = models.FloatField(null=True)

    class Meta:
        indexes = [models.Index(fields=["resolution", "time"], name="metrics_instance_when")]

    def __str__(self) -> str:
        return f"instance {self.instance_id} at {self.time:%Y-%m-%d %H:%M:%S}"


class HostSample(models.Model):
    """A host's use over one sample's time: its own CPU in %, memory and storage pools in bytes, and the load of
    its instances (how many run, with how many vCPUs, using how many CPUs' worth)."""

    pk = models.CompositePrimaryKey("host_id", "resolution", "time")
    host_id = models.IntegerField()
    resolution = models.PositiveSmallIntegerField(choices=Resolution.choices)
    time = models.DateTimeField()
    cpu = models.FloatField(null=True)
    memory_used = models.FloatField(null=True)
    memory_total = models.FloatField(null=True)
    running = models.FloatField()
    vcpus = models.FloatField()
    guest_cpu = models.FloatField(null=True)  # the running instances' CPU use, in CPUs
    pool_used = models.FloatField(null=True)
    pool_capacity = models.FloatField(null=True)

    class Meta:
        indexes = [models.Index(fields=["resolution", "time"], name="metrics_host_when")]

    def __str__(self) -> str:
        return f"host {self.host_id} at {self.time:%Y-%m-%d %H:%M:%S}"


class Cursor(models.Model):
    """The counters a host's last sampling round read, to turn the next round's into rates."""

    host = models.OneToOneField("hosts.Host", on_delete=models.CASCADE, related_name="+")
    taken = models.FloatField()  # Unix time, s
    counters = models.JSONField(default=dict)  # "node": [busy, total] ns; "domains": {uuid: [counter, ...]}

    def __str__(self) -> str:
        return f"counters of host {self.host_id}"


class RollUp(models.Model):
    """How far the periodic roll-up has averaged samples into one coarser resolution."""

    kind = models.CharField(max_length=10)  # "instance" or "host"
    resolution = models.PositiveSmallIntegerField(choices=Resolution.choices)
    done_until = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "resolution"], name="metrics_one_rollup_each")]

    def __str__(self) -> str:
        return f"{self.kind} samples averaged to {self.resolution} s until {self.done_until:%Y-%m-%d %H:%M}"


class AlertRule(models.Model):
    """A measure above (or below) a threshold for a while, on a tenant's instances (one or all) or, for platform
    rules, on hosts or on every tenant's instances: told through notifications when it starts and when it ends."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, null=True, blank=True,
                               related_name="alert_rules")
    name = models.CharField(max_length=100)
    target = models.CharField(max_length=10, choices=Target.choices, default=Target.INSTANCE)
    instance = models.ForeignKey("instances.Instance", on_delete=models.CASCADE, null=True, blank=True,
                                 related_name="+")  # one instance, else every one of the tenant's
    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    measure = models.CharField(max_length=10, choices=Measure.choices)
    comparison = models.CharField(max_length=5, choices=Comparison.choices, default=Comparison.ABOVE)
    threshold = models.FloatField()
    seconds = models.PositiveIntegerField()  # how long every sample must meet it
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return self.name

    @property
    def condition(self) -> str:
        """E.g. "CPU above 90 % for 10 min"."""
        name, unit = MEASURED[self.measure]
        return f"{name} {self.comparison} {self.threshold:g} {unit} for {self.seconds / 60:g} min"


class AlertState(models.Model):
    """A rule firing for one host or instance, since when."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="states")
    object_id = models.IntegerField()
    since = models.DateTimeField()
    value = models.FloatField(null=True)  # the newest sample's, when it last held

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rule", "object_id"], name="one_alert_state_each")]

    def __str__(self) -> str:
        return f"{self.rule} firing for {self.object_id} since {self.since:%Y-%m-%d %H:%M}"
