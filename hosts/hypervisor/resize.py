"""Changing a domain in place: vCPUs and RAM in its (stopped) definition (disks grow through storage.grow_disk),
and its title."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hosts.hypervisor import connections
from hosts.hypervisor.connections import HypervisorError, libvirt
from hosts.hypervisor.domain_xml import CPU_PERIOD_US


def set_title(uri: str, domain_uuid: str, title: str) -> None:
    """The domain's title (what `virsh list --title` shows), live too if it runs."""
    dom = connections.domain(uri, domain_uuid)
    with connections.errors(uri):
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0)
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_TITLE, title, None, None, flags)


def set_size(uri: str, domain_uuid: str, *, vcpus: int, memory_mib: int) -> None:
    """Give a stopped domain these vCPUs and this RAM (and, with a CPU quota, as many vCPUs' worth of time): its
    definition is read, changed and defined again. Already so counts as done."""
    dom = connections.domain(uri, domain_uuid)
    conn = connections.connection(uri)
    with connections.errors(uri):
        if dom.isActive():
            raise HypervisorError("the instance runs: its vCPUs and RAM change while it is stopped")
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        vcpu = root.find("vcpu")
        if vcpu is None:
            vcpu = ET.SubElement(root, "vcpu")
        vcpu.text = str(vcpus)
        vcpu.attrib.pop("current", None)
        for tag in ("memory", "currentMemory"):
            element = root.find(tag)
            if element is not None:
                element.text, element.attrib = str(memory_mib), {"unit": "MiB"}
        quota = root.find("cputune/quota")
        if quota is not None:
            quota.text = str(vcpus * CPU_PERIOD_US)
        conn.defineXML(ET.tostring(root, encoding="unicode"))
