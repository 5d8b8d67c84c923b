#!/usr/bin/env python3
"""bench/summarize.py SESSION.jsonl: medians of one run_all.sh session as Markdown tables.

Each row: the median over the session's repetitions (min..max in brackets), the DBOS
peer's median, sluice/DBOS, the goal of issue 2 and whether the median meets it.
The noise column is the most CPU seconds that processes outside the benchmark used
during any repetition of that measurement (others_cpu.py); a large value means a
repetition shared the 2 cores with somebody else's work."""
import json
import statistics
import sys
from collections import defaultdict

path = sys.argv[1]
lines = [json.loads(l) for l in open(path) if l.strip().startswith("{")]


def get(d, dotted):
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def pick(pred):
    return [d for d in lines if pred(d)]


def stat(rows, key):
    xs = [v for v in (get(r, key) for r in rows) if isinstance(v, (int, float))]
    if not xs:
        return None
    return statistics.median(xs), min(xs), max(xs), len(xs)


noise = defaultdict(float)
for d in lines:
    if d.get("kind") == "noise":
        label = d["label"].split("#")[0]
        noise[label] = max(noise[label], d.get("others_cpu_s", 0))

machine = next((d for d in lines if d.get("kind") == "machine"), {})


def fmt(x, nd=None):
    if x is None:
        return "–"
    if nd is None:
        nd = 3 if abs(x) < 1 else 2 if abs(x) < 10 else 1 if abs(x) < 100 else 0
    s = f"{x:,.{nd}f}"
    return s


def cell(st, nd=None):
    if st is None:
        return "–"
    med, lo, hi, n = st
    return f"{fmt(med, nd)} ({fmt(lo, nd)}–{fmt(hi, nd)}, n={n})"


S = lambda mode, **kw: pick(lambda d: d.get("bench") == "sluice.steps" and d.get("mode") == mode
                            and all(d.get(k) == v for k, v in kw.items()))
D = lambda bench, **kw: pick(lambda d: d.get("bench") == bench and d.get("kind") != "summary"
                             and all(d.get(k) == v for k, v in kw.items()))

rows = []  # (section, label, sluice_stat, dbos_stat, ratio_kind, goal_text, goal_fn, noise_labels, unit)


def row(section, label, s, d, goal_text=None, goal=None, noise_labels=(), nd=None, higher_better=True):
    ratio = None
    if s and d and d[0]:
        ratio = s[0] / d[0]
    met = None
    if goal and s:
        met = "met" if goal(s[0]) else "**not met**"
    nz = max([noise.get(n, 0.0) for n in noise_labels] or [0.0])
    rows.append((section, label, cell(s, nd), cell(d, nd), ratio, goal_text or "", met or "", nz,
                 higher_better))


seq = S("seq")
row("latency", "sequential step p50 (ms), sluice 10k-step run / DBOS 1k-step workflow",
    stat(seq, "per_step.p50_ms"), stat(D("dbos.steps"), "per_step.p50_ms"), "≤ 0.3 ms",
    lambda v: v <= 0.3, ["sluice.seq", "dbos.seq"], nd=3, higher_better=False)
row("latency", "sequential step p99 (ms)", stat(seq, "per_step.p99_ms"), stat(D("dbos.steps"), "per_step.p99_ms"),
    noise_labels=["sluice.seq", "dbos.seq"], nd=3, higher_better=False)
row("latency", "sequential step max (ms)", stat(seq, "per_step.max_ms"), stat(D("dbos.steps"), "per_step.max_ms"),
    noise_labels=["sluice.seq", "dbos.seq"], nd=2, higher_better=False)
row("latency", "sequential steps/s", stat(seq, "steps_per_s"), stat(D("dbos.steps"), "steps_per_s"),
    noise_labels=["sluice.seq", "dbos.seq"], nd=0)

long_conc = lambda r: [d for d in S("conc", runs=r) if d.get("steps", 0) >= 200000]
conc_cfgs = sorted({(d["runs"], d["steps_per_run"]) for d in S("conc") if d.get("steps", 0) >= 50000},
                   key=lambda x: (x[0], -x[1]))
for r, k in conc_cfgs:
    goal = 50000 if r == 64 else 100000 if r == 1000 else None
    c = S("conc", runs=r, steps_per_run=k)
    dc = D("dbos.conc", runs=r)
    dk = get(dc[0], "steps_per_run") if dc else "?"
    row("throughput", f"{r} concurrent runs × {k} steps: durable steps/s (DBOS: {r} × {dk} steps)",
        stat(c, "steps_per_s"), stat(dc, "steps_per_s"), goal and f"≥ {goal:,}/s",
        goal and (lambda v, g=goal: v >= g), [f"sluice.conc{r}", f"dbos.conc{r}"], nd=0)
    row("throughput", "· batches per commit (group commit)", stat(c, "writer.batches_per_commit"),
        None, noise_labels=[f"sluice.conc{r}"], nd=1)
    row("throughput", "· commits per s", stat(c, "commits_per_s"), None, nd=0)
    row("throughput", "· bytes written per commit (kB)",
        (lambda st: st and tuple(x / 1024 if i < 3 else x for i, x in enumerate(st)))(stat(c, "io.wchar_per_commit_B")), None, nd=1)
    row("throughput", "· loop thread busy (% of wall time)", stat(c, "cpu.loop_busy_pct"), None, nd=1)
    row("throughput", "· CPU µs per step: loop thread",
        stat([dict(x, _u=x["cpu"]["loop_thread_ms"] * 1000 / x["steps"]) for x in c if x.get("cpu")], "_u"), None, nd=2)
    row("throughput", "· CPU µs per step: writer thread",
        stat([dict(x, _u=x["cpu"]["other_threads_ms"] * 1000 / x["steps"]) for x in c if x.get("cpu")], "_u"), None, nd=2)
for cc in (32, 64):
    row("throughput", f"1,000 workflows of 3 steps at concurrency {cc}: steps/s", stat(S("wf", concurrency=cc), "steps_per_s"),
        stat(D("dbos.workflows", concurrency=cc), "steps_per_s"), noise_labels=[f"sluice.wf{cc}", f"dbos.wf{cc}"], nd=0)

rp = S("replay")
dr = D("dbos.recovery")
row("replay", "resume of a run with 10,000 stored steps (ms); DBOS: replay phase of the 5,000-step recovery ×2",
    stat(rp, "replay_ms"),
    (lambda st: st and (st[0] * 2, st[1] * 2, st[2] * 2, st[3]))(stat(dr, "phases_ms.replay_memoized")),
    "≤ 20 ms", lambda v: v <= 20, ["sluice.replay", "dbos.recovery"], nd=1, higher_better=False)
row("replay", "replay cost per stored step (µs)", stat(rp, "replay_us_per_step"), stat(dr, "replay_us_per_step"),
    noise_labels=["sluice.replay", "dbos.recovery"], nd=2, higher_better=False)

sr = pick(lambda d: d.get("bench") == "sluice.recovery" and d.get("kind") != "summary")
row("recovery", "restart → completion, 10k-step run killed at ~5,000 (ms)", stat(sr, "restart_to_completion_ms"),
    stat(dr, "restart_to_completion_ms"), "≤ 2,000 ms", lambda v: v <= 2000, ["sluice.recovery", "dbos.recovery"],
    nd=0, higher_better=False)
row("recovery", "restart → process exit (ms)", stat(sr, "restart_to_completion_ms"), stat(dr, "restart_to_exit_ms"),
    noise_labels=["sluice.recovery", "dbos.recovery"], nd=0, higher_better=False)
ok_s = all(d.get("verified") for d in sr) if sr else None
ok_d = all(d.get("verified") for d in dr) if dr else None

idle = S("idle")
mem = D("dbos.memory")
row("memory", "idle RSS (MB): sluice process / DBOS node process", (lambda st: st and tuple(x / 1024 if i < 3 else x for i, x in enumerate(st)))(stat(idle, "mem.rss_kB")),
    (lambda st: st and tuple(x / 1024 if i < 3 else x for i, x in enumerate(st)))(stat(mem, "idle_node_rss_kB")),
    "≤ 10 MB", lambda v: v <= 10, ["sluice.idle", "dbos.memory"], nd=1, higher_better=False)
row("memory", "idle: + PostgreSQL cluster PSS (MB, DBOS only)", None,
    (lambda st: st and tuple(x / 1024 if i < 3 else x for i, x in enumerate(st)))(stat(mem, "idle_postgres_pss_kB")), nd=1)
mb = lambda st: st and tuple(x / 1024 if i < 3 else x for i, x in enumerate(st))
row("memory", "peak RSS (VmHWM, MB) under 64 concurrent runs; DBOS: node under 64-concurrent workflows",
    mb(stat(long_conc(64), "mem.hwm_kB")), mb(stat(mem, "load64_node_hwm_kB")), "≤ 30 MB", lambda v: v <= 30,
    ["sluice.conc64"], nd=1, higher_better=False)
short64 = [d for d in S("conc", runs=64) if d.get("steps", 0) < 50000]
row("memory", f"peak RSS (VmHWM, MB), 64 concurrent runs × {get(short64[0], 'steps_per_run') if short64 else '?'} steps",
    mb(stat(short64, "mem.hwm_kB")), None, "≤ 30 MB", lambda v: v <= 30, ["sluice.conc64x100"], nd=1, higher_better=False)
row("memory", "· 64 runs: anonymous memory at the end (RssAnon, MB)", mb(stat(long_conc(64), "mem.rss_anon_kB")), None, nd=1)
row("memory", "· 64 runs: file-backed pages at the end (RssFile, MB: LMDB's map, the binary, libs)",
    mb(stat(long_conc(64), "mem.rss_file_kB")), None, nd=1)
row("memory", "· 64 runs: Lua heap peak (MB)", mb(stat(long_conc(64), "lua_heap.peak_kB")), None, nd=1)
row("memory", "· 64 runs: store size, data.mdb (MB)", mb(stat(long_conc(64), "store_kB")), None, nd=1)
for mode, lab in (("seq", "10k-step sequential run"), ("replay", "replay run"), ("wf", "1,000 × 3-step workflows")):
    row("memory", f"peak RSS (MB), {lab}", mb(stat(S(mode), "mem.hwm_kB")), None, nd=1)
for r, k in sorted({(d["runs"], d["steps_per_run"]) for d in S("conc")}, key=lambda x: (x[0], x[1])):
    c = S("conc", runs=r, steps_per_run=k)
    row("memory", f"peak RSS (MB), {r} concurrent runs × {k} steps (Lua heap peak; store size)",
        mb(stat(c, "mem.hwm_kB")), None, nd=1)
    row("memory", "· Lua heap peak (MB)", mb(stat(c, "lua_heap.peak_kB")), None, nd=1)
    row("memory", "· store data.mdb (MB)", mb(stat(c, "store_kB")), None, nd=1)

print(f"# sluice benchmarks, session {machine.get('session', '?')}\n")
print(f"sluice {machine.get('rev', '?')}, {machine.get('at', '?')}; {machine.get('nproc', '?')} × {machine.get('cpu', '?')} "
      f"({machine.get('hypervisor', '')}), {machine.get('mem', '?')} RAM, kernel {machine.get('kernel', '?')}, "
      f"{machine.get('disk', '?')}; load at start {machine.get('loadavg', '?')}\n")
print("Cells: median (min–max, n). Ratio = sluice / DBOS (for latencies and times lower is better: "
      "a ratio of 0.2 means sluice takes a fifth of DBOS's time).\n")
section = None
for sec, label, s, d, ratio, goal, met, nz, hb in rows:
    if sec != section:
        section = sec
        print(f"\n## {sec}\n")
        print("| measurement | sluice | DBOS 5.3.0 + PG 15 | sluice/DBOS | goal | | noise (others' CPU s, max) |")
        print("|---|---|---|---|---|---|---|")
    if ratio is None:
        r = "–"
    else:
        r = f"{ratio:.2g}" if ratio < 1 else f"{ratio:.1f}" if ratio < 10 else f"{ratio:.0f}"
        better = (ratio >= 1) == hb
        factor = ratio if ratio >= 1 else 1 / ratio
        r += " (%s× %s)" % (f"{factor:.1f}" if factor < 10 else f"{factor:.0f}", "better" if better else "worse")
    print(f"| {label} | {s} | {d} | {r} | {goal} | {met} | {nz:.2f} |")
print(f"\nrecovery verified (every step ran, no committed step ran again, ≤ 1 duplicate): sluice {ok_s}, DBOS {ok_d}")

fl = pick(lambda d: d.get("kind") == "floor")
if fl:
    print("\n## floor of this disk (same session)\n")
    print("| what | median | n |\n|---|---|---|")
    fs = [d for d in fl if d.get("bench") == "floor.fsync"]
    st = stat(fs, "p50_us")
    if st:
        print(f"| write 4 KiB + fdatasync, append: p50 µs | {cell(st, 0)} | |")
        print(f"| write 4 KiB + fdatasync, append: ops/s | {cell(stat(fs, 'ops_per_s'), 0)} | |")
    for keys in ("append", "runs"):
        for p in (1, 64, 1000):
            g = [d for d in fl if d.get("bench") == "floor.lmdb_gc" and d.get("keys") == keys and d.get("producers") == p]
            if not g:
                continue
            print(f"| LMDB closed-loop group commit, keys={keys}, {p} writer thread(s): events/s | {cell(stat(g, 'events_per_s'), 0)} | |")
            print(f"| … ack p50 µs / mean batch | {cell(stat(g, 'ack_p50_us'), 0)} / {cell(stat(g, 'mean_batch'), 1)} | |")
