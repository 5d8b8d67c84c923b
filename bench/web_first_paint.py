#!/usr/bin/env python3
"""bench/web_first_paint.py: the dashboard's runs page on a store of a
million runs (by hand; results in bench/RESULTS.md, "Dashboard").

  /usr/bin/python3 bench/web_first_paint.py [--runs N] [--store DIR] [--loads K]

1. Fills DIR (default a new temp dir, removed at the end) with N finished
   runs (bench/web_runs.lua), unless it holds them already.
2. Starts `sluice serve` on it (127.0.0.1, a free port, fsync on), then
   waits (at most 90 s) for the machine to be quiet: CPU busy < 10 % over
   3 s, the gate of the other benchmarks; the busy share is recorded.
3. The API page the runs page needs, GET /runs?limit=50, on one keep-alive
   connection: 500 requests after 50 to warm up, latency p50/p99 measured
   around each request by the client.
4. Headless Chromium (Debian's, through chromedriver), cache disabled: K
   loads of /#/runs, each read from the browser's Performance API:
   first-contentful-paint, and "interactive": the page's own mark
   sluice:ready:runs, set once the table of the newest 50 runs is drawn and
   its handlers are attached (navigation start = 0), and sluice:runs:data,
   when the page has the API's answer decoded. Total bytes: the
   decoded bodies of the document and every resource it loaded.

Prints one JSON line and appends it to bench/out/web.jsonl."""
import argparse
import datetime
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "browser"))
import lib  # noqa: E402


def cpu_busy(seconds=3.0):
    """The share of CPU time not idle over the next `seconds` (/proc/stat)."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t1, i1 = read()
    time.sleep(seconds)
    t2, i2 = read()
    return 1 - (i2 - i1) / max(1, t2 - t1)


def quiet_gate(limit=0.10, most=90.0):
    """Waits (at most `most` s) for the machine to be quiet, like the other
    benchmarks' gate: CPU busy under `limit` over 3 s. Returns the last busy share."""
    deadline = time.monotonic() + most
    busy = cpu_busy()
    while busy >= limit and time.monotonic() < deadline:
        busy = cpu_busy()
    return busy


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000000)
    ap.add_argument("--store")
    ap.add_argument("--loads", type=int, default=7)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "sluice"))
    a = ap.parse_args()
    lib.require_browser()
    tmp = tempfile.mkdtemp(prefix="sluice-webbench-")
    store = a.store or os.path.join(tmp, "store")
    os.makedirs(store, exist_ok=True)
    marker = os.path.join(store, "web_runs.json")
    fill = None
    if not os.path.exists(marker):
        out = subprocess.run([a.bin, os.path.join(HERE, "web_runs.lua"), "--store", store, str(a.runs)],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        fill = json.loads(out)
        with open(marker, "w") as f:
            f.write(out)
    else:
        with open(marker) as f:
            fill = json.loads(f.read())
    pipelines = os.path.join(tmp, "pipelines")
    os.makedirs(pipelines)
    with open(os.path.join(pipelines, "p.lua"), "w") as f:
        f.write('pipeline("etl", function() return 1 end)\n')
    serve = lib.Serve(a.bin, pipelines, store, os.path.join(tmp, "serve.log"))
    busy_before = quiet_gate()
    d = None
    try:
        host, port = serve.addr.split(":")
        c = http.client.HTTPConnection(host, int(port), timeout=30)
        lat = []
        for i in range(550):
            t = time.perf_counter()
            c.request("GET", "/runs?limit=50")
            r = c.getresponse()
            body = r.read()
            dt = (time.perf_counter() - t) * 1000
            assert r.status == 200 and len(json.loads(body)["runs"]) == 50
            if i >= 50:
                lat.append(dt)
        c.close()
        d = lib.browser()
        d.execute_cdp_cmd("Network.enable", {})
        d.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        loads = []
        for _ in range(a.loads + 1):  # the first load warms the browser itself
            d.get("about:blank")
            d.get(serve.url + "/#/runs")
            lib.wait_for(lambda: d.execute_script(
                "return performance.getEntriesByName('sluice:ready:runs').length > 0"), "the runs page", 60)
            loads.append(d.execute_script("""
              const n = performance.getEntriesByType('navigation')[0];
              const fcp = performance.getEntriesByName('first-contentful-paint')[0];
              const ready = performance.getEntriesByName('sluice:ready:runs')[0];
              const data = performance.getEntriesByName('sluice:runs:data')[0];
              const api = performance.getEntriesByType('resource').find((r) => r.name.includes('/runs?'));
              const res = performance.getEntriesByType('resource');
              return {fcp_ms: fcp ? fcp.startTime : null, interactive_ms: ready.startTime, data_ms: data.startTime,
                      api_in_browser_ms: api.responseEnd - api.requestStart,
                      dom_content_loaded_ms: n.domContentLoadedEventEnd,
                      bytes: res.reduce((s, r) => s + r.decodedBodySize, n.decodedBodySize),
                      transferred: res.reduce((s, r) => s + r.transferSize, n.transferSize),
                      requests: res.length + 1,
                      rows: document.querySelectorAll('#runs-table tbody tr[data-run]').length};"""))
        loads = loads[1:]
        assert all(x["rows"] == 50 for x in loads)
        res = {
            "bench": "web_first_paint", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "cpus": os.cpu_count(), "runs_in_store": fill["runs"],
            "store_MB": round(os.path.getsize(os.path.join(store, "data.mdb")) / 1048576),
            "api_runs_page": {"n": len(lat), "p50_ms": round(pct(lat, 50), 3), "p99_ms": round(pct(lat, 99), 3),
                              "max_ms": round(max(lat), 3)},
            "loads": len(loads),
            "fcp_ms_median": round(statistics.median(x["fcp_ms"] for x in loads), 1),
            "interactive_ms_median": round(statistics.median(x["interactive_ms"] for x in loads), 1),
            "interactive_ms_max": round(max(x["interactive_ms"] for x in loads), 1),
            "data_in_page_ms_median": round(statistics.median(x["data_ms"] for x in loads), 1),
            "api_in_browser_ms_median": round(statistics.median(x["api_in_browser_ms"] for x in loads), 1),
            "load_avg_1m": os.getloadavg()[0], "cpu_busy_before": round(busy_before, 3),
            "bytes": loads[-1]["bytes"], "transferred": loads[-1]["transferred"], "requests": loads[-1]["requests"],
            "chromium": d.capabilities.get("browserVersion"),
            "sluice": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip(),
        }
        line = json.dumps(res)
        print(line)
        os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
        with open(os.path.join(HERE, "out", "web.jsonl"), "a") as f:
            f.write(line + "\n")
    finally:
        if d is not None:
            d.quit()
        serve.stop()
        if not a.store:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(pipelines, ignore_errors=True)


if __name__ == "__main__":
    main()
