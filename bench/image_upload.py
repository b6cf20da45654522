"""Image upload through the API: throughput against a plain copy of the file, and the web process's memory.

A real `manage.py serve` (uvicorn, web only: no worker in the process, and the inspection
task goes to a queue nobody consumes, so only the upload is measured) receives a 2 GiB
file of random bytes through PUT /api/v1/images/{id}/data/, streamed from disk by the
client: once as one request, once in 64 MiB chunks with Content-Range. Compared against:
a plain copy of the same file on the same filesystem (read, write, fsync, as the store
does), and a bare ASGI app on the same uvicorn that only writes the body to a file and
fsyncs it (bench/asgi_sink.py: the server's own ceiling, with no Django in the way). The
web process's resident memory is sampled every 20 ms from /proc during the uploads; the
peak is reported next to its idle size and its size after one 1 MiB upload (what any first
request loads: the database connection, the task queue's and channel layer's clients), so
that what the big uploads themselves cost shows apart. Three rounds each measure every path in turn (this
VM's disk speed drifts a lot): each ratio is taken within a round, and the table shows the
median and the worst round.
Targets: throughput ≥ 0.5× the plain copy; peak memory < 100 MiB.
Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/0 \
     .venv/bin/python bench/image_upload.py [size in MiB, default 2048]
"""

import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, print_table, record, setup_django

setup_django()

from django.db import connection  # noqa: E402

from images.models import Image  # noqa: E402
from tenants.services import create_api_token, create_tenant, set_quota  # noqa: E402
from tests.factories import make_user  # noqa: E402

MIB = 1 << 20
SIZE = int(sys.argv[1]) * MIB if len(sys.argv) > 1 else 2048 * MIB
CHUNK = 64 * MIB
ROUNDS = 3


def memory_kib(pid: int) -> tuple[int, int]:
    """(resident, anonymous) KiB: all resident pages, and those of the process's own heap and stacks
    (the rest is the code of shared libraries, mapped from files)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]), int(fields["RssAnon"].split()[0])


class Sampler(threading.Thread):
    """The peak memory of a process while it runs."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, (0, 0), threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            rss, anon = memory_kib(self.pid)
            self.peak = (max(self.peak[0], rss), max(self.peak[1], anon))
            time.sleep(0.02)


def plain_copy(source: Path, target: Path) -> float:
    """Seconds to copy the file as the store writes it: read, write, fsync."""
    os.sync()
    start = time.perf_counter()
    with open(source, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, MIB)
        dst.flush()
        os.fsync(dst.fileno())
    seconds = time.perf_counter() - start
    target.unlink()
    return seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int) -> None:
    for _ in range(300):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def sink_seconds(source: Path, work: Path) -> float:
    """Seconds for the bare ASGI app to take the file in one request."""
    port = free_port()
    env = {**os.environ, "SINK_FILE": str(work / "sink.img")}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "asgi_sink:app", "--port", str(port), "--http",
                               "httptools", "--log-level", "warning"], cwd=ROOT / "bench", env=env,
                              stdout=sys.stderr)
    try:
        wait_for_port(port)
        os.sync()  # as before every measurement
        start = time.perf_counter()
        put(port, "", "/", source, 0, SIZE, None)
        return time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
        (work / "sink.img").unlink(missing_ok=True)


def put(port: int, key: str, path: str, source: Path, offset: int, length: int, total: int | None) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600, blocksize=MIB)
    headers = {"Authorization": f"Token {key}", "Content-Type": "application/octet-stream",
               "Content-Length": str(length)}
    if total is not None:
        headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{total}"
    with open(source, "rb") as body:
        body.seek(offset)
        conn.putrequest("PUT", path)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        left = length
        while left:
            block = body.read(min(MIB, left))
            conn.send(block)
            left -= len(block)
    response = conn.getresponse()
    answer = response.read()
    assert response.status == 200, answer[:300]
    conn.close()


def create(port: int, key: str, name: str, size: int = SIZE) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/api/v1/images/", body=f'{{"name": "{name}", "size": {size}}}',
                 headers={"Authorization": f"Token {key}", "Content-Type": "application/json"})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 201, body
    return json.loads(body)["id"]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-upload-", dir=ROOT / "var"))
    source = work / "source.img"
    with open(source, "wb") as out:
        for _ in range(SIZE // (64 * MIB)):
            out.write(os.urandom(64 * MIB))
    tenant = create_tenant(name=f"bench-upload-{time.time_ns()}")
    set_quota(tenant=tenant, limits={"image_gib": None})
    user = make_user(tenant=tenant)
    _token, key = create_api_token(user=user, name="bench", tenant=tenant)

    port = free_port()
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "CLOUDPANEL_IMAGE_DIR": str(work / "store"), "CLOUDPANEL_TASK_QUEUE": "bench-nobody-consumes",
           "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
           # One web process, the one measured: with several, this pid would be their supervisor, which serves none
           "CLOUDPANEL_WEB_WORKERS": "1"}
    server = subprocess.Popen([sys.executable, "manage.py", "serve", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=sys.stderr)
    try:
        wait_for_port(port)
        idle = memory_kib(server.pid)
        # One small upload first: what any first request loads (database connection, the API's code paths,
        # the channel layer that announces the new image) apart from what a big upload costs.
        warm_source = work / "warm.img"
        warm_source.write_bytes(os.urandom(MIB))
        warm_id = create(port, key, "warm-up", MIB)
        put(port, key, f"/api/v1/images/{warm_id}/data/", warm_source, 0, MIB, None)
        time.sleep(0.5)
        warm = memory_kib(server.pid)
        paths = ["plain copy (read, write, fsync)", "bare ASGI app on uvicorn (ceiling)", "API upload, one request",
                 f"API upload, {CHUNK // MIB} MiB chunks"]
        seconds: dict[str, list[float]] = {p: [] for p in paths}
        peak = (0, 0)
        # Rounds, each measuring every path in turn: this disk's speed drifts, so each ratio is
        # taken within a round and the table shows the median and the worst of the rounds.
        for _ in range(ROUNDS):
            seconds[paths[0]].append(plain_copy(source, work / "copy.img"))
            seconds[paths[1]].append(sink_seconds(source, work))
            for label, chunk in ((paths[2], None), (paths[3], CHUNK)):
                image_id = create(port, key, "bench")
                os.sync()  # start each measurement with no dirty pages of the previous one
                sampler = Sampler(server.pid)
                sampler.start()
                start = time.perf_counter()
                path = f"/api/v1/images/{image_id}/data/"
                if chunk is None:
                    put(port, key, path, source, 0, SIZE, None)
                else:
                    for offset in range(0, SIZE, chunk):
                        put(port, key, path, source, offset, min(chunk, SIZE - offset), SIZE)
                seconds[label].append(time.perf_counter() - start)
                sampler.stop.set()
                sampler.join()
                peak = (max(peak[0], sampler.peak[0]), max(peak[1], sampler.peak[1]))
                image = Image.objects.get(pk=image_id)
                assert image.received_bytes == SIZE and (work / "store" / str(image.uuid)).stat().st_size == SIZE
                (work / "store" / str(image.uuid)).unlink()
                image.delete()
        copy = seconds[paths[0]]
        rows = []
        for label in paths:
            ratios = [c / s for c, s in zip(copy, seconds[label], strict=True)]
            rows.append([label, round(statistics.median(seconds[label]), 2),
                         round(SIZE / MIB / statistics.median(seconds[label])), round(statistics.median(ratios), 2),
                         round(min(ratios), 2)])
        print_table(f"Upload of {SIZE // MIB} MiB, {ROUNDS} rounds (target: ≥ 0.5× the copy's throughput)",
                    ["path", "median s", "MiB/s", "× copy (median)", "× copy (worst round)"], rows)
        print_table("Web process memory during the uploads (target: peak < 100 MiB)",
                    ["measure", "idle (MiB)", "after a 1 MiB upload", "peak (MiB)", f"{SIZE // MIB} MiB uploads add"],
                    [[label, round(idle[i] / 1024, 1), round(warm[i] / 1024, 1), round(peak[i] / 1024, 1),
                      round((peak[i] - warm[i]) / 1024, 1)]
                     for i, label in enumerate(("resident (RSS)", "anonymous (heap, stacks)"))])
        for label in paths[1:]:
            worst = min(c / s for c, s in zip(copy, seconds[label], strict=True))
            median = statistics.median(c / s for c, s in zip(copy, seconds[label], strict=True))
            record(f"upload {SIZE // MIB} MiB, {label}: throughput (× plain copy, median)", median,
                   f"worst round {worst:.2f}×", ">= 0.5", median >= 0.5)
        record("web process peak RSS during the uploads (MiB)", peak[0] / 1024, f"idle {idle[0] / 1024:.1f} MiB",
               "< 100", peak[0] / 1024 < 100)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
        Image.objects.filter(tenant=tenant).delete()
        user.delete()
        tenant.delete()


if __name__ == "__main__":
    main()
