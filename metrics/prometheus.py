"""/metrics: the panel's health, and optionally each instance's use, in the Prometheus exposition format.

The web processes' own figures (requests, latency, websockets: cloudpanel/telemetry.py) are summed over their
files; the rest is read when scraped: hosts and instances by state from the database, operations by outcome and
duration from their action rows (so a worker on another machine counts too), queue depths from the broker, the
event listeners' lag from their heartbeats. Who may scrape: a bearer token (CLOUDPANEL_METRICS_TOKEN) or an
address in CLOUDPANEL_METRICS_NETWORKS; nobody while neither is set.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

from cloudpanel import health, telemetry
from cloudpanel.tasking import broker_client
from hosts.models import Host
from instances.choices import ActionStatus, Status
from instances.models import Instance, InstanceAction
from metrics import history

DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
PRIORITY_SEPARATOR = "\x06\x16"  # kombu's Redis transport keeps a queue's priority steps as queue + this + step
PRIORITY_STEPS = (0, 3, 6, 9)
INSTANCE_GAUGES = (("cpu", "cloudpanel_instance_cpu_percent", "CPU use, in % of its vCPUs"),
                   ("memory_used", "cloudpanel_instance_memory_used_bytes", "Memory it uses"),
                   ("memory_total", "cloudpanel_instance_memory_bytes", "Memory it has"),
                   ("disk_read", "cloudpanel_instance_disk_read_bytes_per_second", "Disk bytes read per second"),
                   ("disk_write", "cloudpanel_instance_disk_write_bytes_per_second", "Disk bytes written per second"),
                   ("disk_read_iops", "cloudpanel_instance_disk_reads_per_second", "Disk reads per second"),
                   ("disk_write_iops", "cloudpanel_instance_disk_writes_per_second", "Disk writes per second"),
                   ("net_rx", "cloudpanel_instance_network_receive_bytes_per_second", "Network bytes received /s"),
                   ("net_tx", "cloudpanel_instance_network_transmit_bytes_per_second", "Network bytes sent /s"))


class PanelCollector:
    """What the database, the broker and the heartbeats say at the moment of the scrape."""

    def collect(self) -> Iterator[Metric]:
        yield from self._hosts_and_instances()
        yield from self._actions()
        yield from self._queues()
        yield from self._listeners()
        if settings.CLOUDPANEL_METRICS_INSTANCES:
            yield from self._instance_use()

    def _hosts_and_instances(self) -> Iterator[Metric]:
        hosts = GaugeMetricFamily("cloudpanel_hosts", "Hosts, by state and technology", labels=["state", "technology"])
        for row in Host.objects.values("state", "technology").annotate(n=Count("pk")).order_by():
            hosts.add_metric([row["state"], row["technology"]], row["n"])
        yield hosts
        instances = GaugeMetricFamily("cloudpanel_instances", "Instances not deleted, by state and technology",
                                      labels=["status", "technology"])
        for row in (Instance.objects.exclude(status=Status.DELETED).values("status", "host__technology")
                    .annotate(n=Count("pk")).order_by()):
            instances.add_metric([row["status"], row["host__technology"] or ""], row["n"])
        yield instances

    def _actions(self) -> Iterator[Metric]:
        outcomes = CounterMetricFamily("cloudpanel_actions", "Operations asked for, by operation and outcome",
                                       labels=["operation", "status"])
        for row in InstanceAction.objects.values("operation", "status").annotate(n=Count("pk")).order_by():
            outcomes.add_metric([row["operation"], row["status"]], row["n"])
        yield outcomes
        took = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        done = (InstanceAction.objects.filter(status__in=[ActionStatus.SUCCEEDED, ActionStatus.FAILED],
                                              started_at__isnull=False, finished_at__isnull=False)
                .annotate(took=took).values("operation"))
        buckets = {f"b{i}": Count("pk", filter=Q(took__lte=timedelta(seconds=b)))
                   for i, b in enumerate(DURATION_BUCKETS)}
        durations = HistogramMetricFamily("cloudpanel_action_duration_seconds",
                                          "Time from a worker taking an operation to its end, by operation",
                                          labels=["operation"])
        for row in done.annotate(n=Count("pk"), total=Sum("took"), **buckets).order_by():
            cumulative = [(floatToGoString(b), row[f"b{i}"]) for i, b in enumerate(DURATION_BUCKETS)]
            cumulative.append(("+Inf", row["n"]))
            durations.add_metric([row["operation"]], cumulative, row["total"].total_seconds() if row["total"] else 0)
        yield durations

    def _queues(self) -> Iterator[Metric]:
        client = broker_client()
        if client is None:  # embedded: the queue is in this process's memory
            return
        names = [settings.CELERY_TASK_DEFAULT_QUEUE]
        if settings.CLOUDPANEL_HOST_QUEUES:
            for host_id in Host.objects.values_list("pk", flat=True):
                names += [f"host.{host_id}", f"host.{host_id}.steps"]
        keys = [name if step == 0 else f"{name}{PRIORITY_SEPARATOR}{step}" for name in names
                for step in PRIORITY_STEPS]
        depth = GaugeMetricFamily("cloudpanel_queue_depth", "Tasks waiting in a queue of the broker", labels=["queue"])
        try:
            with client.pipeline() as pipe:
                for key in keys:
                    pipe.llen(key)
                lengths = pipe.execute()
        except Exception:  # the broker is away: said by its absence
            return
        for i, name in enumerate(names):
            depth.add_metric([name], sum(lengths[i * len(PRIORITY_STEPS):(i + 1) * len(PRIORITY_STEPS)]))
        yield depth

    def _listeners(self) -> Iterator[Metric]:
        beats = health.read("listener")
        lag = GaugeMetricFamily("cloudpanel_listener_lag_seconds",
                                "From libvirt's event to its recording, for the last event", labels=["listener"])
        age = GaugeMetricFamily("cloudpanel_listener_heartbeat_age_seconds",
                                "Since the event listener last said it is alive", labels=["listener"])
        waiting = GaugeMetricFamily("cloudpanel_listener_events_waiting", "Events received, not yet recorded",
                                    labels=["listener"])
        now = time.time()
        for name, values in beats.items():
            lag.add_metric([name], values.get("lag", 0.0))
            age.add_metric([name], max(0.0, now - values.get("at", now)))
            waiting.add_metric([name], values.get("waiting", 0))
        yield from (lag, age, waiting)

    def _instance_use(self) -> Iterator[Metric]:
        latest = history.latest("instance")
        names = {row["pk"]: row for row in Instance.objects.filter(pk__in=[hot.object_id for hot in latest]).values(
            "pk", "uuid", "name", "tenant__name", "host__name")}
        labels = ["instance", "name", "tenant", "host"]
        families = [(field, GaugeMetricFamily(metric, text, labels=labels)) for field, metric, text in INSTANCE_GAUGES]
        for hot in latest:
            row = names.get(hot.object_id)
            if row is None:
                continue
            values = [str(row["uuid"]), row["name"], row["tenant__name"], row["host__name"] or ""]
            for field, family in families:
                if hot.values[field] is not None:
                    family.add_metric(values, hot.values[field])
        for _field, family in families:
            yield family


def allowed(request: HttpRequest) -> bool:
    """A scrape with the configured bearer token, or from an address of a configured network."""
    token = settings.CLOUDPANEL_METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in settings.CLOUDPANEL_METRICS_NETWORKS)


def scrape(request: HttpRequest) -> HttpResponse:
    """The exposition, or 403 saying how to be let in."""
    if not allowed(request):
        reason = ("Scraping needs the bearer token of CLOUDPANEL_METRICS_TOKEN or an address in "
                  "CLOUDPANEL_METRICS_NETWORKS.\n")
        return HttpResponse(reason, status=403, content_type="text/plain; charset=utf-8")
    telemetry.forget_dead()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(PanelCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
