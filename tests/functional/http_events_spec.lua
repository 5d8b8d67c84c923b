-- http_events_spec.lua: the event stream over HTTP against a real
-- `sluice serve`: POST /events (one, an array, NDJSON; 400s naming the
-- field), GET /events (after, from, limit, wildcards, next), Server-Sent
-- Events resumed with Last-Event-ID, /health and /ready, and a SIGKILL
-- while posters are being acknowledged: after a restart every acknowledged
-- event is there, in order within its stream key.
local H = require "helper"
local HH = require "http_helper"
local json = require "sluice.json"

describe("events over HTTP", function()
  local dir, store, serve
  before_each(function()
    dir = H.tmpdir()
    store = dir .. "/store"
    os.execute("mkdir -p '" .. dir .. "/p'")
    H.write(dir .. "/p/noop.lua", 'pipeline("noop", function() return 1 end)\n')
    serve = HH.serve(dir .. "/p", store)
  end)
  after_each(function()
    serve:kill("sigterm")
    serve:wait()
  end)

  it("answers /health without a key and /ready once started", function()
    H.task(function()
      local st, _, hd, doc = HH.get(serve.url .. "/health")
      assert.are.equal(200, st)
      assert.are.equal("ok", doc.status)
      assert.are.equal(H.store_target(store), doc.store) -- its URL on PostgreSQL
      assert.are.equal("number", type(doc.uptime_s))
      assert.truthy(hd["x-request-id"])
      H.wait_until(function() return (HH.get(serve.url .. "/ready")) == 200 end, "ready", 10000, 20)
    end)
  end)

  it("appends one event, an array in one commit, or NDJSON, and reads them back", function()
    H.task(function()
      local url = serve.url .. "/events"
      local st, _, _, doc = HH.post(url, { type = "created", stream = "orders:1", data = { total = 99 } })
      assert.are.equal(201, st)
      assert.are.equal("0000000000000001", doc.id)
      st, _, _, doc = HH.post(url, { { type = "paid", stream = "orders:1" }, { type = "created", stream = "orders:2", data = 7 } })
      assert.are.equal(201, st)
      assert.are.same({ "0000000000000002", "0000000000000003" }, doc.ids)
      st, _, _, doc = HH.post(url, '{"type":"n","stream":"other"}\n\n{"type":"n","stream":"orders:3"}\n',
        { headers = { ["Content-Type"] = "application/x-ndjson" } })
      assert.are.equal(201, st)
      assert.are.same({ "0000000000000004", "0000000000000005" }, doc.ids)

      st, _, _, doc = HH.get(url .. "?stream=orders:1")
      assert.are.equal(200, st)
      assert.are.equal(2, #doc.events)
      local e = doc.events[1]
      assert.are.same({ "0000000000000001", "created", "orders:1", { total = 99 } }, { e.id, e.type, e.stream, e.data })
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", e.ts)
      assert.are.equal("0000000000000002", doc.next)
      -- wildcard, limit and paging with next
      st, _, _, doc = HH.get(url .. "?stream=orders:*&limit=2")
      assert.are.same({ "0000000000000001", "0000000000000002" }, { doc.events[1].id, doc.events[2].id })
      st, _, _, doc = HH.get(url .. "?stream=orders:*&limit=2&after=" .. doc.next)
      assert.are.same({ "0000000000000003", "0000000000000005" }, { doc.events[1].id, doc.events[2].id })
      st, _, _, doc = HH.get(url .. "?stream=orders:*&from=LATEST")
      assert.are.equal(0, #doc.events)
      assert.are.equal("0000000000000005", doc.next)
      st, _, _, doc = HH.get(url .. "?stream=orders:*&from=2000-01-01T00:00:00Z")
      assert.are.equal(4, #doc.events)
    end)
  end)

  it("refuses bad events with a 400 naming the field and giving an example", function()
    H.task(function()
      local url = serve.url .. "/events"
      local st, _, _, doc = HH.post(url, { type = "created" })
      assert.are.equal(400, st)
      assert.are.equal("missing_field", doc.code)
      assert.are.equal("stream", doc.field)
      assert.matches('"stream": "orders:42"', doc.error, 1, true)
      st, _, _, doc = HH.post(url, { { type = "a", stream = "s" }, { stream = "s" } })
      assert.are.equal(400, st)
      assert.are.equal("events[2].type", doc.field)
      st, _, _, doc = HH.post(url, { type = 5, stream = "s" })
      assert.are.equal(400, st)
      assert.are.equal("invalid_field", doc.code)
      st, _, _, doc = HH.post(url, '{"type": "a", "stream": ')
      assert.are.equal(400, st)
      assert.are.equal("invalid_json", doc.code)
      assert.matches("byte %d+", doc.error)
      st, _, _, doc = HH.post(url, "[1]")
      assert.are.equal(400, st)
      assert.matches("events%[1%] must be a JSON object", doc.error)
      st, _, _, doc = HH.get(url)
      assert.are.equal(400, st)
      assert.are.equal("stream", doc.field)
      st, _, _, doc = HH.get(url .. "?stream=s&after=zz")
      assert.are.equal(400, st)
      assert.matches("not an event id", doc.error, 1, true)
      -- nothing was appended by the refused requests
      local _, _, _, all = HH.get(url .. "?stream=*")
      assert.are.equal(0, #all.events)
    end)
  end)

  it("streams new events as Server-Sent Events, resumed after Last-Event-ID", function()
    H.task(function()
      HH.post(serve.url .. "/events", { { type = "a", stream = "s:1" }, { type = "b", stream = "s:2" } })
      local script = [[
import http.client, sys, json, threading, time, urllib.request
port = int(sys.argv[1])
def read_events(conn_headers, n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    c.request("GET", "/events/stream?stream=s:*", headers=conn_headers)
    r = c.getresponse()
    assert r.status == 200, r.status
    assert r.getheader("Content-Type") == "text/event-stream", r.getheader("Content-Type")
    got, cur = [], {}
    while len(got) < n:
        line = r.fp.readline().decode().rstrip("\n")
        if line == "":
            if "id" in cur: got.append(cur)
            cur = {}
        elif not line.startswith(":"):
            k, v = line.split(": ", 1)
            cur[k] = v
    c.close()
    return got
def post_later(body):
    time.sleep(0.3)
    req = urllib.request.Request("http://127.0.0.1:%d/events" % port, data=body.encode(), method="POST")
    urllib.request.urlopen(req).read()
t = threading.Thread(target=post_later, args=('{"type":"c","stream":"s:3"}',)); t.start()
first = read_events({}, 3)     # two stored, one appended while connected
t.join()
post_later('{"type":"d","stream":"s:1"}')
post_later('{"type":"e","stream":"other"}')
post_later('{"type":"f","stream":"s:2"}')
rest = read_events({"Last-Event-ID": first[-1]["id"]}, 2)
print(json.dumps({"first": first, "rest": rest}))
]]
      local code, out, err = HH.python(script, { serve.port }, 40000)
      assert.are.equal(0, code, err)
      local got = json.decode(out)
      local function ids(list)
        local o = {}
        for i, e in ipairs(list) do o[i] = e.event .. "@" .. json.decode(e.data).stream end
        return o
      end
      assert.are.same({ "a@s:1", "b@s:2", "c@s:3" }, ids(got.first))
      assert.are.same({ "d@s:1", "f@s:2" }, ids(got.rest))
      assert.are.equal(got.first[3].id, json.decode(got.first[3].data).id)
    end)
  end)

  it("loses no acknowledged event to a SIGKILL, before a restart too, and keeps each key's order", function()
    H.task(function()
      local script = [[
import http.client, sys, json, threading
port, out = int(sys.argv[1]), sys.argv[2]
import os
acked = []
lock = threading.Lock()
def save():  # whole files only: the spec reads it meanwhile
    with open(out + ".tmp", "w") as f: json.dump(acked, f)
    os.replace(out + ".tmp", out)
def poster(t):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    n = 0
    while True:
        n += 1
        body = json.dumps({"type": "tick", "stream": "k%d" % (t % 4), "data": {"t": t, "n": n}})
        try:
            c.request("POST", "/events", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            doc = json.loads(r.read())
        except Exception:
            return
        if r.status != 201: return
        with lock:
            acked.append({"id": doc["id"], "t": t, "n": n})
            if len(acked) % 50 == 0: save()
threads = [threading.Thread(target=poster, args=(t,)) for t in range(8)]
for th in threads: th.start()
for th in threads: th.join()
with lock: save()
]]
      local ackfile = dir .. "/acked.json"
      H.write(dir .. "/poster.py", script)
      local py = H.spawn({ dir .. "/poster.py", tostring(serve.port), ackfile }, { bin = "/usr/bin/python3" })
      H.wait_until(function()
        local t = H.read(ackfile)
        return t and #json.decode(t) >= 300
      end, "300 acknowledged events", 30000, 20)
      serve:kill("sigkill")
      serve:wait()
      py:wait(30000)
      local acked = json.decode(H.read(ackfile))
      assert.is_true(#acked >= 300)
      -- before any restart, the read-only `sluice events` finds every one
      local code, out, err = H.sluice({ "events", "k*", "--json", "--limit", "1000000", "--store", store })
      assert.are.equal(0, code, err)
      local listed = {}
      for _, e in ipairs(json.decode(out).events) do listed[e.id] = true end
      for _, a in ipairs(acked) do
        assert.truthy(listed[a.id], "acknowledged event " .. a.id .. " is missing from sluice events")
      end
      serve = HH.serve(dir .. "/p", store)
      local stored, per_key = {}, {}
      for k = 0, 3 do
        local after
        repeat
          local _, _, _, doc = HH.get(("%s/events?stream=k%d&limit=10000%s"):format(serve.url, k, after and ("&after=" .. after) or ""))
          for _, e in ipairs(doc.events) do
            stored[e.id] = e
            per_key[k] = per_key[k] or {}
            table.insert(per_key[k], e)
          end
          after = doc.next
        until #doc.events < 10000
      end
      for _, a in ipairs(acked) do
        local e = stored[a.id]
        assert.truthy(e, "acknowledged event " .. a.id .. " is missing after the restart")
        assert.are.same({ t = a.t, n = a.n }, e.data)
      end
      -- within a key, each poster's events are in the order it sent them
      for _, list in pairs(per_key) do
        local last = {}
        for _, e in ipairs(list) do
          assert.is_true(e.data.n > (last[e.data.t] or 0), "out of order in " .. e.stream)
          last[e.data.t] = e.data.n
        end
      end
    end)
  end)
end)
