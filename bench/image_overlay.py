"""Instance disk from a template's image: copy-on-write overlay against a full copy of the same 2 GiB image.

On the real qemu:///system host (its "default" pool), a qcow2 image holding 2 GiB of
random data (made with qemu-img from a raw file) stands for a cached template image. The overlay
path is what CloudPanel does for an instance from an image or template: a qcow2 volume
whose backingStore is the cached copy (hypervisor.create_volume with a Backing). Compared
against, in the same run: a full copy of the image into a new volume through libvirt
(virStorageVolCreateXMLFrom, what a clone-per-instance design does). Reports median and
max times and the ratio. Target: the overlay ≥ 100× faster.
Run (libvirtd started by scripts/libvirtd.sh): .venv/bin/python bench/image_overlay.py
"""

import os
import statistics
import subprocess
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from common import print_table, record, setup_django

setup_django()

from hosts import hypervisor  # noqa: E402
from hosts.hypervisor.domain_xml import volume_xml  # noqa: E402

URI, POOL = "qemu:///system", "default"
GIB = 1 << 30
OVERLAYS, COPIES = 20, 3


def main() -> None:
    # The full copy is what CloudPanel avoids, so the driver layer has no call for it: the bench makes it
    # on the driver layer's own connection.
    pool = hypervisor.connection(URI).storagePoolLookupByName(POOL)
    tag = uuid.uuid4().hex[:8]
    base_name = f"bench-base-{tag}"
    start = time.perf_counter()
    directory = Path(ET.fromstring(pool.XMLDesc()).findtext("target/path"))
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".raw") as raw:
        for _ in range(2 * GIB // (64 << 20)):
            raw.write(os.urandom(64 << 20))
        raw.flush()
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw.name,
                        str(directory / base_name)], check=True)
    pool.refresh(0)
    base = pool.storageVolLookupByName(base_name)
    base_seconds = time.perf_counter() - start
    made = []
    try:
        overlay_times = []
        for i in range(OVERLAYS):
            name = f"bench-overlay-{tag}-{i}"
            start = time.perf_counter()
            hypervisor.create_volume(URI, POOL, name, 10, backing=hypervisor.Backing(base.path(), "qcow2"))
            overlay_times.append(time.perf_counter() - start)
            made.append(name)
        copy_times = []
        for i in range(COPIES):
            name = f"bench-copy-{tag}-{i}"
            start = time.perf_counter()
            pool.createXMLFrom(volume_xml(name, 2), base, 0)
            copy_times.append(time.perf_counter() - start)
            made.append(name)
        base_info = base.info()
        rows = [
            [f"overlay on the cached image ({OVERLAYS}×)", statistics.median(overlay_times) * 1000,
             max(overlay_times) * 1000, 1.0],
            [f"full copy of the image ({COPIES}×)", statistics.median(copy_times) * 1000, max(copy_times) * 1000,
             statistics.median(copy_times) / statistics.median(overlay_times)],
        ]
        print_table(f"Instance disk from a {base_info[1] // GIB} GiB image, {base_info[2] // GIB} GiB allocated "
                    f"(made in {base_seconds:.1f} s); target: overlay ≥ 100× faster",
                    ["path", "median ms", "max ms", "× overlay time"], rows)
        faster = statistics.median(copy_times) / statistics.median(overlay_times)
        record("instance disk: overlay vs full copy of the image (× faster)", faster,
               f"copy median {statistics.median(copy_times) * 1000:.1f} ms", ">= 100", faster >= 100)
    finally:
        for name in made:
            hypervisor.delete_volume(URI, POOL, name)
        base.delete(0)


if __name__ == "__main__":
    main()
