--- sluice.template: `{{name}}` placeholders in strings and in tables of
--- strings (configuration, SQL, paths, pipeline parameter defaults).
---
--- Built-in variables: date (YYYY-MM-DD), yesterday, tomorrow, year,
--- month, day, hour (zero-padded), run_id, pipeline, namespace (also
--- org_slug: the run's, "default" for a run started without one), env. Dates are those of the run's creation time, so a replay
--- or a resume renders what the first execution rendered; outside a run,
--- the current time. UTC unless `tz` is given. `env` is the --env flag of
--- the command, or SLUICE_ENV, or "dev".
---
--- Caller variables come in `vars` and take precedence; a dotted name
--- (`{{source.bucket}}`) reads nested tables. An unknown variable, or one
--- whose value is nil, raises naming it and where it was found:
--- `target.dataset: unknown variable {{billing_dataset}}`.
local clock = require "sluice._clock"
local cron = require "sluice._cron"
local sched = require "sluice.sched"

local M = {}

local DAY = 86400
local DEFAULT_NS = require("sluice._store").DEFAULT_NS -- of runs started without one

-- days since 1970-01-01 -> y, m, d (proleptic Gregorian; H. Hinnant's
-- civil_from_days), so no local-time C call is involved
local function civil(days)
  local z = days + 719468
  local era = (z >= 0 and z or z - 146096) // 146097
  local doe = z - era * 146097
  local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
  local mp = (5 * doy + 2) // 153
  local d = doy - (153 * mp + 2) // 5 + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function ymd(days)
  return ("%04d-%02d-%02d"):format(civil(days))
end

--- The run the caller is in: {id, pipeline, created_us, namespace}, or nil.
local function current_run()
  local br = sched.context()
  local run = br and br.run
  if not run then return nil end
  local rec = run.record or {}
  return { id = run.id, pipeline = run.pipeline and run.pipeline.name, created_us = rec.created_us,
    namespace = rec.namespace }
end

--- The built-in variables for a run ({id, pipeline, created_us, namespace},
--- default: the running one) in time zone tz (default UTC).
---@param run? {id?: string, pipeline?: string, created_us?: integer, namespace?: string}
---@param tz? string IANA zone name
---@return table<string, string>
function M.builtins(run, tz)
  run = run or current_run() or {}
  local us = run.created_us or clock.now()
  local t = us // 1000000
  local off = 0
  if tz then
    local o, err = cron.tz_offset(tz, t)
    if not o then error("template: " .. err, 3) end
    off = o
  end
  local lt = t + off
  local days = lt // DAY
  local y, m, d = civil(days)
  local vars = {
    date = ymd(days), yesterday = ymd(days - 1), tomorrow = ymd(days + 1),
    year = ("%04d"):format(y), month = ("%02d"):format(m), day = ("%02d"):format(d),
    hour = ("%02d"):format(lt % DAY // 3600),
    run_id = run.id, pipeline = run.pipeline,
    -- a run without one is in the default namespace, as ctx().namespace says
    namespace = run.namespace or (run.id and DEFAULT_NS), org_slug = run.namespace or (run.id and DEFAULT_NS),
    env = os.getenv("SLUICE_ENV") or "dev",
  }
  if vars.env == "" then vars.env = "dev" end
  return vars
end

-- why a built-in can be missing, for the error
local missing_why = {
  run_id = "it is set inside a run",
  pipeline = "it is set inside a run",
  namespace = "it is set inside a run",
  org_slug = "it is set inside a run",
}

local function lookup(name, vars, builtins)
  local v = vars and vars[name]
  if v == nil and vars and name:find(".", 1, true) then
    v = vars
    for part in name:gmatch("[^.]+") do
      if type(v) ~= "table" then v = nil break end
      v = v[part]
    end
  end
  if v == nil then v = builtins[name] end
  return v
end

local function render_string(s, vars, builtins, where)
  return (s:gsub("{{%s*([^{}]-)%s*}}", function(name)
    local v = lookup(name, vars, builtins)
    if v == nil then
      local why = missing_why[name]
      error(("%s: %s {{%s}}%s"):format(where,
        why and "variable not set" or "unknown variable", name, why and (": " .. why) or ""), 0)
    end
    local tv = type(v)
    if tv ~= "string" and tv ~= "number" and tv ~= "boolean" then
      error(("%s: {{%s}} is a %s; a template variable must be a string, number or boolean")
        :format(where, name, tv), 0)
    end
    return tostring(v)
  end))
end

local function key_path(path, k)
  if type(k) == "number" then return (path or "") .. "[" .. k .. "]" end
  local ks = tostring(k)
  if not ks:match("^[%a_][%w_]*$") then ks = ("[%q]"):format(ks) end
  if path == nil then return ks end
  return ks:sub(1, 1) == "[" and path .. ks or path .. "." .. ks
end

local function walk(v, vars, builtins, path, seen)
  if type(v) == "string" then
    return render_string(v, vars, builtins, path or "template")
  end
  if type(v) ~= "table" then return v end
  if seen[v] then error(("%s: the value contains a cycle"):format(path or "template"), 0) end
  seen[v] = true
  local out = {}
  for k, x in pairs(v) do out[k] = walk(x, vars, builtins, key_path(path, k), seen) end
  seen[v] = nil
  return setmetatable(out, getmetatable(v))
end

--- Renders `{{name}}` placeholders in a string, or in every string inside a
--- table (recursively; keys are kept, a new table is returned). Raises on
--- an unknown variable naming it and the path where it was found.
---@generic T
---@param value T a string or a table of strings
---@param vars? table caller variables (take precedence over the built-ins)
---@param opts? {tz?: string, run?: table, path?: string} tz: IANA zone for the dates; run: {id, pipeline, created_us, namespace} instead of the running run; path: the name of value in errors
---@return T
function M.render(value, vars, opts)
  if vars ~= nil and type(vars) ~= "table" then
    error(("template.render: vars must be a table, got %s"):format(type(vars)), 2)
  end
  opts = opts or {}
  local builtins = M.builtins(opts.run, opts.tz)
  local ok, res = pcall(walk, value, vars, builtins, opts.path, {})
  if not ok then error(res, 2) end
  return res
end

return M
