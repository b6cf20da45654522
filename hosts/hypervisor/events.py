"""Lifecycle events of a host's domains, delivered on libvirt's event thread."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

from hosts.hypervisor import connections
from hosts.hypervisor.connections import (
    HypervisorError,
    PowerState,
    libvirt,
)

log = logging.getLogger(__name__)


class EventsUnsupported(HypervisorError):
    """The host's driver has no domain events: the periodic reconcile alone sees its changes."""


@dataclass(frozen=True)
class LifecycleEvent:
    uri: str
    domain_uuid: str
    state: PowerState | None
    event: str
    observed_at: datetime


@functools.cache
def _event_names() -> dict[int, str]:
    return {
        libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
        libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
        libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
        libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
        libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
        libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
        libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
        libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
    }


def watch_lifecycle(uri: str, callback: Callable[[LifecycleEvent], None]) -> int:
    """Call callback (on the libvirt event thread) for every lifecycle event on a host.

    Returns a handle for unwatch(). The state is read when the event arrives.
    """
    conn = connections.connection(uri)

    def on_event(_conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, _detail: int,
                 _opaque: object) -> None:
        # Read the time before the state: the observation is no newer than this.
        observed_at = datetime.now(UTC)
        try:
            current: PowerState | None = connections.power_state(dom)
        except libvirt.libvirtError:
            current = None  # undefined in the meantime
        try:
            callback(LifecycleEvent(uri, dom.UUIDString(), current, _event_names().get(event, str(event)),
                                    observed_at))
        except Exception:
            log.exception("lifecycle callback failed for %s", uri)

    try:
        return conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, None)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            raise EventsUnsupported(f"{uri}: its driver sends no domain events") from None
        with connections.errors(uri):
            raise


def unwatch(uri: str, handle: int) -> None:
    """Stop a watch_lifecycle() subscription; a dropped connection counts as done."""
    conn = connections.cached(uri)
    if conn is not None:
        with suppress(libvirt.libvirtError):
            conn.domainEventDeregisterAny(handle)
