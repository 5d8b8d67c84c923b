-- http_helper.lua: what the HTTP specs share: a `sluice serve` on a free
-- port of 127.0.0.1 (the port is read from its log line), and real clients
-- run as processes on the loop: curl for single requests, python3 for raw
-- sockets, pipelining, slow clients and concurrency.
local H = require "helper"
local json = require "sluice.json"

local HH = {}

local function log_text(p) return table.concat(p.err) end

--- Starts `sluice serve DIR --store STORE --listen 127.0.0.1:0 ARGS...` and
--- waits for its address. Returns the process with p.url ("http://ip:port").
function HH.serve(dir, store, args, opts)
  local a = { "serve", dir, "--store", store, "--listen", "127.0.0.1:0" }
  for _, x in ipairs(args or {}) do a[#a + 1] = x end
  local p = H.spawn(a, opts)
  H.wait_until(function()
    -- "schedules armed" is logged right before the API turns ready (no 503
    -- "still starting" for the spec's first request)
    local t = log_text(p)
    return p.exited or (t:find("listening on http://[%d.]+:%d+") ~= nil and t:find("schedules armed", 1, true) ~= nil)
  end, "serve to listen and be ready", 20000, 10)
  assert(not p.exited, "serve exited: " .. log_text(p))
  p.addr = log_text(p):match("listening on http://([%d.]+:%d+)")
  p.url = "http://" .. p.addr
  p.port = tonumber(p.addr:match(":(%d+)$"))
  function p:log() return log_text(self) end
  return p
end

--- Runs a program to the end: code, stdout, stderr.
function HH.run(bin, args, timeout_ms)
  local p = H.spawn(args, { bin = bin })
  local code, _, out, err = p:wait(timeout_ms or 30000)
  return code, out, err
end

--- One request with curl. opts: body (string), headers ({name = value}),
--- timeout (seconds). Returns status, body text, headers (lowercased
--- names), decoded JSON body (or nil).
function HH.request(method, url, opts)
  opts = opts or {}
  local dir = HH.tmp or H.tmpdir()
  HH.tmp = dir
  HH.n = (HH.n or 0) + 1
  local hfile, bfile = ("%s/h%d"):format(dir, HH.n), ("%s/b%d"):format(dir, HH.n)
  local args = { "-s", "-X", method, "-D", hfile, "-o", bfile, "-w", "%{http_code}",
    "--max-time", tostring(opts.timeout or 30) }
  for k, v in pairs(opts.headers or {}) do
    args[#args + 1] = "-H"
    args[#args + 1] = k .. ": " .. v
  end
  if opts.body then
    local f = ("%s/in%d"):format(dir, HH.n)
    H.write(f, opts.body)
    args[#args + 1] = "--data-binary"
    args[#args + 1] = "@" .. f
    if not (opts.headers and (opts.headers["Content-Type"] or opts.headers["content-type"])) then
      args[#args + 1] = "-H"
      args[#args + 1] = "Content-Type: application/json"
    end
  end
  args[#args + 1] = url
  local code, out, err = HH.run("/usr/bin/curl", args, ((opts.timeout or 30) + 5) * 1000)
  assert(code == 0 or code == 28, ("curl %s %s failed (%d): %s"):format(method, url, code, err))
  local headers = {}
  for line in (H.read(hfile) or ""):gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then headers[k:lower()] = v end
  end
  local body = H.read(bfile) or ""
  local doc
  if body ~= "" then
    local ok, v = pcall(json.decode, body)
    if ok then doc = v end
  end
  return tonumber(out), body, headers, doc
end

function HH.get(url, opts) return HH.request("GET", url, opts) end

function HH.post(url, doc, opts)
  opts = opts or {}
  opts.body = type(doc) == "string" and doc or json.encode(doc)
  return HH.request("POST", url, opts)
end

--- Runs a python3 script (text) with args: code, stdout, stderr.
function HH.python(script, args, timeout_ms)
  local dir = HH.tmp or H.tmpdir()
  HH.tmp = dir
  HH.n = (HH.n or 0) + 1
  local f = ("%s/s%d.py"):format(dir, HH.n)
  H.write(f, script)
  local a = { f }
  for _, x in ipairs(args or {}) do a[#a + 1] = tostring(x) end
  return HH.run("/usr/bin/python3", a, timeout_ms)
end

--- python3 prelude for raw-socket scripts: raw(port, data, timeout) sends
--- data on one connection and returns everything read until the server
--- closes (or the timeout).
HH.RAW = [[
import socket, sys, time, json
def raw(port, data, timeout=10, chunks=None, pause=0):
    s = socket.create_connection(("127.0.0.1", port)); s.settimeout(timeout)
    for part in (chunks or [data]):
        s.sendall(part)
        if pause: time.sleep(pause)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d: break
            out += d
    except socket.timeout:
        out += b"<timeout>"
    except ConnectionResetError:
        out += b"<reset>"
    s.close()
    return out.decode("latin-1")
]]

return HH
