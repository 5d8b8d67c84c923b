-- wrk script: POST /events with arrays of 1,000 events (~100 bytes of data each)
local items = {}
for i = 1, 1000 do
  items[i] = ('{"type":"bench","stream":"k:%d","data":{"p":"%s"}}'):format(i % 100, string.rep("x", 90))
end
local body = "[" .. table.concat(items, ",") .. "]"
wrk.method, wrk.body = "POST", body
wrk.headers["Content-Type"] = "application/json"
