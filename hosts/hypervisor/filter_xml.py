"""libvirt network filter XML for one NIC: its security groups' rules, expanded, behind anti-spoofing.

The filter is built from a PortFilter spec with ElementTree, like the domain and network XML. Every
rule is an IP-level (iptables) rule, so the host needs no ebtables; ARP and other non-IP
frames are not filtered. In order of priority:

1. the NIC may not serve DHCP, and may send IP only from its own MAC and addresses: DHCP
   requests (from 0.0.0.0 or its own address, to the network's DHCP server) and IPv6
   router and neighbour solicitations and neighbour advertisements (from its link-local or
   own address) are let through before that, since some run before an address is held;
   DHCP answers come in from the server only, router advertisements from anyone on the link;
2. the groups' rules accept what they name; libvirt makes them stateful, so the answers to an
   accepted connection pass as well;
3. everything else, in both directions and both IP families, is dropped.

Redefining the filter of a NIC in use changes the rules of the running guest at once.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET

from hosts.specs import FilterRule, PortFilter

_PROTOCOLS = {
    4: {"any": "all", "tcp": "tcp", "udp": "udp", "icmp": "icmp"},
    6: {"any": "all-ipv6", "tcp": "tcp-ipv6", "udp": "udp-ipv6", "icmp": "icmpv6"},
}
ROUTER_SOLICITATION, ROUTER_ADVERTISEMENT, NEIGHBOUR_SOLICITATION, NEIGHBOUR_ADVERTISEMENT = 133, 134, 135, 136


def _rule(root: ET.Element, action: str, direction: str, priority: int, protocol: str,
          **attributes: str | int | None) -> None:
    rule = ET.SubElement(root, "rule", action=action, direction=direction, priority=str(priority))
    ET.SubElement(rule, protocol, {k: str(v) for k, v in attributes.items() if v is not None})


def _remote(rule: FilterRule) -> dict[str, str]:
    if not rule.remote:
        return {}
    network = ipaddress.ip_network(rule.remote, strict=False)
    if network.prefixlen == 0:
        return {}
    side = "src" if rule.direction == "in" else "dst"
    return {f"{side}ipaddr": str(network.network_address), f"{side}ipmask": str(network.prefixlen)}


def port_filter_xml(spec: PortFilter) -> str:
    """The NIC's whole filter, named and with a stable UUID so that redefining it updates it in place."""
    root = ET.Element("filter", name=spec.name, chain="root")
    ET.SubElement(root, "uuid").text = spec.uuid
    # 1. no DHCP server and no foreign MAC; DHCP and neighbour discovery; then no foreign address
    _rule(root, "drop", "out", -800, "udp", srcportstart=67)
    _rule(root, "drop", "out", -800, "udp-ipv6", srcportstart=547)
    _rule(root, "drop", "out", -800, "all", match="no", srcmacaddr=spec.mac)
    _rule(root, "drop", "out", -800, "all-ipv6", match="no", srcmacaddr=spec.mac)
    if spec.dhcp_server:
        for source in ("0.0.0.0", spec.ipv4) if spec.ipv4 else ("0.0.0.0",):
            for target in ("255.255.255.255", spec.dhcp_server):
                _rule(root, "accept", "out", -700, "udp", srcipaddr=source, dstipaddr=target, srcportstart=68,
                      dstportstart=67)
        _rule(root, "accept", "in", -700, "udp", srcipaddr=spec.dhcp_server, srcportstart=67, dstportstart=68)
    solicit = (ROUTER_SOLICITATION, NEIGHBOUR_SOLICITATION, NEIGHBOUR_ADVERTISEMENT)
    sources = [("fe80::", 10, solicit), ("::", 128, (NEIGHBOUR_SOLICITATION,))]  # link-local; duplicate checks
    if spec.ipv6:
        sources.append((spec.ipv6, 128, solicit))
    for source, mask, kinds in sources:
        for kind in kinds:
            _rule(root, "accept", "out", -700, "icmpv6", srcipaddr=source, srcipmask=mask, type=kind)
    for kind in (ROUTER_ADVERTISEMENT, NEIGHBOUR_SOLICITATION, NEIGHBOUR_ADVERTISEMENT):
        _rule(root, "accept", "in", -700, "icmpv6", type=kind)
    if spec.ipv4:
        _rule(root, "drop", "out", -600, "all", match="no", srcipaddr=spec.ipv4)
    else:
        _rule(root, "drop", "out", -600, "all")
    if spec.ipv6:
        _rule(root, "drop", "out", -600, "all-ipv6", match="no", srcipaddr=spec.ipv6)
    else:
        _rule(root, "drop", "out", -600, "all-ipv6")
    # 2. what the groups accept
    for rule in spec.rules:
        ports = {}
        if rule.protocol in ("tcp", "udp") and rule.port_min is not None:
            ports = {"dstportstart": rule.port_min, "dstportend": rule.port_max or rule.port_min}
        _rule(root, "accept", rule.direction, 100, _PROTOCOLS[rule.family][rule.protocol], **_remote(rule), **ports)
    # 3. nothing else
    _rule(root, "drop", "inout", 900, "all")
    _rule(root, "drop", "inout", 900, "all-ipv6")
    return ET.tostring(root, encoding="unicode")
