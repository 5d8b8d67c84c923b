# bench/http/idle.py PORT N PID: opens N keep-alive connections to serve,
# each after one GET /health, holds them, and prints serve's VmRSS (kB)
# before and with them open.
import socket, sys, time
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def rss():
    for line in open("/proc/%s/status" % pid):
        if line.startswith("VmRSS:"): return int(line.split()[1])
before = rss()
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    conns.append(s)
for s in conns:
    buf = b""
    while b'"uptime_s"' not in buf: buf += s.recv(4096)
time.sleep(1)
print(before, rss())
