"""The driver layer: the only package that imports libvirt.

Plain functions over a host URI and a domain UUID, in small modules: connections, facts,
storage, domains, networks (and network filters), events, consoles, stats. They return frozen
dataclasses and enums, never libvirt objects, and raise HypervisorError and its subclasses.
Callers hand it typed specs (hosts/specs.py); it renders libvirt's XML from them inside (one
pure builder per technology for domains, one for networks, one for network filters).
"""

from hosts.choices import Accelerator, Technology
from hosts.hypervisor.backups import back_up, checkpoints, drop_checkpoints
from hosts.hypervisor.connections import (
    REMOVED_DRIVERS,
    DomainNotFound,
    HypervisorError,
    HypervisorUnavailable,
    PowerState,
    connection,
    ensure_event_loop,
    forget,
    is_connected,
    reach_locally,
    schemes_of,
    technology_of,
)
from hosts.hypervisor.consoles import Console, open_display
from hosts.hypervisor.disks import attach_disk, detach_disk
from hosts.hypervisor.domain_xml import UnsafeDefinition, readable_domain_xml
from hosts.hypervisor.domains import (
    NO_DRIVE,
    DomainFacts,
    all_domains,
    attach_interface,
    change_media,
    define,
    describe,
    detach_interface,
    power_off,
    reboot,
    resume,
    set_interface_filter,
    shutdown,
    start,
    state,
    suspend,
    undefine,
)
from hosts.hypervisor.events import EventsUnsupported, LifecycleEvent, unwatch, watch_lifecycle
from hosts.hypervisor.facts import HostInfo, PoolInfo, probe
from hosts.hypervisor.migration import (
    DomainFile,
    GuestCpu,
    MigrationProgress,
    MovedDefinition,
    abort_job,
    copy_volume,
    cpu_refusal,
    define_moved,
    defined,
    domain_files,
    guest_cpu,
    holds_volume,
    migrate_live,
    migrating,
    moved_definition,
    pool_marker,
)
from hosts.hypervisor.networks import (
    define_filter,
    dhcp_hosts,
    ensure_network,
    remove_filter,
    remove_network,
    set_dhcp_host,
)
from hosts.hypervisor.resize import set_size, set_title
from hosts.hypervisor.snapshots import create_snapshot, delete_snapshot, revert_snapshot
from hosts.hypervisor.stats import DomainCounters, HostCounters, NodeCounters, counters
from hosts.hypervisor.storage import (
    clone_volume,
    create_volume,
    delete_volume,
    grow_disk,
    reading_volume,
    stores_data,
    upload_volume,
    volume_path,
    volume_sha256,
)
from hosts.specs import (
    Backing,
    DhcpHost,
    DomainSpec,
    FilterRule,
    IdMap,
    IPRange,
    NetworkSpec,
    Nic,
    PortFilter,
)

__all__ = [
    "Accelerator", "Backing", "Console", "DhcpHost", "DomainCounters", "DomainFacts", "DomainFile",
    "DomainNotFound", "DomainSpec", "EventsUnsupported", "FilterRule", "GuestCpu", "HostCounters", "HostInfo",
    "HypervisorError", "HypervisorUnavailable", "IPRange", "IdMap", "LifecycleEvent", "MigrationProgress",
    "MovedDefinition", "NO_DRIVE", "NetworkSpec", "Nic", "NodeCounters", "PoolInfo", "PortFilter", "PowerState",
    "REMOVED_DRIVERS", "Technology", "UnsafeDefinition", "abort_job", "all_domains", "attach_disk",
    "attach_interface", "back_up", "change_media", "checkpoints", "clone_volume", "connection", "copy_volume",
    "counters", "cpu_refusal", "create_snapshot", "create_volume", "define", "define_filter", "define_moved",
    "defined", "delete_snapshot", "delete_volume", "describe", "detach_disk", "detach_interface", "dhcp_hosts",
    "domain_files", "drop_checkpoints", "ensure_event_loop", "ensure_network", "forget", "grow_disk", "guest_cpu",
    "holds_volume", "is_connected", "migrate_live", "migrating", "moved_definition", "open_display", "pool_marker",
    "power_off", "probe", "reach_locally", "readable_domain_xml", "reading_volume", "reboot", "remove_filter",
    "remove_network", "resume", "revert_snapshot", "schemes_of", "set_dhcp_host", "set_interface_filter",
    "set_size", "set_title", "shutdown", "start", "state", "stores_data", "suspend", "technology_of", "undefine",
    "unwatch", "upload_volume", "volume_path", "volume_sha256", "watch_lifecycle",
]
