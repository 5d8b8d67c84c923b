"""What the browser tests and the dashboard benchmark share: a real
`sluice serve` on 127.0.0.1 with a free port (read from its log line), a
small HTTP client for the JSON API, and a headless Chromium driven by
Debian's chromedriver through python3-selenium.

Everything waits on conditions with bounded deadlines, never on a fixed
sleep. A missing browser is a failure that says what to install."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver python3-selenium (they are in scripts/packages.txt)"


def require_browser():
    """Fails loudly (exit 1) unless chromium, chromedriver and selenium are here."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("python3-selenium (for %s)" % sys.executable)
    if missing:
        print("FAIL: the browser test cannot run, missing: %s\n      %s" % (", ".join(missing), INSTALL))
        sys.exit(1)


def wait_for(cond, what, timeout=15.0, every=0.02):
    """Polls cond() until it returns a true value (returned), or raises."""
    deadline = time.monotonic() + timeout
    last_err = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # the condition may fail until it holds
            last_err = e
        time.sleep(every)
    raise AssertionError("timed out after %.0fs waiting for %s%s" % (timeout, what,
                         " (last error: %r)" % last_err if last_err else ""))


class Serve:
    """`sluice serve DIR --store STORE --listen 127.0.0.1:0`, stopped by pid."""

    def __init__(self, bin_path, pipelines, store, log_path, env=None, args=()):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        e = dict(os.environ)
        e.update(env or {})
        # where this serve's lines start, taken before it can write one (a
        # restarted serve appends to the log of the one before)
        start = os.path.getsize(log_path)
        self.proc = subprocess.Popen([bin_path, "serve", pipelines, "--store", store, "--listen", "127.0.0.1:0"] + list(args),
                                     stdout=self.log, stderr=subprocess.STDOUT, env=e, cwd=os.path.dirname(pipelines))

        def addr():
            if self.proc.poll() is not None:
                raise AssertionError("serve exited with %s:\n%s" % (self.proc.returncode, self.text()))
            with open(log_path, "rb") as f:
                f.seek(start)
                m = re.search(rb"listening on http://([0-9.]+:[0-9]+)", f.read())
            return m and m.group(1).decode()
        try:
            self.addr = wait_for(addr, "serve to listen", 30)
            self.url = "http://" + self.addr
            wait_for(lambda: self.request("GET", "/ready")[0] == 200, "serve to be ready", 30)
        except BaseException:
            self.proc.kill()  # never left running behind a failed start
            self.proc.wait(timeout=10)
            self.log.close()
            raise

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def request(self, method, path, body=None, headers=None, timeout=30):
        data = None
        h = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                status, hdrs = r.status, dict(r.headers)
        except urllib.error.HTTPError as e:
            raw, status, hdrs = e.read(), e.code, dict(e.headers)
        ctype = hdrs.get("Content-Type", "")
        doc = json.loads(raw) if raw and "json" in ctype else raw
        return status, doc, hdrs

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def browser(width=1280, height=900):
    """A fresh headless Chromium (new profile, so nothing is cached), with the
    browser console log kept for get_log('browser'). Times show in UTC."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=%d,%d" % (width, height), "--disable-extensions", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--lang=en-US"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    env = dict(os.environ)
    env["TZ"] = "UTC"
    return webdriver.Chrome(service=Service(CHROMEDRIVER, env=env), options=opts)
