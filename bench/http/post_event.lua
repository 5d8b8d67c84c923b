-- wrk script: POST /events, one event of ~100 bytes of data per request,
-- over 100 stream keys
local n = 0
request = function()
  n = n + 1
  local body = ('{"type":"bench","stream":"k:%d","data":{"p":"%s"}}'):format(n % 100, string.rep("x", 90))
  return wrk.format("POST", "/events", { ["Content-Type"] = "application/json" }, body)
end
