"""`make bench`'s one table: every measure the benchmarks recorded (bench/common.py record), a row each."""

import json
import os
import sys

COLUMNS = ("measure", "value", "compared with", "target", "met")


def machine() -> dict[str, str]:
    """The first row: the machine the figures were measured on."""
    with open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    with open("/proc/meminfo") as meminfo:
        kib = int(next(line.split()[1] for line in meminfo if line.startswith("MemTotal:")))
    return {"measure": "machine (every figure below measured on it)", "value": f"{len(os.sched_getaffinity(0))} CPUs",
            "compared with": f"{model}, {kib / 1024 / 1024:.0f} GiB RAM", "target": "—", "met": "yes"}


def main() -> None:
    with open(os.environ["BENCH_RESULTS"]) as results:
        rows = [json.loads(line) for line in results if line.strip()]
    table = [machine(), *rows] if rows else []
    cells = [COLUMNS, *([row[column] for column in COLUMNS] for row in table)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    for index, row in enumerate(cells):
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            print("-|-".join("-" * width for width in widths))
    sys.exit(0 if rows else 1)


if __name__ == "__main__":
    main()
