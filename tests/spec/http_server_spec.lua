-- http_server_spec.lua: the HTTP server and router inside the host, with
-- routes of the spec's own, against real clients (curl, python sockets):
-- routing (404, 405 with Allow, HEAD, patterns with "/"), handler errors
-- (500 with the request id, traceback in the log), handlers that wait
-- without blocking others, keep-alive, pipelining, chunked bodies,
-- Expect: 100-continue, and each limit (413 before reading, 431, 503,
-- 408 for slow clients, idle keep-alive close, malformed requests).
local H = require "helper"
local HH = require "http_helper"
local http = require "sluice.router"
local sched = require "sluice.sched"

local logged = {}
http.log = function(fmt, ...) logged[#logged + 1] = fmt:format(...) end

local release -- set while /slow waits
local slow_waiting = false

http.route("GET", "/hello/{who}", function(req) return 200, { hello = req.params.who, q = req.query.x } end)
http.route("GET", "/runs/{id...}", function(req) return 200, { id = req.params.id } end)
http.route("POST", "/runs/{id...}/cancel", function(req) return 202, { cancel = req.params.id } end)
http.route("POST", "/echo", function(req) return 200, { n = #req.body, body = req.body } end)
http.route("POST", "/object", function(req) return 200, req:object("the input") end)
http.route("DELETE", "/hello/{who}", function() return 204, {} end)
http.route("GET", "/boom", function() error("boom in a handler") end)
http.route("GET", "/nil", function() error(nil) end)
http.route("GET", "/table", function() error({}) end)
http.route("GET", "/big", function() return 200, { big = string.rep("x", 4 * 1024 * 1024) } end)
http.route("GET", "/slow", function()
  local me = coroutine.running()
  slow_waiting = true
  release = function() sched.wake(me) end
  sched.wait()
  slow_waiting = false
  return 200, { slow = true }
end)
http.route("GET", "/release", function()
  if release then release(); release = nil end
  return 200, { released = true }
end)

describe("the HTTP server", function()
  local srv, url, port
  setup(function()
    H.task(function()
      local bound
      srv, bound = http.start({ listen = { "127.0.0.1:0" }, max_body = 1000, max_connections = 4,
        header_timeout_ms = 400, body_timeout_ms = 400, idle_timeout_ms = 600 })
      assert(srv, bound)
      url = "http://" .. bound[1]
      port = tonumber(bound[1]:match(":(%d+)$"))
    end)
  end)
  teardown(function() srv:close() end)

  it("routes by path and method; 404 and 405 with Allow are JSON errors with X-Request-Id", function()
    H.task(function()
      local st, _, hd, doc = HH.get(url .. "/hello/ann%20b?x=1+2")
      assert.are.equal(200, st)
      assert.are.same({ hello = "ann b", q = "1 2" }, doc)
      assert.matches("^application/json", hd["content-type"])
      assert.truthy(hd["x-request-id"])
      st, _, hd, doc = HH.get(url .. "/nowhere")
      assert.are.equal(404, st)
      assert.are.equal("not_found", doc.code)
      assert.truthy(hd["x-request-id"])
      st, _, hd, doc = HH.request("PUT", url .. "/hello/x")
      assert.are.equal(405, st)
      assert.are.equal("method_not_allowed", doc.code)
      assert.are.equal("DELETE, GET", hd["allow"])
      -- {id...} takes segments with "/", matched whole, and a suffix after it
      st, _, _, doc = HH.get(url .. "/runs/a/b@c")
      assert.are.same({ id = "a/b@c" }, doc)
      st, _, _, doc = HH.request("POST", url .. "/runs/p/x%2Fy/cancel")
      assert.are.equal(202, st)
      assert.are.same({ cancel = "p/x/y" }, doc)
    end)
  end)

  it("answers HEAD like GET without the body", function()
    H.task(function()
      local code, out, err = HH.python(HH.RAW .. [[
print(raw(int(sys.argv[1]), b"HEAD /hello/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), end="")
]], { port })
      assert.are.equal(0, code, err)
      assert.matches("^HTTP/1.1 200 OK\r\n", out)
      assert.matches("Content%-Length: [1-9]", out)
      assert.matches("\r\n\r\n$", out) -- headers only
    end)
  end)

  it("turns a handler error into a 500 with the request id, and the traceback into the log", function()
    H.task(function()
      for _, path in ipairs({ "/boom", "/nil", "/table" }) do
        local st, _, hd, doc = HH.get(url .. path)
        assert.are.equal(500, st)
        assert.are.equal("internal", doc.code)
        assert.are.equal(hd["x-request-id"], doc.request_id)
        assert.matches(doc.request_id, doc.error, 1, true)
        local line = logged[#logged]
        assert.matches(doc.request_id, line, 1, true)
        assert.matches("stack traceback", line, 1, true)
      end
      assert.matches("boom in a handler", logged[#logged - 2], 1, true)
      -- and the server goes on
      assert.are.equal(200, (HH.get(url .. "/hello/y")))
    end)
  end)

  it("lets a handler wait without holding up other connections", function()
    H.task(function()
      local p = H.spawn({ "-s", "--max-time", "20", url .. "/slow" }, { bin = "/usr/bin/curl" })
      H.wait_until(function() return slow_waiting end, "the slow handler to wait", 10000)
      -- served while /slow waits; it also lets /slow finish
      local st, _, _, doc = HH.get(url .. "/release")
      assert.are.equal(200, st)
      assert.is_true(doc.released)
      local code, _, out = p:wait(20000)
      assert.are.equal(0, code)
      assert.matches('"slow":true', out, 1, true)
    end)
  end)

  it("answers pipelined requests in order, a waiting one included, on one keep-alive connection", function()
    H.task(function()
      local script = HH.RAW .. [[
import threading
port = int(sys.argv[1])
def later():
    time.sleep(0.2)
    import urllib.request
    urllib.request.urlopen("http://127.0.0.1:%d/release" % port).read()
threading.Thread(target=later).start()
req = b"GET /hello/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + \
      b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + \
      b"GET /hello/4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
print(raw(port, req))
]]
      local code, out, err = HH.python(script, { port })
      assert.are.equal(0, code, err)
      local a = out:find('"hello":"1"', 1, true)
      local b = out:find('"slow":true', 1, true)
      local c = out:find('"body":"abc"', 1, true)
      local d = out:find('"hello":"4"', 1, true)
      assert.truthy(a and b and c and d, out)
      assert.is_true(a < b and b < c and c < d, out)
      local _, n = out:gsub("HTTP/1.1 200 OK", "")
      assert.are.equal(4, n)
    end)
  end)

  it("reads chunked bodies and answers Expect: 100-continue", function()
    H.task(function()
      local script = HH.RAW .. [[
port = int(sys.argv[1])
print(raw(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"))
s = socket.create_connection(("127.0.0.1", port)); s.settimeout(10)
s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
first = s.recv(100)
print("FIRST " + first.decode())
s.sendall(b"hello")
out = b""
while True:
    d = s.recv(65536)
    if not d: break
    out += d
print(out.decode())
]]
      local code, out, err = HH.python(script, { port })
      assert.are.equal(0, code, err)
      assert.matches('"body":"abcdefg"', out, 1, true)
      assert.matches("FIRST HTTP/1.1 100 Continue", out, 1, true)
      assert.matches('"body":"hello"', out, 1, true)
    end)
  end)

  it("refuses a body over the limit with 413 before reading it, and headers over 16 KiB with 431", function()
    H.task(function()
      local script = HH.RAW .. [[
port = int(sys.argv[1])
# headers only: the server must answer without waiting for 10 MB
print(raw(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n", timeout=5))
print(raw(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"a" * 1024 + b"\r\n", timeout=5))
print(raw(port, b"GET /hello/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n", timeout=5))
]]
      local code, out, err = HH.python(script, { port })
      assert.are.equal(0, code, err)
      assert.not_matches("<timeout>", out, 1, true)
      local _, n413 = out:gsub("HTTP/1.1 413", "")
      assert.are.equal(2, n413, out)
      assert.matches("HTTP/1.1 431", out, 1, true)
      assert.matches('"code":"headers_too_large"', out, 1, true)
      assert.matches("X%-Request%-Id: ", out)
      -- curl sending a large body sees the 413 too
      local st, _, _, doc = HH.post(url .. "/echo", string.rep("z", 5000))
      assert.are.equal(413, st)
      assert.are.equal("body_too_large", doc.code)
    end)
  end)

  it("answers malformed requests and bad JSON with 400", function()
    H.task(function()
      local script = HH.RAW .. [[
port = int(sys.argv[1])
print(raw(port, b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"))
]]
      local code, out = HH.python(script, { port })
      assert.are.equal(0, code)
      assert.matches("HTTP/1.1 400", out, 1, true)
      assert.matches('"code":"bad_request"', out, 1, true)
      local st, _, _, doc = HH.post(url .. "/object", '{"a": [1, 2,, 3]}')
      assert.are.equal(400, st)
      assert.matches("byte 12", doc.error, 1, true)
      st, _, _, doc = HH.post(url .. "/object", "[1, 2]")
      assert.are.equal(400, st)
      assert.matches("the input must be a JSON object, got an array", doc.error, 1, true)
    end)
  end)

  it("closes slow and idle clients: 408 for headers or a body that stall, idle keep-alive closed", function()
    H.task(function()
      local script = HH.RAW .. [[
port = int(sys.argv[1])
t0 = time.time()
print(raw(port, b"GET /hello/x HTTP/1.1\r\nHost: x\r\n", timeout=10))
print(raw(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", timeout=10))
# one request, then nothing: the idle timer closes the connection
print(raw(port, b"GET /hello/k HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10))
print("ELAPSED %.1f" % (time.time() - t0))
]]
      local code, out, err = HH.python(script, { port })
      assert.are.equal(0, code, err)
      assert.not_matches("<timeout>", out, 1, true)
      local _, n408 = out:gsub("HTTP/1.1 408", "")
      assert.are.equal(2, n408, out)
      assert.matches('"hello":"k"', out, 1, true)
    end)
  end)

  it("answers connections beyond max_connections with 503", function()
    H.task(function()
      H.wait_until(function() return srv:stats().connections == 0 end, "earlier connections to close", 10000)
      local script = HH.RAW .. [[
port = int(sys.argv[1])
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
time.sleep(0.1)
print(raw(port, b"GET /hello/x HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5))
for s in held: s.close()
]]
      local code, out, err = HH.python(script, { port })
      assert.are.equal(0, code, err)
      assert.matches("HTTP/1.1 503", out, 1, true)
      assert.matches('"code":"too_many_connections"', out, 1, true)
      -- and once they are gone, requests are served again
      H.wait_until(function() return srv:stats().connections == 0 end, "the held connections to close", 10000)
      assert.are.equal(200, (HH.get(url .. "/hello/again")))
    end)
  end)

  it("survives a client that hangs up in the middle of a large reply", function()
    H.task(function()
      local script = HH.RAW .. [[
port = int(sys.argv[1])
for _ in range(5):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
]]
      local code, _, err = HH.python(script, { port })
      assert.are.equal(0, code, err)
      assert.are.equal(200, (HH.get(url .. "/hello/alive")))
    end)
  end)
end)
