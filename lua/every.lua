--- sluice.every: the schedule DSL. Every form comes down to one of two
--- explainable kinds, shown back to the user in canonical form:
---   cron      a 5-field cron expression (every.day.at("2am") is "0 2 * * *")
---   interval  a fixed period anchored at the Unix epoch ("every 45s",
---             "every 7m"), or every n days at a local time ("every 3d at 06:30")
--- Calling a spec registers a schedule: spec(pipeline | name | fn [, input [, opts]]).
--- A schedule is named "<pipeline>@<canonical spec>" unless given a name.
--- Every function users call here is an entry point (sluice.errors): errors
--- name the user's line whatever level they are raised at.
local clock = require "sluice._clock"
local crontab = require "sluice._cron"
local duration = require "sluice.duration"
local errors = require "sluice.errors"
local entry = errors.entry
local registry = require "sluice.registry"

local M = {}

--- the live schedules, by name, in definition order in M.order (the
--- registry's tables: each file's own are swapped in and out of them)
M.defined, M.order = registry.live.schedules, registry.live.schedule_order

local Spec = {}
Spec.__index = Spec

local function check_builder_opts(what, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s: options must be a table, got %s"):format(what, type(opts)), 3)
  end
end

local function parse_at(text, level)
  if type(text) ~= "string" then
    error(("at: expected a time like \"2am\", \"2:30pm\", \"14:05\", \"noon\", got %s"):format(type(text)), level)
  end
  local s = text:lower():gsub("%s+", "")
  if s == "noon" then return 12, 0 end
  if s == "midnight" then return 0, 0 end
  local h, m, ampm = s:match("^(%d%d?):(%d%d)([ap]m)$")
  if not h then
    h, ampm = s:match("^(%d%d?)([ap]m)$")
    m = h and "0"
  end
  if not h then
    h, m = s:match("^(%d%d?):(%d%d)$")
  end
  h, m = tonumber(h), tonumber(m)
  local bad = ("at: %q is not a time (use \"2am\", \"2:30pm\", \"14:05\", \"noon\" or \"midnight\")"):format(text)
  if not h or m > 59 then error(bad, level) end
  if ampm then
    if h < 1 or h > 12 then error(bad, level) end
    if h == 12 then h = 0 end
    if ampm == "pm" then h = h + 12 end
  elseif h > 23 then
    error(bad, level)
  end
  return h, m
end

local function cron_spec(expr, level)
  local canonical, err = crontab.canonical(expr)
  if not canonical then error(("every.cron(%q): %s"):format(expr, err), level) end
  return setmetatable({ kind = "cron", expr = canonical }, Spec)
end

local function interval_spec(step_s)
  return setmetatable({ kind = "interval", step_s = step_s }, Spec)
end

-- a spec that also has .at (days and weekdays)
local function day_spec(dow, days)
  local function at_spec(h, m)
    if days and days > 1 then
      return setmetatable({ kind = "days", days = days, at_s = h * 3600 + m * 60 }, Spec)
    end
    return cron_spec(("%d %d * * %s"):format(m, h, dow or "*"), 4)
  end
  local spec = at_spec(0, 0)
  spec.at = entry(function(text, opts)
    local h, m = parse_at(text, 3)
    check_builder_opts(("at(%q)"):format(text), opts)
    local s = at_spec(h, m)
    s.opts = opts
    return s
  end)
  return spec
end

--- The canonical text: a cron expression or "every ...".
function Spec:canonical()
  if self.kind == "cron" then return self.expr end
  if self.kind == "days" then
    return ("every %dd at %02d:%02d"):format(self.days, self.at_s // 3600, self.at_s % 3600 // 60)
  end
  local s = self.step_s
  if s % 86400 == 0 then return ("every %dd"):format(s // 86400) end
  if s % 3600 == 0 then return ("every %dh"):format(s // 3600) end
  if s % 60 == 0 then return ("every %dm"):format(s // 60) end
  return ("every %ds"):format(s)
end

--- The first fire strictly after `after` (Unix seconds), or false if never.
---@return integer|false|nil t, string? err
function M.next_fire(spec, after, tz)
  if spec.kind == "cron" then return crontab.next(spec.expr, after, tz) end
  if spec.kind == "interval" then return (after // spec.step_s + 1) * spec.step_s end
  -- every n days at a local time: the daily cron, on local days divisible by n
  local h, m = spec.at_s // 3600, spec.at_s % 3600 // 60
  local expr = ("%d %d * * *"):format(m, h)
  local t = after
  for _ = 1, spec.days + 2 do
    local err
    t, err = crontab.next(expr, t, tz)
    if not t then return t, err end
    local off = crontab.tz_offset(tz, t) or 0
    if ((t + off) // 86400) % spec.days == 0 then return t end
  end
  return false
end

--- The next n fire times after `after`, as ISO 8601 UTC strings.
function M.next_fires(spec, after, tz, n)
  local out, t = {}, after
  for i = 1, n do
    t = M.next_fire(spec, t, tz)
    if not t then break end
    out[i] = clock.utc(t)
  end
  return out
end

local units_s = { s = 1, m = 60, h = 3600, d = 86400 }

--- A stored schedule record back to a spec: from its kind and fields
--- (records written before they were lean), else from its canonical text.
function M.spec_of(rec)
  if rec.kind then
    return setmetatable({ kind = rec.kind, expr = rec.expr, step_s = rec.step_s, days = rec.days, at_s = rec.at_s }, Spec)
  end
  local text = tostring(rec.spec)
  local days, h, m = text:match("^every (%d+)d at (%d%d):(%d%d)$")
  if days then
    return setmetatable({ kind = "days", days = tonumber(days), at_s = tonumber(h) * 3600 + tonumber(m) * 60 }, Spec)
  end
  local n, unit = text:match("^every (%d+)([smhd])$")
  if n then return interval_spec(tonumber(n) * units_s[unit]) end
  return setmetatable({ kind = "cron", expr = text }, Spec)
end

--- The fields a schedule's stored record leaves out when they have their
--- default (the scheduler writes what differs only), put back in place:
--- readers of the store (`sluice schedules`, the REPL) see every field.
function M.record_defaults(rec)
  local spec = M.spec_of(rec)
  rec.kind, rec.expr, rec.step_s, rec.days, rec.at_s = spec.kind, spec.expr, spec.step_s, spec.days, spec.at_s
  if rec.catch_up == nil then rec.catch_up = "latest" end
  if rec.overlap == nil then rec.overlap = "skip" end
  if rec.jitter_ms == nil then rec.jitter_ms = 0 end
  if rec.runs == nil then rec.runs = 0 end
  if rec.enabled == nil then rec.enabled = true end
  return rec
end

local policies = {
  catch_up = { latest = true, all = true, none = true },
  overlap = { skip = true, queue = true, allow = true },
}
local known_opts = { tz = true, catch_up = true, overlap = true, jitter = true, name = true }

-- (what: the "every ..." text of messages; with canonical instead, it is
-- made from it only when there is something to check: 100,000 definitions
-- given a name and no other option format nothing)
local function check_opts(what, opts, level, canonical)
  if canonical then
    local k = next(opts)
    if k == nil or (k == "name" and next(opts, k) == nil and type(opts.name) == "string" and opts.name ~= "") then
      return
    end
    what = ("every %q"):format(canonical)
  end
  if opts.name ~= nil and (type(opts.name) ~= "string" or opts.name == "") then
    error(("%s: name must be a non-empty string, got %s"):format(what, type(opts.name)), level)
  end
  for k, v in pairs(opts) do
    if not known_opts[k] then
      error(("%s: unknown option '%s' (known: tz, catch_up, overlap, jitter, name)"):format(what, tostring(k)), level)
    end
    if policies[k] and not policies[k][v] then
      local names = {}
      for name in pairs(policies[k]) do names[#names + 1] = name end
      table.sort(names)
      error(("%s: %s must be one of %s, got %s"):format(what, k, table.concat(names, ", "), tostring(v)), level)
    end
  end
  if opts.tz ~= nil then
    local ok, err = crontab.tz_check(opts.tz)
    if not ok then error(("%s: %s"):format(what, err), level) end
  end
  if opts.jitter ~= nil then duration.ms(opts.jitter, what .. " jitter") end
end

--- A schedule's definition holds its name and the options given; what
--- the schedules of one spec, pipeline and site share (a file's loop that
--- defines thousands) is in a table of their group behind its metatable,
--- and the defaults of the options behind that one's (read as fields, not
--- seen by pairs): 100,000 definitions of one field each instead of ten
--- (~96 bytes a definition instead of ~180).
local Schedule = { __index = { catch_up = "latest", overlap = "skip", jitter_ms = 0 } }
M.Schedule = Schedule
local groups = setmetatable({}, { __mode = "k" }) -- spec -> pipeline -> site -> metatable
local function group_of(spec, pipeline, site)
  local by_pipeline = groups[spec]
  if not by_pipeline then
    by_pipeline = {}
    groups[spec] = by_pipeline
  end
  local by_site = by_pipeline[pipeline]
  if not by_site then
    by_site = {}
    by_pipeline[pipeline] = by_site
  end
  local mt = by_site[site]
  if not mt then
    mt = { __index = setmetatable({ pipeline = pipeline, spec = spec, site = site }, Schedule) }
    by_site[site] = mt
  end
  return mt
end
local last_site
local NO_OPTS = {}

-- a schedule's runs are named "<schedule>@<time>" (20 characters) and run
-- ids are at most 200 printable characters
local MAX_NAME = 200 - 21

--- Registers a schedule: spec(target [, input [, opts]]). target is a
--- pipeline handle, a pipeline name, or a function (then it becomes a
--- pipeline named "<file stem>@<canonical spec>", which also names the
--- schedule). The schedule is named "<pipeline>@<canonical spec>" unless
--- opts.name says otherwise, so one pipeline may have several schedules;
--- the same name twice (the same pipeline on the same spec, or one explicit
--- name) is an error naming both definitions. A spec that can never fire
--- is an error; so is a pipeline that no loaded file defines, found by the
--- registry's validation once every file is considered.
-- The first fire of spec in tz after the second now_s, remembered for the
-- last second asked (a file defining 100,000 schedules shares specs: one
-- cron computation per spec, not per schedule).
local firsts = setmetatable({}, { __mode = "k" }) -- spec -> {now_s, tz, first, err}
local function first_fire(spec, now_s, tz)
  local f = firsts[spec]
  if f and f[1] == now_s and f[2] == tz then return f[3], f[4] end
  local first, err = M.next_fire(spec, now_s, tz)
  firsts[spec] = { now_s, tz, first, err }
  return first, err
end

local engine -- sluice.engine, required at the first definition (it requires this module)

Spec.__call = entry(function(self, target, input, opts)
  engine = engine or require "sluice.engine"
  if opts ~= nil and type(opts) ~= "table" then
    error(("every %q: options must be a table, got %s"):format(self:canonical(), type(opts)), 2)
  end
  local merged = opts or NO_OPTS -- read only
  if self.opts then
    merged = {}
    for k, v in pairs(self.opts) do merged[k] = v end
    for k, v in pairs(opts or {}) do merged[k] = v end
  end
  local canonical = self:canonical()
  check_opts(nil, merged, 3, canonical)
  local first, ferr = first_fire(self, clock.now() // 1000000, merged.tz)
  if ferr or not first then
    local what = ("every %q"):format(canonical)
    if ferr then error(("%s: %s"):format(what, ferr), 2) end
    error(("%s never fires%s: no date matches it"):format(what, merged.tz and (" in " .. merged.tz) or ""), 2)
  end
  local pname, anonymous
  if type(target) == "function" then
    local file = engine.loading_file() or "?"
    pname = (file:match("([^/]+)$") or file):gsub("%.lua$", "") .. "@" .. canonical
    target = engine.pipeline(pname, target)
    anonymous = true
  elseif type(target) == "table" and target.name and target.fn then
    pname = target.name
  elseif type(target) == "string" and target ~= "" then
    pname = target
  else
    error(("every %q: expected a pipeline, a pipeline name or a function to schedule"):format(canonical), 2)
  end
  local name = merged.name or (anonymous and pname) or (pname .. "@" .. canonical)
  if #name > MAX_NAME or name:find("[%z\1-\31\127]") then
    error(("every %q: the schedule name %q must be 1 to %d printable characters (its runs are named " ..
      "<schedule>@<time>)%s"):format(canonical, name, MAX_NAME, merged.name and "" or ": give it a shorter {name = ...}"), 2)
  end
  local site = errors.where() or "?"
  local set = registry.target()
  local prev = set.schedules[name]
  if prev then
    local why = merged.name and "schedule names are unique"
      or ("pipeline '%s' is scheduled on %q twice: remove one, or name one {name = \"...\"}"):format(pname, canonical)
    error(("schedule '%s' is defined twice, at %s and at %s: %s"):format(name, prev.site, site, why), 2)
  end
  if site == last_site then site = last_site else last_site = site end -- one string for a loop's
  local sched = setmetatable({ name = name }, group_of(self, pname, site))
  if input ~= nil then sched.input = input end
  if merged.tz then sched.tz = merged.tz end
  if merged.catch_up then sched.catch_up = merged.catch_up end
  if merged.overlap then sched.overlap = merged.overlap end
  if merged.jitter then sched.jitter_ms = duration.ms(merged.jitter) end
  set.schedules[name] = sched
  set.schedule_order[#set.schedule_order + 1] = name
  return sched
end)

-- every(n).seconds / .minutes / .hours / .days[.at(...)]
local function count_builder(n)
  if math.type(n) ~= "integer" or n < 1 then
    error(("every(n): n must be a positive integer, got %s"):format(tostring(n)), 3)
  end
  local units = {
    seconds = function() return interval_spec(n) end,
    minutes = function()
      if 60 % n == 0 then return cron_spec(n == 1 and "* * * * *" or ("*/%d * * * *"):format(n), 4) end
      return interval_spec(n * 60)
    end,
    hours = function()
      if 24 % n == 0 then return cron_spec(n == 1 and "0 * * * *" or ("0 */%d * * *"):format(n), 4) end
      return interval_spec(n * 3600)
    end,
    days = function() return day_spec(nil, n) end,
  }
  units.second, units.minute, units.hour, units.day = units.seconds, units.minutes, units.hours, units.days
  return setmetatable({}, {
    __index = entry(function(_, k)
      local f = units[k]
      if not f then
        error(("every(%d).%s: unknown unit (use seconds, minutes, hours or days)"):format(n, tostring(k)), 2)
      end
      return f()
    end),
  })
end

local weekdays = {
  sunday = 0, monday = 1, tuesday = 2, wednesday = 3, thursday = 4, friday = 5, saturday = 6,
}

local cron_specs = setmetatable({}, { __mode = "v" }) -- expression text -> its spec, while used

local cron = entry(function(expr, opts)
  if type(expr) ~= "string" then
    error(("every.cron: expected a cron expression string, got %s"):format(type(expr)), 2)
  end
  check_builder_opts(("every.cron(%q)"):format(expr), opts)
  if opts == nil then
    -- one spec for an expression: specs are not changed once made, and a
    -- file that defines thousands of schedules shares them
    local s = cron_specs[expr]
    if not s then
      s = cron_spec(expr, 3)
      cron_specs[expr] = s
    end
    return s
  end
  local s = cron_spec(expr, 3)
  s.opts = opts
  return s
end)

M.every = setmetatable({}, {
  __call = entry(function(_, n) return count_builder(n) end),
  __index = entry(function(_, k)
    local key = type(k) == "string" and k:lower() or k
    if key == "cron" then return cron end
    if key == "day" then return day_spec(nil, 1) end
    if key == "weekday" then return day_spec("1-5", 1) end
    if key == "weekend" then return day_spec("0,6", 1) end
    if weekdays[key] then return day_spec(tostring(weekdays[key]), 1) end
    if key == "hour" then return cron_spec("0 * * * *", 3) end
    if key == "minute" then return cron_spec("* * * * *", 3) end
    error(("every.%s: unknown schedule (use every.day, every.monday..every.sunday, every.weekday, " ..
      "every.hour, every.minute, every(n).minutes, every.cron(...))"):format(tostring(k)), 2)
  end),
})

--- Forgets every defined schedule (a reload, a test).
function M.reset()
  registry.reset("schedules")
end

return M
