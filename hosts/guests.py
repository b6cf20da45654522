"""What guest a host can run: an instance's architecture, machine type, CPU and vCPUs, checked against the host's
capabilities and domain capabilities as its last probe read them (placement, creates and migrations ask here).

QEMU/KVM hosts offer each architecture they have an emulator for, with its machine types, and per domain type
(KVM or TCG) the CPU modes and models its hypervisor gives; the other technologies run guests of their host's own
architecture, with no machine type or CPU to choose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hosts import architectures
from hosts.choices import Accelerator, CpuMode
from hosts.models import Host

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")  # machine types and CPU models (whole names: fullmatch)
SHOWN = 12  # options named in a refusal


@dataclass(frozen=True)
class Guest:
    """What an instance asks of its host's hypervisor ("": whatever the host gives)."""

    arch: str = ""
    machine: str = ""
    cpu_mode: str = ""
    cpu_model: str = ""
    vcpus: int = 1
    made: bool = False  # an existing instance's: its CPU is the one it was made with (none: the hypervisor's own)


def check_request(guest: Guest) -> str | None:
    """Why a request is malformed in itself, before any host is asked (None: it is well formed)."""
    if guest.arch and guest.arch not in architectures.ARCHES:
        return f"unknown architecture {guest.arch[:40]!r} (CloudPanel describes: {', '.join(architectures.ARCHES)})"
    for label, value in (("machine type", guest.machine), ("CPU model", guest.cpu_model)):
        if value and not NAME.fullmatch(value):
            return f"the {label} {value[:70]!r} is not a name (letters, digits, '.', '_', '+', '-')"
    if guest.cpu_mode not in CpuMode.values:
        return f"unknown CPU mode {guest.cpu_mode[:40]!r} (one of: {', '.join(m for m in CpuMode.values if m)})"
    if guest.cpu_mode == CpuMode.CUSTOM and not guest.cpu_model:
        return "a custom CPU needs the name of its model"
    if guest.cpu_model and guest.cpu_mode != CpuMode.CUSTOM:
        return "a CPU model goes with the custom CPU mode"
    return None


def _listed(values: list[str]) -> str:
    shown = ", ".join(values[:SHOWN])
    return f"{shown} and {len(values) - SHOWN} more" if len(values) > SHOWN else shown or "none"


def _guests(host: Host) -> list[dict]:
    """The host's guest entries (as its probe wrote them: a list of objects)."""
    return [g for g in host.guests if isinstance(g, dict)] if isinstance(host.guests, list) else []


def _entry(host: Host, arch: str) -> dict | None:
    return next((g for g in _guests(host) if g.get("arch") == arch and g.get("os_type") == "hvm"), None)


def offered_arches(host: Host) -> list[str]:
    """The architectures the host runs guests of that CloudPanel describes."""
    if not host.can.architectures:
        return [host.arch] if host.arch else []
    return sorted({g["arch"] for g in _guests(host) if g.get("os_type") == "hvm" and g.get("arch") in
                   architectures.ARCHES})


def default_arch(host: Host) -> str:
    """An instance's architecture when it asks for none: its host's own (QEMU: x86_64 if unknown or not one
    CloudPanel describes)."""
    if not host.can.architectures:
        return host.arch[:20]
    return host.arch if host.arch in architectures.ARCHES else architectures.DEFAULT_ARCH


def arch_for(host: Host, guest: Guest) -> str:
    return guest.arch or default_arch(host)


def _kvm_offered(host: Host, arch: str) -> bool:
    if not _guests(host):
        return host.kvm_available
    entry = _entry(host, arch)
    return entry is not None and "kvm" in entry.get("domain_types", [])


def uses_kvm(host: Host, arch: str) -> bool:
    """Whether a guest of the architecture runs under KVM there (else TCG): the host's accelerator, and on auto KVM
    for that architecture in its capabilities (a host's KVM runs guests of its own architecture only)."""
    if host.accelerator == Accelerator.TCG:
        return False
    return host.accelerator == Accelerator.KVM or _kvm_offered(host, arch)


def differ(host: Host, arch: str, other: str) -> bool:
    """Whether two architectures are different guests on the host (libvirt's test driver runs nothing: never)."""
    return host.can.stores_data and arch != other and arch in architectures.ARCHES and other in architectures.ARCHES


def cpu_of(host: Host, guest: Guest) -> tuple[str, str]:
    """The CPU (mode, model) a guest gets: an existing one's own, a new one's if it asks for one, else its host's
    default for guests of the host's own architecture (none for the others: the architecture's own, see
    hosts.architectures)."""
    if guest.cpu_mode or guest.made:
        return guest.cpu_mode, guest.cpu_model
    if arch_for(host, guest) == default_arch(host):
        return host.cpu_mode, host.cpu_model
    return "", ""


def refusal(host: Host, guest: Guest) -> str | None:
    """Why the host cannot run the guest, naming what it offers instead (None: it can)."""
    name, label = host.name, host.get_technology_display()
    if not host.can.architectures:
        if guest.machine or guest.cpu_mode or guest.cpu_model:
            return f"host '{name}' runs {label}, whose guests take no machine type or CPU mode (QEMU/KVM's do)"
        if guest.arch and differ(host, guest.arch, host.arch):
            return f"host '{name}' runs {label} guests of its own architecture only ({host.arch})"
        return None
    arch = arch_for(host, guest)
    mode, model = cpu_of(host, guest)
    if not _guests(host):
        if (arch != default_arch(host) or guest.machine or mode) and not guest.made:
            return (f"host '{name}' did not tell its capabilities ({'; '.join(host.missing) or 'not probed yet'}): "
                    f"only guests of its own architecture ({default_arch(host)}) with no machine type or CPU named "
                    "go there")
        return None
    entry = _entry(host, arch)
    if entry is None:
        return f"host '{name}' has no emulator for {arch} guests (it offers: {_listed(offered_arches(host))})"
    machine = guest.machine or architectures.of(arch).machine
    if machine not in entry.get("machines", []):
        return (f"host '{name}' has no machine type {machine} for {arch} guests (it has: "
                f"{_listed(entry.get('machines', []))})")
    if host.accelerator == Accelerator.KVM and not _kvm_offered(host, arch):
        return (f"host '{name}' runs its guests under KVM, which has no {arch} guests there (an admin sets its "
                "accelerator to auto or TCG to emulate them)")
    virt_type = "kvm" if uses_kvm(host, arch) else "qemu"
    under = "KVM" if virt_type == "kvm" else "TCG"
    caps = host.domain_caps.get(f"{arch}/{virt_type}")
    if caps is None:
        if mode:
            return f"host '{name}' did not tell what CPUs its {under} gives {arch} guests"
        return None
    if mode and mode not in caps.get("cpu_modes", []):
        return (f"host '{name}' offers no {mode} CPU to {arch} guests under {under} (it offers: "
                f"{_listed(caps.get('cpu_modes', []))})")
    if mode == CpuMode.CUSTOM and model not in caps.get("cpu_models", []):
        return (f"host '{name}' has no CPU model {model} for {arch} guests under {under} (it has: "
                f"{_listed(caps.get('cpu_models', []))})")
    return vcpu_refusal(host, arch, guest.vcpus)


def vcpu_refusal(host: Host, arch: str, vcpus: int) -> str | None:
    """Why the host cannot give a guest of the architecture that many vCPUs (None: it can, or it did not tell)."""
    virt_type = "kvm" if uses_kvm(host, arch) else "qemu"
    most = host.domain_caps.get(f"{arch}/{virt_type}", {}).get("max_vcpus") if host.can.architectures else None
    if isinstance(most, int) and most and vcpus > most:
        return f"host '{host.name}' gives {arch} guests at most {most} vCPUs"
    return None


@dataclass(frozen=True)
class Offers:
    """What a set of hosts offers guests, together: for forms to suggest."""

    arches: list[str]
    machines: list[str]
    cpu_models: list[str]


def offers(hosts: list[Host]) -> Offers:
    """The architectures, machine types and CPU models that any of the (QEMU/KVM) hosts offers."""
    arches, machines, models = set(), set(), set()
    for host in hosts:
        if not host.can.architectures:
            continue
        for arch in offered_arches(host):
            arches.add(arch)
            machines.update((_entry(host, arch) or {}).get("machines", []))
            for virt_type in ("kvm", "qemu"):
                models.update(host.domain_caps.get(f"{arch}/{virt_type}", {}).get("cpu_models", []))
    return Offers(sorted(arches), sorted(machines), sorted(models))


def table(host: Host) -> list[dict]:
    """What the host's page shows of its guests: per architecture, its domain types (KVM, TCG…), machine types, and
    per domain type what its domain capabilities offer; whether CloudPanel describes guests of it."""
    rows = []
    for guest in sorted(_guests(host), key=lambda g: (g.get("arch") != host.arch, str(g.get("arch", "")))):
        arch = guest.get("arch", "")
        caps = [(virt_type, host.domain_caps[f"{arch}/{virt_type}"]) for virt_type in guest.get("domain_types", [])
                if f"{arch}/{virt_type}" in host.domain_caps]
        rows.append({"arch": arch, "os_type": guest.get("os_type", ""), "domain_types": guest.get("domain_types", []),
                     "machines": guest.get("machines", []), "caps": caps,
                     "described": arch in architectures.ARCHES and guest.get("os_type") in ("hvm", "exe", "xen")})
    return rows
