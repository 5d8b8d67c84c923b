#!/usr/bin/env python3
"""bench/commit_summarize.py SESSION.jsonl: the table of a bench/commit_path.sh session.

For each repetition: base and new sluice (emit 1/64/1000 events/s and ack p50, 64 runs
x 4,000 steps: steps/s, /proc/self/io write_bytes and wchar per step, store size,
anonymous RSS; the disks' sectors written meanwhile, when the session has them), Redis appendfsync always (1/64/1000 clients) and the LMDB floor (64
writers) measured in the same repetition, and the ratios new/peer and base/peer.
Lines are taken in file order: Redis and floor lines belong to the repetition of the
sluice lines before them. Medians over repetitions close the table."""
import json
import statistics
import sys


def main(path):
    reps = {}
    cur = None
    for line in open(path):
        try:
            d = json.loads(line)
        except ValueError:
            continue
        b = d.get("bench")
        if b in ("sluice.stream", "sluice.steps"):
            side, rep = d["tag"].split("-rep")
            cur = int(rep)
            r = reps.setdefault(cur, {})
            if b == "sluice.stream":
                r[(side, "emit%d" % d["emitters"])] = d["events_per_s"]
                r[(side, "p50_%d" % d["emitters"])] = d["ack"]["p50_ms"]
            else:
                r[(side, "conc")] = d["steps_per_s"]
                r[(side, "steps")] = d["steps"]
                r[(side, "wb")] = d["io"]["write_bytes_kB"] * 1024 / d["steps"]
                r[(side, "wchar")] = d["io"]["wchar_kB"] * 1024 / d["steps"]
                r[(side, "store_MB")] = d["store_kB"] / 1024
                r[(side, "anon_MB")] = d["mem"]["rss_anon_kB"] / 1024
        elif b == "redis.xadd" and cur is not None and d.get("persist") == "always" and d.get("pipeline") == 1:
            reps[cur][("redis", "emit%d" % d["clients"])] = d["rps"]
            reps[cur][("redis", "p50_%d" % d["clients"])] = d["p50_ms"]
        elif b == "disk" and d.get("name", "").endswith(" conc64") and cur is not None:
            side = d["name"].split("-rep")[0]
            steps = reps[cur].get((side, "steps"))
            if steps:
                reps[cur][(side, "disk")] = d["sectors_written"] * 512 / steps
        elif b == "floor.lmdb_gc" and cur is not None:
            reps[cur][("floor", "conc")] = d["events_per_s"]
    rows = [
        ("emit, 1 emitter, events/s", "emit1", "redis"),
        ("ack p50, 1 emitter, ms", "p50_1", "redis"),
        ("emit, 64 emitters, events/s", "emit64", "redis"),
        ("emit, 1,000 emitters, events/s", "emit1000", "redis"),
        ("64 runs x 4,000 steps, steps/s", "conc", "floor"),
        ("write_bytes per step (64 runs), B", "wb", None),
        ("wchar per step (64 runs), B", "wchar", None),
        ("disk sectors written per step (64 runs, every process), B", "disk", None),
        ("store after the 64-run load, MB", "store_MB", None),
        ("anonymous RSS, 64 runs, MB", "anon_MB", None),
    ]
    print("| | rep | base | new | peer | new/peer | base/peer | new/base |")
    print("|---|---|---|---|---|---|---|---|")
    med = {}
    for label, k, peer in rows:
        for rep in sorted(reps):
            r = reps[rep]
            base, new, p = r.get(("base", k)), r.get(("new", k)), r.get((peer, k)) if peer else None
            if k.startswith("p50"):
                p = r.get(("redis", k))
            cells = [label, str(rep), fmt(base), fmt(new), fmt(p),
                     ratio(new, p), ratio(base, p), ratio(new, base)]
            for name, v in (("new/peer", q(new, p)), ("base/peer", q(base, p)), ("new/base", q(new, base))):
                if v is not None:
                    med.setdefault((label, name), []).append(v)
            print("| " + " | ".join(cells) + " |")
    print()
    print("| medians over repetitions | new/peer | base/peer | new/base |")
    print("|---|---|---|---|")
    for label, _, _ in rows:
        vals = [med.get((label, n)) for n in ("new/peer", "base/peer", "new/base")]
        print("| " + label + " | " + " | ".join("%.2f" % statistics.median(v) if v else "" for v in vals) + " |")


def q(a, b):
    return a / b if a is not None and b else None


def ratio(a, b):
    v = q(a, b)
    return "" if v is None else "%.2f" % v


def fmt(v):
    if v is None:
        return ""
    return "{:,.0f}".format(v) if v >= 100 else "%.3g" % v


if __name__ == "__main__":
    main(sys.argv[1])
