--- sluice.runs_index: a run record and its index entries, built in one place
--- (issue 9 moves every key layout into a C records layer; this is the one
--- Lua file to move). Every commit of a run record goes through ops(rec):
--- the first commit of a record adds it to runs_by_time and to the listings
--- of the HTTP API (by namespace, by pipeline, by status); a later commit
--- with another status moves its status entry, in the same transaction as
--- the record. Listings are reverse scans of one prefix, newest first:
---   runs_by_ns        ns \0 be64(created_us) id
---   runs_by_pipeline  ns \0 pipeline \0 be64(created_us) id
---   runs_by_status    ns \0 status \0 be64(created_us) id
--- The status an index entry carries is remembered per record table (the
--- table engine.get_run returned, or the one a run was created with), so
--- no commit reads the store first.
local store = require "sluice._store"
local json = require "sluice._codec" -- store records: exact

local M = {}

local spack, sunpack = string.pack, string.unpack

M.DEFAULT_NS = "default"

-- record table -> the status its runs_by_status entry has in the store
local indexed = setmetatable({}, { __mode = "k" })

--- Notes that rec was read from the store as it is (its index entries
--- exist). Returns rec.
function M.loaded(rec)
  if rec then indexed[rec] = rec.status or false end
  return rec
end

local function ns_of(rec) return rec.namespace or M.DEFAULT_NS end

local function suffix(rec)
  return spack(">I8", rec.created_us or 0) .. rec.id
end

--- Appends to ops (a new table if nil) the operations that store rec:
--- {"runs", id, json} and its index changes. Returns ops.
function M.ops(rec, ops)
  ops = ops or {}
  local n = #ops
  local function add(db, k, v)
    ops[n + 1], ops[n + 2], ops[n + 3] = db, k, v
    n = n + 3
  end
  add("runs", rec.id, json.encode(rec))
  local prev = indexed[rec]
  local sfx, ns, status = suffix(rec), ns_of(rec), rec.status or "pending"
  if prev == nil then
    add("runs_by_time", sfx, "")
    add("runs_by_ns", ns .. "\0" .. sfx, "")
    add("runs_by_pipeline", ns .. "\0" .. rec.pipeline .. "\0" .. sfx, "")
    add("runs_by_status", ns .. "\0" .. status .. "\0" .. sfx, "")
  elseif prev ~= status then
    if prev then add("runs_by_status", ns .. "\0" .. prev .. "\0" .. sfx, false) end
    add("runs_by_status", ns .. "\0" .. status .. "\0" .. sfx, "")
  end
  indexed[rec] = status
  if M.observer and prev ~= status then M.observer(rec, prev, status) end
  return ops
end

--- Set by the HTTP API's metrics: observer(rec, previous_status, status)
--- at each status a run record is committed with.
M.observer = nil

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
local function unhex(s)
  if type(s) ~= "string" or #s < 18 or #s % 2 ~= 0 or s:find("[^%x]") then return nil end
  return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

--- One page of runs, newest first, from one index:
--- filter = {namespace, pipeline?, status?, before? (a cursor), since_us?, limit}.
--- With both pipeline and status, the pipeline's listing is read and the
--- status checked on each record; at most `examine` entries are read per
--- page, so a rare status gives a short page with a cursor, never a scan
--- of everything. Returns runs, next cursor (nil at the end) | nil, message.
function M.page(filter, get_run)
  local ns = filter.namespace or M.DEFAULT_NS
  local db, prefix
  if filter.pipeline then
    db, prefix = "runs_by_pipeline", ns .. "\0" .. filter.pipeline .. "\0"
  elseif filter.status then
    db, prefix = "runs_by_status", ns .. "\0" .. filter.status .. "\0"
  else
    db, prefix = "runs_by_ns", ns .. "\0"
  end
  local from
  if filter.before then
    local c = unhex(filter.before)
    if not c then return nil, "before must be a cursor returned as next by an earlier page" end
    from = prefix .. c
  end
  local limit = filter.limit
  local examine = math.max(1000, limit * 20)
  local out, seen, last = {}, 0, nil
  local batch = math.min(examine, filter.pipeline and filter.status and 256 or limit + 1)
  while true do
    local keys, err = store.raw_scan(db, prefix, true, batch, from)
    if not keys then return nil, err end
    for _, k in ipairs(keys) do
      local sfx = k:sub(#prefix + 1)
      local created = sunpack(">I8", sfx)
      if filter.since_us and created < filter.since_us then return out, nil end
      if #out >= limit then return out, hex(last) end
      seen = seen + 1
      local r = get_run(sfx:sub(9))
      if r and (not filter.status or r.status == filter.status) then
        out[#out + 1] = r
        last = sfx
      end
      if seen >= examine then return out, hex(sfx) end
    end
    if #keys < batch then return out, nil end
    from = keys[#keys]
  end
end

--- Fills the listings from the run records of a store written before they
--- existed (once: meta "runs_indexed" marks it done). Returns the number of
--- runs indexed.
function M.backfill()
  if store.raw_get("meta", "runs_indexed") then return 0 end
  local n, after = 0, nil
  repeat
    local keys, vals = store.raw_scan("runs", "", false, 1000, after)
    if not keys then error("indexing runs: " .. tostring(vals), 0) end
    local ops = {}
    for i, id in ipairs(keys) do
      if id ~= after then
        local ok, rec = pcall(json.decode, vals[i])
        if ok and type(rec) == "table" and rec.id and rec.pipeline then
          local sfx, ns = suffix(rec), ns_of(rec)
          ops[#ops + 1], ops[#ops + 2], ops[#ops + 3] = "runs_by_ns", ns .. "\0" .. sfx, ""
          ops[#ops + 1], ops[#ops + 2], ops[#ops + 3] = "runs_by_pipeline", ns .. "\0" .. rec.pipeline .. "\0" .. sfx, ""
          ops[#ops + 1], ops[#ops + 2], ops[#ops + 3] = "runs_by_status", ns .. "\0" .. (rec.status or "pending") .. "\0" .. sfx, ""
          n = n + 1
        end
      end
    end
    local last = keys[#keys]
    if #keys < 1000 then ops[#ops + 1], ops[#ops + 2], ops[#ops + 3] = "meta", "runs_indexed", "1" end
    if #ops > 0 then
      local ok, err = store.raw_commit(ops)
      if not ok then error("indexing runs: " .. tostring(err), 0) end
    end
    after = last
  until #keys < 1000
  return n
end

return M
