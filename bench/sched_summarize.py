#!/usr/bin/env python3
"""bench/sched_summarize.py SESSION.jsonl: the tables of bench/schedules.sh.

Cells are the median (min-max) over the repetitions. A measurement during which
processes outside the benchmark used more than 10% of its wall time in CPU is left
out of the medians and listed."""
import json, statistics, sys

import session
from collections import defaultdict

lines, machine, disturbed = session.load(sys.argv[1])

cells = defaultdict(list)
for l in lines:
    if l.get("kind") in ("machine", "noise") or l.get("_disturbed"):
        continue
    b = l.get("bench")
    if b == "sluice.sched.fire":
        cells[("fire", l["schedules"], l["background_runs"], l.get("other_cron_schedules", 0))].append(l)
    elif b == "sluice.sched.startup":
        cells[("startup", l["schedules"], l["start"])].append(l)
    elif b == "cron.next":
        cells[("cron", l["tz"])].append(l)
    elif b == "cron.cli":
        cells[("cli",)].append(l)


def cell(key, field, fmt="{:,.1f}"):
    v = [l[field] for l in cells.get(key, []) if l.get(field) is not None]
    if not v:
        return "–"
    s = fmt.format(statistics.median(v))
    if len(v) > 1:
        s += " (" + fmt.format(min(v)) + "–" + fmt.format(max(v)) + ")"
    return s


def med(key, field):
    v = [l[field] for l in cells.get(key, []) if l.get(field) is not None]
    return statistics.median(v) if v else None


print(f"Session `{machine.get('session', '?')}` at {machine.get('at', '?')}, sluice `{machine.get('rev', '?')}`, "
      f"{machine.get('nproc', '?')} vCPU, kernel {machine.get('kernel', '?')}, node {machine.get('node', '?')}")
print()
print("### Fire latency (run code starts − due time)")
print()
print("| shape | fires measured / expected | fires/s | p50 ms | p90 ms | p99 ms | max ms | tick runs executing p50 / max | skipped (overlap) | serve CPU % | VmHWM MB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for key, rows in sorted(cells.items(), key=lambda kv: str(kv[0])):
    if key[0] != "fire":
        continue
    _, n, bg, extra = key
    for r in rows:
        print(f"| {n:,} × every(1).seconds{' + %d background runs' % bg if bg else ''}{' + %d other cron schedules' % extra if extra else ''} | {r['fires']:,} / {r['fires_expected']:,} "
              f"| {r['fires_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} "
              f"| {r['executing_p50']} / {r['executing_max']} | {r.get('log_skipped', 0):,} | {r.get('cpu_busy_pct')} "
              f"| {r.get('VmHWM', 0) / 1024:.1f} |")
print()
print("### Start-up with 100,000 cron schedules")
print()
print("| start | spawn → \"armed\" ms | \"armed in\" (scheduler.start) as logged | VmHWM MB | store MB |")
print("|---|---|---|---|---|")
for which in ("fresh", "restart"):
    k = ("startup", 100000, which)
    if k in cells:
        logged = [l["armed_line"].split("armed in ")[1] for l in cells[k]]
        print(f"| {which} | {cell(k, 'spawn_to_armed_ms')} | {', '.join(logged)} "
              f"| {cell(k, 'VmHWM', '{:,.0f}').replace(',', '')} kB | {cell(k, 'store_kB', '{:,.0f}')} kB |")
print()
print("### Next fire of 10,000 expressions (parse + next, in process)")
print()
print("| tz | sluice ms (warm) | sluice cold | croner ms (warm) | croner cold | croner / sluice (warm) | µs per expression sluice / croner | answers that differ |")
print("|---|---|---|---|---|---|---|---|")
for tz in ("UTC", "Europe/Berlin"):
    k = ("cron", tz)
    if k in cells:
        s, c = med(k, "sluice_warm_ms"), med(k, "croner_warm_ms")
        print(f"| {tz} | {cell(k, 'sluice_warm_ms', '{:.2f}')} | {cell(k, 'sluice_cold_ms', '{:.2f}')} "
              f"| {cell(k, 'croner_warm_ms', '{:.2f}')} | {cell(k, 'croner_cold_ms', '{:.2f}')} | {c / s:.1f}× "
              f"| {med(k, 'sluice_us_per_expr'):.3f} / {med(k, 'croner_us_per_expr'):.3f} | {cell(k, 'disagree', '{:.0f}')} |")
        ex = cells[k][0].get("disagree_examples")
        if ex:
            print(f"|  | examples (expr, sluice, croner): {'; '.join(' / '.join(e) for e in ex[:3])} | | | | | | |")
if ("cli",) in cells:
    r = cells[("cli",)][0]
    print()
    print(f"One CLI invocation (`sluice cron next \"0 9 * * 1\" -n 5`, mean of {r['runs']}): "
          f"**{r['sluice_mean_ms']} ms** (median {r['sluice_median_ms']}); `node -e` with croner, same question: "
          f"{r['node_croner_mean_ms']} ms (median {r['node_croner_median_ms']}) — {r['node_croner_mean_ms'] / r['sluice_mean_ms']:.0f}×.")
print()
if disturbed:
    print("Left out (others used > 10% CPU meanwhile): " + ", ".join(
        f"{d['label']} ({d['others_cpu_s']} s, {d['others_top']})" for d in disturbed))
else:
    print("No measurement was disturbed (others' CPU <= 10% of each measurement's time).")
