"""The event listener: libvirt lifecycle events, passed on as hosts.signals.domain_event.

libvirt calls back on its own event thread; callbacks only queue the event, and the
listener's thread records it, so a slow database never stalls libvirt's loop. The
listener listens and schedules nothing: periodic reconcile sweeps are beat's
(cloudpanel/schedule.py); it reconciles a host only when it starts watching it, to catch
up on what it missed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from django.db import close_old_connections

from hosts import hypervisor, services, signals
from hosts.models import Host
from hosts.tasks import probe_host, reconcile_host

log = logging.getLogger(__name__)


class Listener:
    """Watches every host, and reconnects dropped ones."""

    def __init__(self, rescan_seconds: float = 2.0) -> None:
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
                signals.domain_event.send(sender=Host, host=host, domain_uuid=event.domain_uuid,
                                          observed_at=event.observed_at, event=event.event,
                                          status=event.state.value if event.state else None)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return

    def run(self) -> None:
        """Loop until stop is set."""
        next_scan = 0.0
        while not self.stop.is_set():
            try:
                now = time.monotonic()
                if now >= next_scan:
                    close_old_connections()
                    self._watch_hosts(list(Host.objects.all()))  # disabled hosts still run instances
                    next_scan = now + self.rescan_seconds
                self._drain(timeout=0.2)
            except Exception:
                log.exception("listener loop failed; retrying")
                time.sleep(1)
        for uri, handle in self.watched.items():
            hypervisor.unwatch(uri, handle)
