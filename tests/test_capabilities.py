"""One table says what each technology can do; placement, the boot rules and the pages read it."""

from dataclasses import replace

import pytest

from hosts import capabilities
from hosts.choices import Technology
from hosts.models import Host
from instances import boot
from instances.choices import BootSource
from instances.exceptions import InvalidInstance

T = Technology


def test_every_technology_has_a_row():
    assert set(capabilities.TABLE) == set(Technology)
    assert Host(technology=T.LXC).can == capabilities.TABLE[T.LXC]


@pytest.mark.parametrize(("source", "needs_cdrom", "library", "expected"), [
    (BootSource.IMAGE, False, False, [T.QEMU, T.XEN, T.TEST]),
    (BootSource.IMAGE, True, False, [T.QEMU, T.TEST]),
    (BootSource.KERNEL, False, False, [T.QEMU, T.XEN, T.CH, T.TEST]),  # (an admin's kernel on the host)
    (BootSource.KERNEL, False, True, [T.QEMU, T.XEN, T.TEST]),  # (a boot kernel of the library: copies of it)
    (BootSource.CONTAINER, False, False, [T.LXC]),
    (BootSource.DISK, False, False, [T.QEMU, T.XEN, T.OPENVZ, T.VBOX, T.VMWARE, T.HYPERV, T.BHYVE, T.VZ, T.CH,
                                     T.TEST]),
])
def test_placement_offers_the_technologies_the_table_says_run_a_boot_source(source, needs_cdrom, library, expected):
    assert boot.technologies_for(source, needs_cdrom=needs_cdrom, library=library) == expected


def test_a_change_to_the_table_is_a_change_in_what_is_placed_and_accepted(monkeypatch):
    # Given QEMU without a CD-ROM drive in the table
    monkeypatch.setitem(capabilities.TABLE, T.QEMU, replace(capabilities.TABLE[T.QEMU], cdrom=False))
    # Then ISO installs are placed only on the test driver, and a QEMU host refuses them
    assert boot.technologies_for(BootSource.IMAGE, needs_cdrom=True) == [T.TEST]
    with pytest.raises(InvalidInstance, match="ISO installs"):
        boot.check_on_host(boot.Boot(source=BootSource.IMAGE), Host(technology=T.QEMU), needs_cdrom=True)


@pytest.mark.parametrize(("technology", "fields", "reason"), [
    (T.VBOX, {"boot_disk": "", "kernel": "/srv/k"}, "VirtualBox instances boot a disk on the host"),
    (T.QEMU, {"init": "/bin/sh"}, "a container command only applies to containers"),
    (T.OPENVZ, {"boot_disk": "../../etc"}, "'../../etc' is not an OS template of"),
    (T.LXC, {"kernel": "/srv/k"}, "LXC hosts run containers"),
])
def test_what_a_technology_cannot_do_is_refused_with_a_reason(technology, fields, reason):
    source = BootSource.DISK if technology == T.OPENVZ else BootSource.KERNEL if technology == T.LXC \
        else BootSource.IMAGE
    with pytest.raises(InvalidInstance, match=reason):
        boot.check_on_host(boot.Boot(source=source, **fields), Host(technology=technology, allowed_paths="/srv"))
