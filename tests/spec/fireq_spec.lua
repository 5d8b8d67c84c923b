-- fireq_spec.lua: the scheduler's fire state in C (sluice._fireq): one slot
-- per name, and the heap gives the earliest next fire first (lowest id on a
-- tie) as slots move, leave and come back, against a sorted list.
local fireq = require "sluice._fireq"

describe("sluice._fireq", function()
  it("keeps one slot per name with its state", function()
    local q = fireq.new()
    local a, b = q:id("a"), q:id("b")
    assert.are.same({ 1, 2, 1 }, { a, b, q:id("a") })
    assert.are.equal(b, q:find("b"))
    assert.is_nil(q:find("c"))
    assert.are.equal("b", q:name(b))
    assert.are.same({ nil, nil, 0, 0, true }, { q:state(a) })
    q:set_next(a, 100); q:set_last(a, 40); q:set_runs(a, 3); q:set_enabled(a, false)
    assert.are.equal(2, q:add_active(a, 2))
    assert.are.same({ 100, 40, 3, 2, false }, { q:state(a) })
    q:set_last(a, nil)
    assert.is_nil((select(2, q:state(a))))
    assert.has_error(function() q:state(3) end)
    -- arm: the whole state at once, the slot moved in the heap
    q:arm(b, 50, 10, 4, true)
    assert.are.same({ 50, 10, 4, 0, true }, { q:state(b) })
    assert.are.same({ 50, b }, { q:top() })
    q:arm(b, nil, nil, 0, false)
    assert.are.same({ nil, nil, 0, 0, false }, { q:state(b) })
    assert.are.same({ 100, a }, { q:top() })
    assert.has_error(function() q.state({}, a) end)
    assert.has_error(function() q:arm(9, 1, nil, 0, true) end)
  end)

  it("tells the armed slots, and keeps slots and names past the room reserved", function()
    local q = fireq.new()
    q:reserve(3)
    local a, b = q:id("a"), q:id("b")
    assert.is_false(q:armed(a))
    q:arm(a, 10, nil, 0, true)
    q:arm(b, 5, nil, 0, true)
    assert.is_true(q:armed(a))
    q:disarm(b) -- its definition went: out of the heap, its state kept
    assert.is_false(q:armed(b))
    assert.are.same({ 10, a }, { q:top() })
    assert.are.same({ nil, nil, 0, 0, true }, { q:state(b) })
    q:arm(b, 7, nil, 1, true)
    assert.are.same({ 7, b }, { q:top() })
    for i = 1, 1000 do q:arm(q:id("n" .. i), 100 + i, nil, 0, true) end
    assert.are.equal(1002, q:count())
    assert.are.equal("n1000", q:name(q:find("n1000")))
    local order = {} -- every armed slot comes out of the heap in order
    while q:top() do
      local t, id = q:top()
      order[#order + 1] = t
      q:set_next(id, nil)
    end
    assert.are.equal(1002, #order)
    assert.are.same({ 7, 10, 101, 1100 }, { order[1], order[2], order[3], order[1002] })
    assert.has_error(function() q:reserve(-1) end)
  end)

  it("gives the earliest next fire first, lowest id on a tie, as slots move", function()
    local q = fireq.new()
    local want = {} -- id -> next fire
    math.randomseed(7)
    for i = 1, 2000 do
      local id = q:id("s" .. math.random(1, 500))
      local r = math.random()
      if r < 0.2 then
        q:set_next(id, nil); want[id] = nil
      else
        local t = math.random(1, 50)
        q:set_next(id, t); want[id] = t
      end
      if i % 100 == 0 then
        -- drain a copy of the expectation in order, checking top each time
        local order = {}
        for k, t in pairs(want) do order[#order + 1] = { t, k } end
        table.sort(order, function(x, y) if x[1] ~= y[1] then return x[1] < y[1] end return x[2] < y[2] end)
        for _, e in ipairs(order) do
          local t, top = q:top()
          assert.are.same(e, { t, top })
          q:set_next(top, nil)
        end
        assert.is_nil(q:top())
        for _, e in ipairs(order) do q:set_next(e[2], e[1]) end
      end
    end
    assert.is_true(q:count() <= 500) -- one slot per name
  end)
end)
