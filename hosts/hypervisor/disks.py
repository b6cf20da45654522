"""Volumes plugged into a domain as disks: live where the domain runs (and the technology can), else into its
definition."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

from hosts.hypervisor import connections
from hosts.hypervisor.connections import HypervisorError, libvirt
from hosts.hypervisor.domain_xml import disk_xml


def _disks(domain: ET.Element | str) -> dict[str, ET.Element]:
    """The domain's disks by their source path."""
    root = ET.fromstring(domain) if isinstance(domain, str) else domain
    return {source.get("file"): disk for disk in root.findall("devices/disk")
            if (source := disk.find("source")) is not None and source.get("file")}


def attach_disk(uri: str, domain_uuid: str, path: str, target: str) -> None:
    """Plug the volume at path in as the disk `target`: into the running guest and its definition, or into the
    definition alone while it is stopped. Already there counts as done."""
    dom = connections.domain(uri, domain_uuid)
    conn = connections.connection(uri)
    with connections.errors(uri):
        if not dom.isActive():
            defined = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            if path not in _disks(defined):
                defined.find("devices").append(ET.fromstring(disk_xml(path, target)))
                conn.defineXML(ET.tostring(defined, encoding="unicode"))
            return
        flags = 0
        if path not in _disks(dom.XMLDesc(0)):
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        if path not in _disks(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)):
            flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if flags:
            dom.attachDeviceFlags(disk_xml(path, target), flags)


def detach_disk(uri: str, domain_uuid: str, path: str, *, wait_seconds: float = 20.0) -> None:
    """Unplug the volume at path: from the running guest (which lets go in its own time: this waits until it has,
    and says so if it does not) and from the definition. Already gone counts as done."""
    dom = connections.domain(uri, domain_uuid)
    conn = connections.connection(uri)
    with connections.errors(uri):
        if dom.isActive():
            live = _disks(dom.XMLDesc(0)).get(path)
            if live is not None:
                dom.detachDeviceFlags(ET.tostring(live, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
                deadline = time.monotonic() + wait_seconds
                while path in _disks(dom.XMLDesc(0)):
                    if time.monotonic() > deadline:
                        raise HypervisorError(f"the guest did not release the disk within {wait_seconds:.0f} s")
                    time.sleep(0.2)
        defined = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        disk = _disks(defined).get(path)
        if disk is not None:
            defined.find("devices").remove(disk)
            conn.defineXML(ET.tostring(defined, encoding="unicode"))
