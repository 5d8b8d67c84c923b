-- api_create_spec.lua: a run created over the API (lua/api/runs.lua's
-- create) is counted against its namespace's daily quota only if its
-- creation commits: a batch the store refuses gives the admission back, on
-- a real store inside the host.
local H = require "helper"
local store = require "sluice._store"
local raw = require "sluice._store_raw"
local quota = require "sluice.quota"
local api_runs = require "sluice.api.runs"

assert(store.open(H.store_target()))
local p = pipeline("counted", function() return 1 end)
-- what serve launches runs with: engine.execute in a task
require("sluice.api").ctx = { launch = function(pl, input, id, opts, on_end)
  require("sluice.sched").spawn({}, require("sluice.engine").execute, function() on_end() end, pl, input, id, opts)
end }

describe("API run creation", function()
  it("does not count a run whose creation batch fails against the daily quota", function()
    H.task(function()
      assert.is_truthy(quota.set("acme", { runs_per_day = 2 }))
      local req = { namespace = "acme" }
      -- a key over LMDB's limit: the whole batch fails at commit (on
      -- PostgreSQL: the record update of a step that is not there)
      local ok, err = pcall(api_runs.create, req, p, nil, {
        extra = function(b)
          if H.backend == "lmdb" then raw.ops(b, { "meta", ("k"):rep(600), "x" })
          else b:step_positions("no-run", "no-step", "events") end
        end })
      assert.is_false(ok)
      assert.matches("creating run", tostring(err))
      local day = quota.day(require("sluice._clock").now())
      assert.are.equal(0, quota.runs_on("acme", day))
      -- a record the store refuses before any commit: given back too
      ok, err = pcall(api_runs.create, req, p, nil, { id = ("i"):rep(300) })
      assert.is_false(ok)
      assert.matches("longer than 200 bytes", tostring(err))
      assert.is_string(api_runs.create(req, p, nil))
      assert.is_string(api_runs.create(req, p, nil))
      assert.are.equal(2, quota.runs_on("acme", day))
      ok, err = pcall(api_runs.create, req, p, nil)
      assert.is_false(ok)
      assert.matches("daily run limit %(2%)", tostring(type(err) == "table" and (err.message or err.error) or err))
    end)
  end)

  it("refuses a pipeline name the store cannot key, where it is defined", function()
    local ok, err = pcall(pipeline, ("n"):rep(201), function() end)
    assert.is_false(ok)
    assert.matches("api_create_spec.lua:%d+: pipeline 'n+%.%.%.': the name is 201 bytes; the most is 200", err)
  end)
end)
