"""Shared set-up for benchmarks: a database of their own (migrated, then dropped), table printing, and the measures
`make bench` gathers into one table (record; bench/report.py prints it)."""

import atexit
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup_django(database: str | None = None) -> None:
    """Point Django at a database of this benchmark's own on the PostgreSQL of DATABASE_URL: created and migrated
    now, dropped when the benchmark exits (never the database `make run` or the suite uses)."""
    import dj_database_url
    import psycopg

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpanel.settings")
    import django

    chosen = os.environ.get("CLOUDPANEL_BENCH_DATABASE")
    if chosen and os.environ.get("DATABASE_URL", "").endswith(f"/{chosen}"):  # a client the benchmark started
        django.setup()
        return
    database = database or f"cloudpanel_bench_{Path(sys.argv[0]).stem}_{os.getpid()}"
    base = dj_database_url.parse(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    dsn = f"host={base['HOST']} port={base['PORT'] or 5432} user={base['USER']} dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')

    def drop() -> None:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    atexit.register(drop)
    os.environ["DATABASE_URL"] = f"postgres://{base['USER']}@{base['HOST']}:{base['PORT'] or 5432}/{database}"
    os.environ["CLOUDPANEL_BENCH_DATABASE"] = database
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listener_idle_share(caught_up: Callable[[], bool], *, seconds: int, wait: float = 60) -> float:
    """The CPU share of `manage.py listen_events` idle for `seconds`: its user + system time over that wall time,
    once caught_up() says it has read every host and its start-up reads are over (a second it spends under 5 % of a
    core), or `wait` seconds have passed."""
    listener = subprocess.Popen([sys.executable, "manage.py", "listen_events"], cwd=ROOT, env=dict(os.environ),
                                stdout=sys.stderr, stderr=sys.stderr)
    try:
        deadline = time.monotonic() + wait
        while not caught_up() and time.monotonic() < deadline:
            time.sleep(0.5)
        while time.monotonic() < deadline:
            before = cpu_seconds(listener.pid)
            time.sleep(1)
            if cpu_seconds(listener.pid) - before < 0.05:
                break
        before, start = cpu_seconds(listener.pid), time.monotonic()
        time.sleep(seconds)
        share = (cpu_seconds(listener.pid) - before) / (time.monotonic() - start)
        if listener.poll() is not None:
            raise SystemExit(f"the listener exited (status {listener.returncode}) while it was measured")
        return share
    finally:
        listener.terminate()
        listener.wait(timeout=30)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> tuple[float, float, float]:
    """p50, p95 and mean, in milliseconds, of durations in seconds."""
    return (statistics.median(values) * 1000, percentile(values, 95) * 1000, statistics.fmean(values) * 1000)


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """A benchmark's detail table: on stdout run alone, on stderr under `make bench` (whose stdout is the one table
    of every measure)."""
    out = sys.stderr if os.environ.get("BENCH_RESULTS") else sys.stdout
    cells = [header] + [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}", file=out)
    for index, row in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)), file=out)
        if index == 0:
            print("  ".join("-" * width for width in widths), file=out)


def record(measure: str, value: float | int | str, compared_with: str, target: str, met: bool) -> None:
    """One row of `make bench`'s table, appended to the file BENCH_RESULTS names (printed at once when unset)."""
    row = {"measure": measure, "value": f"{value:.2f}" if isinstance(value, float) else str(value),
           "compared with": compared_with, "target": target, "met": "yes" if met else "no"}
    path = os.environ.get("BENCH_RESULTS")
    if path:
        with open(path, "a") as results:
            results.write(json.dumps(row) + "\n")
    else:
        print(" | ".join(row.values()))


def measure_get(client, url: str, repeats: int, **headers) -> tuple[list[float], list[str], object]:
    """Server times of `repeats` GETs (after a warm-up), then the SQL and the response of one more."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url, **headers)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.get(url, **headers)
        times.append(time.perf_counter() - start)
        assert response.status_code == 200, response.status_code
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, **headers)
    assert response.status_code == 200, response.status_code
    return times, [query["sql"] for query in queries.captured_queries], response
