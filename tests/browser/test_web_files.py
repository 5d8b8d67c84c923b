#!/usr/bin/env python3
"""The dashboard's files as served, without a browser: every file under web/
comes back from a real `sluice serve` byte for byte with its content type,
an ETag that a revalidation answers with 304, HEAD without a body, and the
page's Content-Security-Policy; paths out of web/ are 404s; with
SLUICE_WEB_ROOT the files are read from disk (an edit shows without a
rebuild). And the rules the page's security rests on, checked in its
source: no HTML built from strings (innerHTML and friends), no inline
script, style or event handler in index.html, no eval, and the API called
only with GET, POST and PUT.

Environment: SLUICE_BIN (the binary)."""
import http.client
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WEB = os.path.join(ROOT, "web")
BIN = os.environ.get("SLUICE_BIN") or os.path.join(ROOT, "build", "sluice")
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
         ".txt": "text/plain", ".md": "text/plain", "": "text/plain"}

passed = 0


def check(cond, what):
    global passed
    if not cond:
        raise AssertionError(what)
    passed += 1
    print("ok   %s" % what)


def raw_get(addr, path, method="GET", headers=None):
    host, port = addr.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, dict(r.getheaders()), body


def web_files():
    out = []
    for d, _, files in os.walk(WEB):
        for f in files:
            out.append(os.path.relpath(os.path.join(d, f), WEB))
    return sorted(out)


def source_rules():
    own = [f for f in web_files() if f.endswith(".js") and not f.startswith("vendor/")]
    check(own, "the dashboard has its own scripts")
    forbidden = re.compile(r"\b(innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\s*\(|new Function)\b")
    for f in own:
        with open(os.path.join(WEB, f)) as fh:
            src = fh.read()
        m = forbidden.search(src)
        check(not m, "web/%s builds no HTML from strings and evaluates no code%s" % (f, " (found %s)" % m.group(0) if m else ""))
        methods = set(re.findall(r"request\('([A-Z]+)'", src))
        check(methods <= {"GET", "POST", "PUT"}, "web/%s calls the API with GET, POST or PUT only (%s)" % (f, sorted(methods)))
    with open(os.path.join(WEB, "index.html")) as fh:
        page = fh.read()
    check(not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "index.html has no inline script")
    check("<style" not in page and not re.search(r"\sstyle=", page), "index.html has no inline style")
    check(not re.search(r"\son[a-z]+=", page), "index.html has no inline event handler")


def served(serve):
    files = web_files()
    for f in files:
        with open(os.path.join(WEB, f), "rb") as fh:
            want = fh.read()
        st, hdrs, body = raw_get(serve.addr, "/ui/" + f)
        ext = os.path.splitext(f)[1]
        check(st == 200 and body == want, "GET /ui/%s is the file, byte for byte" % f)
        check(hdrs.get("Content-Type", "").startswith(TYPES[ext]), "/ui/%s is %s" % (f, hdrs.get("Content-Type")))
        etag = hdrs.get("ETag")
        st, h304, body = raw_get(serve.addr, "/ui/" + f, headers={"If-None-Match": etag})
        check(st == 304 and body == b"" and h304.get("ETag") == etag, "/ui/%s revalidates with its ETag (304)" % f)
    st, hdrs, body = raw_get(serve.addr, "/", method="HEAD")
    check(st == 200 and body == b"" and int(hdrs["Content-Length"]) == os.path.getsize(os.path.join(WEB, "index.html")),
          "HEAD / has the page's length and no body")
    csp = hdrs.get("Content-Security-Policy", "")
    for part in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
        check(part in csp, "the CSP has %s" % part)
    check("unsafe" not in csp, "the CSP allows nothing unsafe")
    check(hdrs.get("X-Content-Type-Options") == "nosniff", "nosniff")
    for path in ("/acme/pipelines", "/acme/pipelines/history", "/acme/pipelines/schedules"):
        st, hdrs, body = raw_get(serve.addr, path)
        check(st == 200 and hdrs["Content-Type"].startswith("text/html") and b"/ui/js/app.js" in body,
              "%s serves the page" % path)
    for path in ("/ui/../lua/api.lua", "/ui/%2e%2e/lua/api.lua", "/ui/.hidden", "/ui/nope.js",
                 "/ui/js/app.js%00.css", "/ui/vendor/../index.html"):
        st, hdrs, body = raw_get(serve.addr, path)
        check(st == 404 and "application/json" in hdrs.get("Content-Type", ""), "%s is a 404" % path)
    st, hdrs, _ = raw_get(serve.addr, "/acme/nothing")
    check(st == 404, "a path no route has is still a 404 (/acme/nothing)")
    st, hdrs, _ = raw_get(serve.addr, "/", method="POST")
    check(st == 405 and "GET" in hdrs.get("Allow", ""), "POST / is a 405")


def main():
    tmp = tempfile.mkdtemp(prefix="sluice-web-")
    serves = []
    try:
        source_rules()
        pipelines = os.path.join(tmp, "pipelines")
        os.makedirs(pipelines)
        with open(os.path.join(pipelines, "p.lua"), "w") as f:
            f.write('pipeline("p", function() return 1 end)\n')
        s = lib.Serve(BIN, pipelines, os.path.join(tmp, "store"), os.path.join(tmp, "serve.log"))
        serves.append(s)
        served(s)
        s.stop()
        # SLUICE_WEB_ROOT: a copy of web/ on disk, edited while serve runs
        web = os.path.join(tmp, "web")
        shutil.copytree(WEB, web)
        s = lib.Serve(BIN, pipelines, os.path.join(tmp, "store"), os.path.join(tmp, "serve2.log"),
                      env={"SLUICE_WEB_ROOT": web})
        serves.append(s)
        st, h1, body = raw_get(s.addr, "/ui/css/app.css")
        check(st == 200 and body.startswith(b"/* app.css"), "with SLUICE_WEB_ROOT the files come from disk")
        with open(os.path.join(web, "css", "app.css"), "ab") as f:
            f.write(b"\n/* edited */\n")
        st, h2, body = raw_get(s.addr, "/ui/css/app.css", headers={"If-None-Match": h1["ETag"]})
        check(st == 200 and body.endswith(b"/* edited */\n") and h2["ETag"] != h1["ETag"],
              "an edit on disk is served at once, with a new ETag")
        st, _, _ = raw_get(s.addr, "/ui/missing.js")
        check(st == 404, "a file missing from SLUICE_WEB_ROOT is a 404")
    except Exception as e:
        print("FAIL: %s" % e)
        for s in serves:
            print("--- serve log ---\n" + s.text()[-3000:])
        print("%d passed, 1 failed" % passed)
        return 1
    finally:
        for s in serves:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, 0 failed" % passed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
