"""`make bench`'s one table: every measure the benchmarks recorded (bench/common.py record), a row each, between
the machine's speed before and after them (`report.py speed` records the first)."""

import json
import os
import sys
import time

COLUMNS = ("measure", "value", "compared with", "target", "met")


def machine() -> dict[str, str]:
    """The first row: the machine the figures were measured on."""
    with open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    with open("/proc/meminfo") as meminfo:
        kib = int(next(line.split()[1] for line in meminfo if line.startswith("MemTotal:")))
    return {"measure": "machine (every figure below measured on it)", "value": f"{len(os.sched_getaffinity(0))} CPUs",
            "compared with": f"{model}, {kib / 1024 / 1024:.0f} GiB RAM", "target": "—", "met": "yes"}


def speed(when: str) -> dict[str, str]:
    """How fast this machine runs Python now (the same virtual machine's figures move between runs), taken before
    and after the benchmarks, so that a slow run can be told apart from a change in the code."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        sum(index * index for index in range(1_000_000))
        times.append(time.perf_counter() - start)
    return {"measure": f"machine speed {when} the benchmarks: a fixed Python loop, best of 5 (ms; lower is faster)",
            "value": f"{min(times) * 1000:.1f}", "compared with": "sum of 10^6 squares", "target": "none (reported)",
            "met": "yes"}


def main() -> None:
    if sys.argv[1:] == ["speed"]:  # before the benchmarks: the row goes first in the results
        with open(os.environ["BENCH_RESULTS"], "a") as results:
            results.write(json.dumps(speed("before")) + "\n")
        return
    with open(os.environ["BENCH_RESULTS"]) as results:
        rows = [json.loads(line) for line in results if line.strip()]
    table = [machine(), *rows, speed("after")] if rows else []
    cells = [COLUMNS, *([row[column] for column in COLUMNS] for row in table)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    for index, row in enumerate(cells):
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            print("-|-".join("-" * width for width in widths))
    sys.exit(0 if rows else 1)


if __name__ == "__main__":
    main()
