--- sluice.registry: the definitions of the pipeline files, by file, and
--- the one place they are loaded (DESIGN §3, STYLE 10: stage, validate,
--- swap, as Redis FUNCTION LOAD does).
---
--- Every pipeline, schedule, `on` handler, consumer and retention rule is
--- registered in a definition set. A file is loaded into a fresh set and its
--- own globals table (whose __index is the pipeline API and the standard
--- globals) where top-level code may only define: stage. The set is checked
--- against what the other files define: validate. Then, in one step that
--- does not yield, the file's old definitions leave the live tables and the
--- new ones enter them, and the runtime parts that subscribed (scheduler,
--- consumers) are told what was added, removed and changed: swap. On any
--- error nothing of the new version is live and the old one stays.
---
--- M.live holds everything live; engine.pipelines, every.defined/order,
--- events.handlers, stream.consumers/consumer_order/retention_rules are
--- these same tables. Definitions made outside a file load (specs, Lua
--- scripts) go straight into M.live and belong to no file.
--- Depends on: sluice._ids (hash), sluice.sched and sluice.errors (tracebacks); the engine
--- lazily (it requires this module).
local clock = require "sluice._clock"
local ids = require "sluice._ids"
local sched = require "sluice.sched"
local errors = require "sluice.errors"

local M = {}

--- A definition set: what one file defines, or (M.live) all that is live.
local function new_set(file, hash)
  return {
    file = file, hash = hash,
    pipelines = {}, defined = {},        -- name -> handle; handles in definition order
    schedules = {}, schedule_order = {}, -- name -> schedule; names in definition order
    handlers = {},                       -- {pattern=, pipeline=, fn=} in definition order
    consumers = {}, consumer_order = {}, -- name -> consumer; names in definition order
    retention = {},                      -- rules in definition order
  }
end

M.live = new_set()
M.files = {} -- path -> the set of the version of that file that is live

local loading = setmetatable({}, { __mode = "k" }) -- coroutine -> the set it stages
local batch = {} -- the sets staged so far by the load_all in progress

--- The set that definitions made now go to: the file being staged on this
--- coroutine, or M.live.
function M.target()
  return loading[coroutine.running()] or M.live
end

--- The file being staged on this coroutine, or nil.
function M.loading_file()
  local set = loading[coroutine.running()]
  return set and set.file
end

--- Raises, at `level` above the caller, the error of a runtime call (step,
--- emit, send, ...) made by the top-level code of a file being staged.
function M.forbid_at_load(what, level)
  local set = loading[coroutine.running()]
  if not set then return end
  error(("%s called while %s loads: top-level code only defines (pipeline, every, on, consume, " ..
    "retention); call %s inside a pipeline function"):format(what, set.file, what), (level or 1) + 1)
end

--- Whether a pipeline name is taken for a definition made now: in the set
--- being defined or one staged before it with it, or live and owned by
--- another file (or by none).
function M.pipeline_taken(name)
  local set = M.target()
  if set.pipelines[name] then return true end
  if set == M.live then return false end
  for _, other in ipairs(batch) do
    if other.pipelines[name] then return true end
  end
  local p = M.live.pipelines[name]
  local old = M.files[set.file]
  return p ~= nil and not (old and old.pipelines[name] == p)
end

---------------------------------------------------------------------------
-- what changed: per kind, definitions keyed by name, compared by the text
-- of their functions and their options

-- the source text of fn (its lines in the file being compared), or where
-- it is defined when it is not in that file
local function fn_text(set, fn)
  local info = debug.getinfo(fn, "S")
  if info.what ~= "Lua" or not set.src or info.source ~= set.chunkname then
    return info.source .. ":" .. info.linedefined
  end
  local starts = set.line_starts
  if not starts then
    -- where each line starts, once per version compared
    starts = { 1 }
    local src, find, i = set.src, string.find, 0
    while true do
      i = find(src, "\n", i + 1, true)
      if not i then break end
      starts[#starts + 1] = i + 1
    end
    starts[#starts + 1] = #src + 2
    set.line_starts = starts
  end
  local last = starts[info.lastlinedefined + 1] or (#set.src + 2)
  return set.src:sub(starts[info.linedefined] or 1, last - 2)
end

-- a text that is equal for equal values (functions by their source text)
local function fingerprint(set, v, seen)
  local t = type(v)
  if t == "function" then return "fn:" .. fn_text(set, v) end
  if t == "string" then return ("%q"):format(v) end
  if t ~= "table" then return tostring(v) end
  seen = seen or {}
  if seen[v] then return "<cycle>" end
  seen[v] = true
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = fingerprint(set, k, seen) .. "=" .. fingerprint(set, v[k], seen) end
  seen[v] = nil
  return "{" .. table.concat(parts, ",") .. "}"
end

local function timing_of(s)
  return s.spec:canonical() .. " tz=" .. tostring(s.tz)
end

-- the definitions of set.<by> in the order of set.<order>
local function in_order(set, order, by)
  local out = {}
  for i, name in ipairs(set[order]) do out[i] = set[by][name] end
  return out
end

-- kind -> {list = the set's definitions in order, key = name, fp = fingerprint}
local kinds = {
  pipelines = {
    -- the pipelines of handlers and consumers show under their own kind
    list = function(set)
      local out = {}
      for _, p in ipairs(set.defined) do if not p.derived then out[#out + 1] = p end end
      return out
    end,
    key = function(p) return p.name end,
    fp = function(set, p) return fingerprint(set, p.fn) .. fingerprint(set, p.opts) end,
  },
  schedules = {
    -- a live file's set keeps its schedules as a list (compact, by swap)
    list = function(set) return set.compact and set.schedules or in_order(set, "schedule_order", "schedules") end,
    fresh_list = true, -- but for a compact set, never the new side of a diff (a staged set)
    key = function(s) return s.name end,
    fp = function(set, s)
      return table.concat({ s.pipeline, timing_of(s), s.catch_up, s.overlap, tostring(s.jitter_ms),
        fingerprint(set, s.input) }, "\0")
    end,
  },
  handlers = {
    list = function(set) return set.handlers end,
    key = function(h) return h.pipeline.name end,
    fp = function(set, h) return h.pattern .. "\0" .. fingerprint(set, h.fn) end,
  },
  consumers = {
    list = function(set) return in_order(set, "consumer_order", "consumers") end,
    key = function(c) return c.name end,
    fp = function(set, c)
      return table.concat({ c.pattern, tostring(c.batch), c.from, fingerprint(set, c.fn) }, "\0")
    end,
  },
  retention = {
    list = function(set) return set.retention end,
    key = function(r) return r.pattern end,
    fp = function(_, r) return tostring(r.max_age_ms) .. "\0" .. tostring(r.max_count) end,
  },
}
M.KINDS = { "pipelines", "schedules", "handlers", "consumers", "retention" }

-- {added = {def}, removed = {def}, changed = {{old=, new=}}, kept = {{old=, new=}}}
local function diff_kind(kind, old, new)
  local k = kinds[kind]
  local d = { added = {}, removed = {}, changed = {}, kept = {} }
  local before, count = {}, {}
  -- keys made unique by occurrence (two retention rules of one pattern), in
  -- a list of their own: no table per definition (a file may define 100,000)
  local function keyed(list)
    local out, n = {}, {}
    for i, def in ipairs(list) do
      local key = k.key(def)
      local seen = n[key]
      n[key] = (seen or 0) + 1
      if seen then key = key .. "#" .. (seen + 1) end
      out[i] = key
    end
    return out
  end
  local old_list, new_list = k.list(old), k.list(new)
  if #old_list == 0 then
    -- a first load: everything is added (no keys made: a file may define
    -- 100,000), in the list made for it when it is one of its own
    if k.fresh_list then
      d.added = new_list
    else
      for i = 1, #new_list do d.added[i] = new_list[i] end
    end
    return d
  end
  local old_keys = keyed(old_list)
  for i, key in ipairs(old_keys) do before[key] = old_list[i] end
  for i, key in ipairs(keyed(new_list)) do
    local def = new_list[i]
    local prev = before[key]
    if not prev then
      d.added[#d.added + 1] = def
    else
      before[key] = nil
      count[key] = true
      local pair = { old = prev, new = def }
      if k.fp(old, prev) == k.fp(new, def) then d.kept[#d.kept + 1] = pair else d.changed[#d.changed + 1] = pair end
    end
  end
  for i, key in ipairs(old_keys) do
    if before[key] then d.removed[#d.removed + 1] = old_list[i] end
  end
  return d
end

--- Whether a schedule's timing (spec, time zone) differs between two versions.
function M.timing_changed(old, new)
  return timing_of(old) ~= timing_of(new)
end

---------------------------------------------------------------------------
-- stage

local api -- the pipeline API, with the standard globals behind it

-- a file's own globals table
local function file_env()
  if not api then
    api = setmetatable({}, { __index = _G })
    require("sluice.engine").install(api)
  end
  return setmetatable({}, { __index = api })
end

-- Reads, compiles and runs path's top level into a fresh set. Returns the
-- set; or false when opts.if_changed and the live version has the same
-- source; or nil, message, kind ("io" | "syntax" | "runtime"), traceback.
local function stage(path, opts)
  local f, oerr = io.open(path, "rb")
  if not f then return nil, oerr, "io" end
  local src, rerr = f:read("a")
  f:close()
  if not src then return nil, ("%s: %s"):format(path, rerr), "io" end
  local hash = ids.hash(src)
  local live = M.files[path]
  if opts.if_changed and live and live.hash == hash then return false end
  local chunk, lerr = load(src, "@" .. path, "t", file_env())
  if not chunk then return nil, lerr, "syntax" end
  local set = new_set(path, hash)
  set.src, set.chunkname = src, "@" .. path
  local co = coroutine.running()
  local prev = loading[co]
  loading[co] = set
  local ok, err = xpcall(chunk, sched.traceback)
  loading[co] = prev
  if not ok then return nil, tostring(err.message), "runtime", errors.describe(err) end
  return set
end

---------------------------------------------------------------------------
-- validate

-- the names of pipelines defined in `claimed`, sorted, at most 10
local function names_of(claimed)
  local names = {}
  for n, p in pairs(claimed) do if not p.derived then names[#names + 1] = n end end
  table.sort(names)
  if #names > 10 then names = { table.concat(names, ", ", 1, 10) .. ", ..." } end
  return #names > 0 and "defined: " .. table.concat(names, ", ") or "none is defined"
end

-- Checks the staged sets together against what stays live. Returns a map
-- set -> error message of the sets that fail; the others can all be
-- swapped in. A set that fails keeps its file's old version live, which may
-- make another fail in turn: checked again until nothing new fails.
local function validate(sets)
  local failed = {}
  while true do
    local replaced = {}
    for _, set in ipairs(sets) do
      if not failed[set] and M.files[set.file] then replaced[M.files[set.file]] = true end
    end
    -- what stays live: every entry not owned by a version being replaced
    local going, owner = {}, {}
    for path, set in pairs(M.files) do
      for _, kind in ipairs({ "pipelines", "schedules", "consumers" }) do
        for _, def in pairs(set[kind]) do
          if replaced[set] then going[def] = true else owner[def] = path end
        end
      end
    end
    local claimed = { pipelines = {}, consumers = {} }
    for kind, names in pairs(claimed) do
      for name, def in pairs(M.live[kind]) do
        if not going[def] then names[name] = def end
      end
    end
    -- schedules: the live ones that stay, then those of the sets accepted
    -- so far, looked up in place (a file may define 100,000: no copy)
    local accepted = {}
    local function claimed_schedule(name)
      for i = #accepted, 1, -1 do
        local s = accepted[i].schedules[name]
        if s then return s end
      end
      local s = M.live.schedules[name]
      if s and not going[s] then return s end
    end

    local function where(def) return def.site or (owner[def] or "a definition outside any file") end
    local fresh
    for _, set in ipairs(sets) do
      if not failed[set] then
        local err
        for _, name in ipairs(set.consumer_order) do
          local c, prev = set.consumers[name], claimed.consumers[name]
          if prev then
            err = ("%s: consumer '%s' is defined twice: at %s and at %s"):format(c.site, name, c.site, where(prev))
            break
          end
        end
        if not err then
          for _, p in ipairs(set.defined) do
            local prev = claimed.pipelines[p.name]
            if prev then
              err = ("%s: pipeline '%s' is defined twice: at %s and at %s"):format(p.site, p.name, p.site, where(prev))
              break
            end
          end
        end
        if not err then
          for _, name in ipairs(set.schedule_order) do
            local s, prev = set.schedules[name], claimed_schedule(name)
            if prev then
              err = ("%s: schedule '%s' is defined twice, at %s and at %s: schedule names are unique; " ..
                "remove one, or name one {name = \"...\"}"):format(s.site, name, s.site, where(prev))
              break
            end
          end
        end
        if err then
          failed[set], fresh = err, true
        else
          for n, p in pairs(set.pipelines) do claimed.pipelines[n] = p end
          accepted[#accepted + 1] = set
          for n, c in pairs(set.consumers) do claimed.consumers[n] = c end
        end
      end
    end
    -- schedules name pipelines that exist once every file is considered
    if not fresh then
      for _, set in ipairs(sets) do
        if not failed[set] then
          for _, name in ipairs(set.schedule_order) do
            local s = set.schedules[name]
            if not claimed.pipelines[s.pipeline] then
              failed[set] = ("%s: schedule '%s': no pipeline named '%s' is defined (%s)"):format(
                s.site, name, s.pipeline, names_of(claimed.pipelines))
              fresh = true
              break
            end
          end
        end
      end
    end
    if not fresh then return failed end
  end
end

---------------------------------------------------------------------------
-- swap

local subscribers = {}

--- fn(diff) is called after every swap, before it returns, with what
--- changed per kind (diff.schedules = {added, removed, changed, kept}, ...).
--- It must not yield (it may spawn tasks).
function M.subscribe(fn)
  subscribers[#subscribers + 1] = fn
  return fn
end

function M.unsubscribe(fn)
  for i, f in ipairs(subscribers) do
    if f == fn then table.remove(subscribers, i) return end
  end
end

-- removes from list (in place) the entries in `gone`
local function filter(list, gone)
  local j = 0
  for i = 1, #list do
    local v = list[i]
    list[i] = nil
    if not gone[v] then
      j = j + 1
      list[j] = v
    end
  end
end

-- old -> new in the live tables, in place (their readers hold them).
local function replace_live(old, new)
  local live = M.live
  local gone = { defined = {}, schedule_order = {}, consumer_order = {}, handlers = {}, retention = {} }
  for name, p in pairs(old.pipelines) do
    if live.pipelines[name] == p then live.pipelines[name] = nil end
    gone.defined[p] = true
  end
  for _, s in pairs(old.schedules) do -- a map, or a compact set's list
    local name = s.name
    if live.schedules[name] == s then
      live.schedules[name] = nil
      gone.schedule_order[name] = true
    end
  end
  for name, c in pairs(old.consumers) do
    if live.consumers[name] == c then
      live.consumers[name] = nil
      gone.consumer_order[name] = true
    end
  end
  for _, h in ipairs(old.handlers) do gone.handlers[h] = true end
  for _, r in ipairs(old.retention) do gone.retention[r] = true end
  for list, g in pairs(gone) do filter(live[list], g) end
  for name, p in pairs(new.pipelines) do live.pipelines[name] = p end
  for _, p in ipairs(new.defined) do live.defined[#live.defined + 1] = p end
  for _, name in ipairs(new.schedule_order) do
    live.schedules[name] = new.schedules[name]
    live.schedule_order[#live.schedule_order + 1] = name
  end
  for _, name in ipairs(new.consumer_order) do
    live.consumers[name] = new.consumers[name]
    live.consumer_order[#live.consumer_order + 1] = name
  end
  for _, h in ipairs(new.handlers) do live.handlers[#live.handlers + 1] = h end
  for _, r in ipairs(new.retention) do live.retention[#live.retention + 1] = r end
end

-- schedules left naming a pipeline that is not live: their fires are skipped
local function dangling()
  local out = {}
  for _, name in ipairs(M.live.schedule_order) do
    local s = M.live.schedules[name]
    if not M.live.pipelines[s.pipeline] then
      out[#out + 1] = ("schedule '%s' (%s) names pipeline '%s', which is no longer defined: its fires are skipped")
        :format(name, s.site or "?", s.pipeline)
    end
  end
  return out
end

local EMPTY = new_set()

-- Swaps new (nil: unload) in for path's live version; returns the diff.
local function swap(path, new, t0)
  local old = M.files[path] or EMPTY
  local d = { file = path, old_hash = old.hash, new_hash = new and new.hash,
    defined = new and new.defined or {} }
  for _, kind in ipairs(M.KINDS) do d[kind] = diff_kind(kind, old, new or EMPTY) end
  replace_live(old, new or EMPTY)
  M.files[path] = new
  if new then
    new.line_starts = nil -- its src stays: the next version is compared with it
    -- live, its schedules are in M.live's tables by name and in order: the
    -- set keeps them as one list (what the next diff and validation read),
    -- not a second map and order of names (~35 bytes a schedule)
    local order, by_name = new.schedule_order, new.schedules
    for i = 1, #order do order[i] = by_name[order[i]] end -- in place: no list made
    new.schedules, new.schedule_order, new.compact = order, nil, true
  end
  for _, fn in ipairs(subscribers) do fn(d) end
  d.warnings = dangling()
  d.ms = (clock.hrtime() - t0) / 1e6
  return d
end

---------------------------------------------------------------------------
-- the interface

--- Loads files through stage, validate, swap, together: a schedule may
--- name a pipeline of another of them. opts.if_changed: a file whose source
--- is the live version's is not loaded again. Returns one result per path,
--- in order: {file=, diff=} (diff.unchanged when skipped), or {file=, err=,
--- kind=, traceback=} with kind "io" | "syntax" | "runtime" | "invalid"
--- (err starts with the user's file:line); a file that fails keeps its old
--- version live.
function M.load_all(paths, opts)
  opts = opts or {}
  local t0 = clock.hrtime()
  local results, sets = {}, {}
  batch = sets
  for i, path in ipairs(paths) do
    local set, err, kind, tb = stage(path, opts)
    if set then
      sets[#sets + 1] = set
      results[i] = { file = path, set = set }
    elseif set == false then
      results[i] = { file = path, diff = { file = path, unchanged = true, old_hash = M.files[path].hash,
        new_hash = M.files[path].hash, defined = M.files[path].defined } }
    else
      results[i] = { file = path, err = err, kind = kind, traceback = tb }
    end
  end
  batch = {}
  local failed = validate(sets)
  -- one step: nothing yields between the first swap and the last
  for _, r in ipairs(results) do
    if r.set then
      local err = failed[r.set]
      if err then
        r.err, r.kind = err, "invalid"
      else
        r.diff = swap(r.file, r.set, t0)
      end
      r.set = nil
    end
  end
  return results
end

--- Loads one file (see load_all). Returns its diff, or nil, message,
--- kind, traceback.
function M.load(path, opts)
  local r = M.load_all({ path }, opts)[1]
  if r.diff then return r.diff end
  return nil, r.err, r.kind, r.traceback
end

--- Unregisters every definition of a file (its runs' history stays).
--- Returns the diff, or nil and a message when the file is not loaded.
function M.unload(path)
  if not M.files[path] then return nil, path .. " is not loaded" end
  return swap(path, nil, clock.hrtime())
end

--- Forgets every definition, of files and not, or only those of one kind
--- ("schedules", "retention", ...): a spec's fresh start. The live tables
--- stay the same tables.
function M.reset(kind)
  local live = M.live
  local function clear(t) for k in pairs(t) do t[k] = nil end end
  if kind == nil or kind == "pipelines" then clear(live.pipelines); clear(live.defined) end
  if kind == nil or kind == "schedules" then clear(live.schedules); clear(live.schedule_order) end
  if kind == nil or kind == "handlers" then clear(live.handlers) end
  if kind == nil or kind == "consumers" then clear(live.consumers); clear(live.consumer_order) end
  if kind == nil or kind == "retention" then clear(live.retention) end
  if kind == nil then M.files = {} end
end

--- "pipelines +a ~b -c; schedules +x" for the kinds that changed, or
--- "no definition changed".
function M.summary(d)
  local parts = {}
  for _, kind in ipairs(M.KINDS) do
    local k, x = kinds[kind], d[kind]
    if x and (#x.added + #x.removed + #x.changed) > 0 then
      local names = {}
      for _, def in ipairs(x.added) do names[#names + 1] = "+" .. k.key(def) end
      for _, pair in ipairs(x.changed) do names[#names + 1] = "~" .. k.key(pair.new) end
      for _, def in ipairs(x.removed) do names[#names + 1] = "-" .. k.key(def) end
      parts[#parts + 1] = kind .. " " .. table.concat(names, " ")
    end
  end
  return #parts > 0 and table.concat(parts, "; ") or "no definition changed"
end

return M
