-- heartbeat.lua: a schedule. Every minute, a run reads the load average of
-- this machine in a step and appends it to the stream "host:load";
-- sluice schedules shows it as "* * * * *" with its next fire times.
--
--   sluice serve pipelines/          sluice events host:load

local heartbeat = pipeline("heartbeat", function()
  local load = step("read load", function()
    local f = assert(io.open("/proc/loadavg"))
    local one, five, fifteen = f:read("l"):match("^(%S+) (%S+) (%S+)")
    f:close()
    return { one = tonumber(one), five = tonumber(five), fifteen = tonumber(fifteen) }
  end)
  return emit("load", "host:load", load)
end)

every.minute(heartbeat, nil, { overlap = "skip", catch_up = "none" })
