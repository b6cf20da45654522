from django.db import models


class Resolution(models.IntegerChoices):
    """How much time one stored sample covers: each sampling round's own (every CLOUDPANEL_METRICS_SECONDS), or
    the average of a minute's or an hour's, which the periodic roll-up makes and each kept for its own while."""

    RAW = 0, "each sample"
    MINUTE = 60, "1 minute"
    HOUR = 3600, "1 hour"


class Range(models.TextChoices):
    """What a chart shows: the last hour, day, week, month or year."""

    HOUR = "hour", "Hour"
    DAY = "day", "Day"
    WEEK = "week", "Week"
    MONTH = "month", "Month"
    YEAR = "year", "Year"


class Target(models.TextChoices):
    INSTANCE = "instance", "Instances"
    HOST = "host", "Hosts"


class Measure(models.TextChoices):
    """What an alert rule watches, computed from a sample."""

    CPU = "cpu", "CPU %"
    MEMORY = "memory", "Memory %"
    DISK = "disk", "Disk I/O (bytes/s)"
    NET = "net", "Network (bytes/s)"
    POOL = "pool", "Storage pools % (hosts)"


class Comparison(models.TextChoices):
    ABOVE = "above", "above"
    BELOW = "below", "below"


MEASURED = {Measure.CPU: ("CPU", "%"), Measure.MEMORY: ("memory", "%"), Measure.DISK: ("disk I/O", "bytes/s"),
            Measure.NET: ("network", "bytes/s"), Measure.POOL: ("storage pools", "%")}
