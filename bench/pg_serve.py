#!/usr/bin/env python3
"""bench/pg_serve.py: steps/s of N `sluice serve` hosts sharing one PostgreSQL
database and the pipeline directory bench/pg_pipes (issue 15). Called by
bench/pg_steps.sh; prints and appends one JSON line per shape.

  pg_serve.py --bin SLUICE --url URL --hosts N --shapes 64x200,1000x20
              [--label L] [--out FILE] [--pg-pid PID] [--timeout S]

Starts N hosts (each its own --state-dir, HTTP on 127.0.0.1 port 0), then
for each shape R x K: creates R runs of "conc" over the hosts' HTTP APIs,
round robin (16 connections per host; each host takes the lease of the runs it creates, so each
executes a third with three hosts), all with input.start_at a little ahead,
so that every run starts its K steps at that instant; waits until all R
are completed; steps/s = R*K / (the last run's finished_at - start_at).
Around that window: CPU of each host and of every PostgreSQL process
(/proc/PID/stat), write transactions (the next xid, pg_snapshot_xmax:
exact and immediate) and pg_stat_database.xact_commit of the database (it
lags: backends flush their counters about once a second), the hosts'
commits and batches (GET /metrics: sluice_writer_*). The hosts are stopped
by PID (SIGTERM, then SIGKILL) whatever happens."""
import argparse, json, os, re, signal, subprocess, sys, threading, time, urllib.request, http.client

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_ms(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        fl = st[st.rindex(")") + 2:].split()
        return (int(fl[11]) + int(fl[12])) * 1000 // TICK
    except OSError:
        return 0


def children(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            if int(st[st.rindex(")") + 2:].split()[1]) == ppid:
                out.append(int(d))
        except (OSError, ValueError):
            pass
    return out


def pg_cpu(pm):
    """{pid: cpu ms} of the postmaster and its children (the backends)."""
    return {p: cpu_ms(p) for p in [pm] + children(pm)} if pm else {}


def pg_cpu_delta(a, b):
    return sum(v - a.get(p, 0) for p, v in b.items())


class Psql:
    """One psql process kept open: a query, then a marker line."""

    def __init__(self, url):
        self.p = subprocess.Popen(["psql", "-X", "-At", "-q", "-v", "ON_ERROR_STOP=0", url],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def q(self, sql):
        self.p.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo __end__\n")
        self.p.stdin.flush()
        rows = []
        for line in self.p.stdout:
            line = line.rstrip("\n")
            if line == "__end__":
                return rows
            rows.append(line)
        raise RuntimeError("psql ended")

    def close(self):
        self.p.stdin.close()
        self.p.wait(10)


def tx_counters(db):
    """next xid, xact_commit, WAL flushes and their time (ms; track_wal_io_timing)"""
    row = db.q("SELECT pg_snapshot_xmax(pg_current_snapshot())::text, "
               "(SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), "
               "wal_sync, wal_sync_time FROM pg_stat_wal")[0].split("|")
    return int(row[0]), int(row[1]), int(row[2]), float(row[3])


def metrics(url):
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        text = r.read().decode()
    def val(name):
        m = re.search(r"^" + name + r"(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
        return float(m.group(1)) if m else None
    return {"commits": val("sluice_writer_batch_size_count"), "batches": val("sluice_writer_batch_size_sum")}


class Host:
    def __init__(self, args, i, tmp):
        self.err = []
        self.ready = threading.Event()
        cmd = [args.bin, "serve", os.path.join(HERE, "pg_pipes"), "--store", args.url,
               "--state-dir", f"{tmp}/state{i}", "--listen", "127.0.0.1:0", "--grace", "2s"]
        self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        self.pid = self.p.pid
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stderr:
            self.err.append(line)
            if len(self.err) > 200:
                del self.err[:100]
            t = "".join(self.err)
            if not self.ready.is_set() and "listening on http://" in t and re.search(r"host \S+: lease", t):
                self.url = "http://" + re.search(r"listening on http://([\d.]+:\d+)", t).group(1)
                self.ready.set()

    def stop(self):
        if self.p.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait(10)


def post_runs(hosts, r, k, start_at, tag):
    """R runs round robin over the hosts, 16 keep-alive connections (one
    thread each) per host; returns when every run is recorded."""
    errs = []
    def worker(h, ns):
        try:
            hp = h.url[len("http://"):]
            c = http.client.HTTPConnection(hp, timeout=60)
            for n in ns:
                body = json.dumps({"k": k, "start_at": start_at, "tag": tag, "n": n})
                c.request("POST", "/runs/conc", body, {"Content-Type": "application/json"})
                resp = c.getresponse()
                data = resp.read()
                if resp.status != 202:
                    raise RuntimeError(f"POST /runs/conc: {resp.status} {data[:200]!r}")
            c.close()
        except Exception as e:  # reported below, after every thread ended
            errs.append(repr(e))
    # each POST waits for its commits: 16 connections per host let them group
    per = 16
    ts = [threading.Thread(target=worker, args=(h, range(i + len(hosts) * j, r, len(hosts) * per)))
          for i, h in enumerate(hosts) for j in range(per)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise RuntimeError(errs[0])


def measure(args, hosts, db, r, k):
    tag = f"{args.label}-{r}x{k}-{time.time_ns()}"
    # the creation of R runs must end before they start: 1.5 s plus ~4 ms a run
    margin_ms = 1500 + 4 * r
    start_at = int(time.time() * 1000) + margin_ms
    t_post = time.time()
    post_runs(hosts, r, k, start_at, tag)
    posted_ms = int(time.time() * 1000)
    # the counters before start_at: every run sleeps until then, so nothing
    # of the window is missed however long reading them takes
    c0 = {h.pid: cpu_ms(h.pid) for h in hosts}
    p0 = pg_cpu(args.pg_pid)
    x0 = tx_counters(db)
    m0 = [metrics(h.url) for h in hosts]
    load0 = open("/proc/loadavg").read().split()[:3]
    late = int(time.time() * 1000) > start_at
    time.sleep(max(0, start_at / 1000 - time.time()))
    w0 = start_at / 1000
    deadline = w0 + args.timeout
    where = f"record->'input'->>'tag' = '{tag}'"
    while True:
        time.sleep(0.25)
        done = int(db.q(f"SELECT count(*) FROM sluice.runs WHERE {where} AND status = 'completed'")[0])
        if done >= r:
            break
        if time.time() > deadline:
            raise RuntimeError(f"{done} of {r} runs completed after {args.timeout}s")
        for h in hosts:
            if h.p.poll() is not None:
                raise RuntimeError(f"host {h.pid} exited: {''.join(h.err[-5:])}")
    w1 = time.time()
    c1 = {h.pid: cpu_ms(h.pid) for h in hosts}
    p1 = pg_cpu(args.pg_pid)
    x1 = tx_counters(db)
    m1 = [metrics(h.url) for h in hosts]
    load1 = open("/proc/loadavg").read().split()[:3]
    end_ms = float(db.q(f"SELECT (max(extract(epoch FROM (record->>'finished_at')::timestamptz)) * 1000)::bigint "
                        f"FROM sluice.runs WHERE {where}")[0])
    first_ms = float(db.q(f"SELECT (min(extract(epoch FROM (record->>'created_at')::timestamptz)) * 1000)::bigint "
                          f"FROM sluice.runs WHERE {where}")[0])
    nsteps = int(db.q(f"SELECT count(*) FROM sluice.steps s JOIN sluice.runs r ON r.id = s.run_id "
                      f"WHERE r.{where} AND s.step_id ~ '^s[0-9]+$' AND s.status = 1")[0])
    if nsteps != r * k:
        raise RuntimeError(f"{nsteps} completed steps stored, expected {r * k}")
    wall_ms = end_ms - start_at
    poll_ms = (w1 - w0) * 1000
    per_host = []
    for h, a, b, ma, mb in zip(hosts, c0.values(), c1.values(), m0, m1):
        d = {"pid": h.pid, "cpu_ms": b - a}
        if ma["commits"] is not None and mb["commits"] is not None:
            d["commits"] = int(mb["commits"] - ma["commits"])
            d["batches"] = int(mb["batches"] - ma["batches"])
        per_host.append(d)
    host_cpu = sum(x["cpu_ms"] for x in per_host)
    pgc = pg_cpu_delta(p0, p1)
    commits = sum(x.get("commits", 0) for x in per_host)
    return {
        "bench": "sluice.pg_serve", "label": args.label, "session": os.environ.get("BENCH_SESSION", ""),
        "rev": os.environ.get("SLUICE_GIT_REV", ""), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hosts": len(hosts), "runs": r, "steps_per_run": k, "steps": r * k,
        "total_ms": round(wall_ms, 1), "steps_per_s": round(r * k / (wall_ms / 1000), 1),
        "create_ms": round(posted_ms - t_post * 1000, 1), "late_start": late,
        "first_created_to_start_ms": round(start_at - first_ms, 1),
        "poll_window_ms": round(poll_ms, 1),
        "write_xacts": x1[0] - x0[0], "xact_commit": x1[1] - x0[1],
        "wal_syncs": x1[2] - x0[2], "wal_sync_ms": round(x1[3] - x0[3], 1),
        "wal_sync_ms_per_sync": round((x1[3] - x0[3]) / (x1[2] - x0[2]), 3) if x1[2] > x0[2] else None,
        "write_xacts_per_s": round((x1[0] - x0[0]) / (poll_ms / 1000), 1),
        "host_commits": commits, "steps_per_commit": round(r * k / commits, 1) if commits else None,
        "per_host": per_host,
        "cpu": {"hosts_ms": host_cpu, "postgres_ms": pgc, "window_ms": round(poll_ms),
                "hosts_pct_of_window": round(100 * host_cpu / poll_ms, 1),
                "postgres_pct_of_window": round(100 * pgc / poll_ms, 1)},
        "loadavg": {"start": load0, "end": load1},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--hosts", type=int, default=1)
    ap.add_argument("--shapes", default="64x200,1000x20")
    ap.add_argument("--label", default="serve")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "pg_steps.jsonl"))
    ap.add_argument("--pg-pid", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    tmp = subprocess.check_output(["mktemp", "-d", "/tmp/sluice-pgserve.XXXXXX"], text=True).strip()
    hosts, db = [], None
    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    try:
        db = Psql(args.url)
        for i in range(args.hosts):
            hosts.append(Host(args, i, tmp))
        for h in hosts:
            if not h.ready.wait(60) or h.p.poll() is not None:
                raise RuntimeError(f"serve {h.pid} did not start: {''.join(h.err[-10:])}")
        for shape in args.shapes.split(","):
            r, k = (int(x) for x in shape.split("x"))
            line = json.dumps(measure(args, hosts, db, r, k))
            print(line, flush=True)
            os.makedirs(os.path.dirname(args.out), exist_ok=True)
            with open(args.out, "a") as f:
                f.write(line + "\n")
            if os.environ.get("SESSION_OUT"):
                with open(os.environ["SESSION_OUT"], "a") as f:
                    f.write(line + "\n")
    finally:
        for h in hosts:
            h.stop()
        if db:
            db.close()
        subprocess.call(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
