-- bench/pg_pipes/conc.lua: the "conc" benchmark pipeline, input.k trivial
-- steps in sequence. bench/steps.lua's conc mode runs it in-process (LMDB or
-- PostgreSQL); bench/pg_serve.py serves this directory from one or three
-- `sluice serve` hosts on one PostgreSQL database. There the runs are
-- created ahead of time over the hosts' HTTP APIs with input.start_at (unix
-- ms): each run first sleeps until then, so every run of a measurement
-- starts at once, however long creating 1,000 of them took.
local uv = require "luv"
return pipeline("conc", function(input)
  if input.start_at then
    local s, us = uv.gettimeofday()
    local left = input.start_at - (s * 1000 + us // 1000)
    if left > 0 then sleep(("%dms"):format(left)) end
  end
  local last
  for i = 1, input.k do
    last = step("s" .. i, function() return { i = i, ok = true } end)
  end
  return last
end)
