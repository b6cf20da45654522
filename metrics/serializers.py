from rest_framework import serializers

from metrics.choices import Comparison, Measure, Range, Target
from metrics.hot import Sort
from metrics.models import AlertRule


class ChartQuerySerializer(serializers.Serializer):
    range = serializers.ChoiceField(choices=Range.choices, default=Range.HOUR)


class ChartSerializer(serializers.Serializer):
    """A chart's points, column by column: times in Unix milliseconds, each field's values (null: not sampled)."""

    range = serializers.ChoiceField(choices=Range.choices)
    bucket = serializers.IntegerField(help_text="Seconds each point averages (0: each sample)")
    t = serializers.ListField(child=serializers.IntegerField())


class HotQuerySerializer(serializers.Serializer):
    by = serializers.ChoiceField(choices=Sort.choices, default=Sort.CPU)
    limit = serializers.IntegerField(min_value=1, max_value=100, default=10)


class HotInstanceSerializer(serializers.Serializer):
    """An instance's newest sample: CPU in % of its vCPUs, memory in bytes and %, I/O per second."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    tenant = serializers.CharField()
    host = serializers.CharField(allow_null=True)
    time = serializers.DateTimeField()
    cpu = serializers.FloatField(allow_null=True)
    memory_used = serializers.FloatField(allow_null=True)
    memory_total = serializers.FloatField(allow_null=True)
    memory_percent = serializers.FloatField(allow_null=True)
    disk_read = serializers.FloatField(allow_null=True)
    disk_write = serializers.FloatField(allow_null=True)
    disk_read_iops = serializers.FloatField(allow_null=True)
    disk_write_iops = serializers.FloatField(allow_null=True)
    net_rx = serializers.FloatField(allow_null=True)
    net_tx = serializers.FloatField(allow_null=True)


class HotHostSerializer(serializers.Serializer):
    """A host's newest sample: its CPU %, memory and pools in bytes and %, the load of its instances."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    time = serializers.DateTimeField()
    cpu = serializers.FloatField(allow_null=True)
    memory_used = serializers.FloatField(allow_null=True)
    memory_total = serializers.FloatField(allow_null=True)
    memory_percent = serializers.FloatField(allow_null=True)
    running = serializers.FloatField()
    vcpus = serializers.FloatField()
    guest_cpu = serializers.FloatField(allow_null=True)
    pool_used = serializers.FloatField(allow_null=True)
    pool_capacity = serializers.FloatField(allow_null=True)
    pool_percent = serializers.FloatField(allow_null=True)


class HotSpotsSerializer(serializers.Serializer):
    hosts = HotHostSerializer(many=True)
    instances = HotInstanceSerializer(many=True)


class AlertRuleSerializer(serializers.ModelSerializer):
    condition = serializers.CharField(read_only=True)
    firing = serializers.SerializerMethodField()

    class Meta:
        model = AlertRule
        fields = ["id", "tenant", "name", "target", "instance", "host", "measure", "comparison", "threshold",
                  "seconds", "enabled", "condition", "firing", "created_at"]

    def get_firing(self, rule: AlertRule) -> list[dict]:
        """The hosts or instances it holds for now, and since when."""
        return [{"id": state.object_id, "since": state.since, "value": state.value} for state in rule.states.all()]


class AlertRuleWriteSerializer(serializers.Serializer):
    tenant = serializers.IntegerField(required=False, allow_null=True,
                                      help_text="The tenant whose instances it watches; none (platform admins): "
                                                "hosts, or every tenant's instances")
    name = serializers.CharField(max_length=100)
    target = serializers.ChoiceField(choices=Target.choices, default=Target.INSTANCE)
    instance = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**31 - 1,
                                        help_text="One instance; none: all")
    host = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**31 - 1,
                                    help_text="One host; none: all")
    measure = serializers.ChoiceField(choices=Measure.choices)
    comparison = serializers.ChoiceField(choices=Comparison.choices, default=Comparison.ABOVE)
    threshold = serializers.FloatField(min_value=0, max_value=1e15)
    seconds = serializers.IntegerField(min_value=60, max_value=6 * 3600, help_text="How long it must hold")


class AlertRuleEnableSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()
