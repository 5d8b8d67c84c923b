-- bench/floor/replay_body.lua: the part of bench/replay.lua's pipeline that is not the
-- replay: its loop, "s" .. i and a closure with an upvalue per step, calling a Lua
-- function that returns nil ("none") or a fresh {i =, ok = true} built by Lua ("table",
-- what a replayed step's result costs at the least), in the same host (its allocator and
-- collector). Best of 20 passes of 10,000 steps, process CPU per step.
--   sluice bench/floor/replay_body.lua
local uv = require "luv"
local cpu = function()
  local r = uv.getrusage()
  return (r.utime.sec + r.stime.sec) * 1e6 + r.utime.usec + r.stime.usec
end
local n, calls, k = 10000, 0, 0
local fns = {
  none = function() return nil end,
  table = function() k = k + 1; return { i = k, ok = true } end,
}
local out = {}
for _, mode in ipairs({ "none", "table" }) do
  local fn, best = fns[mode], math.huge
  for _ = 1, 20 do
    collectgarbage()
    local c0, last = cpu(), nil
    for i = 1, n do
      last = fn("s" .. i, function() calls = calls + 1; return { i = i, ok = true } end)
    end
    best = math.min(best, (cpu() - c0) / n)
    assert(last == nil or last.ok)
  end
  out[#out + 1] = ("%s %.3f"):format(mode, best)
end
print("replay_body us/step (best of 20): " .. table.concat(out, ", "))
