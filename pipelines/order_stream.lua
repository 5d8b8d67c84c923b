-- order_stream.lua: an event stream of orders, Kinesis-style. `checkout`
-- prices an order in a step and emits "order.created" on the stream key
-- "orders:<customer>"; the `analytics` consumer keeps the order count and
-- the revenue from its checkpointed batches (at-least-once: a batch handed
-- again after a crash is recognized by its event ids and not counted
-- twice); `rebuild_stats` replays the stream from TRIM_HORIZON and reaches
-- the same totals.
--
--   sluice serve pipelines/ &                      # runs the consumer
--   sluice run pipelines/order_stream.lua --input '{"customer": "ada", "items": [{"sku": "p1", "qty": 2, "price": 9.5}]}'
--   sluice events 'orders:*'      sluice consumers
--   cat out/order_stream/stats.json
--   sluice run pipelines/order_stream.lua --pipeline rebuild_stats
local fs = require "sluice.fs"
local json = require "sluice.json"
local log = require "sluice.log"

local STATS = "out/order_stream/stats.json" -- relative to the working directory

local function empty_stats()
  return { orders = 0, revenue_cents = 0, customers = {}, last_event = json.null }
end

-- Counts one order.created event into stats, once: events are read in
-- log order, so an id at or before the last one counted was counted.
local function count(stats, e)
  if stats.last_event ~= json.null and e.id <= stats.last_event then return end
  stats.last_event = e.id
  if e.type ~= "order.created" then return end
  stats.orders = stats.orders + 1
  stats.revenue_cents = stats.revenue_cents + e.data.total_cents
  local c = stats.customers[e.data.customer] or { orders = 0, revenue_cents = 0 }
  c.orders, c.revenue_cents = c.orders + 1, c.revenue_cents + e.data.total_cents
  stats.customers[e.data.customer] = c
end

pipeline("checkout", function(input)
  local order = step("price", function()
    local cents = 0
    for i, item in ipairs(input.items) do
      if math.type(item.qty) ~= "integer" or type(item.price) ~= "number" then
        error(("items[%d] needs an integer qty and a number price"):format(i))
      end
      cents = cents + item.qty * math.floor(item.price * 100 + 0.5)
    end
    return { order_id = ctx().run_id, customer = input.customer, items = #input.items, total_cents = cents }
  end)
  local event_id = emit("order.created", "orders:" .. input.customer, order)
  return { order_id = order.order_id, event = event_id, total = order.total_cents / 100 }
end, { params = {
  customer = { type = "string", required = true },
  items = { type = "array", required = true, description = "[{sku, qty, price}]" },
} })

consume("analytics", "orders:*", function(events)
  step("tally", function()
    local text = fs.read(STATS)
    local stats = text and json.decode(text) or empty_stats()
    for _, e in ipairs(events) do count(stats, e) end
    assert(fs.mkdir(fs.dirname(STATS)))
    assert(fs.write(STATS, json.encode(stats, { pretty = true }) .. "\n"))
    log.info("tallied", { events = #events, orders = stats.orders, revenue_cents = stats.revenue_cents })
    return { orders = stats.orders, revenue_cents = stats.revenue_cents }
  end)
end, { batch = 100 })

pipeline("rebuild_stats", function()
  return step("replay", function()
    local stats = empty_stats()
    local events, info = read{ stream = "orders:*", from = "TRIM_HORIZON", limit = 1000 }
    while #events > 0 do
      for _, e in ipairs(events) do count(stats, e) end
      events, info = read{ stream = "orders:*", after = info.next, limit = 1000 }
    end
    local text = fs.read(STATS)
    local kept = text and json.decode(text)
    return {
      orders = stats.orders, revenue = stats.revenue_cents / 100, customers = stats.customers,
      -- what the consumer reached; equal once it has caught up
      analytics = kept and { orders = kept.orders, revenue = kept.revenue_cents / 100 } or json.null,
      same_as_analytics = kept ~= nil and kept.orders == stats.orders and kept.revenue_cents == stats.revenue_cents,
    }
  end)
end)
