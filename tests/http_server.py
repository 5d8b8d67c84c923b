#!/usr/bin/env python3
"""tests/http_server.py: the HTTP server the sluice.http specs talk to.

Listens on 127.0.0.1, port 0 (the kernel picks one), prints the port on the
first line of stdout, and serves until killed; with `--tls CERT KEY`, over
TLS with that certificate. Threaded, HTTP/1.1 keep-alive,
and a listen backlog of 1024 (python -m http.server has 5, and a burst of 200
connections hangs on it). Routes:
  /echo              {"method","path","query","headers","body","client_port"}
  /status/N          answers status N with a small JSON body
  /json              a JSON document with a 64-bit integer
  /slow?ms=N         answers after N milliseconds
  /bytes?n=N         N bytes of 'x' (with Content-Length)
  /chunked?n=N       N bytes of 'y' in 1000-byte chunks, no Content-Length
  /redirect?to=URL   302 to URL (or /echo)
  /redirects?n=N     a chain of N redirects ending at /echo
  /headers           sets two Set-Cookie headers and X-Custom
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype="application/json", extra=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        u = urlsplit(self.path)
        q = {k: v[0] if len(v) == 1 else v for k, v in parse_qs(u.query).items()}
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode("latin-1") if n else ""
        if u.path == "/echo":
            self.reply(200, json.dumps({
                "method": self.command, "path": u.path, "query": q, "raw_query": u.query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body, "client_port": self.client_address[1],
            }))
        elif u.path.startswith("/status/"):
            code = int(u.path.rsplit("/", 1)[1])
            self.reply(code, json.dumps({"status": code}))
        elif u.path == "/json":
            self.reply(200, '{"id": 9007199254740993, "name": "sluice", "tags": ["a", "b"], "ratio": 0.5}')
        elif u.path == "/slow":
            time.sleep(int(q.get("ms", "1000")) / 1000)
            self.reply(200, json.dumps({"slept": int(q.get("ms", "1000"))}))
        elif u.path == "/bytes":
            self.reply(200, b"x" * int(q.get("n", "0")), "application/octet-stream")
        elif u.path == "/chunked":
            left = int(q.get("n", "0"))
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while left > 0:
                k = min(1000, left)
                self.wfile.write(b"%x\r\n%s\r\n" % (k, b"y" * k))
                left -= k
            self.wfile.write(b"0\r\n\r\n")
        elif u.path == "/redirect":
            self.reply(302, "", extra=[("Location", q.get("to", "/echo"))])
        elif u.path == "/redirects":
            left = int(q.get("n", "1"))
            to = "/echo" if left <= 1 else "/redirects?n=%d" % (left - 1)
            self.reply(302, "", extra=[("Location", to)])
        elif u.path == "/headers":
            self.reply(200, "{}", extra=[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                                         ("X-Custom", "yes")])
        else:
            self.reply(404, json.dumps({"error": "no route " + u.path}))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any


class Server(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that timed out and hung up is what some specs do


if __name__ == "__main__":
    srv = Server(("127.0.0.1", 0), Handler)
    if len(sys.argv) == 4 and sys.argv[1] == "--tls":
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)
