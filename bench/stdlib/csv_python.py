#!/usr/bin/env python3
"""bench/stdlib/csv_python.py PATH MODE: Python's csv module on the same file:
MODE "arrays" is csv.reader, "records" csv.DictReader; the file opened as
text (UTF-8, newline=''), records counted. One JSON line, like csv.lua."""
import csv
import json
import os
import resource
import sys
import time

path, mode = sys.argv[1], sys.argv[2]
size = os.path.getsize(path)
n = 0
t0 = time.perf_counter()
with open(path, newline="", encoding="utf-8") as f:
    rows = csv.DictReader(f) if mode == "records" else csv.reader(f)
    for row in rows:
        n += 1
wall = time.perf_counter() - t0
print(json.dumps({
    "bench": "csv", "impl": "python-csv", "python": sys.version.split()[0], "mode": mode,
    "records": n, "bytes": size, "wall_s": round(wall, 3), "records_per_s": round(n / wall),
    "mb_per_s": round(size / 1e6 / wall, 1),
    "hwm_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
}))
