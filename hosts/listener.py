"""The event listener: libvirt lifecycle events, passed on as hosts.signals.domain_event.

libvirt calls back on its own event thread; callbacks only queue the event, and the
listener's thread records it, so a slow database never stalls libvirt's loop. An event is
let go only once it is recorded: when the database is away it waits, in order, and is
recorded when the database answers again. The listener listens and schedules nothing:
periodic reconcile sweeps are beat's (cloudpanel/schedule.py); it reconciles a host when
it starts watching it and after the database was away, to catch up on what it missed, in
a thread of its own, so that events are recorded meanwhile.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time

from django.db import close_old_connections, connections
from django.utils import timezone

from cloudpanel import health
from cloudpanel.tasking import TRANSIENT
from hosts import hypervisor, services, signals
from hosts.models import Host
from hosts.tasks import probe_host, reconcile_host

log = logging.getLogger(__name__)


class Listener:
    """Watches every host (or the given ones: a host's own listener), and reconnects dropped ones."""

    def __init__(self, rescan_seconds: float = 2.0, host_ids: list[int] | None = None) -> None:
        self.rescan_seconds = rescan_seconds
        self.host_ids = host_ids
        self.events: queue.Queue[hypervisor.LifecycleEvent] = queue.Queue()
        self.unrecorded: collections.deque[hypervisor.LifecycleEvent] = collections.deque()  # taken, not yet kept
        self.watched: dict[str, int] = {}  # uri → handle
        self.catching_up: dict[int, threading.Thread] = {}  # host id → its catch-up running
        self.again: set[int] = set()  # hosts asked to catch up again while theirs runs
        self.lock = threading.Lock()
        self.retry: dict[str, tuple[float, float]] = {}  # uri → (next attempt, current back-off)
        self.stop = threading.Event()
        self.lag = 0.0  # seconds from libvirt's callback to the last event's recording
        self.recorded = 0
        self.name = "listener:" + (",".join(map(str, sorted(host_ids))) if host_ids else "all")

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
            if not host.can.events:
                continue  # (the periodic reconcile alone sees its changes)
            try:
                handle = hypervisor.watch_lifecycle(host.uri, self.events.put)
            except hypervisor.EventsUnsupported as exc:  # (its technology should have them): not a host failure
                log.warning("%s; the periodic reconcile alone sees its changes", exc)
                self.retry[host.uri] = (time.monotonic() + 3600, 3600.0)
                continue
            except hypervisor.HypervisorError as exc:
                services.record_failure(host_id=host.pk, error=exc)
                self.retry[host.uri] = (time.monotonic() + backoff, min(backoff * 2, 60.0))
                continue
            self.retry.pop(host.uri, None)
            log.info("watching %s (%s)", host.name, host.uri)
            self.watched[host.uri] = handle
            self._catch_up(host.pk, probe=True)  # it may have changed while we were not listening

    def _catch_up(self, host_id: int, *, probe: bool = False) -> threading.Thread:
        """Read the host's facts (probe) and its domains again, beside the events. One read per host at a time: asked
        while one runs, it reads once more when that one ends (what it read may predate the ask)."""
        with self.lock:
            running = self.catching_up.get(host_id)
            if running is not None and running.is_alive():
                self.again.add(host_id)
                return running

        def run() -> None:
            read_facts = probe
            try:
                while True:
                    if read_facts:
                        probe_host(host_id)
                    reconcile_host(host_id)
                    with self.lock:
                        if host_id not in self.again:
                            del self.catching_up[host_id]
                            return
                        self.again.discard(host_id)
                    read_facts = False
            except Exception:
                log.exception("catching up on host %s failed; the next sweep will", host_id)
                with self.lock:
                    self.catching_up.pop(host_id, None)
            finally:
                connections.close_all()  # this thread's connection goes back to the pool

        thread = threading.Thread(target=run, name=f"catch-up-{host_id}", daemon=True)
        with self.lock:
            self.catching_up[host_id] = thread
        thread.start()
        return thread

    @staticmethod
    def _learn(host: Host, event: hypervisor.LifecycleEvent) -> None:
        """A domain new to us (defined outside the panel, or just created by it): ask the host its name and size."""
        try:
            facts = hypervisor.describe(host.uri, event.domain_uuid)
        except hypervisor.DomainNotFound:
            return  # gone already
        except hypervisor.HypervisorError as exc:
            log.warning("could not read domain %s on %s (the next sweep will): %s", event.domain_uuid, host.name, exc)
            return
        services.record_domains(host_id=host.pk, domains=[facts], observed_at=event.observed_at, complete=False)

    def _drain(self, timeout: float) -> None:
        """Record the events that came, in order; one is let go once recorded, or dropped (logged) when it cannot be:
        an outage of the database (tasking.TRANSIENT) keeps it for the next try."""
        if not self.unrecorded:
            try:
                self.unrecorded.append(self.events.get(timeout=timeout))
            except queue.Empty:
                return
        while True:
            try:
                self.unrecorded.append(self.events.get_nowait())
            except queue.Empty:
                break
        hosts: dict[str, Host | None] = {}
        while self.unrecorded:
            event = self.unrecorded[0]
            if event.uri not in hosts:
                hosts[event.uri] = Host.objects.filter(uri=event.uri).first()
            host = hosts[event.uri]
            if host is not None:
                try:
                    self._record(host, event)
                except TRANSIENT:
                    raise  # kept for the next try
                except Exception:
                    log.exception("an event of %s could not be recorded and is dropped: %s", host.name, event)
            self.unrecorded.popleft()

    def _record(self, host: Host, event: hypervisor.LifecycleEvent) -> None:
        status = event.state.value if event.state else None
        signals.domain_event.send(sender=Host, host=host, domain_uuid=event.domain_uuid,
                                  observed_at=event.observed_at, event=event.event, status=status)
        if not services.record_domain_event(host_id=host.pk, domain_uuid=event.domain_uuid, state=status,
                                            observed_at=event.observed_at):
            self._learn(host, event)
        self.lag = max(0.0, (timezone.now() - event.observed_at).total_seconds())
        self.recorded += 1

    def run(self) -> None:
        """Loop until stop is set."""
        next_scan = next_beat = 0.0
        database_lost = False
        while not self.stop.is_set():
            try:
                now = time.monotonic()
                if now >= next_beat:  # for /metrics: alive, and how far behind libvirt's events
                    health.beat(self.name, {"at": time.time(), "lag": self.lag, "events": self.recorded,
                                            "hosts": len(self.watched), "waiting": len(self.unrecorded)})
                    next_beat = now + 1.0
                if now >= next_scan:
                    close_old_connections()
                    hosts = Host.objects.all() if self.host_ids is None else Host.objects.filter(pk__in=self.host_ids)
                    self._watch_hosts(list(hosts))  # disabled hosts still run instances
                    next_scan = now + self.rescan_seconds
                self._drain(timeout=0.2)
                if database_lost:  # back: what changed meanwhile without an event is read at once
                    for host_id in Host.objects.filter(uri__in=list(self.watched)).values_list("pk", flat=True):
                        self._catch_up(host_id)
                    database_lost = False
            except TRANSIENT as exc:
                log.warning("database unavailable (%s); %d event(s) kept until it answers", exc, len(self.unrecorded))
                database_lost = True
                connections.close_all()  # a dropped connection is opened again on the next try
                self.stop.wait(0.5)
            except Exception:
                log.exception("listener loop failed; retrying")
                self.stop.wait(1)
        for uri, handle in self.watched.items():
            hypervisor.unwatch(uri, handle)
        with self.lock:
            catching_up = list(self.catching_up.values())
        for thread in catching_up:
            thread.join(timeout=30)
