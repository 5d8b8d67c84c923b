--- sluice.flow: flow control built on durable steps and run branches
--- (DESIGN §2): `map`, a bounded fan-out with one durable step per item, and
--- `dag`, steps with dependencies started as soon as what they are after
--- has finished.
---
--- Replay works as for `parallel`: each item of a map and each node of a
--- dag runs its step in a branch of its own, named after the position of the
--- map/dag call in the caller's branch and the item index / node name. The
--- recorded (branch, position) of every step therefore does not depend on
--- which worker ran it or in which order the loop scheduled it, so a resume
--- may interleave differently and still match its history.
local engine = require "sluice.engine"
local sched = require "sluice.sched"
local json = require "sluice.json"
local errors = require "sluice.errors"
local step_options = require "sluice.step_options"

local M = {}

local step = engine.step
local new_branch = engine.new_branch
local StepError = engine.StepError

--- Worker coroutines of all maps alive right now, and the most ever alive
--- at once: observability for tests and benchmarks (a 10,000-item map must
--- not hold 10,000 coroutines).
M.stats = { workers = 0, peak_workers = 0 }

-- map ids used per run (weak: a run's table goes when the run ends), so a
-- second map with the same id names both call sites instead of failing on
-- a step id inside flow.lua
local map_sites = setmetatable({}, { __mode = "k" })

local show = errors.show

-- Validates the step options a map or a dag node passes on to its steps
-- (retries, backoff, timeout) here, at the call, rather than at the first
-- item that happens to retry. map and dag are entry points (sluice.errors):
-- the error names the user's line.
local check_step_opts = step_options.check

-- a failure of the item's own step (its function raised, or returned a
-- value that cannot be stored) as opposed to the run itself going wrong
-- (a diverged replay, the store failing), which no settle mode may swallow
local function is_step_failure(run, err)
  return getmetatable(err) == StepError and not run.fatal
end

---------------------------------------------------------------------------
-- map

local map_opts = { concurrency = true, settle = true, retries = true, backoff = true, timeout = true }

--- map(id, items, fn, [opts]): one durable step per item, `id#1`, `id#2`,
--- ..., running `fn(item, i)`; at most `opts.concurrency` (default 8) in
--- flight; returns the results in item order (a nil result becomes
--- json.null so the list stays a sequence the store can hold). On replay
--- finished items return their stored result and only the others run.
---
--- Item i is the step `id#i` whatever its value, so `items` must be the
--- same on replay (compute them in a step); which worker ran an item does
--- not matter. A failing item stops new items from starting; the ones in
--- flight settle, then the first failure in item order is raised. With
--- `settle = true` every item runs and each result is `{ok = value}` or
--- `{err = message}`; map does not raise for item failures (failed items
--- run again if the run is resumed). A run that diverged from its history
--- or a store error still fails the map.
---
--- `retries`, `backoff` and `timeout` are passed to every item's step.
---@param id string the map id; item i is the step `id#i`
---@param items any[] a sequence
---@param fn fun(item:any, i:integer):any the step body of one item
---@param opts {concurrency?:integer, settle?:boolean, retries?:integer, backoff?:any, timeout?:any}?
---@return any[] results in item order
function M.map(id, items, fn, opts)
  local br = engine.current_branch("map") -- raises at the user's call
  if type(id) ~= "string" or id == "" or id:find("\0", 1, true) then
    error("map: the id must be a non-empty string without NUL bytes (items become steps id#1, id#2, ...)", 2)
  end
  if br.in_step then
    error(("map '%s' called inside step '%s': call it from the pipeline function"):format(id, br.in_step), 2)
  end
  if type(items) ~= "table" then
    error(("map '%s': items must be a sequence table, got %s"):format(id, type(items)), 2)
  end
  local n = #items
  if #id + 1 + #tostring(n) > engine.MAX_STEP_ID then
    error(("map '%s...': the id is %d bytes long; with '#<item>' after it, step ids must stay within %d bytes")
      :format(id:sub(1, 32), #id, engine.MAX_STEP_ID), 2)
  end
  -- a sequence: exactly the keys 1..n (this also rejects holes, whose #
  -- is ambiguous, and string keys that the items would silently ignore)
  local count = 0
  for k in pairs(items) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      error(("map '%s': items must be a sequence (keys 1..n without holes), found key %s"):format(
        id, type(k) == "string" and ("'" .. k .. "'") or tostring(k)), 2)
    end
    count = count + 1
  end
  if count ~= n then
    error(("map '%s': items must be a sequence (keys 1..n without holes), it has holes"):format(id), 2)
  end
  if type(fn) ~= "function" then
    error(("map '%s': expected a function as third argument, got %s"):format(id, type(fn)), 2)
  end
  local concurrency, settle, step_opts = 8, false, nil
  if opts ~= nil then
    if type(opts) ~= "table" then
      error(("map '%s': options must be a table, got %s"):format(id, type(opts)), 2)
    end
    for k in pairs(opts) do
      if not map_opts[k] then
        error(("map '%s': unknown option '%s' (known: concurrency, settle, retries, backoff, timeout)")
          :format(id, tostring(k)), 2)
      end
    end
    local c = opts.concurrency
    if c ~= nil then
      if math.type(c) ~= "integer" or c < 1 then
        error(("map '%s': concurrency must be a positive integer, got %s"):format(id, show(c)), 2)
      end
      concurrency = c
    end
    if opts.settle ~= nil then
      if type(opts.settle) ~= "boolean" then
        error(("map '%s': settle must be a boolean, got %s"):format(id, type(opts.settle)), 2)
      end
      settle = opts.settle
    end
    step_opts = check_step_opts(("map '%s'"):format(id), opts)
  end

  local run = br.run
  local sites = map_sites[run]
  if not sites then
    sites = {}
    map_sites[run] = sites
  end
  local site = errors.where() or "?"
  if sites[id] then
    error(("map id '%s' is used twice in run %s: at %s and at %s; map ids must be unique within a run")
      :format(id, run.id, sites[id], site), 2)
  end
  sites[id] = site

  -- The map takes one position in the caller's branch, like parallel. Its
  -- items run in one branch below it, "<pos>#", item i at position i: each
  -- worker has its own context table of that branch and sets the position
  -- to i - 1 before item i's step (which takes the next one), so what
  -- replay matches, (branch, position) -> step id, depends only on the item
  -- index, never on which worker ran the item or when. One branch rather
  -- than one per item: a resumed 100,000-item map loads one recorded-order
  -- table, not 100,000, and no table is made per item.
  br.pos = br.pos + 1
  local branch_name = br.pos .. "#"
  local results = json.array({})
  if n == 0 then return results end

  local sid = id .. "#"
  local function run_item(i)
    local v
    if step_opts then
      v = step(sid .. i, step_opts, fn, items[i], i)
    else
      v = step(sid .. i, fn, items[i], i)
    end
    return v -- not a tail call: step records the caller's line
  end

  local me = coroutine.running()
  local next_i, alive, waiting, stop = 0, 0, false, false
  local fail_i, fail_err -- the failure with the lowest item index
  local stats = M.stats

  -- a pool of workers (never more coroutines than that), each taking the
  -- next index until none is left or an item failed
  local function worker(wbr)
    while not stop do
      local i = next_i + 1
      if i > n then break end
      next_i = i
      wbr.pos = i - 1
      local ok, res = xpcall(run_item, sched.traceback, i)
      if ok then
        if res == nil then res = json.null end
        results[i] = settle and { ok = res } or res
      elseif settle and is_step_failure(run, res) then
        results[i] = { err = res.message }
      else
        if not fail_i or i < fail_i then fail_i, fail_err = i, res end
        stop = true
      end
    end
  end
  local function done(ok, err)
    -- the worker itself failing (not an item) is a bug, but surface it
    if not ok and not fail_i then fail_i, fail_err = n + 1, err end
    alive = alive - 1
    stats.workers = stats.workers - 1
    if alive == 0 and waiting then sched.wake(me) end
  end

  local workers = math.min(concurrency, n)
  for _ = 1, workers do
    if stop or next_i >= n then break end -- replayed items can finish the map early
    alive = alive + 1
    stats.workers = stats.workers + 1
    if stats.workers > stats.peak_workers then stats.peak_workers = stats.workers end
    local wbr = new_branch(br, branch_name)
    sched.spawn(wbr, worker, done, wbr)
  end
  if alive > 0 then
    waiting = true
    sched.wait()
  end
  if fail_i then error(fail_err, 0) end
  return results
end

---------------------------------------------------------------------------
-- dag

local node_fields = { after = true, retries = true, backoff = true, timeout = true }

-- Finds a cycle among the nodes (names sorted, `next_of[name]` sorted):
-- returns it as a list starting and ending at its smallest name, or nil.
local function find_cycle(names, next_of)
  local state = {} -- nil: not seen, 1: on the path, 2: done
  local path = {}
  local function visit(u)
    state[u] = 1
    path[#path + 1] = u
    for _, v in ipairs(next_of[u]) do
      if state[v] == 1 then
        local cyc, start = {}, nil
        for k = #path, 1, -1 do
          if path[k] == v then start = k break end
        end
        for k = start, #path do cyc[#cyc + 1] = path[k] end
        return cyc
      elseif state[v] == nil then
        local c = visit(v)
        if c then return c end
      end
    end
    path[#path] = nil
    state[u] = 2
  end
  for _, name in ipairs(names) do
    if state[name] == nil then
      local cyc = visit(name)
      if cyc then
        -- rotate so the message does not depend on where the search began
        local m = 1
        for k = 2, #cyc do
          if cyc[k] < cyc[m] then m = k end
        end
        local out = {}
        for k = 0, #cyc - 1 do out[#out + 1] = cyc[(m - 1 + k) % #cyc + 1] end
        out[#out + 1] = out[1]
        return out
      end
    end
  end
end

--- dag{ name = {after = {...}, fn}, ... }: each node is a durable step
--- named by its key; it starts as soon as every node it is after has
--- finished (independent nodes run concurrently) and `fn(deps)` receives
--- the results of those nodes by name. Returns every node's result by name.
--- A node may also be a bare function (no dependencies), and may carry
--- `retries`, `backoff`, `timeout` for its step.
---
--- Errors at definition time name the nodes: a cycle, a dependency on an
--- unknown node, a node without a function. (Duplicate names cannot occur:
--- a Lua table has one value per key.) When a node fails, the running
--- nodes finish, no other node starts, and the failure of the first
--- failed node by name is raised; a resume runs the unfinished nodes.
---@param nodes table<string, table|function>
---@return table<string, any> results by node name
function M.dag(nodes)
  local br = engine.current_branch("dag")
  if type(nodes) ~= "table" then
    error(("dag: expected a table of nodes {name = {after = {...}, fn}, ...}, got %s"):format(type(nodes)), 2)
  end
  if br.in_step then
    error(("dag called inside step '%s': call it from the pipeline function"):format(br.in_step), 2)
  end

  -- everything that affects replay or errors goes in sorted name order
  local names = {}
  for k in pairs(nodes) do
    if type(k) ~= "string" then
      error(("dag: node names must be strings (each node is the step of that id), got the %s key %s; " ..
        "write dag{ name = {after = {...}, fn} }"):format(type(k), tostring(k)), 2)
    end
    if k == "" or #k > engine.MAX_STEP_ID or k:find("\0", 1, true) then
      error(engine.bad_step_id("dag: node", k), 2)
    end
    names[#names + 1] = k
  end
  table.sort(names)

  local fns, after, opts_of = {}, {}, {}
  for _, name in ipairs(names) do
    local spec = nodes[name]
    local fn, deps, sopts
    if type(spec) == "function" then
      fn, deps = spec, {}
    elseif type(spec) == "table" then
      for k in pairs(spec) do
        if k ~= 1 and not node_fields[k] then
          error(("dag: node '%s' has an unknown field '%s' (known: after, retries, backoff, timeout, " ..
            "and the function as its first item)"):format(name, tostring(k)), 2)
        end
      end
      fn = spec[1]
      if type(fn) ~= "function" then
        error(("dag: node '%s' has no function: write %s = {after = {...}, function(deps) ... end}")
          :format(name, name), 2)
      end
      deps = spec.after
      if deps == nil then
        deps = {}
      elseif type(deps) == "string" then
        deps = { deps }
      elseif type(deps) ~= "table" then
        error(("dag: node '%s': after must be a list of node names, got %s"):format(name, type(deps)), 2)
      end
      sopts = check_step_opts(("dag: node '%s'"):format(name), spec)
    else
      error(("dag: node '%s' must be a table {after = {...}, fn} or a function, got %s"):format(name, type(spec)), 2)
    end
    -- a dependency listed twice counts once
    local list, seen = {}, {}
    for k, d in pairs(deps) do
      if math.type(k) ~= "integer" or type(d) ~= "string" then
        error(("dag: node '%s': after must be a list of node names"):format(name), 2)
      end
    end
    for _, d in ipairs(deps) do
      if nodes[d] == nil then
        error(("dag: node '%s' is after unknown node '%s'"):format(name, d), 2)
      end
      if not seen[d] then
        seen[d] = true
        list[#list + 1] = d
      end
    end
    table.sort(list)
    fns[name], after[name], opts_of[name] = fn, list, sopts
  end

  -- dependents, sorted (names are visited in order)
  local next_of, remaining = {}, {}
  for _, name in ipairs(names) do next_of[name] = {} end
  for _, name in ipairs(names) do
    remaining[name] = #after[name]
    for _, d in ipairs(after[name]) do
      local l = next_of[d]
      l[#l + 1] = name
    end
  end
  local cyc = find_cycle(names, next_of)
  if cyc then
    error(("dag: cycle %s (each node is after the one before it, so none of them can start)")
      :format(table.concat(cyc, " -> ")), 2)
  end

  -- the dag takes one position in the caller's branch; node `name` runs in
  -- the branch "<pos>:<name>" below it
  br.pos = br.pos + 1
  local prefix = br.pos .. ":"
  local results, errs = {}, {}
  local me = coroutine.running()
  local running, waiting, stop = 0, false, false

  local function body(name)
    local deps = {}
    for _, d in ipairs(after[name]) do deps[d] = results[d] end
    local v
    if opts_of[name] then
      v = step(name, opts_of[name], fns[name], deps)
    else
      v = step(name, fns[name], deps)
    end
    return v -- not a tail call: step records the caller's line
  end

  local start
  local function finished(name, ok, res)
    if ok then
      results[name] = res
      if not stop then
        for _, d in ipairs(next_of[name]) do
          remaining[d] = remaining[d] - 1
          if remaining[d] == 0 then start(d) end
        end
      end
    else
      errs[name] = res
      stop = true
    end
    -- after starting the dependents: running only reaches 0 at the end
    running = running - 1
    if running == 0 and waiting then sched.wake(me) end
  end
  function start(name)
    running = running + 1
    sched.spawn(new_branch(br, prefix .. name), body, function(ok, res)
      finished(name, ok, res)
    end, name)
  end

  -- the roots, in name order; `running` is held above 0 meanwhile so a
  -- replayed root that finishes at once cannot end the dag early
  running = running + 1
  for _, name in ipairs(names) do
    if stop then break end
    if remaining[name] == 0 then start(name) end
  end
  running = running - 1
  if running > 0 then
    waiting = true
    sched.wait()
  end
  for _, name in ipairs(names) do
    if errs[name] ~= nil then error(errs[name], 0) end
  end
  return results
end

return M
