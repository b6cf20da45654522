from rest_framework import serializers

from metrics.choices import Range


class ChartQuerySerializer(serializers.Serializer):
    range = serializers.ChoiceField(choices=Range.choices, default=Range.HOUR)


class ChartSerializer(serializers.Serializer):
    """A chart's points, column by column: times in Unix milliseconds, each field's values (null: not sampled)."""

    range = serializers.ChoiceField(choices=Range.choices)
    bucket = serializers.IntegerField(help_text="Seconds each point averages (0: each sample)")
    t = serializers.ListField(child=serializers.IntegerField())
