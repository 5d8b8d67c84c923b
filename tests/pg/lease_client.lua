-- lease_client.lua: one host of tests/pg/hosts_spec.lua, a real process on
-- the lease layer (lua/hosts.lua) without serve:
--   sluice tests/pg/lease_client.lua URL LEASE_MS MODE [ARGS]
-- registers a host on the PostgreSQL store URL and, by MODE:
--   claim [STATE]    claims runs of pipeline "p" and prints "claimed ID" for
--                    each; STATE: the state dir the host remembers itself in
--   hold KIND NAME   prints "holding KIND NAME" once it holds that lease
--   write            commits a schedule record "w-<pid>" with n = 1, 2, ...
--                    every 20 ms and prints "wrote N" or "refused N: why"
-- Every line is flushed. SIGTERM: deregisters and exits 0. A registration
-- found expired: prints "lost: why" and exits 3.
local url, lease_ms, mode, a1, a2 = ...
local uv = require "luv"
local store = require "sluice._store"
local sched = require "sluice.sched"
local hosts = require "sluice.hosts"
local engine = require "sluice.engine"

local function say(fmt, ...)
  io.stdout:write(fmt:format(...), "\n")
  io.stdout:flush()
end

assert(store.open(url))
engine.pipeline("p", function() end)

local id = assert(hosts.start({
  lease_ms = math.tointeger(tonumber(lease_ms)), state = mode == "claim" and a1 or nil,
  log = function(fmt, ...) io.stderr:write(fmt:format(...), "\n") end,
  launch = function(r) if mode == "claim" then say("claimed %s", r.id) end end,
  on_lost = function(msg)
    say("lost: %s", msg)
    os.exit(3)
  end,
}))
say("registered %s", id)

local sig = uv.new_signal()
sig:start("sigterm", function()
  sched.spawn({}, function()
    hosts.stop()
    assert(hosts.deregister())
    say("deregistered")
    os.exit(0)
  end, function(ok, e) if not ok then say("deregister failed: %s", tostring(e)) os.exit(1) end end)
end)

if mode == "hold" then
  sched.spawn({}, function()
    if hosts.hold(a1, a2) then say("holding %s %s", a1, a2) end
  end, function(ok, e) if not ok then say("hold failed: %s", tostring(e)) end end)
elseif mode == "write" then
  sched.spawn({}, function()
    local n = 0
    while true do
      n = n + 1
      local ok, err = store.batch():put_schedule("w-" .. math.tointeger(uv.os_getpid()), { n = n }):commit()
      if ok then say("wrote %d", n) else say("refused %d: %s", n, err) end
      sched.sleep_ms(20)
    end
  end)
end
