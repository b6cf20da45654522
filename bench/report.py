"""`make bench`'s one table: every measure the benchmarks recorded (bench/common.py record), a row each."""

import json
import os
import sys

COLUMNS = ("measure", "value", "compared with", "target", "met")


def main() -> None:
    with open(os.environ["BENCH_RESULTS"]) as results:
        rows = [json.loads(line) for line in results if line.strip()]
    cells = [COLUMNS, *([row[column] for column in COLUMNS] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    for index, row in enumerate(cells):
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            print("-|-".join("-" * width for width in widths))
    sys.exit(0 if rows else 1)


if __name__ == "__main__":
    main()
