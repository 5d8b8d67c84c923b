#!/usr/bin/env python3
"""CPU seconds used by processes OUTSIDE our Unix session while a measurement ran.
   (copied from the streams peer benchmark, ../shared/peers/streams/others_cpu.py)
   others_cpu.py snap FILE          -> writes {pid: (sid, ticks, comm)} of every process
   others_cpu.py diff FILE MYSID    -> prints 'others_cpu_s=X top=comm:secs'
The machine is shared with other workloads; this flags runs they disturbed."""
import json, os, sys
HZ = os.sysconf('SC_CLK_TCK')
def snap():
    d = {}
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            s = open(f'/proc/{p}/stat').read()
        except OSError:
            continue
        comm = s[s.index('(') + 1:s.rindex(')')]
        f = s[s.rindex(')') + 2:].split()
        # f[3]=session, f[11]=utime, f[12]=stime (live processes only; no cutime, to avoid double counting)
        d[p] = (int(f[3]), int(f[11]) + int(f[12]), comm)
    return d
if sys.argv[1] == 'snap':
    json.dump(snap(), open(sys.argv[2], 'w'))
else:
    before = json.load(open(sys.argv[2])); mysid = int(sys.argv[3]); after = snap()
    per = {}
    for p, (sid, t, comm) in after.items():
        if sid == mysid or sid == 0:   # ours, or a kernel thread (e.g. kblockd doing our fsyncs)
            continue
        t0 = before.get(p, (sid, 0, comm))[1] if p in before else 0
        if t - t0 > 0:
            per[comm] = per.get(comm, 0) + (t - t0) / HZ
    tot = sum(per.values())
    top = max(per.items(), key=lambda kv: kv[1]) if per else ('-', 0)
    print(f'others_cpu_s={tot:.2f} others_top={top[0]}:{top[1]:.2f}')
