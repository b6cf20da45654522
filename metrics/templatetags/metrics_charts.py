"""{% metrics_charts "instance" pk %}: a host's or instance's charts, drawn by static/cloudpanel/metrics.js."""

from django import template
from django.urls import reverse

from metrics.choices import Range

register = template.Library()

CHARTS = {
    "instance": (("cpu", "CPU (% of its vCPUs)"), ("memory", "Memory"), ("disk", "Disk throughput"),
                 ("iops", "Disk operations"), ("net", "Network")),
    "host": (("cpu", "CPU (% of the host)"), ("memory", "Memory"), ("load", "Instances"), ("pool", "Storage pools")),
}


@register.inclusion_tag("_metrics.html")
def metrics_charts(of: str, object_id: int) -> dict:
    return {"of": of, "object_id": object_id, "url": reverse(f"api-{of}-metrics", args=[object_id]),
            "ranges": Range.choices, "charts": [{"name": name, "title": title} for name, title in CHARTS[of]]}
