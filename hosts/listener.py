"""The event listener: libvirt lifecycle events → instance services, plus periodic reconcile.

libvirt calls back on its own event thread; callbacks only queue the event, and the
listener's thread records it, so a slow database never stalls libvirt's loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from django.conf import settings
from django.db import close_old_connections

from billing.tasks import close_books
from hosts import hypervisor, services
from hosts.models import Host
from hosts.tasks import probe_host, reconcile_host
from images.tasks import expire_stale_images

log = logging.getLogger(__name__)


class Listener:
    """Watches every host; reconnects dropped ones and reconciles each interval."""

    def __init__(self, reconcile_seconds: float | None = None, rescan_seconds: float = 2.0) -> None:
        self.reconcile_seconds = reconcile_seconds or settings.CLOUDPANEL_RECONCILE_SECONDS
        self.rescan_seconds = rescan_seconds
        self.events: queue.Queue[hypervisor.LifecycleEvent] = queue.Queue()
        self.watched: dict[str, int] = {}  # uri → handle
        self.retry: dict[str, tuple[float, float]] = {}  # uri → (next attempt, current back-off)
        self.stop = threading.Event()

    def _watch_hosts(self, hosts: list[Host]) -> None:
        for uri in [u for u in self.watched if u not in {h.uri for h in hosts}]:
            hypervisor.unwatch(uri, self.watched.pop(uri))
        for host in hosts:
            if host.uri in self.watched and hypervisor.is_connected(host.uri):
                continue
            self.watched.pop(host.uri, None)
            next_attempt, backoff = self.retry.get(host.uri, (0.0, self.rescan_seconds))
            if time.monotonic() < next_attempt:
                continue  # an unreachable host is retried less and less often, up to once a minute
            try:
                handle = hypervisor.watch_lifecycle(host.uri, self.events.put)
            except hypervisor.HypervisorError as exc:
                services.record_failure(host_id=host.pk, error=exc)
                self.retry[host.uri] = (time.monotonic() + backoff, min(backoff * 2, 60.0))
                continue
            self.retry.pop(host.uri, None)
            log.info("watching %s (%s)", host.name, host.uri)
            probe_host(host.pk)  # refresh its facts: it may have changed while we were away
            reconcile_host(host.pk)  # catch up on events missed while we were not listening
            self.watched[host.uri] = handle  # only now: watched means caught up

    def _drain(self, timeout: float) -> None:
        from instances.services import record_domain_event

        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        hosts: dict[str, Host | None] = {}
        while True:
            if event.uri not in hosts:
                hosts[event.uri] = Host.objects.filter(uri=event.uri).first()
            host = hosts[event.uri]
            if host is not None:
                record_domain_event(host=host, domain_uuid=event.domain_uuid, observed_at=event.observed_at,
                                    status=event.state.value if event.state else None, event=event.event)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return

    def run(self) -> None:
        """Loop until stop is set."""
        next_scan = 0.0
        next_reconcile = time.monotonic() + self.reconcile_seconds  # watching a host reconciles it first
        next_billing = time.monotonic() + self.reconcile_seconds
        while not self.stop.is_set():
            try:
                now = time.monotonic()
                if now >= next_scan:
                    close_old_connections()
                    self._watch_hosts(list(Host.objects.all()))  # disabled hosts still run instances
                    next_scan = now + self.rescan_seconds
                if now >= next_reconcile:
                    for host_id in Host.objects.values_list("pk", flat=True):
                        reconcile_host(host_id)
                    expire_stale_images.delay()  # the same safety net for the image library, in a worker
                    next_reconcile = now + self.reconcile_seconds
                if now >= next_billing:
                    close_books.delay()  # meter usage, invoice closed months: in a worker
                    next_billing = now + settings.CLOUDPANEL_BILLING_SECONDS
                self._drain(timeout=0.2)
            except Exception:
                log.exception("listener loop failed; retrying")
                time.sleep(1)
        for uri, handle in self.watched.items():
            hypervisor.unwatch(uri, handle)
