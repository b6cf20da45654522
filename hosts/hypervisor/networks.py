"""libvirt networks (with their DHCP host entries) and network filters."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hosts.hypervisor import connections
from hosts.hypervisor.connections import (
    HypervisorError,
    libvirt,
)
from hosts.hypervisor.filter_xml import port_filter_xml
from hosts.hypervisor.network_xml import OWN_BRIDGE, dhcp_host_xml, network_xml
from hosts.specs import DhcpHost, NetworkSpec, PortFilter


def ensure_network(uri: str, spec: NetworkSpec) -> bool:
    """Define the spec's network if the host lacks it, and start it; defined and running already counts as
    done. True if it was defined now, False if the host had it.

    A bridged or VLAN network joins a bridge the host already has; libvirt would start such a
    network without it and fail only when a guest plugs in, so its absence is reported here.
    """
    host_bridge = "" if spec.kind in OWN_BRIDGE else spec.bridge
    conn = connections.connection(uri)
    with connections.errors(uri):
        if host_bridge:
            try:
                conn.interfaceLookupByName(host_bridge)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_INTERFACE:
                    raise HypervisorError(f"there is no bridge '{host_bridge}' on this host") from None
                if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:  # no interface driver: cannot tell
                    raise
        defined = False
        try:
            network = conn.networkLookupByName(spec.name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                raise
            network, defined = conn.networkDefineXML(network_xml(spec)), True
        if not network.isActive():
            try:
                network.create()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID or not network.isActive():
                    raise  # anything but another client having started it meanwhile
        return defined


def dhcp_hosts(uri: str, name: str) -> set[tuple[str, str]]:
    """The (MAC, address) pairs the network's IPv4 DHCP server pins now."""
    conn = connections.connection(uri)
    with connections.errors(uri):
        root = ET.fromstring(conn.networkLookupByName(name).XMLDesc())
        return {(h.get("mac"), h.get("ip")) for h in root.findall("ip/dhcp/host") if h.get("mac")}


def remove_network(uri: str, name: str) -> None:
    """Stop and undefine the network; a host without it counts as done."""
    conn = connections.connection(uri)
    with connections.errors(uri):
        try:
            network = conn.networkLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return
            raise
        if network.isActive():
            network.destroy()
        network.undefine()


def set_dhcp_host(uri: str, name: str, host: DhcpHost, *, present: bool = True) -> None:
    """Pin a MAC to its address in the network's DHCP server (or unpin it), live and in its definition.

    Idempotent: an entry already there (or already gone) counts as done.
    """
    conn = connections.connection(uri)
    with connections.errors(uri):
        network = conn.networkLookupByName(name)
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        if network.isActive():
            flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
        existing = [e for e in ET.fromstring(network.XMLDesc()).findall("ip/dhcp/host") if e.get("mac") == host.mac]
        if present and any(e.get("ip") == host.address for e in existing):
            return
        if not present and not existing:
            return
        if not present:
            command = libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE
        elif existing:  # the MAC is pinned to another address: move it
            command = libvirt.VIR_NETWORK_UPDATE_COMMAND_MODIFY
        else:
            command = libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST
        network.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, dhcp_host_xml(host), flags)


# --- network filters (security groups) ----------------------------------------


def define_filter(uri: str, spec: PortFilter) -> None:
    """Define (or redefine, by its UUID) a NIC's network filter; guests using it get the new rules at once."""
    conn = connections.connection(uri)
    with connections.errors(uri):
        try:
            conn.nwfilterDefineXML(port_filter_xml(spec))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                raise HypervisorError("this host cannot enforce firewall rules: libvirt's network filter "
                                      "driver is not available on it") from None
            raise


def remove_filter(uri: str, name: str) -> None:
    """Undefine a network filter no NIC uses any more; a host without it counts as done."""
    conn = connections.connection(uri)
    with connections.errors(uri):
        try:
            conn.nwfilterLookupByName(name).undefine()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_NO_NWFILTER, libvirt.VIR_ERR_NO_SUPPORT):
                raise
