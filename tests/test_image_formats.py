"""Image inspection before qemu-img: real files made with qemu-img, and crafted ones that must be refused."""

import struct
import subprocess

import pytest

from images.exceptions import UnsafeImage
from images.formats import Inspection, inspect_image, qemu_img_info

MIB = 1024 * 1024
CAP = 1024 * MIB


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", "create", "-q", *args], check=True)


def make(tmp_path, fmt: str, name: str | None = None, *options: str):
    path = tmp_path / (name or f"disk.{fmt}")
    qemu_img("-f", fmt, *options, str(path), "64M")
    return path


@pytest.mark.parametrize("fmt", ["qcow2", "vmdk", "vdi", "vhdx"])
def test_real_images_are_recognised_with_their_virtual_size(tmp_path, fmt):
    path = make(tmp_path, fmt)
    found = inspect_image(path, max_virtual_size=CAP)
    assert (found.format, found.virtual_size) == (fmt, 64 * MIB)
    assert qemu_img_info(path, fmt)["virtual-size"] == 64 * MIB


def test_raw_and_iso(tmp_path):
    raw = tmp_path / "disk.img"
    raw.write_bytes(b"\0" * MIB)
    assert inspect_image(raw, max_virtual_size=CAP).format == "raw"
    iso = tmp_path / "cd.iso"
    iso.write_bytes(b"\0" * 0x8000 + b"\x01CD001\x01" + b"\0" * 4096)
    assert inspect_image(iso, max_virtual_size=CAP).format == "iso"


def test_qcow2_with_a_backing_file_is_refused(tmp_path):
    base = make(tmp_path, "qcow2", "base.qcow2")
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay))
    with pytest.raises(UnsafeImage, match="backing file"):
        inspect_image(overlay, max_virtual_size=CAP)


def test_qcow2_with_an_external_data_file_is_refused(tmp_path):
    path = make(tmp_path, "qcow2", "ext.qcow2", "-o", f"data_file={tmp_path / 'data.raw'}")
    with pytest.raises(UnsafeImage, match="external"):
        inspect_image(path, max_virtual_size=CAP)
    # Even with the feature bit cleared, the header extension naming the file gives it away
    data = bytearray(path.read_bytes())
    struct.pack_into(">Q", data, 72, 0)
    path.write_bytes(bytes(data))
    with pytest.raises(UnsafeImage, match="names an external data file"):
        inspect_image(path, max_virtual_size=CAP)


def test_qcow2_with_unknown_incompatible_features_is_refused(tmp_path):
    path = make(tmp_path, "qcow2")
    data = bytearray(path.read_bytes())
    struct.pack_into(">Q", data, 72, 1 << 40)
    path.write_bytes(bytes(data))
    with pytest.raises(UnsafeImage, match="unknown incompatible features"):
        inspect_image(path, max_virtual_size=CAP)


def test_vmdk_pointing_at_other_files_is_refused(tmp_path):
    # A descriptor file with its extent elsewhere
    split = make(tmp_path, "vmdk", "split.vmdk", "-o", "subformat=twoGbMaxExtentFlat")
    with pytest.raises(UnsafeImage, match="points at other files"):
        inspect_image(split, max_virtual_size=CAP)
    # A sparse VMDK whose embedded descriptor was edited to read a host file
    path = make(tmp_path, "vmdk", "v.vmdk")
    data = path.read_bytes()
    extent = b'RW 131072 SPARSE "v.vmdk"'
    assert extent in data
    path.write_bytes(data.replace(extent, b'RW 131072 FLAT "/etc/x" 0'))
    with pytest.raises(UnsafeImage, match="points at other files.*extent"):
        inspect_image(path, max_virtual_size=CAP)


def test_a_file_of_two_formats_at_once_is_refused(tmp_path):
    path = make(tmp_path, "qcow2")
    data = bytearray(path.read_bytes().ljust(0x9000, b"\0"))
    data[0x8000:0x8007] = b"\x01CD001\x01"
    path.write_bytes(bytes(data))
    with pytest.raises(UnsafeImage, match="at once qcow2 and iso"):
        inspect_image(path, max_virtual_size=CAP)


def test_declared_format_must_match_and_size_is_capped(tmp_path):
    path = make(tmp_path, "qcow2")
    with pytest.raises(UnsafeImage, match="declared raw but is qcow2"):
        inspect_image(path, declared="raw", max_virtual_size=CAP)
    with pytest.raises(UnsafeImage, match="over the limit"):
        inspect_image(path, max_virtual_size=32 * MIB)


def test_truncated_headers_are_refused_not_crashed_on(tmp_path):
    for content, reason in ((b"QFI\xfb", "starts like a qcow2 image"), (b"QFI\xfb" + b"\0" * 60, "starts like a qcow2"),
                            (b"KDMV" + b"\0" * 100, "VMDK points at other files or is not a single file"),
                            (b"vhdxfile" + b"\0" * 100, "vhdx image cannot be checked")):
        path = tmp_path / "bad.img"
        path.write_bytes(content)
        with pytest.raises(UnsafeImage, match=reason):
            inspect_image(path, max_virtual_size=CAP)


def test_a_qcow2_marked_corrupt_is_refused(tmp_path):
    path = make(tmp_path, "qcow2")
    data = bytearray(path.read_bytes())
    struct.pack_into(">Q", data, 72, 1 << 1)  # the corrupt bit, which the inspector lets through
    path.write_bytes(bytes(data))
    with pytest.raises(UnsafeImage, match="marked corrupt"):
        inspect_image(path, max_virtual_size=CAP)


@pytest.mark.parametrize(("fmt", "name"), [("vpc", "vhd"), ("qed", "qed")])
def test_formats_cloudpanel_does_not_take_are_refused_with_what_to_do(tmp_path, fmt, name):
    path = make(tmp_path, fmt)
    with pytest.raises(UnsafeImage, match=f"{name} images are not accepted: convert it to qcow2"):
        inspect_image(path, max_virtual_size=CAP)


def test_a_bootable_iso_with_a_partition_table_is_an_iso_and_a_raw_disk_with_one_is_raw(tmp_path):
    # Given an ISO 9660 image that also carries an MBR (as hybrid install ISOs do), and a raw disk with an MBR
    mbr = bytearray(512)
    mbr[446:462] = bytes([0x80, 0, 2, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + (4096).to_bytes(4, "little")
    mbr[510:512] = b"\x55\xaa"
    iso = tmp_path / "hybrid.iso"
    iso.write_bytes(bytes(mbr).ljust(0x8000, b"\0") + b"\x01CD001\x01" + b"\0" * 4096)
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(mbr).ljust(MIB, b"\0"))
    # Then the first is taken as an ISO and the second as raw; a qcow2 image with a partition table is refused
    assert inspect_image(iso, max_virtual_size=CAP).format == "iso"
    assert inspect_image(disk, max_virtual_size=CAP) == Inspection(format="raw", virtual_size=MIB)
    path = make(tmp_path, "qcow2")
    data = bytearray(path.read_bytes())
    data[510:512] = b"\x55\xaa"
    path.write_bytes(bytes(data))
    with pytest.raises(UnsafeImage, match="at once qcow2 and gpt"):
        inspect_image(path, max_virtual_size=CAP)


def test_qemu_img_runs_under_limits_and_fails_clearly(tmp_path):
    path = make(tmp_path, "qcow2")
    with pytest.raises(UnsafeImage, match="could not read"):
        qemu_img_info(path, "qcow2", address_space=8 * MIB)
    with pytest.raises(UnsafeImage, match="could not read"):
        qemu_img_info(path, "vdi")  # the explicit format is what is used, never a guess
