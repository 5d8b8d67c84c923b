--- sluice.quota: namespaces (organisations) and their quotas. A namespace
--- record ({name, status, runs_per_day, concurrent_runs, events_per_second},
--- sluice._store) is written by `sluice namespaces set`, directly in the
--- store like keys. The HTTP API checks it:
---   status "suspended"   403 "namespace acme is suspended"
---   runs_per_day         runs started over the API per UTC day; the count
---                        is durable (the store's counter of the namespace
---                        and day, moved in the batch that creates each
---                        run), so a restart does not reset it
---   concurrent_runs      runs started over the API by this process and
---                        not finished
---   events_per_second    events posted per second (a token bucket)
--- Exceeding one is a 429 with Retry-After and a message naming the limit.
local clock = require "sluice._clock"
local store = require "sluice._store"

local M = {}

M.DEFAULT_NS = "default"
M.STATUSES = { active = true, trial = true, suspended = true }
M.LIMITS = { "runs_per_day", "concurrent_runs", "events_per_second" }

function M.valid_name(ns)
  return type(ns) == "string" and #ns <= 64 and ns:match("^[a-z0-9][a-z0-9_.-]*$") ~= nil
end

--- The namespace record, or nil (no limits, active).
function M.get(ns)
  local rec, err = store.namespace(ns)
  if err then error(("reading namespace %s: %s"):format(ns, err), 0) end
  return rec
end

--- "YYYY-MM-DD" of a time in us (UTC).
function M.day(us)
  return clock.iso(us):sub(1, 10)
end

-- ns .. " " .. day -> runs admitted by this process: the store's count
-- (read on first use; serve is the only writer of counts) plus the runs
-- admitted whose creating batch has not failed
local counts = {}

--- Runs started over the API in namespace ns on day (default today).
function M.runs_on(ns, day)
  day = day or M.day(clock.now())
  local c = counts[ns .. " " .. day]
  if c == nil then
    local err
    c, err = store.quota_used(ns, day)
    if not c then error(("reading the run count of namespace %s: %s"):format(ns, err), 0) end
  end
  return c
end

--- Writes or updates a namespace (the CLI). fields may hold status and the
--- limits (0 removes a limit). Returns the record, or nil, message.
function M.set(ns, fields)
  if not M.valid_name(ns) then
    return nil, ("namespace %q: use lowercase letters, digits and _ . - (at most 64, starting with a letter or digit)"):format(tostring(ns))
  end
  local rec = M.get(ns) or { name = ns, status = "active", created_at = clock.iso(clock.now()) }
  if fields.status ~= nil then
    if not M.STATUSES[fields.status] then
      return nil, ("--status must be active, trial or suspended, got %s"):format(tostring(fields.status))
    end
    rec.status = fields.status
  end
  for _, k in ipairs(M.LIMITS) do
    local v = fields[k]
    if v ~= nil then
      if math.type(v) ~= "integer" or v < 0 then
        return nil, ("--%s must be an integer >= 0 (0: no limit), got %s"):format(k:gsub("_", "-"), tostring(v))
      end
      rec[k] = v > 0 and v or nil
    end
  end
  rec.updated_at = clock.iso(clock.now())
  local ok, err = store.batch():put_namespace(ns, rec):commit()
  if not ok then return nil, ("storing namespace %s: %s"):format(ns, err) end
  return rec
end

--- Every namespace record with runs_today.
function M.list()
  local out, err = store.namespaces()
  if not out then error("reading the namespaces: " .. err, 0) end
  for _, rec in ipairs(out) do rec.runs_today = M.runs_on(rec.name) end
  return out
end

local function too_many(message, retry_after)
  require("sluice.router").fail(429, "quota_exceeded", message,
    { headers = ("Retry-After: %d\r\n"):format(retry_after), retry_after_s = retry_after })
end

local active = {} -- ns -> runs started over the API and not finished

--- Admits one run of namespace ns or raises a 429. Returns count(b), which
--- adds the run's count to the sluice._store batch that creates the run
--- (so the two are durable together), and done(committed): done(false)
--- when that batch failed (the run is then not counted), done() when the
--- run ends. An admitted run counts at once against the limits, so that
--- requests in flight together cannot pass a limit.
function M.admit_run(ns)
  local rec = M.get(ns) or {}
  local now = clock.now()
  local day = M.day(now)
  local c = M.runs_on(ns, day)
  if rec.runs_per_day and c >= rec.runs_per_day then
    local midnight = (now // 86400000000 + 1) * 86400
    too_many(("daily run limit (%d) reached for namespace %s"):format(rec.runs_per_day, ns),
      math.max(1, midnight - now // 1000000))
  end
  if rec.concurrent_runs and (active[ns] or 0) >= rec.concurrent_runs then
    too_many(("concurrent run limit (%d) reached for namespace %s"):format(rec.concurrent_runs, ns), 1)
  end
  local k = ns .. " " .. day
  counts[k] = c + 1
  active[ns] = (active[ns] or 0) + 1
  local released = false
  return function(b) b:count_run(ns, day) end, function(committed)
    if released then return end
    released = true
    active[ns] = active[ns] - 1
    if committed == false then counts[k] = counts[k] - 1 end
  end
end

local buckets = {} -- ns -> {tokens, at_us}

--- Admits n events of namespace ns or raises a 429. rec: its record if
--- the caller read it already (false: none).
function M.admit_events(ns, n, rec)
  if rec == nil then rec = M.get(ns) end
  local rate = rec and rec.events_per_second
  if not rate then return end
  if n > rate then
    too_many(("a batch of %d events is more than the event rate limit (%d per second) of namespace %s: send smaller batches")
      :format(n, rate, ns), 1)
  end
  local now = clock.now()
  local b = buckets[ns]
  if not b then
    b = { tokens = rate, at = now }
    buckets[ns] = b
  end
  b.tokens = math.min(rate, b.tokens + (now - b.at) / 1e6 * rate)
  b.at = now
  if b.tokens < n then
    too_many(("event rate limit (%d per second) reached for namespace %s"):format(rate, ns),
      math.max(1, math.ceil((n - b.tokens) / rate)))
  end
  b.tokens = b.tokens - n
end

return M
