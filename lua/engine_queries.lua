--- sluice.engine_queries: reading runs and steps from the store (through
--- sluice._store's record operations): one run, a run's steps, the
--- unfinished runs, the history newest first, and the listings of an older
--- store.
local errors = require "sluice.errors"
local store = require "sluice._store"
local M = require "sluice.engine_core"

local store_error = errors.store

--- Reads a run record, or nil. A record that does not decode raises an
--- error naming it (listings skip it: M.list_runs).
function M.get_run(id)
  local r, err, code = store.get_run(id)
  if err then
    if code == "EBADSTORE" then error((err:gsub("^EBADSTORE: ", "")), 0) end
    store_error("reading run " .. id, err, code)
  end
  return r
end

--- Steps of a run as stored, in the order they started.
function M.get_steps(id)
  local list, err, code = store.get_steps(id)
  if not list then store_error("reading the steps of run " .. id, err, code) end
  return list
end

--- The runs not yet completed, failed or cancelled, oldest first (from
--- the active runs, not the whole history).
function M.unfinished_runs()
  local runs, err, code = store.unfinished_runs()
  if not runs then store_error("reading the active runs", err, code) end
  return runs
end

--- Lists runs newest first from the store's listings (every namespace
--- unless filter.namespace); filters by pipeline and status. Returns the
--- list and the messages of the corrupt records it skipped.
function M.list_runs(filter)
  filter = filter or {}
  local limit = filter.limit or 20
  local out, skipped, before = {}, {}, nil
  -- a page examines a bounded number of entries: a rare status may need more
  repeat
    local runs, nxt, bad = store.runs({ pipeline = filter.pipeline, status = filter.status,
      namespace = filter.namespace, before = before, limit = limit - #out })
    if not runs then store_error("listing runs", nxt, bad) end
    table.move(runs, 1, #runs, #out + 1, out)
    table.move(bad, 1, #bad, #skipped + 1, skipped)
    before = nxt
  until not before or #out >= limit
  return out, skipped
end

--- Fills the run listings (by namespace, pipeline, status) of a store
--- written before they existed, once. Returns the number of runs indexed.
function M.index_runs()
  if store.runs_indexed() then return 0 end
  local n, after = 0, nil
  repeat
    local b = store.batch()
    local nxt, count, code = b:index_runs(after, 1000)
    if type(count) ~= "number" then store_error("indexing runs", count, code) end
    local ok, err, ecode = b:commit()
    if not ok then store_error("indexing runs", err, ecode) end
    n, after = n + count, nxt
  until not after
  return n
end

return M
