"""The graphical console's proxy: what the panel's websocket adds to a round trip with a real guest's VNC display.

A real QEMU guest (the tiny guest, TCG) runs on qemu:///system with the panel's own definition. On each of ROUNDS
connections the client times one request and reply that QEMU answers at once (the RFB version exchange; screen
updates wait for QEMU's refresh timer, tens to hundreds of ms, whoever asks): directly on the display socket libvirt
hands over (virDomainOpenGraphicsFD), and through `manage.py serve` (one web process, Redis mode): websocket with a
ticket → DisplayConsumer → the same kind of socket. Target: p95 added ≤ 5 ms.
Run: DATABASE_URL=... REDIS_URL=redis://127.0.0.1:6379/0 CLOUDPANEL_GUEST_DIR=.cache/guest .venv/bin/python \
bench/vnc_proxy.py
"""

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common import ROOT, print_table, record, setup_django, summary

os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ["CLOUDPANEL_CHANNEL_PREFIX"] = f"bench-vnc-{uuid.uuid4().hex[:6]}"
setup_django()

from django.contrib.auth import get_user_model  # noqa: E402
from django.test import Client  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from hosts import hypervisor  # noqa: E402
from hosts import services as host_services  # noqa: E402
from hosts.hypervisor.domain_xml import domain_xml  # noqa: E402
from instances import tickets  # noqa: E402
from instances.choices import Status  # noqa: E402
from instances.models import Instance  # noqa: E402
from tenants.choices import Role  # noqa: E402
from tenants.models import Tenant  # noqa: E402
from tenants.services import add_member  # noqa: E402

URI = "qemu:///system"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "300"))
GUEST = Path(os.environ.get("CLOUDPANEL_GUEST_DIR", ROOT / ".cache/guest")).resolve()


async def version_round_trip(read, write) -> float:
    """The RFB version exchange: the display sends its version, the client answers with its own, and the display
    replies at once with the security types it offers (a reply QEMU never defers to its screen-refresh timer)."""
    version = await read(12)
    assert version.startswith(b"RFB "), version
    start = time.perf_counter()
    await write(b"RFB 003.008\n")
    (count,) = await read(1)
    took = time.perf_counter() - start
    await read(count)
    return took


async def direct(domain_uuid: str) -> list[float]:
    times = []
    for _ in range(ROUNDS):
        sock = hypervisor.open_display(URI, domain_uuid)
        reader, writer = await asyncio.open_connection(sock=sock)

        async def write(data: bytes, writer=writer) -> None:
            writer.write(data)
            await writer.drain()

        times.append(await version_round_trip(reader.readexactly, write))
        writer.close()
    return times


async def proxied(port: int, instance: Instance, raws: list[str], cookie: str) -> list[float]:
    times = []
    for raw in raws:
        url = f"ws://127.0.0.1:{port}/ws/instances/{instance.pk}/display/?ticket={raw}"
        async with connect(url, origin=f"http://127.0.0.1:{port}", additional_headers={"Cookie": cookie},
                           subprotocols=["binary"], compression=None) as ws:
            buffer = bytearray()

            async def read(count: int, ws=ws) -> bytes:
                nonlocal buffer
                while len(buffer) < count:
                    buffer += await ws.recv()
                data, buffer = bytes(buffer[:count]), buffer[count:]
                return data

            times.append(await version_round_trip(read, ws.send))
    return times


def main() -> None:
    user = get_user_model().objects.create_user(username="bench-vnc", password="x")
    tenant = Tenant.objects.create(name="bench-vnc")
    add_member(tenant=tenant, user=user, role=Role.MEMBER)
    host = host_services.register_host(name="bench-qemu", uri=URI, accelerator="tcg", storage_pool="default")
    instance = Instance.objects.create(tenant=tenant, host=host, name="screen", vcpus=1, memory_mib=128,
                                       status=Status.RUNNING)
    spec = hypervisor.DomainSpec(name=f"bench-vnc-{instance.uuid}", uuid=str(instance.uuid), vcpus=1, memory_mib=128,
                                 kernel=str(GUEST / "vmlinuz"), initrd=str(GUEST / "initrd.img"))
    conn = hypervisor.connection(URI)
    dom = conn.defineXML(domain_xml("qemu", spec))
    port = None
    server = None
    try:
        dom.create()
        browser = Client()
        browser.force_login(user)
        session_key = browser.session.session_key
        cookie = f"sessionid={browser.cookies['sessionid'].value}"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "manage.py", "serve", "--port", str(port)], cwd=ROOT,
                                  env={**os.environ, "CLOUDPANEL_WEB_WORKERS": "1"}, stdout=sys.stderr,
                                  stderr=sys.stderr)
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if time.monotonic() > deadline:
                raise SystemExit("the web process did not start")
            time.sleep(0.1)
        time.sleep(3)  # the guest boots meanwhile; its screen is drawn either way
        times = {"direct": [], "proxied": []}
        for _ in range(2):  # alternating, so that neither gets the quieter machine
            times["direct"] += asyncio.run(direct(str(instance.uuid)))
            raws = [tickets.issue(instance=instance, user=user, session_key=session_key)[0] for _ in range(ROUNDS)]
            times["proxied"] += asyncio.run(proxied(port, instance, raws, cookie))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    direct_p50, direct_p95, _ = summary(times["direct"])
    proxied_p50, proxied_p95, _ = summary(times["proxied"])
    added = proxied_p95 - direct_p95
    print_table(f"VNC round trip (the RFB version exchange), {2 * ROUNDS} connections each (ms)",
                ["path", "p50", "p95"],
                [["direct: the display socket from libvirt", direct_p50, direct_p95],
                 ["through the panel: websocket + ticket → DisplayConsumer", proxied_p50, proxied_p95],
                 ["added by the panel", proxied_p50 - direct_p50, added]])
    record("VNC proxy: p95 latency added to a display round trip (ms)", added,
           f"direct p95 {direct_p95:.2f} ms, through the panel {proxied_p95:.2f} ms", "<= 5", added <= 5)


if __name__ == "__main__":
    main()
