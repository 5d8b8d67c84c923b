-- vm_spec.lua: the host's Lua state (host/vm.c): its collector is the
-- generational one (a run's garbage dies young), finalizers and weak tables
-- work under it, and memory freed comes back for reuse (host/lua_alloc.c).

describe("the host's Lua state", function()
  it("collects with the generational collector", function()
    local was = collectgarbage("incremental")
    collectgarbage(was) -- as it was
    assert.are.equal("generational", was)
  end)

  it("runs finalizers and clears weak tables, young and old objects alike", function()
    local finalized = 0
    local weak = setmetatable({}, { __mode = "v" })
    local old = setmetatable({}, { __gc = function() finalized = finalized + 1 end })
    weak.old = old
    for _ = 1, 3 do collectgarbage("step") end -- old is old now
    do
      local young = setmetatable({}, { __gc = function() finalized = finalized + 1 end })
      weak.young = young
    end
    old = nil
    collectgarbage()
    collectgarbage()
    assert.are.equal(2, finalized)
    assert.is_nil(weak.old)
    assert.is_nil(weak.young)
  end)

  it("keeps values made by the million intact while their garbage is reused", function()
    local keep, sum, want = {}, 0, 0
    for i = 1, 300000 do
      local t = { i = i, s = "s" .. i, f = function() return i end }
      sum = sum + t.f() + #t.s
      if i % 1000 == 0 then keep[#keep + 1] = t end
    end
    for _, t in ipairs(keep) do
      assert.are.equal("s" .. t.i, t.s)
      assert.are.equal(t.i, t.f())
      want = want + t.i
    end
    assert.are.equal(300, #keep)
    assert.is_true(sum > 0 and want == 300 * 301 * 1000 / 2)
  end)
end)
