-- examples_spec.lua: every scenario in pipelines/ runs as it is, as a user
-- runs it (sluice run / sluice serve from a working directory of its own,
-- offline: the fixtures are file:// URLs), and its output is checked: the
-- files, the SQLite tables, the results, the handler and consumer runs.
local H = require "helper"
local json = require "sluice.json"
local sqlite = require "sluice.sqlite"
local csv = require "sluice.csv"

local P = H.root .. "/pipelines"
local yesterday = os.date("!%Y-%m-%d", os.time() - 86400)

-- a working directory and a store of its own per test
local function workdir()
  local d = H.tmpdir()
  return d, d .. "/store"
end

local function run(cwd, store, file, ...)
  local args = { "run", P .. "/" .. file, "--store", store, ... }
  local code, out, err = H.sluice(args, { cwd = cwd })
  return code, out ~= "" and json.decode(out) or nil, err
end

local function query(db, sql)
  local d <close> = sqlite.open(db, { readonly = true })
  return d:rows(sql)
end

describe("pipelines/daily_etl.lua", function()
  it("extracts in parallel, drops incomplete events, joins names and loads a JSON Lines sink", function()
    local cwd, store = workdir()
    local code, res, err = run(cwd, store, "daily_etl.lua", "--id", "etl-1")
    assert.are.equal(0, code, err)
    local out = "out/daily_etl/" .. yesterday .. ".jsonl"
    assert.are.same({ records = 5, dropped = 3, out = out }, res)
    local lines = json.decode_lines(H.read(cwd .. "/" .. out))
    local ids, by_id = {}, {}
    for i, l in ipairs(lines) do ids[i] = l.id; by_id[l.id] = l end
    assert.are.same({ "e1", "e2", "e5", "e6", "e8" }, ids) -- e3 has no ts, e4 no user, e7 an empty ts
    assert.are.same({ id = "e5", ts = "2026-11-30T10:30:00Z", user = "u2", user_name = "Grace Hopper",
      product = "p3", product_name = "Gizmo", qty = 3, amount = 9.75 }, by_id.e5)
    assert.are.equal("u1", by_id.e1.user)
    assert.are.equal("Ada Lovelace", by_id.e1.user_name)
    local _, status = H.sluice({ "status", "etl-1", "--store", store, "--json" })
    local steps = {}
    for _, s in ipairs(json.decode(status).steps) do steps[s.id] = s.status end
    for _, id in ipairs({ "extract-users", "extract-events", "extract-products", "transform", "enrich", "load" }) do
      assert.are.equal("completed", steps[id], id)
    end
    -- the same run again: nothing runs, the sink is unchanged
    code, res = run(cwd, store, "daily_etl.lua", "--id", "etl-1")
    assert.are.equal(0, code)
    assert.are.equal(5, #json.decode_lines(H.read(cwd .. "/" .. out)))
  end)
end)

describe("pipelines/sensor_metrics.lua", function()
  it("returns the documented result and loads 3 rows into SQLite", function()
    local cwd, store = workdir()
    local code, res, err = run(cwd, store, "sensor_metrics.lua", "--id", "metrics-1")
    assert.are.equal(0, code, err)
    assert.are.same({ recordCount = 3, destination = "sqlite://out/sensor_metrics.db", success = true,
      skipped = { "rec-2" }, stagesCompleted = { "extract", "transform", "load" } }, res)
    local rows = query(cwd .. "/out/sensor_metrics.db", "SELECT id, value, category FROM metrics ORDER BY id")
    assert.are.same({
      { id = "rec-1", value = 100.5, category = "medium" },
      { id = "rec-3", value = 250.75, category = "high" },
      { id = "rec-4", value = 99.0, category = "low" },
    }, rows)
    -- a second run replaces the rows (upsert by id)
    code = run(cwd, store, "sensor_metrics.lua", "--id", "metrics-2")
    assert.are.equal(0, code)
    assert.are.same({ { n = 3, run = "metrics-2" } },
      query(cwd .. "/out/sensor_metrics.db", "SELECT count(*) AS n, max(run_id) AS run FROM metrics"))
    -- the last run and the history, on the command line
    local _, out = H.sluice({ "runs", "--pipeline", "sensor_metrics", "--store", store, "--json" })
    local runs = json.decode(out).runs
    assert.are.equal(2, #runs)
    assert.are.equal("metrics-2", runs[1].id)
    assert.are.equal("completed", runs[1].status)
    _, out = H.sluice({ "status", "metrics-1", "--store", store, "--logs" })
    assert.matches("extract%s+completed", out)
    assert.matches("level=warn step=transform msg=\"skipped a reading that is not a number\" id=rec%-2 value=invalid", out)
  end)
end)

describe("pipelines/parallel_etl.lua", function()
  it("runs the DAG, upserts by id on a rerun, and fails when more than 10% of rows are invalid", function()
    local cwd, store = workdir()
    local code, res, err = run(cwd, store, "parallel_etl.lua")
    assert.are.equal(0, code, err)
    assert.are.equal(19, res.loaded)
    assert.are.equal(19, res.added)
    assert.are.equal(1, res.invalid)
    local path = cwd .. "/out/parallel_etl/customers.jsonl"
    local rows = json.decode_lines(H.read(path))
    assert.are.equal(19, #rows)
    local first = rows[1]
    assert.are.same({ id = 1, name = "Edsger Jones", email = "edsger.1@example.com", country = "GB", region = "EMEA",
      spend = 334.06 }, first)
    code, res = run(cwd, store, "parallel_etl.lua")
    assert.are.equal(0, code)
    assert.are.same({ 0, 19 }, { res.added, res.replaced })
    assert.are.equal(19, #json.decode_lines(H.read(path)))

    code, res, err = run(cwd, store, "parallel_etl.lua", "--id", "bad-1", "--input", '{"file": "customers_bad.csv"}')
    assert.are.equal(1, code)
    assert.matches("failed in step 'validate'", err)
    assert.matches("validation failed: 4 of 20 rows are invalid %(20%%, more than 10%%%): line 4 %(id 3%): email is not an address", err)
    local _, out = H.sluice({ "status", "bad-1", "--store", store, "--json" })
    local st = {}
    for _, s in ipairs(json.decode(out).steps) do st[s.id] = s.status end
    assert.are.equal("failed", st.validate)
    assert.is_nil(st.load, "nothing is loaded after a failed validation")
  end)
end)

describe("pipelines/batch_files.lua", function()
  it("counts every CSV file 4 at a time; the malformed one fails alone with line and column", function()
    local cwd, store = workdir()
    local code, res, err = run(cwd, store, "batch_files.lua")
    assert.are.equal(0, code, err)
    -- what the fixtures hold, counted here independently
    local want_rows, want_cents = 0, 0
    for _, f in ipairs({ "01", "02", "03", "05" }) do
      for _, r in ipairs(csv.read(P .. "/data/batch/sales-2026-11-" .. f .. ".csv", { header = true })) do
        want_rows = want_rows + 1
        want_cents = want_cents + math.floor(tonumber(r.amount) * 100 + 0.5)
      end
    end
    assert.are.equal(5, res.files)
    assert.are.equal(4, res.processed)
    assert.are.equal(want_rows, res.rows)
    assert.are.equal(want_cents / 100, res.amount)
    assert.are.equal(1, #res.failed)
    assert.are.equal("sales-2026-11-04.csv", res.failed[1].file)
    assert.matches("sales%-2026%-11%-04%.csv: line 4, column 6: unterminated quoted field", res.failed[1].error)
  end)
end)

describe("pipelines/billing_export.lua", function()
  it("defaults its parameters from templates and writes the namespace's table", function()
    local cwd, store = workdir()
    -- as it is: the default namespace
    local code, res, err = run(cwd, store, "billing_export.lua")
    assert.are.equal(0, code, err)
    assert.are.equal("default_dev", res.table)
    code, res, err = run(cwd, store, "billing_export.lua", "--namespace", "acme")
    assert.are.equal(0, code, err)
    assert.are.same({ date = yesterday, table = "acme_dev", rows = 4, total = 13.51,
      destination = "sqlite://out/billing_export.db#acme_dev" }, res)
    code, res = run(cwd, store, "billing_export.lua", "--namespace", "acme", "--env", "prod", "--input", '{"date": "2026-11-30"}')
    assert.are.equal(0, code)
    assert.are.equal("acme_prod", res.table)
    -- exporting the same day again replaces its rows
    code = run(cwd, store, "billing_export.lua", "--namespace", "acme")
    assert.are.equal(0, code)
    local db = cwd .. "/out/billing_export.db"
    assert.are.same({ { n = 4, day = yesterday } }, query(db, "SELECT count(*) AS n, max(date) AS day FROM acme_dev"))
    assert.are.same({ { n = 4 } }, query(db, "SELECT count(*) AS n FROM acme_prod WHERE date = '2026-11-30'"))
    assert.are.same({ { amount_cents = 1200 } }, query(db,
      "SELECT amount_cents FROM acme_dev WHERE account = 'acct-1' AND metric = 'api_calls'"))
    -- a parameter of the wrong type is refused before the run exists
    code, _, err = run(cwd, store, "billing_export.lua", "--namespace", "acme", "--input", '{"date": 20261130}')
    assert.are.equal(2, code)
    assert.matches("parameter 'date' must be a string, got integer 20261130", err)
  end)
end)

describe("the examples under sluice serve", function()
  it("runs the completion handler, the order consumer, and lists the schedules", function()
    local cwd, store = workdir()
    -- orders before the host runs: the consumer catches up from TRIM_HORIZON
    local orders = {
      { customer = "ada", items = { { sku = "p1", qty = 2, price = 9.5 } } },
      { customer = "bob", items = { { sku = "p2", qty = 1, price = 24.0 }, { sku = "p3", qty = 3, price = 3.25 } } },
      { customer = "ada", items = { { sku = "p3", qty = 1, price = 3.25 } } },
    }
    for _, o in ipairs(orders) do
      local code, res, err = run(cwd, store, "order_stream.lua", "--pipeline", "checkout", "--input", json.encode(o))
      assert.are.equal(0, code, err)
      assert.matches("^%x+$", res.event)
    end
    local s = H.spawn({ "serve", P, "--store", store }, { cwd = cwd })
    H.wait_until(function() return s.exited or table.concat(s.err):find("armed") end, "serve to start", 30000, 10)
    assert.is_falsy(s.exited)

    local stats_path = cwd .. "/out/order_stream/stats.json"
    H.wait_until(function()
      local t = H.read(stats_path)
      return t and json.decode(t).orders == 3
    end, "the analytics consumer to count 3 orders", 20000, 20)
    local stats = json.decode(H.read(stats_path))
    assert.are.equal(1900 + 2400 + 975 + 325, stats.revenue_cents)
    assert.are.same({ orders = 2, revenue_cents = 2225 }, stats.customers.ada)

    -- handed to the serve: replays the stream from TRIM_HORIZON
    local code, res, err = run(cwd, store, "order_stream.lua", "--pipeline", "rebuild_stats")
    assert.are.equal(0, code, err)
    assert.are.equal(3, res.orders)
    assert.are.equal(56.0, res.revenue)
    assert.is_true(res.same_as_analytics)

    -- daily_etl handed to the serve: its send() reaches the on() handler, which logs
    code, res, err = run(cwd, store, "daily_etl.lua", "--id", "etl-served")
    assert.are.equal(0, code, err)
    local handler
    H.wait_until(function()
      local _, out = H.sluice({ "runs", "--pipeline", "on:pipeline.completed", "--store", store, "--json" })
      local r = json.decode(out).runs[1]
      if r and r.status == "completed" then handler = r.id end
      return handler ~= nil
    end, "the pipeline.completed handler to run", 20000, 50)
    local _, out = H.sluice({ "status", handler, "--store", store, "--logs", "--json" })
    local logs = json.decode(out).logs
    assert.are.equal(1, #logs)
    assert.are.equal("pipeline completed", logs[1].msg)
    assert.are.same({ pipeline = "daily_etl", records = 5, out = "out/daily_etl/" .. yesterday .. ".jsonl" }, logs[1].fields)

    -- the schedules of the examples, with their next fire
    _, out = H.sluice({ "schedules", "--store", store, "--json" })
    local by_name = {}
    for _, sc in ipairs(json.decode(out).schedules) do by_name[sc.pipeline] = sc end
    assert.are.equal("0 2 * * *", by_name.daily_etl.spec)
    assert.are.equal("0 3 * * *", by_name.sensor_metrics.spec)
    assert.matches("T03:00:00Z$", by_name.sensor_metrics.next_at)
    assert.are.equal(0, by_name.sensor_metrics.runs)

    s:kill("sigterm")
    assert.are.equal(0, (s:wait()))
  end)
end)
