#!/usr/bin/env python3
"""The web dashboard in a real browser: Debian's headless Chromium, driven
by chromedriver through python3-selenium, against a spawned `sluice serve`
on 127.0.0.1 holding real runs (completed, failed with a traceback,
sleeping, a dag, a schedule, a stream and its consumer).

It asserts on what a person sees on each page, clicks what a person clicks
(filters, pages, cancel, the schedule switch, trigger now, the live tail,
the API key prompt), keeps a screenshot of each page in
$SLUICE_BROWSER_OUT, and fails on any JavaScript error in the console and
on any failed request it did not provoke on purpose.

Environment: SLUICE_BIN (the binary), SLUICE_BROWSER_OUT (screenshots).
Without chromium, chromium-driver or python3-selenium it fails, saying what
to install."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402

lib.require_browser()

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

BIN = os.environ.get("SLUICE_BIN") or os.path.join(os.path.dirname(__file__), "../../build/sluice")
OUT = os.environ.get("SLUICE_BROWSER_OUT") or os.path.join(tempfile.gettempdir(), "sluice-browser")
WAIT = 20

PIPELINES = r'''
pipeline("etl", function(input)
  local rows = step("extract", function() return { 1, 2, 3 } end)
  local n = step("transform", function() return #rows end)
  step("load", function() return { loaded = n, note = string.rep("x", 2000) } end)
  return { count = n }
end)

pipeline("broken", function()
  step("fetch", function() error("upstream said 503") end)
end)

pipeline("nap", function()
  step("before", function() return 1 end)
  sleep("1h")
  step("after", function() return 2 end)
end)

pipeline("flow", function()
  return dag{
    a = { function() return 1 end },
    b = { after = { "a" }, function(d) return d.a + 1 end },
    c = { after = { "a" }, function(d) return d.a + 2 end },
    d = { after = { "b", "c" }, function(d) return d.b + d.c end },
  }
end)

local tries = 0
pipeline("flaky", function()
  return step("call", { retries = 2, backoff = "10ms" }, function()
    tries = tries + 1
    if tries % 2 == 1 then error("first try fails") end
    return tries
  end)
end)

every.day.at("2am")("etl", { nightly = true })
every.monday.at("9am")("report", nil, { tz = "Europe/Berlin" })
pipeline("report", function() return step("render", function() return "ok" end) end)
consume("audit", "orders:*", function(events) return #events end)
'''

checks = []


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    checks.append(what)
    print("ok   %s" % what)


class Console:
    """The browser console: JavaScript errors fail the test at once; a
    failed request fails it unless the test provoked it (expect)."""

    def __init__(self, driver):
        self.d = driver
        self.expected = []

    def expect(self, pattern):
        self.expected.append(re.compile(pattern))

    def assert_clean(self, where):
        bad = []
        for entry in self.d.get_log("browser"):
            if entry["level"] != "SEVERE":
                continue
            if entry["source"] == "network" and any(p.search(entry["message"]) for p in self.expected):
                continue
            bad.append("%s: %s" % (entry["source"], entry["message"]))
        self.expected = []
        check(not bad, "no console errors on %s%s" % (where, "" if not bad else ":\n  " + "\n  ".join(bad)))


def main():
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="sluice-browser-")
    pipelines = os.path.join(tmp, "pipelines")
    os.makedirs(pipelines)
    with open(os.path.join(pipelines, "demo.lua"), "w") as f:
        f.write(PIPELINES)
    store = os.path.join(tmp, "store")
    log = os.path.join(tmp, "serve.log")
    serve = lib.Serve(BIN, pipelines, store, log)
    d = None
    try:
        d = lib.browser()
        run_tests(d, serve, pipelines, store, log)
        serve = None
    except Exception:
        traceback.print_exc()
        if d is not None:
            try:
                d.save_screenshot(os.path.join(OUT, "failure.png"))
                print("screenshot of the failure: %s" % os.path.join(OUT, "failure.png"))
            except Exception:
                pass
        if serve is not None:
            print("--- serve log ---\n" + serve.text()[-4000:])
        print("%d passed, 1 failed" % len(checks))
        return 1
    finally:
        if d is not None:
            d.quit()
        if serve is not None:
            serve.stop()
        for s in STARTED:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, 0 failed" % len(checks))
    return 0


STARTED = []


def run_tests(d, serve, pipelines, store, log):
    con = Console(d)
    # a page redraws what changed: an element may go stale between finding and reading it
    wait = WebDriverWait(d, WAIT, ignored_exceptions=(StaleElementReferenceException,))

    def shot(name):
        d.save_screenshot(os.path.join(OUT, name + ".png"))

    def loaded(what):
        wait.until(lambda d: d.execute_script("return document.body.dataset.ready"))
        if d.execute_script("return document.body.dataset.ready") != "true":
            raise AssertionError("%s did not load: %s" % (what, d.find_element(By.ID, "banner").text))

    def open_page(url):
        # a full load each time: a URL that differs only in its hash would
        # otherwise be a same-document navigation, and the page's last
        # state could be read before the new one is drawn
        d.get("about:blank")
        d.get(url)
        loaded(url)

    def nav(action):
        # an in-page navigation (a click, a form): waits for the next render
        before = d.execute_script("return Number(document.body.dataset.renders || 0)")
        action()
        wait.until(lambda d: d.execute_script("return Number(document.body.dataset.renders || 0)") > before)
        loaded(d.current_url)

    def text(css):
        return d.find_element(By.CSS_SELECTOR, css).text

    def api(method, path, body=None, **kw):
        return serve.request(method, path, body, **kw)

    # --- the runs a person would look at
    st, etl, _ = api("POST", "/runs/etl?wait=20s", {"day": "2026-12-01"})
    check(st == 200 and etl["status"] == "completed", "an etl run completed")
    st, broken, _ = api("POST", "/runs/broken?wait=20s", {})
    check(st == 200 and broken["status"] == "failed", "a broken run failed")
    st, nap, _ = api("POST", "/runs/nap", {})
    check(st == 202, "a nap run started")
    lib.wait_for(lambda: api("GET", "/runs/" + nap["run_id"])[1]["status"] == "sleeping", "the nap run to sleep")
    st, flow, _ = api("POST", "/runs/flow?wait=20s", {})
    check(st == 200 and flow["status"] == "completed", "a dag run completed")
    st, flaky, _ = api("POST", "/runs/flaky?wait=20s", {})
    check(st == 200 and flaky["status"] == "completed" and flaky["steps"][0]["attempts"] == 2, "a flaky run completed on its second attempt")
    st, posted, _ = api("POST", "/events", [{"type": "order.created", "stream": "orders:%d" % i, "data": {"n": i}}
                                             for i in (1, 2, 2, 3)])
    check(st == 201 and len(posted["ids"]) == 4, "four events appended")
    last_id = posted["ids"][-1]
    lib.wait_for(lambda: any(c["name"] == "audit" and c["checkpoint"] == last_id and c["lag"] == 0
                             for c in api("GET", "/consumers")[1]["consumers"]), "the consumer to catch up")
    # 55 more completed runs: the list has a second page and the trend a series
    for i in range(55):
        st, _, _ = api("POST", "/runs/etl?wait=20s", {"i": i})
        assert st == 200, st

    base = serve.url

    # --- the page itself: headers a browser relies on
    st, body, hdrs = api("GET", "/")
    csp = hdrs.get("Content-Security-Policy", "")
    check(st == 200 and "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp,
          "the page is served with a strict Content-Security-Policy")
    check(hdrs.get("ETag") and "no-cache" in hdrs.get("Cache-Control", ""), "the page has an ETag and Cache-Control")
    st, _, _ = api("GET", "/", headers={"If-None-Match": hdrs["ETag"]})
    check(st == 304, "a revalidation with the ETag is a 304")
    st, _, h2 = api("GET", "/ui/js/app.js")
    check(st == 200 and h2.get("Content-Type", "").startswith("text/javascript") and h2.get("ETag"),
          "scripts are served as JavaScript with an ETag")
    st, _, _ = api("GET", "/ui/%2e%2e/lua/api.lua")
    check(st == 404, "a path out of web/ is a 404")

    # --- runs page
    open_page(base + "/#/runs")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr[data-run]")) == 50)
    first = [tr.get_attribute("data-run") for tr in d.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr[data-run]")]
    newest = api("GET", "/runs?limit=1")[1]["runs"][0]["run_id"]
    check(first[0] == newest, "the runs page lists the newest run first")
    shot("runs")
    # live: a run started elsewhere appears without a reload
    st, fresh, _ = api("POST", "/runs/etl?wait=20s", {"live": True})
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-run="%s"]' % fresh["run_id"]))
    check(d.execute_script("return document.querySelector('#runs-table tbody tr').dataset.run") == fresh["run_id"],
          "a new run appears at the top of the list without a reload")
    # cursor pagination
    first = [tr.get_attribute("data-run") for tr in d.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr[data-run]")]
    nav(lambda: d.find_element(By.CSS_SELECTOR, '.pager a[rel="next"]').click())
    check("before=" in d.current_url, "the next page's cursor is in the address")
    older = [tr.get_attribute("data-run") for tr in d.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr[data-run]")]
    check(older and not set(older) & set(first), "Older shows the next page of runs, none repeated")
    check(broken["run_id"] in older and nap["run_id"] in older, "the older page holds the first runs")
    shot("runs-older")
    # filters
    open_page(base + "/#/runs")
    d.find_element(By.CSS_SELECTOR, "#f-status option[value=failed]").click()
    nav(lambda: d.find_element(By.CSS_SELECTOR, ".filters button[type=submit]").click())
    rows = d.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr[data-run]")
    check([r.get_attribute("data-run") for r in rows] == [broken["run_id"]] and
          rows[0].find_element(By.CSS_SELECTOR, ".status").text == "failed",
          "filtering by status failed shows the failed run only")
    open_page(base + "/#/runs?pipeline=flow")
    rows = d.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr[data-run]")
    check([r.get_attribute("data-run") for r in rows] == [flow["run_id"]], "filtering by pipeline")
    # search by id, with the keyboard only
    open_page(base + "/#/runs")
    box = d.find_element(By.ID, "run-search")
    nav(lambda: box.send_keys(broken["run_id"], Keys.ENTER))
    check(broken["run_id"] in text("h1"), "searching a run id opens that run")
    con.assert_clean("the runs page")

    # --- a failed run: its error and traceback
    open_page(base + "/#/runs/" + broken["run_id"])
    check("upstream said 503" in text(".error-message"), "the failed run shows its error message")
    check("demo.lua:10" in text(".error-box pre.traceback"), "the failed run shows its traceback with the file and line")
    check(text("h1 + .status") == "failed", "the failed run is marked failed")
    shot("run-failed")

    # --- a completed run: three steps in the waterfall, values expandable
    open_page(base + "/#/runs/" + etl["run_id"])
    bars = d.find_elements(By.CSS_SELECTOR, ".waterfall .wf-step")
    check(len(bars) == 3, "the completed run's waterfall has its 3 steps")
    order = [b.get_attribute("data-step") for b in bars]
    check(order == ["extract", "transform", "load"], "in the order they ran (%s)" % order)
    bars[2].click()
    wait.until(lambda d: "load" in d.find_element(By.CSS_SELECTOR, ".step-detail h2").text)
    check("2 KB" in text(".step-detail") or "KB" in text(".step-detail"), "a step's stored size is shown")
    d.find_element(By.CSS_SELECTOR, ".step-detail button.show-value").send_keys(Keys.ENTER)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".step-detail pre.value"))
    shown = text(".step-detail pre.value")
    check('"loaded": 3' in shown and '"note": "' + "x" * 2000 + '"' in shown,
          "expanding the step's value (keyboard) shows what the step returned")
    check('"count": 3' in text(".io"), "the run's result is shown")
    shot("run-completed")

    # --- the dag run: four steps, the two in the middle side by side when they overlap
    open_page(base + "/#/runs/" + flow["run_id"])
    check(len(d.find_elements(By.CSS_SELECTOR, ".waterfall .wf-step")) == 4, "the dag run's waterfall has its 4 steps")
    shot("run-dag")

    # --- a retried step: its bar says how many attempts it took
    open_page(base + "/#/runs/" + flaky["run_id"])
    bar = d.find_element(By.CSS_SELECTOR, '.waterfall .wf-step[data-step="call"]')
    check("wf-retried" in bar.get_attribute("class") and "×2" in bar.text and "2 attempts" in bar.get_attribute("title"),
          "a retried step shows its attempts in the waterfall")

    # --- the sleeping run: a gap for the sleep, then cancel it
    open_page(base + "/#/runs/" + nap["run_id"])
    check(text("h1 + .status") == "sleeping", "the sleeping run is marked sleeping")
    gap = d.find_element(By.CSS_SELECTOR, ".waterfall .wf-gap")
    check("sleep" in gap.text, "the sleep is a gap in the waterfall, labelled")
    shot("run-sleeping")
    d.find_element(By.ID, "cancel").click()
    wait.until(lambda d: d.find_element(By.ID, "cancel").text == "Confirm cancel")
    d.find_element(By.ID, "cancel").click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "h1 + .status").text == "cancelled")
    check(api("GET", "/runs/" + nap["run_id"])[1]["status"] == "cancelled", "cancel on the page cancels the run")
    check(not d.find_elements(By.ID, "cancel"), "a cancelled run has no cancel button")
    shot("run-cancelled")
    # rerun from a step
    open_page(base + "/#/runs/" + etl["run_id"])
    d.find_element(By.CSS_SELECTOR, "#rerun-from option[value=transform]").click()
    nav(lambda: d.find_element(By.ID, "rerun").click())
    new_id = d.execute_script("return document.querySelector('.run-id').textContent")
    rerun = lib.wait_for(lambda: (lambda r: r if r["status"] == "completed" else None)(api("GET", "/runs/" + new_id)[1]),
                         "the rerun to complete")
    check(rerun.get("rerun_of") == etl["run_id"], "rerun from a step starts a new run of the same input")
    con.assert_clean("the run pages")

    # --- a pipeline: file, schedules, grid, trend, success rate
    open_page(base + "/#/pipelines/etl")
    check(text("#pipeline-file") == os.path.join(pipelines, "demo.lua:2"), "the pipeline page shows its file and line")
    check(re.search(r"\b[0-9a-f]{16}\b", text(".facts")), "the pipeline page shows the source hash")
    check("etl@0 2 * * *" in d.find_element(By.TAG_NAME, "main").text, "the pipeline page lists its schedule")
    grid_rows = d.find_elements(By.CSS_SELECTOR, "#grid tbody tr")
    check([r.find_element(By.CSS_SELECTOR, "th").text for r in grid_rows] == ["extract", "transform", "load"],
          "the grid has a row per step")
    check(len(d.find_elements(By.CSS_SELECTOR, "#grid thead th")) == 21, "the grid has a column per recent run (20)")
    check(len(d.find_elements(By.CSS_SELECTOR, "#grid tbody .cell.st-completed")) == 60, "the grid's cells are coloured by status")
    check(d.find_elements(By.CSS_SELECTOR, "#trend .uplot canvas"), "the duration trend is drawn")
    check(text("#success-rate b") == "100%", "the success rate of etl is 100%")
    shot("pipeline")
    open_page(base + "/#/pipelines/broken")
    check(text("#success-rate b") == "0%", "the success rate of broken is 0%")
    open_page(base + "/#/pipelines")
    check(len(d.find_elements(By.CSS_SELECTOR, "tr[data-pipeline]")) == 7, "the pipelines page lists the 7 pipelines")
    shot("pipelines")
    # the dag drawing: the API does not give dependencies yet, so the graph
    # module is checked on its own with the same dag, in this browser
    n_nodes, n_edges, order = d.execute_async_script("""
      const done = arguments[arguments.length - 1];
      import('/ui/js/graph.js').then(async ({ drawGraph }) => {
        const svg = await drawGraph([{id:'a',status:'completed'},{id:'b',status:'completed'},{id:'c',status:'failed'},{id:'d'}],
                                    [['a','b'],['a','c'],['b','d'],['c','d']]);
        document.querySelector('main').append(svg);
        const x = (id) => svg.querySelector(`[data-node="${id}"]`).transform.baseVal[0].matrix.e;
        done([svg.querySelectorAll('.node').length, svg.querySelectorAll('.edge').length, [x('a'), x('b'), x('d')]]);
      }, (e) => done([0, 0, String(e)]));""")
    check(n_nodes == 4 and n_edges == 4 and order[0] < order[1] < order[2],
          "a dag is drawn as a graph, left to right in dependency order")
    shot("dag-graph")
    con.assert_clean("the pipeline pages")

    # --- schedules: next fire, words, toggle across reload and restart, trigger now
    name = "etl@0 2 * * *"
    row = '#schedules-table tr[data-schedule="%s"]' % name
    expect_next = subprocess.run([BIN, "cron", "next", "0 2 * * *", "-n", "1"], capture_output=True, text=True,
                                 check=True).stdout.strip()
    open_page(base + "/#/schedules")
    shown = d.find_element(By.CSS_SELECTOR, row + " .next time")
    check(shown.get_attribute("datetime") == expect_next.replace("Z", "Z"), "the next fire is the cron engine's")
    check(shown.text == expect_next.replace("T", " ").replace("Z", ""), "the next fire reads %s" % shown.text)
    check("every day at 02:00 UTC" in text(row), "the schedule is in words")
    berlin = '#schedules-table tr[data-schedule="report@0 9 * * 1"]'
    check("every Monday at 09:00 Europe/Berlin" in text(berlin), "a schedule in a time zone is in words with its zone")
    want = subprocess.run([BIN, "cron", "next", "0 9 * * 1", "--tz", "Europe/Berlin", "-n", "1"], capture_output=True,
                          text=True, check=True).stdout.strip()
    check(d.find_element(By.CSS_SELECTOR, berlin + " .next time").get_attribute("datetime") == want,
          "its next fire is the cron engine's in that zone (%s)" % want)
    shot("schedules")
    d.find_element(By.CSS_SELECTOR, row + " input[role=switch]").click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, row).get_attribute("data-enabled") == "false")
    check(text(row + " .state") == "disabled", "the switch disables the schedule")
    d.refresh()
    loaded("the reloaded schedules page")
    check(d.find_element(By.CSS_SELECTOR, row).get_attribute("data-enabled") == "false"
          and not d.find_element(By.CSS_SELECTOR, row + " input[role=switch]").is_selected(),
          "the schedule stays disabled after a reload of the page")
    d.get("about:blank")  # nothing polls the serve that is about to stop
    serve.stop()
    serve2 = lib.Serve(BIN, pipelines, store, log)
    STARTED.append(serve2)
    serve.url = serve2.url
    base = serve2.url
    serve = serve2

    def api(method, path, body=None, **kw):  # noqa: F811 (the new serve)
        return serve2.request(method, path, body, **kw)
    open_page(base + "/#/schedules")
    check(d.find_element(By.CSS_SELECTOR, row).get_attribute("data-enabled") == "false"
          and text(row + " .state") == "disabled", "the schedule stays disabled after a restart of serve")
    d.find_element(By.CSS_SELECTOR, row + " button.trigger").click()
    link = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row + " .trigger-result a"))
    check(link[0].text.startswith(name + "@manual-"), "trigger now starts a run named after the schedule")
    d.find_element(By.CSS_SELECTOR, row + " input[role=switch]").click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, row).get_attribute("data-enabled") == "true")
    check(text(row + " .next time") == expect_next.replace("T", " ").replace("Z", ""), "enabled again, it fires next at the same time")
    con.assert_clean("the schedules page")

    # --- streams and consumers: keys with counts, checkpoint and lag, live tail
    open_page(base + "/#/streams")
    counts = {r.get_attribute("data-stream"): r.find_elements(By.CSS_SELECTOR, "td")[1].text
              for r in d.find_elements(By.CSS_SELECTOR, "tr[data-stream]")}
    check(counts == {"orders:1": "1", "orders:2": "2", "orders:3": "1"}, "the stream keys are listed with their counts")
    crow = d.find_element(By.CSS_SELECTOR, 'tr[data-consumer="audit"]')
    check(last_id in crow.text and crow.find_element(By.CSS_SELECTOR, ".lag").text == "0",
          "the consumer's checkpoint and lag are shown")
    wait.until(lambda d: "following" in d.find_element(By.ID, "tail-state").text)
    tail = d.find_element(By.ID, "tail-pattern")
    tail.clear()
    tail.send_keys("orders:*", Keys.ENTER)
    wait.until(lambda d: "following orders:*" in d.find_element(By.ID, "tail-state").text)
    # the page subscribes from LATEST once the stream's response starts: post until one shows
    seen = {}

    def tail_shows():
        st, doc, _ = api("POST", "/events", {"type": "order.paid", "stream": "orders:9", "data": {"total": 42}})
        seen[doc["id"]] = True
        return [tr for tr in d.find_elements(By.CSS_SELECTOR, "#tail tbody tr") if tr.get_attribute("data-id") in seen]
    rows = lib.wait_for(tail_shows, "a posted event in the live tail", WAIT, every=0.3)
    check("order.paid" in rows[0].text and "orders:9" in rows[0].text, "the live tail shows new events of the pattern")
    api("POST", "/events", {"type": "noise", "stream": "other:1", "data": {}})
    st, doc, _ = api("POST", "/events", {"type": "order.late", "stream": "orders:9", "data": {}})
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#tail tbody tr[data-id="%s"]' % doc["id"]))
    check(not [tr for tr in d.find_elements(By.CSS_SELECTOR, "#tail tbody tr") if "other:1" in tr.text],
          "the tail leaves out keys that do not match")
    shot("streams")
    con.assert_clean("the streams page")

    # --- host
    open_page(base + "/#/host")
    check(re.match(r"^\d", text("#uptime b")), "the host page shows the uptime")
    check(text("#runs-active b").isdigit(), "the host page shows runs active")
    check(re.match(r"^\d+\.\d$", text("#batch-size b")), "the host page shows the writer batch size")
    check(re.search(r"\d", text("#commit-latency b")), "the host page shows the commit latency")
    check(re.search(r"(KB|MB|GB)$", text("#store-size b")), "the host page shows the store size")
    shot("host")
    con.assert_clean("the host page")

    # --- namespace-scoped paths
    open_page(base + "/default/pipelines/history")
    check(d.execute_script("return document.body.dataset.page") == "runs" and text("#scope") == "namespace default",
          "/{org}/pipelines/history is the runs page of the namespace")
    check(len(d.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr[data-run]")) > 0, "with its runs")
    open_page(base + "/default/pipelines/schedules")
    check(d.find_elements(By.CSS_SELECTOR, row), "/{org}/pipelines/schedules is the schedules page")
    open_page(base + "/default/pipelines")
    check(len(d.find_elements(By.CSS_SELECTOR, "tr[data-pipeline]")) == 7, "/{org}/pipelines is the pipelines page")
    open_page(base + "/acme/pipelines/history")
    check(d.find_element(By.CSS_SELECTOR, "#runs-table td.empty").text == "No runs match.",
          "another namespace sees none of these runs")
    con.assert_clean("the namespace pages")

    # --- keyboard: from the top of the runs page to a run, with Tab and Enter
    open_page(base + "/#/runs")
    d.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    for _ in range(40):
        el = d.switch_to.active_element
        href = el.get_attribute("href") or ""
        if "#/runs/" in href:
            break
        el.send_keys(Keys.TAB)
    check("#/runs/" in href, "a run link is reachable with Tab")
    nav(lambda: d.switch_to.active_element.send_keys(Keys.ENTER))
    check(d.execute_script("return document.body.dataset.page") == "runs-detail", "Enter on it opens the run")

    # --- phone width and dark mode
    d.set_window_size(390, 844)
    for url, name in ((base + "/#/runs", "runs-phone"), (base + "/#/runs/" + broken["run_id"], "run-phone"),
                      (base + "/#/schedules", "schedules-phone")):
        open_page(url)
        over = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        check(over <= 0, "%s fits a phone's width (overflow %dpx)" % (name, over))
        shot(name)
    d.set_window_size(1280, 900)
    d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    open_page(base + "/#/runs/" + etl["run_id"])
    bg = d.execute_script("return getComputedStyle(document.body).backgroundColor")
    check(sum(int(x) for x in re.findall(r"\d+", bg)[:3]) < 120, "dark mode follows prefers-color-scheme (%s)" % bg)
    shot("run-dark")
    d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    con.assert_clean("phone width and dark mode")

    # --- size of the runs page, in a fresh browser (nothing cached)
    d2 = lib.browser()
    try:
        d2.get(base + "/#/runs")
        WebDriverWait(d2, WAIT).until(lambda d: d.execute_script("return document.body.dataset.ready") == "true")
        total = d2.execute_script("""
          const n = performance.getEntriesByType('navigation')[0];
          return performance.getEntriesByType('resource').reduce((s, r) => s + r.decodedBodySize, n.decodedBodySize);""")
        check(0 < total <= 200 * 1024, "the runs page transfers %d bytes (at most 200 KB)" % total)
    finally:
        d2.quit()

    # --- an API key: asked once when the API answers 401, kept for the tab
    out = subprocess.run([BIN, "keys", "add", "web", "--role", "admin", "--store", store],
                         capture_output=True, text=True, check=True).stdout
    key = out.strip().splitlines()[-1]
    con.expect(r"/runs\?.* 401")
    d.get("about:blank")
    d.get(base + "/#/runs")
    wait.until(lambda d: d.find_element(By.ID, "key-dialog").is_displayed())
    shot("key-prompt")
    d.find_element(By.ID, "key-input").send_keys(key, Keys.ENTER)
    loaded("the runs page after the key")
    check(len(d.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr[data-run]")) > 0,
          "after a 401 the page asks for a key once and then shows the runs")
    check(key not in d.current_url, "the key is not in the URL")
    open_page(base + "/#/schedules")
    check(not d.find_element(By.ID, "key-dialog").is_displayed(), "the key is kept for the tab: no second prompt")
    check(d.execute_script("return sessionStorage.getItem('sluice.api_key')") == key, "the key is in sessionStorage")
    con.assert_clean("the key prompt")
    serve2.stop()
    STARTED.remove(serve2)


if __name__ == "__main__":
    sys.exit(main())
