"""libvirt network XML: one pure builder for every network kind, from a NetworkSpec, with ElementTree.

NAT, routed and isolated networks get a bridge of libvirt's own and its dnsmasq, with a
DHCP host entry pinning each MAC to the address CloudPanel allocated. Bridged and VLAN
networks attach to a host bridge that already exists; libvirt serves no DHCP there (the
guest's address reaches it through its cloud-init seed), and a VLAN tag needs Open vSwitch.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hosts.specs import DhcpHost, NetworkSpec

_FORWARD = {"nat": "nat", "routed": "route", "bridge": "bridge", "vlan": "bridge"}
OWN_BRIDGE = ("nat", "routed", "isolated")


def _sub(parent: ET.Element, tag: str, **attrs: str) -> ET.Element:
    return ET.SubElement(parent, tag, attrs)


def dhcp_host_xml(host: DhcpHost) -> str:
    """One DHCP host entry, for a live update of a running network."""
    attrs = {"mac": host.mac, "ip": host.address}
    if host.name:
        attrs["name"] = host.name
    return ET.tostring(ET.Element("host", attrs), encoding="unicode")


def network_xml(spec: NetworkSpec) -> str:
    """The XML of a network for libvirt's networkDefineXML."""
    root = ET.Element("network")
    ET.SubElement(root, "name").text = spec.name
    ET.SubElement(root, "uuid").text = spec.uuid
    if spec.kind in _FORWARD:
        _sub(root, "forward", mode=_FORWARD[spec.kind])
    if spec.kind in OWN_BRIDGE:
        _sub(root, "bridge", name=spec.bridge, stp="on", delay="0")
    else:
        _sub(root, "bridge", name=spec.bridge)
        if spec.kind == "vlan":
            _sub(root, "virtualport", type="openvswitch")
            vlan = _sub(root, "vlan")
            _sub(vlan, "tag", id=str(spec.vlan_id))
        return ET.tostring(root, encoding="unicode")
    if spec.domain:
        _sub(root, "domain", name=spec.domain, localOnly="yes")
    if spec.dns_servers:
        dns = _sub(root, "dns")
        for server in spec.dns_servers:
            _sub(dns, "forwarder", addr=server)
    for part in spec.ranges:
        attrs = {"address": part.gateway, "prefix": str(part.prefix)}
        if part.family == "ipv6":
            attrs = {"family": "ipv6", **attrs}
        ip = _sub(root, "ip", **attrs)
        dhcp = _sub(ip, "dhcp")
        _sub(dhcp, "range", start=part.dhcp_start, end=part.dhcp_end)
        for host in part.hosts:
            if part.family == "ipv6":  # DHCPv6 pins by name (clients send a DUID, not their MAC)
                _sub(dhcp, "host", name=host.name or host.mac.replace(":", ""), ip=host.address)
            else:
                attrs = {"mac": host.mac, "ip": host.address}
                if host.name:
                    attrs["name"] = host.name
                _sub(dhcp, "host", **attrs)
    return ET.tostring(root, encoding="unicode")
