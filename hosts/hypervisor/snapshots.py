"""Snapshots of a domain, internal to its qcow2 disks: taken, reverted to and deleted by name."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hosts.hypervisor import connections
from hosts.hypervisor.connections import PowerState
from hosts.hypervisor.domain_xml import snapshot_xml
from hosts.hypervisor.domains import state


def create_snapshot(uri: str, domain_uuid: str, name: str, description: str = "") -> bool:
    """Take a snapshot: of the disks, and of the memory too when the domain runs (or is paused); returns whether
    the memory is in it. A snapshot of that name already there counts as done."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        if name not in dom.snapshotListNames(0):
            dom.snapshotCreateXML(snapshot_xml(name, description), 0)
        memory = ET.fromstring(dom.snapshotLookupByName(name, 0).getXMLDesc(0)).find("memory")
    return memory is not None and memory.get("snapshot") == "internal"


def revert_snapshot(uri: str, domain_uuid: str, name: str) -> PowerState:
    """Bring the domain back to the snapshot: running from where it was if its memory is in it, else stopped."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        dom.revertToSnapshot(dom.snapshotLookupByName(name, 0), 0)
    return state(uri, domain_uuid)


def delete_snapshot(uri: str, domain_uuid: str, name: str) -> None:
    """Delete the snapshot and the data only it holds; one already gone counts as done."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        if name in dom.snapshotListNames(0):
            dom.snapshotLookupByName(name, 0).delete(0)
