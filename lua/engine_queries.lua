--- sluice.engine_queries: reading runs and steps from the store: one run,
--- a run's steps, the unfinished runs, and the history newest first.
local store = require "sluice._store"
local json = require "sluice._codec" -- store records: exact
local errors = require "sluice.errors"
local runs_index = require "sluice.runs_index"
local M = require "sluice.engine_core"

local store_error = errors.store

-- A run record decoded, or nil and a message naming it.
local function decode_run(id, raw)
  local ok, r = pcall(json.decode, raw)
  if ok and type(r) == "table" then return r end
  return nil, ("the record of run %s in %s is corrupt (%s): the store was damaged or written by another program")
    :format(id, store.dir(), ok and "not a JSON object" or tostring(r))
end

--- Reads a run record, or nil. A record that does not decode raises an
--- error naming it (listings skip it: M.list_runs).
function M.get_run(id)
  local raw, err, code = store.raw_get("runs", id)
  if err then store_error("reading run " .. id, err, code) end
  if not raw then return nil end
  local r, cerr = decode_run(id, raw)
  if not r then error(cerr, 0) end
  return runs_index.loaded(r)
end

--- Steps of a run as stored, in the order they started.
function M.get_steps(id)
  local keys, vals = store.raw_scan("steps", id .. "\0")
  if not keys then store_error("reading the steps of run " .. id, vals) end
  local list = {}
  for i = 1, #vals do
    local rec, off = store.step_fields(vals[i])
    if off then
      local v = json.try_decode(vals[i], off)
      if rec.status == "completed" then rec.result = v else rec.error = v end
    end
    list[i] = rec
  end
  table.sort(list, function(a, b)
    if a.started_us ~= b.started_us then return a.started_us < b.started_us end
    return a.id < b.id
  end)
  return list
end


--- The runs not yet completed, failed or cancelled, oldest first (from
--- the active_runs index, not the whole history).
function M.unfinished_runs()
  local keys = store.raw_scan("active_runs", "")
  local out = {}
  for _, id in ipairs(keys or {}) do
    local r = M.get_run(id)
    if r and r.status ~= "completed" and r.status ~= "failed" and r.status ~= "cancelled" then
      out[#out + 1] = r
    end
  end
  -- oldest first: runs waiting on a concurrency key keep their turn
  table.sort(out, function(a, b) return (a.created_us or 0) < (b.created_us or 0) end)
  return out
end

--- Lists runs newest first; filters by pipeline and status. Returns the
--- list and the messages of the corrupt records it skipped.
function M.list_runs(filter)
  filter = filter or {}
  local limit = filter.limit or 20
  local out, skipped = {}, {}
  -- newest first in growing pages: the last few runs of a long history
  -- cost a few keys, not a scan of all of them
  local page, seen = limit, 0
  while true do
    local keys, kerr, kcode = store.raw_scan("runs_by_time", "", true, page)
    if not keys then store_error("listing runs", kerr, kcode) end
    for i = seen + 1, #keys do
      local id = keys[i]:sub(9)
      local raw, err, code = store.raw_get("runs", id)
      if err then store_error("reading run " .. id, err, code) end
      local r, cerr = nil, nil
      if raw then r, cerr = decode_run(id, raw) end
      if cerr then skipped[#skipped + 1] = cerr end
      if r and (not filter.pipeline or r.pipeline == filter.pipeline)
          and (not filter.status or r.status == filter.status) then
        out[#out + 1] = r
        if #out >= limit then return out, skipped end
      end
    end
    if #keys < page then return out, skipped end
    seen, page = #keys, page * 4
  end
end

return M
