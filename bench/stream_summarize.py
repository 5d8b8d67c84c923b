#!/usr/bin/env python3
"""bench/stream_summarize.py SESSION.jsonl: the tables of bench/stream_redis.sh.

Cells are the median (min-max) over the repetitions. A measurement during which
processes outside the benchmark used more than 10% of its wall time in CPU (the
"noise" line that bench/lib.sh writes after it) is left out of the medians and listed.
"""
import json, statistics, sys

import session
from collections import defaultdict

lines, machine, disturbed = session.load(sys.argv[1])

cells = defaultdict(list)
for l in lines:
    if l.get("kind") in ("machine", "noise") or l.get("_disturbed"):
        continue
    b = l.get("bench")
    if b == "floor.lmdb_gc":
        cells[("floor", l["producers"])].append(l)
    elif b == "sluice.stream":
        if l["mode"] == "emit":
            cells[("emit", l["emitters"])].append(l)
        elif l["mode"] == "many":
            cells[("many", l["batch"], l["emitters"])].append(l)
        elif l["mode"] == "read":
            cells[("read",)].append(l)
    elif b == "redis.xadd":
        cells[("redis", l["persist"], l["clients"], l["pipeline"])].append(l)
    elif b == "redis.xrange":
        cells[("xrange",)].append(l)


def get(l, path):
    for p in path.split("."):
        l = l.get(p) if isinstance(l, dict) else None
    return l


def med(key, path):
    v = [get(l, path) for l in cells.get(key, []) if get(l, path) is not None]
    return statistics.median(v) if v else None


def cell(key, path, fmt="{:,.0f}"):
    v = [get(l, path) for l in cells.get(key, []) if get(l, path) is not None]
    if not v:
        return "–"
    m = statistics.median(v)
    s = fmt.format(m)
    if len(v) > 1:
        s += " (" + fmt.format(min(v)) + "–" + fmt.format(max(v)) + ")"
    return s


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "–"


print(f"Session `{machine.get('session', '?')}` at {machine.get('at', '?')}, sluice `{machine.get('rev', '?')}`, "
      f"{machine.get('nproc', '?')} vCPU {machine.get('cpu', '?')}, kernel {machine.get('kernel', '?')}, "
      f"disk {machine.get('disk', '?')}, {machine.get('redis', '')}")
print()
print("### Writers awaiting their own ack (events/s)")
print()
print("| emitters | sluice `emit` (fsync) | ack p50 / p99 ms | events/commit | LMDB floor (closed loop) | sluice / floor "
      "| Redis `always` | sluice / Redis always | Redis `everysec` | Redis off |")
print("|---|---|---|---|---|---|---|---|---|---|")
for c in (1, 64, 1000):
    s, f, ra = med(("emit", c), "events_per_s"), med(("floor", c), "events_per_s"), med(("redis", "always", c, 1), "rps")
    print(f"| {c:,} | {cell(('emit', c), 'events_per_s')} | {cell(('emit', c), 'ack.p50_ms', '{:.3f}')} / "
          f"{cell(('emit', c), 'ack.p99_ms', '{:.3f}')} | {cell(('emit', c), 'events_per_commit', '{:.1f}')} "
          f"| {cell(('floor', c), 'events_per_s')} | {ratio(s, f)} | {cell(('redis', 'always', c, 1), 'rps')} "
          f"| {ratio(s, ra)} | {cell(('redis', 'everysec', c, 1), 'rps')} | {cell(('redis', 'off', c, 1), 'rps')} |")
print()
print("### Batched (events/s)")
print()
print("| shape | sluice (fsync) | Redis `always` | sluice / Redis always | Redis `everysec` | Redis off |")
print("|---|---|---|---|---|---|")
for (b, c), (rc, rp) in (((1000, 1), (1, 1000)), ((1000, 5), (50, 100))):
    s, ra = med(("many", b, c), "events_per_s"), med(("redis", "always", rc, rp), "rps")
    print(f"| sluice `emit_many` {b:,} x {c} task(s) / Redis {rc} client(s) x pipeline {rp} "
          f"| {cell(('many', b, c), 'events_per_s')} | {cell(('redis', 'always', rc, rp), 'rps')} | {ratio(s, ra)} "
          f"| {cell(('redis', 'everysec', rc, rp), 'rps')} | {cell(('redis', 'off', rc, rp), 'rps')} |")
print()
print("### Reads (events/s, 1M events, pages of 1,000)")
print()
print("| | events/s | vs Redis XRANGE |")
print("|---|---|---|")
x = med(("xrange",), "entries_per_s")
print(f"| sluice `read` wildcard `k:*` (100 keys merged) into Lua tables | {cell(('read',), 'wildcard.events_per_s')} "
      f"| {ratio(med(('read',), 'wildcard.events_per_s'), x)} |")
print(f"| sluice `read` key by key `k:0`..`k:99` into Lua tables | {cell(('read',), 'per_key.events_per_s')} "
      f"| {ratio(med(('read',), 'per_key.events_per_s'), x)} |")
print(f"| Redis `XRANGE ev (last + COUNT 1000`, one key of 1M, hiredis C client | {cell(('xrange',), 'entries_per_s')} | 1 |")
print()
print("### Redis XADD detail (rps; p50 / p99 ms as reported by redis-benchmark)")
print()
print("| persistence | clients x pipeline | rps | p50 / p99 ms |")
print("|---|---|---|---|")
for p in ("always", "everysec", "off"):
    for c, P in ((1, 1), (64, 1), (1000, 1), (1, 1000), (50, 100)):
        k = ("redis", p, c, P)
        if k in cells:
            print(f"| {p} | {c} x {P} | {cell(k, 'rps')} | {cell(k, 'p50_ms', '{:.3f}')} / {cell(k, 'p99_ms', '{:.3f}')} |")
print()
if disturbed:
    print("Left out (others used > 10% CPU meanwhile): " + ", ".join(
        f"{d['label']} ({d['others_cpu_s']} s, {d['others_top']})" for d in disturbed))
else:
    print("No measurement was disturbed (others' CPU <= 10% of each measurement's time).")
