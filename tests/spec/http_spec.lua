-- http_spec.lua: sluice.http against a real HTTP server on 127.0.0.1
-- (tests/http_server.py, port 0): statuses, headers, bodies, JSON, query
-- strings, timeouts, refused connections, max_bytes, redirects, file://,
-- downloads, 200 requests in flight at once from separate tasks, retries of
-- a step that raises through http.must, and a script that exits cleanly
-- with a request still in flight.
local H = require "helper"
local clock = require "sluice._clock"
local storage = require "sluice._store"
local engine = require "sluice.engine"
local json = require "sluice.json"
local sched = require "sluice.sched"
local core = require "sluice._http"
local http = require "sluice.http"
local uv = require "luv"

local server = H.spawn({ H.root .. "/tests/http_server.py" }, { bin = "python3" })
H.wait_until(function() return table.concat(server.out):find("\n") end, "the test server's port")
local port = assert(tonumber(table.concat(server.out):match("^(%d+)")))
local base = "http://127.0.0.1:" .. port

local store = H.store_target()
assert(storage.open(store))

-- a port nothing listens on: bound, then closed
local function free_port()
  local s = uv.new_tcp()
  assert(s:bind("127.0.0.1", 0))
  local p = s:getsockname().port
  s:close()
  return p
end

teardown(function() server:kill() end)

describe("sluice.http", function()
  it("GETs a URL: status, lower-case headers, body, url, time_ms", function()
    local r, err = http.get(base .. "/echo")
    assert.is_nil(err)
    assert.are.equal(200, r.status)
    assert.are.equal("application/json", r.headers["content-type"])
    assert.are.equal(tostring(#r.body), r.headers["content-length"])
    assert.are.equal(base .. "/echo", r.url)
    assert.is_true(type(r.time_ms) == "number" and r.time_ms > 0)
    local e = json.decode(r.body)
    assert.are.equal("GET", e.method)
  end)

  it("returns a 4xx or 5xx as a response, and as EHTTP with raise_status", function()
    local r = assert(http.get(base .. "/status/404"))
    assert.are.equal(404, r.status)
    assert.are.same({ status = 404 }, json.decode(r.body))
    assert.are.equal(503, assert(http.get(base .. "/status/503")).status)
    local none, msg, code = http.get(base .. "/status/500", { raise_status = true })
    assert.is_nil(none)
    assert.are.equal("EHTTP", code)
    assert.matches("^EHTTP: the server answered 500 %(GET " .. base:gsub("%p", "%%%0") .. "/status/500%)$", msg)
    local ok, e = pcall(http.must.get, base .. "/status/502", { raise_status = true })
    assert.is_false(ok)
    assert.are.equal("EHTTP", e.code)
    assert.are.equal(502, e.status)
    assert.matches("^EHTTP: ", tostring(e))
  end)

  it("sends request headers and joins repeated response headers", function()
    local r = assert(http.get(base .. "/echo", { headers = { ["X-Token"] = "abc", ["X-N"] = 7 } }))
    local e = json.decode(r.body)
    assert.are.equal("abc", e.headers["x-token"])
    assert.are.equal("7", e.headers["x-n"])
    assert.is_nil(e.headers["expect"])
    local h = assert(http.get(base .. "/headers")).headers
    assert.are.equal("a=1, b=2", h["set-cookie"])
    assert.are.equal("yes", h["x-custom"])
  end)

  it("POSTs JSON and sends bodies with PUT, PATCH and DELETE", function()
    local r = assert(http.post(base .. "/echo", { json = { id = 1, tags = json.array{} } }))
    local e = json.decode(r.body)
    assert.are.equal("POST", e.method)
    assert.are.equal("application/json", e.headers["content-type"])
    assert.are.same({ id = 1, tags = {} }, json.decode(e.body))
    for _, m in ipairs({ "put", "patch", "delete" }) do
      local got = json.decode(assert(http[m](base .. "/echo", { body = "x=" .. m })).body)
      assert.are.equal(m:upper(), got.method)
      assert.are.equal("x=" .. m, got.body)
    end
    local big = string.rep("0123456789", 200000) -- 2 MB, no 100-continue round trip
    local got = json.decode(assert(http.request{ method = "POST", url = base .. "/echo", body = big,
      headers = { ["Content-Type"] = "text/plain" } }).body)
    assert.are.equal(#big, #got.body)
    assert.are.equal("text/plain", got.headers["content-type"])
    assert.are.equal(200, assert(http.head(base .. "/echo")).status)
  end)

  it("encodes query parameters, keys sorted, tables repeating the key", function()
    local r = assert(http.get(base .. "/echo?x=0", { query = { b = "x y&z", a = 1, t = { "p", "q" } } }))
    local e = json.decode(r.body)
    assert.are.equal("x=0&a=1&b=x%20y%26z&t=p&t=q", e.raw_query)
    assert.are.equal("x y&z", e.query.b)
  end)

  it("decodes JSON with the store's codec (64-bit integers exact)", function()
    local v, r = http.json(base .. "/json")
    assert.are.equal(9007199254740993, v.id)
    assert.are.equal("integer", math.type(v.id))
    assert.are.equal(0.5, v.ratio)
    assert.are.equal(200, r.status)
    local none, msg, code = http.json(base .. "/status/404")
    assert.is_nil(none)
    assert.are.equal("EHTTP", code)
    assert.matches("404", msg)
    none, msg, code = http.json(base .. "/bytes?n=3")
    assert.is_nil(none)
    assert.are.equal("EJSON", code)
    assert.matches("^EJSON: the body is not JSON", msg)
  end)

  it("fails with ETIMEDOUT after the timeout, without waiting for the reply", function()
    local t0 = uv.hrtime()
    local none, msg, code = http.get(base .. "/slow?ms=5000", { timeout = "200ms" })
    local took = (uv.hrtime() - t0) / 1e6
    assert.is_nil(none)
    assert.are.equal("ETIMEDOUT", code)
    assert.matches("^ETIMEDOUT: ", msg)
    assert.is_true(took < 4000, "took " .. took .. " ms")
  end)

  it("fails with ECONNREFUSED when nothing listens, and raises with raise = true", function()
    local url = "http://127.0.0.1:" .. free_port() .. "/"
    local none, msg, code = http.get(url)
    assert.is_nil(none)
    assert.are.equal("ECONNREFUSED", code)
    assert.matches("^ECONNREFUSED: .*%(GET " .. url:gsub("%p", "%%%0") .. "%)$", msg)
    local ok, e = pcall(http.get, url, { raise = true })
    assert.is_false(ok)
    assert.are.equal("ECONNREFUSED", e.code)
    assert.are.equal(url, e.url)
  end)

  it("lets a step's retries apply when http.must raises", function()
    local url = "http://127.0.0.1:" .. free_port() .. "/"
    local calls = 0
    local p = pipeline("http-retries", function()
      return step("fetch", { retries = 2, backoff = "1ms" }, function()
        calls = calls + 1
        return http.must.get(url).status
      end)
    end)
    local rec = engine.execute(p, nil, "http-retries-1")
    assert.are.equal("failed", rec.status)
    assert.are.equal(3, calls)
    assert.matches("step 'fetch' failed after 3 attempts: ECONNREFUSED: ", rec.error.message)
  end)

  it("fails with ETOOBIG past max_bytes", function()
    local none, msg, code = http.get(base .. "/bytes?n=100000", { max_bytes = 1000 })
    assert.is_nil(none)
    assert.are.equal("ETOOBIG", code)
    assert.matches("larger than max_bytes %(1000%)", msg)
    assert.are.equal(1000, #assert(http.get(base .. "/bytes?n=1000", { max_bytes = 1000 })).body)
    -- without a Content-Length the limit is found while the body streams in
    none, msg, code = http.get(base .. "/chunked?n=50000", { max_bytes = 20000 })
    assert.are.equal("ETOOBIG", code)
    assert.matches("larger than max_bytes %(20000%)", msg)
    assert.are.equal(50000, #assert(http.get(base .. "/chunked?n=50000")).body)
  end)

  it("follows redirects by default, at most 10, and not with follow = false", function()
    local r = assert(http.get(base .. "/redirect?to=/echo%3Fr%3D1"))
    assert.are.equal(200, r.status)
    assert.are.equal(base .. "/echo?r=1", r.url)
    r = assert(http.get(base .. "/redirect", { follow = false }))
    assert.are.equal(302, r.status)
    assert.are.equal("/echo", r.headers.location)
    local none, _, code = http.get(base .. "/redirects?n=12")
    assert.is_nil(none)
    assert.are.equal("EREDIRECT", code)
    assert.are.equal(200, assert(http.get(base .. "/redirects?n=12", { follow = 12 })).status)
  end)

  it("never follows a redirect to file://", function()
    local none, _, code = http.get(base .. "/redirect?to=file:///etc/passwd")
    assert.is_nil(none)
    assert.are.equal("EURL", code)
  end)

  it("reads file:// URLs, and ENOENT for a missing file", function()
    local dir = H.tmpdir()
    H.write(dir .. "/data.json", '{"n": 12345678901234}')
    local r = assert(http.get("file://" .. dir .. "/data.json"))
    assert.are.equal(200, r.status)
    assert.are.equal('{"n": 12345678901234}', r.body)
    assert.are.equal(12345678901234, http.json("file://" .. dir .. "/data.json").n)
    local none, _, code = http.get("file://" .. dir .. "/missing.json")
    assert.is_nil(none)
    assert.are.equal("ENOENT", code)
  end)

  it("reuses the connection for sequential requests", function()
    local a = json.decode(assert(http.get(base .. "/echo")).body).client_port
    local b = json.decode(assert(http.get(base .. "/echo")).body).client_port
    assert.are.equal(a, b)
  end)

  it("downloads to a file renamed into place, and leaves nothing on failure", function()
    local dir = H.tmpdir()
    local r = assert(http.download(base .. "/bytes?n=300000", dir .. "/out.bin"))
    assert.are.equal(200, r.status)
    assert.are.equal(300000, r.bytes)
    assert.are.equal(dir .. "/out.bin", r.path)
    assert.is_nil(r.body)
    assert.are.equal(string.rep("x", 300000), H.read(dir .. "/out.bin"))
    -- a 404 fails and keeps the old file
    local none, msg, code = http.download(base .. "/status/404", dir .. "/out.bin")
    assert.is_nil(none)
    assert.are.equal("EHTTP", code)
    assert.matches("404", msg)
    assert.are.equal(300000, #H.read(dir .. "/out.bin"))
    none, _, code = http.download(base .. "/bytes?n=5000", dir .. "/big.bin", { max_bytes = 100 })
    assert.are.equal("ETOOBIG", code)
    assert.is_nil(H.read(dir .. "/big.bin"))
    none, _, code = http.download(base .. "/chunked?n=50000", dir .. "/big.bin", { max_bytes = 20000 })
    assert.are.equal("ETOOBIG", code)
    assert.is_nil(H.read(dir .. "/big.bin"))
    none, _, code = http.download(base .. "/echo", dir .. "/no/such/dir/x")
    assert.are.equal("ENOENT", code)
    -- file:// too, and no temporary file is left behind
    H.write(dir .. "/src.txt", "hello")
    assert(http.download("file://" .. dir .. "/src.txt", dir .. "/copy.txt"))
    assert.are.equal("hello", H.read(dir .. "/copy.txt"))
    local p = assert(io.popen("ls -a " .. dir))
    local listing = p:read("a")
    p:close()
    assert.is_nil(listing:find("%.part"), listing)
  end)

  it("has 200 requests in flight at once from 200 tasks", function()
    local handles = {}
    for i = 1, 200 do
      handles[i] = sched.go({}, function()
        return assert(http.get(base .. "/slow?ms=300", { query = { i = i } }))
      end)
    end
    -- every task has started its request and none has had a loop turn yet
    assert.are.equal(200, (core.in_flight()))
    for i = 1, 200 do
      local ok, r = handles[i]:await()
      assert.is_true(ok, not ok and tostring(r.message) or nil)
      assert.are.equal(200, r.status)
      assert.are.equal(base .. "/slow?ms=300&i=" .. i, r.url)
    end
    H.wait_until(function() return core.in_flight() == 0 end, "no transfer in flight")
  end)

  it("runs requests of parallel branches concurrently inside a run", function()
    local p = pipeline("http-parallel", function()
      local fns = {}
      for i = 1, 20 do
        fns[i] = function()
          return step("get" .. i, function() return assert(http.get(base .. "/slow?ms=200")).status end)
        end
      end
      local t0 = clock.hrtime()
      local res = { parallel(table.unpack(fns)) }
      return { res = res, ms = (clock.hrtime() - t0) / 1e6 }
    end)
    local rec = engine.execute(p, nil, "http-parallel-1")
    assert.are.equal("completed", rec.status, rec.error and rec.error.message)
    for i = 1, 20 do assert.are.equal(200, rec.result.res[i]) end
    -- 20 sequential requests take 4 s; concurrent ones a little over 0.2 s
    assert.is_true(rec.result.ms < 3000, "took " .. rec.result.ms .. " ms")
  end)

  it("refuses to wait where the host cannot resume, and names bad options", function()
    local ok, err = pcall(function()
      return ("x"):gsub(".", function() http.get(base .. "/echo") end)
    end)
    assert.is_false(ok)
    assert.matches("must run in a coroutine the host resumes", tostring(err))
    ok, err = pcall(function() local r = http.get(base, { timeuot = 1 }) return r end)
    assert.is_false(ok)
    assert.matches("^[^:]*http_spec.lua:%d+: sluice.http: unknown option 'timeuot'", err)
    ok, err = pcall(http.get, base, { timeout = "soon" })
    assert.is_false(ok)
    assert.matches("sluice.http timeout", err)
    ok, err = pcall(http.post, base, { body = "a", json = {} })
    assert.matches("body or json, not both", err)
  end)

  it("honours the http_proxy environment variable", function()
    local dir = H.tmpdir()
    H.write(dir .. "/p.lua", [[
      local r = assert(require("sluice.http").get("http://upstream.invalid/echo"))
      io.write(r.body)
    ]])
    -- the test server plays the proxy: it gets the absolute URL
    local code, out, err = H.sluice({ dir .. "/p.lua" }, { env = { "http_proxy=" .. base } })
    assert.are.equal(0, code, err)
    local e = json.decode(out)
    assert.are.equal("upstream.invalid", e.headers.host)
    assert.are.equal("/echo", e.path)
  end)

  it("fails with ETLS for a certificate the system CA store does not trust", function()
    local dir = H.tmpdir()
    assert(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -days 1 "
      .. "-keyout %s/key.pem -out %s/cert.pem 2>/dev/null"):format(dir, dir)))
    local tls = H.spawn({ H.root .. "/tests/http_server.py", "--tls", dir .. "/cert.pem", dir .. "/key.pem" },
      { bin = "python3" })
    H.wait_until(function() return table.concat(tls.out):find("\n") end, "the TLS server's port")
    local url = "https://127.0.0.1:" .. table.concat(tls.out):match("^(%d+)") .. "/echo"
    local none, msg, code = http.get(url)
    tls:kill()
    assert.is_nil(none)
    assert.are.equal("ETLS", code)
    assert.matches("^ETLS: .*certificate", msg)
  end)

  it("works in a script's main chunk and exits with a request still in flight", function()
    local dir = H.tmpdir()
    H.write(dir .. "/s.lua", ([[
      local http = require "sluice.http"
      local r = assert(http.get("%s/echo"))
      print("status", r.status)
      coroutine.wrap(function() http.get("%s/slow?ms=20000") end)()
      require("sluice._vm").stop() -- the loop stops with the request in flight
    ]]):format(base, base))
    local t0 = uv.hrtime()
    local code, out, err = H.sluice({ dir .. "/s.lua" }, { timeout = 15000 })
    assert.are.equal(0, code, err)
    assert.are.equal("status\t200\n", out)
    assert.are.equal("", err)
    assert.is_true((uv.hrtime() - t0) / 1e6 < 15000)
  end)
end)
