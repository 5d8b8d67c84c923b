-- orders.lua: events and the stream. An "order.placed" event (send) becomes
-- a run that prices the order and appends it to the stream "orders:<customer>";
-- a consumer keeps a durable tally per customer from that stream.
--
--   sluice serve pipelines/ &
--   sluice run pipelines/orders.lua --pipeline place_order --input '{"customer": "ada", "items": [3, 4.5]}'
--     (handed to the serve that owns the store; prints the event id)
--   sluice events 'orders:*'        sluice consumers

pipeline("place_order", function(input)
  return send("order.placed", input)
end)

on("order.placed", function(order)
  local total = step("price", function()
    local sum = 0
    for _, price in ipairs(order.items or {}) do sum = sum + price end
    return sum
  end)
  emit("priced", "orders:" .. order.customer, { customer = order.customer, total = total })
end)

consume("tally", "orders:*", function(events)
  step("tally", function()
    local totals = {}
    for _, e in ipairs(events) do
      totals[e.data.customer] = (totals[e.data.customer] or 0) + e.data.total
    end
    return totals
  end)
end, { batch = 100 })

retention("orders:*", { max_age = "30d" })
