--- sluice.api.events: the stream over HTTP.
---   POST /events           {"type","stream","data"} | [ ... ] | NDJSON -> 201 after commit
---   GET  /events?stream=&after=|from=&limit=  -> {"events": [...], "next"}
---   GET  /events/stream?...  Server-Sent Events; Last-Event-ID resumes
---   GET  /consumers        checkpoints and lag
--- A POST is answered once its events are durable. Posters on many
--- connections share commits: each request is its own task, and the writer
--- commits whatever is queued in one transaction.
---
--- Namespaces: the stream keys of a namespace other than "default" are
--- stored under "<namespace>/" (what pipelines see: consume("c", "acme/*"));
--- its keys read and write only there and see their keys without the prefix.
--- The default namespace (and the open API) sees stream keys as stored.
local http = require "sluice.router"
local codec = require "sluice._codec"
local json = require("sluice._codec").edge -- responses: JSON at the edge
local sched = require "sluice.sched"
local stream = require "sluice.stream"
local quota = require "sluice.quota"
local uv = require "luv"

local M = {}

local EXAMPLE = '{"type": "order.created", "stream": "orders:42", "data": {"total": 99}}'

local function prefix_of(ns)
  return ns == quota.DEFAULT_NS and "" or ns .. "/"
end

-- where: nil for a single event, else "events[3]" or "line 3"
local function check_event(e, where)
  if type(e) ~= "table" or json.is_array(e) then
    http.fail(400, "invalid_event", ("%s must be a JSON object like %s"):format(where or "the body", EXAMPLE))
  end
  for _, f in ipairs({ "type", "stream" }) do
    local v = e[f]
    local name = where and (where .. "." .. f) or f
    if v == nil then
      http.fail(400, "missing_field", ("%s is missing: post %s"):format(name, EXAMPLE), { field = name })
    end
    if type(v) ~= "string" or v == "" or v:find("\0", 1, true) or #v > 256 then
      http.fail(400, "invalid_field", ("%s must be a non-empty string of at most 256 bytes without NUL, got %s")
        :format(name, type(v) == "string" and ("%q"):format(v:sub(1, 40)) or type(v)), { field = name })
    end
  end
end

-- the events of a POST body: list, and whether it was one object
local function posted(req)
  local ctype = (req.headers["content-type"] or ""):lower()
  if ctype:find("ndjson", 1, true) then
    local list, n = {}, 0
    for line in req.body:gmatch("[^\n]+") do
      n = n + 1
      if line:find("%S") then
        local v, err = codec.try_decode(line)
        if err then http.fail(400, "invalid_json", ("line %d of the NDJSON body is not valid JSON: %s"):format(n, err)) end
        list[#list + 1] = v
        check_event(v, ("line %d"):format(n))
      end
    end
    return list, false
  end
  local v = req:json("the body")
  if v == nil then http.fail(400, "invalid_body", "the body is empty: post " .. EXAMPLE) end
  if type(v) == "table" and json.is_array(v) then
    for i, e in ipairs(v) do check_event(e, ("events[%d]"):format(i)) end
    return v, false
  end
  check_event(v, nil)
  return { v }, true
end

http.route("POST", "/events", function(req)
  local list, single = posted(req)
  if #list == 0 then http.fail(400, "invalid_body", "no events in the body: post " .. EXAMPLE) end
  quota.admit_events(req.namespace, #list, req.ns_record)
  local pfx = prefix_of(req.namespace)
  local items = {}
  for i, e in ipairs(list) do items[i] = { e.type, pfx .. e.stream, e.data } end
  local ids = stream.emit_many(items)
  if single then return 201, { id = ids[1] } end
  return 201, { ids = ids }
end, { role = "runner" })

-- the read options of a GET: stream pattern (prefixed), after, from, limit
local function read_options(req, after)
  local q = req.query
  if not q.stream or q.stream == "" then
    http.fail(400, "missing_field", "stream is required: GET /events?stream=orders:42, or orders:* for every key with that prefix",
      { field = "stream" })
  end
  local limit = http.int_param(q, "limit", 100, 10000)
  after = after or q.after
  if after and q.from then http.fail(400, "invalid_field", "give after or from, not both", { field = "from" }) end
  return { stream = prefix_of(req.namespace) .. q.stream, after = after, from = not after and q.from or nil, limit = limit }
end

local function read(opts, pfx)
  local ok, events, info = pcall(stream.read, opts)
  if not ok then
    local msg = (type(events) == "table" and events.message or tostring(events)):gsub("^[^\n]-:%d+: ", "")
    http.fail(400, "invalid_field", msg)
  end
  if #pfx > 0 then
    for _, e in ipairs(events) do e.stream = e.stream:sub(#pfx + 1) end
  end
  return events, info
end

http.route("GET", "/events", function(req)
  local opts = read_options(req)
  local events, info = read(opts, prefix_of(req.namespace))
  return 200, { events = json.array(events), next = info.next or json.null, trimmed = info.trimmed or nil }
end)

---------------------------------------------------------------------------
-- Server-Sent Events

local sse_waiting = {} -- coroutine -> true while it waits for an append
stream.on_append(function()
  if next(sse_waiting) == nil then return end
  local list = {}
  for co in pairs(sse_waiting) do list[#list + 1] = co end
  for _, co in ipairs(list) do
    sse_waiting[co] = nil
    sched.wake(co)
  end
end)

M.HEARTBEAT_MS = 15000
M.MAX_QUEUED = 1024 * 1024 -- a client this far behind is dropped

http.route("GET", "/events/stream", function(req)
  local opts = read_options(req, req.headers["last-event-id"])
  local pfx = prefix_of(req.namespace)
  local events, info = read(opts, pfx) -- before the headers: a bad request is still a 400
  local res = req.res
  res:start(200, "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n")
  req.stream_status = 200
  local me = coroutine.running()
  local closed = false
  local function wake()
    if sse_waiting[me] then
      sse_waiting[me] = nil
      sched.wake(me)
    end
  end
  res:on_close(function() closed = true; wake() end)
  local beat = uv.new_timer()
  local beat_due = false
  beat:start(M.HEARTBEAT_MS, M.HEARTBEAT_MS, function() beat_due = true; wake() end)
  local ok, err = pcall(function()
    res:write((": sluice event stream of %s\n\n"):format(req.query.stream))
    while not closed do
      local out = {}
      for i, e in ipairs(events) do
        out[i] = ("id: %s\nevent: %s\ndata: %s\n\n"):format(e.id, e.type:gsub("[\r\n]", " "), json.encode(e))
      end
      if #out > 0 and not res:write(table.concat(out)) then break end
      if beat_due then
        beat_due = false
        if not res:write(": keepalive\n\n") then break end
      end
      if res:queued() > M.MAX_QUEUED then
        http.log("http %s: event stream client %s is too slow; dropped", req.id, req.peer)
        break
      end
      opts.after, opts.from = info.next or opts.after, nil
      if #events < opts.limit and not closed then
        sse_waiting[me] = true
        sched.wait()
      end
      if closed then break end
      events, info = read(opts, pfx)
    end
  end)
  sse_waiting[me] = nil
  beat:close()
  res:finish()
  if not ok then error(err, 0) end
end)

http.route("GET", "/consumers", function()
  local list = stream.positions()
  local out = json.array({})
  for i, c in ipairs(list) do
    out[i] = { name = c.name, stream = c.pattern, checkpoint = c.after or json.null, lag = c.lag,
      updated_at = c.updated_at or json.null }
  end
  return 200, { consumers = out }
end)

return M
