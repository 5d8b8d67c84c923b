#!/usr/bin/env python3
"""bench/pg_summarize.py SESSION.jsonl: the tables of a bench/pg_steps.sh
session (markdown on stdout): steps/s of sluice (in-process, 1 and 3 serve
hosts) and DBOS per shape, PostgreSQL's commit rate (pgbench), the ratios
per repetition and their median, CPU per process class, the machine's load."""
import json, statistics, sys
from collections import defaultdict


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=0):
    if x is None:
        return "—"
    return f"{x:,.{nd}f}"


def cell(xs, nd=0):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    if len(xs) == 1:
        return fmt(xs[0], nd)
    return f"{fmt(med(xs), nd)} ({fmt(min(xs), nd)}–{fmt(max(xs), nd)})"


def main(path):
    lines = [json.loads(l) for l in open(path) if l.strip()]
    sess = next((l for l in lines if l.get("kind") == "session"), {})
    # by (what, shape) -> list in repetition order
    v = defaultdict(list)
    cpu = defaultdict(list)
    noise = []
    for l in lines:
        b = l.get("bench", "")
        if l.get("kind") == "noise":
            noise.append(l)
        elif b == "pg_test_fsync":
            v[("fsync", None)].append(l["usecs_per_op"])
        elif b == "pgbench":
            v[(f"pgbench.{l['mode']}", None)].append(l["tps"])
        elif b == "sluice.steps" and l.get("mode") == "conc" and l.get("store") == "postgresql":
            which = (l.get("tag") or "pg:new").split(":")[-1]
            shape = f"{l['runs']}x{l['steps_per_run']}"
            v[(f"inproc.{which}", shape)].append(l["steps_per_s"])
            c = l.get("cpu", {})
            cpu[(f"inproc.{which}", shape)].append((c.get("loop_thread_ms"), None, c.get("wall_ms")))
        elif b == "sluice.pg_serve":
            shape = f"{l['runs']}x{l['steps_per_run']}"
            key = f"serve{l['hosts']}" + (".base" if l.get("label", "").endswith(".base") else "")
            c = l["cpu"]
            steps = l["runs"] * l["steps_per_run"]
            # a late start (runs created past start_at) ran steps before the
            # CPU window opened: its CPU per step means nothing
            late = l.get("late_start")
            if late:
                noise.append({"late": f"{key} {shape}"})
            v[(key + ".pgus", shape)].append(1000 * c["postgres_ms"] / steps if c.get("postgres_ms") and not late else None)
            v[(key + ".hostus", shape)].append(1000 * c["hosts_ms"] / steps if c.get("hosts_ms") and not late else None)
            v[(key, shape)].append(l["steps_per_s"])
            v[(key + ".wx", shape)].append(l["write_xacts_per_s"])
            v[(key + ".spc", shape)].append(l.get("steps_per_commit"))
            v[(key + ".sync", shape)].append(l.get("wal_sync_ms_per_sync"))
            v[(key + ".syncs", shape)].append(l["wal_syncs"] / (l["total_ms"] / 1000) if "wal_syncs" in l else None)
            c = l["cpu"]
            cpu[(key, shape)].append((c["hosts_ms"], c["postgres_ms"], c["window_ms"]))
        elif b == "dbos.conc":
            shape = f"{l['runs']}x{l['steps_per_run']}"
            v[("dbos", shape)].append(l["steps_per_s"])
            v[("dbos.wx", shape)].append(l.get("write_xacts", 0) / (l["total_ms"] / 1000) if l.get("write_xacts") else None)
            cpu[("dbos", shape)].append((l.get("node_cpu_ms"), l.get("postgres_cpu_ms"), l["total_ms"]))
    shapes = sorted({s for (_, s) in v if s}, key=lambda s: int(s.split("x")[0]))

    def ratio(a, b, f=1.0):
        return [x / (y * f) if x and y else None for x, y in zip(a, b)]

    print(f"Session `{sess.get('session', '?')}` ({sess.get('at', '?')}), sluice {sess.get('new_rev', '?')}"
          f"{', base ' + sess['base_rev'] if sess.get('base_rev') else ''}; {sess.get('postgres', '')};"
          f" fsync, synchronous_commit, wal_sync_method, shared_buffers = {sess.get('settings', '')};"
          f" {sess.get('nproc', '?')} CPUs, load average at the start {sess.get('loadavg', '?')}.\n")
    pins = v[("pgbench.insert", None)]
    if v[("fsync", None)]:
        print(f"The disk's flush (pg_test_fsync, 8 kB write + fdatasync): {cell(v[('fsync', None)])} µs.\n")
    print(f"PostgreSQL's commit rate (pgbench, 64 clients, -M prepared): one INSERT per transaction "
          f"**{cell(pins)}** tps; TPC-B-like {cell(v[('pgbench.tpcb', None)])} tps.\n")
    print("| steps/s, median (min–max) of the repetitions | " + " | ".join(f"{s.split('x')[0]} runs × {s.split('x')[1]} steps" for s in shapes) + " |")
    print("|---|" + "---|" * len(shapes))
    rows = [("DBOS 5.3.0 (one node process)", "dbos"), ("sluice in-process (`steps.lua conc`), new", "inproc.new"),
            ("sluice in-process, base", "inproc.base"), ("sluice serve, 1 host", "serve1"),
            ("sluice serve, 1 host, base", "serve1.base"),
            ("sluice serve, 3 hosts", "serve3"), ("sluice serve, 3 hosts, base", "serve3.base")]
    for name, key in rows:
        if any(v[(key, s)] for s in shapes):
            print(f"| {name} | " + " | ".join(cell(v[(key, s)]) for s in shapes) + " |")
    print()
    print("| ratios (per repetition, then the median) | " + " | ".join(shapes) + " |")
    print("|---|" + "---|" * len(shapes))
    def rrow(name, per_shape):
        out = []
        for s in shapes:
            xs = [x for x in per_shape(s) if x is not None]
            out.append(f"**{med(xs):.2f}** ({', '.join(f'{x:.2f}' for x in xs)})" if xs else "—")
        print(f"| {name} | " + " | ".join(out) + " |")
    rrow("serve 1 host / DBOS", lambda s: ratio(v[("serve1", s)], v[("dbos", s)]))
    rrow("serve 3 hosts / 3 / DBOS (per host)", lambda s: ratio(v[("serve3", s)], v[("dbos", s)], 3))
    rrow("serve 3 hosts / serve 1 host", lambda s: ratio(v[("serve3", s)], v[("serve1", s)]))
    rrow("in-process new / DBOS", lambda s: ratio(v[("inproc.new", s)], v[("dbos", s)]))
    if any(v[("inproc.base", s)] for s in shapes):
        rrow("in-process new / base", lambda s: ratio(v[("inproc.new", s)], v[("inproc.base", s)]))
    for h in ("1", "3"):
        if any(v[(f"serve{h}.base", s)] for s in shapes):
            rrow(f"serve {h} host(s) new / base, steps/s", lambda s: ratio(v[(f"serve{h}", s)], v[(f"serve{h}.base", s)]))
            rrow(f"serve {h} host(s) new / base, PostgreSQL CPU per step",
                 lambda s: ratio(v[(f"serve{h}.pgus", s)], v[(f"serve{h}.base.pgus", s)]))
    rrow("serve 1 host steps/s / pgbench insert tps", lambda s: ratio(v[("serve1", s)], pins))
    rrow("serve 3 hosts steps/s / pgbench insert tps", lambda s: ratio(v[("serve3", s)], pins))
    rrow("serve 3 hosts write transactions/s / pgbench insert tps", lambda s: ratio(v[("serve3.wx", s)], pins))
    rrow("DBOS steps/s / pgbench insert tps", lambda s: ratio(v[("dbos", s)], pins))
    print()
    print("| CPU over the window, % of one core: sluice or node / PostgreSQL (all its processes) | " + " | ".join(shapes) + " |")
    print("|---|" + "---|" * len(shapes))
    for name, key in [("DBOS", "dbos"), ("serve 1 host", "serve1"), ("serve 3 hosts (sum)", "serve3"),
                      ("in-process new (loop thread)", "inproc.new")]:
        out = []
        for s in shapes:
            xs = cpu[(key, s)]
            if not xs:
                out.append("—")
                continue
            a = med([100 * x[0] / x[2] for x in xs if x[0] is not None])
            b = med([100 * x[1] / x[2] for x in xs if x[1] is not None])
            out.append(f"{fmt(a)} / {fmt(b)}")
        print(f"| {name} | " + " | ".join(out) + " |")
    for key, name in [("serve1.spc", "steps per host commit, 1 host"), ("serve3.spc", "steps per host commit, 3 hosts"),
                      ("serve1.wx", "write transactions/s, 1 host"), ("serve3.wx", "write transactions/s, 3 hosts"),
                      ("dbos.wx", "write transactions/s, DBOS"),
                      ("serve1.syncs", "WAL flushes/s, 1 host"), ("serve3.syncs", "WAL flushes/s, 3 hosts"),
                      ("serve1.sync", "ms per WAL flush, 1 host"), ("serve3.sync", "ms per WAL flush, 3 hosts")]:
        nd = 2 if key.endswith(".sync") else 1 if "spc" in key else 0
        print(f"| {name} | " + " | ".join(cell(v[(key, s)], nd) for s in shapes) + " |")
    for key, name in [("serve1.pgus", "PostgreSQL CPU µs per step, 1 host"),
                      ("serve1.base.pgus", "PostgreSQL CPU µs per step, 1 host, base"),
                      ("serve3.pgus", "PostgreSQL CPU µs per step, 3 hosts"),
                      ("serve3.base.pgus", "PostgreSQL CPU µs per step, 3 hosts, base"),
                      ("serve1.hostus", "host CPU µs per step, 1 host"),
                      ("serve1.base.hostus", "host CPU µs per step, 1 host, base"),
                      ("serve3.hostus", "hosts' CPU µs per step, 3 hosts"),
                      ("serve3.base.hostus", "hosts' CPU µs per step, 3 hosts, base")]:
        if any(v[(key, s)] for s in shapes):
            print(f"| {name} | " + " | ".join(cell(v[(key, s)], 1) for s in shapes) + " |")
    print()
    if noise:
        lates = [n["late"] for n in noise if "late" in n]
        if lates:
            print(f"Late starts (CPU per step left out): {', '.join(lates)}.\n")
        busy = [n["others_cpu_s"] / n["secs"] for n in noise if n.get("secs")]
        print(f"Others' CPU during the measurements (others_cpu.py, cores busy): median {med(busy):.2f}, "
              f"max {max(busy):.2f} over {len(busy)} measurements.")


if __name__ == "__main__":
    main(sys.argv[1])
