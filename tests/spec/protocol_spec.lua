-- protocol_spec.lua: the control socket's protocol (lua/control.lua) inside
-- the host, both ends in one process on a real socket: replies by tag,
-- progress, unknown kinds and malformed frames, a new kind as one table
-- entry, a pending request answered ESTOPPED when the host stops, and a
-- connection that ends with no answer.
local H = require "helper"
local storage = require "sluice._store"
local engine = require "sluice.engine"
local control = require "sluice.control"
local sock = require "sluice._control"
local sched = require "sluice.sched"

local store = H.state_dir(H.store_target()) -- where the socket is
assert(storage.open(H.store_target(store)))

describe("the control protocol", function()
  after_each(function() H.task(control.close, "the spec ended") end)

  local function listen()
    assert(control.listen(store, { role = "serve", dir = "p",
      execute = function(p, input, id) return engine.execute(p, input, id) end,
      start = function() end }))
  end

  it("answers status, and names the known kinds for an unknown one", function()
    listen()
    H.task(function()
      local cl = assert(control.connect(store))
      local r = cl:call({ kind = "status" })
      assert.is_true(r.ok)
      assert.are.equal("serve", r.role)
      assert.are.equal(math.tointeger(require("luv").os_getpid()), r.pid)
      r = cl:call({ kind = "reticulate" })
      assert.is_false(r.ok)
      assert.are.equal("EUNKNOWN", r.code)
      assert.matches("unknown request kind 'reticulate' %(known: cancel, eval, ping, reload, rerun, run, status, trigger, wait%)", r.message)
      r = cl:call({ kind = "run", pipeline = 3 })
      assert.are.equal("EBADREQ", r.code)
      assert.matches("field 'pipeline' must be a string", r.message)
      cl:close()
    end)
  end)

  it("refuses a frame that is not a request", function()
    listen()
    H.task(function()
      local cl = assert(control.connect(store))
      assert(cl.conn:write("[1, 2"))
      local f = cl:next_frame()
      assert.are.equal("EBADREQ", f.code)
      cl:close()
    end)
  end)

  it("runs a kind added to the handler table, with progress, replies matched by tag", function()
    local gate
    control.handlers.echo = function(req, ctx)
      ctx.progress({ got = req.value })
      if req.hold then
        gate = coroutine.running()
        sched.wait()
      end
      return { value = req.value }
    end
    listen()
    H.task(function()
      local cl = assert(control.connect(store))
      local a = sched.go({}, function()
        local seen
        local r = cl:call({ kind = "echo", value = "slow", hold = true }, { on_progress = function(p) seen = p.got end })
        return { r = r, seen = seen }
      end)
      -- the second request on the same connection answers while the first waits
      local cl2 = assert(control.connect(store))
      local r2 = cl2:call({ kind = "echo", value = { 1, 2, 3 } })
      assert.is_true(r2.ok)
      assert.are.same({ 1, 2, 3 }, r2.value)
      H.wait_until(function() return gate ~= nil end, "the held request")
      sched.wake(gate)
      local ok, res = a:await()
      assert(ok, res)
      assert.are.equal("slow", res.r.value)
      assert.are.equal("slow", res.seen)
      cl:close()
      cl2:close()
    end)
    control.handlers.echo = nil
  end)

  it("answers a pending request ESTOPPED when the host stops, and a dead host is an EOF", function()
    control.handlers.hang = function() sched.wait() end
    listen()
    H.task(function()
      local cl = assert(control.connect(store))
      local t = sched.go({}, function() return cl:call({ kind = "hang" }) end)
      H.sleep(20)
      control.close("stopped for the spec")
      local ok, r = t:await()
      assert(ok, r)
      assert.is_false(r.ok)
      assert.are.equal("ESTOPPED", r.code)
      assert.are.equal("stopped for the spec", r.message)
      cl:close()
      -- the socket is gone: a client is told at once
      local none, _, code = control.connect(store)
      assert.is_nil(none)
      assert.are.equal("ENOENT", code)
    end)
    -- a host that closes the connection without answering (as a killed one does)
    local server = assert(sock.listen(store, function(conn)
      conn:read_start(function(frame) if frame then conn:close() end end)
    end))
    H.task(function()
      local cl = assert(control.connect(store))
      local r, msg, code = cl:call({ kind = "status" })
      assert.is_nil(r)
      assert.are.equal("EOF", code, msg)
      -- and one that never answers is bounded by the caller
      cl:close()
    end)
    server:close()
    control.handlers.hang = nil
  end)

  it("bounds the wait for a first answer", function()
    control.handlers.hang = function() sched.wait() end
    listen()
    H.task(function()
      local cl = assert(control.connect(store))
      local t0 = require("luv").hrtime()
      local r, _, code = cl:call({ kind = "hang" }, { first_frame_ms = 100 })
      assert.is_nil(r)
      assert.are.equal("ETIMEDOUT", code)
      assert.is_true((require("luv").hrtime() - t0) / 1e6 < 2000)
      cl:close()
    end)
    control.handlers.hang = nil
  end)
end)
