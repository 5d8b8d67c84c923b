--- sluice.params: declared pipeline parameters,
--- `pipeline(name, fn, {params = {limit = {type = "integer", default = 100, min = 1}}})`
--- (`parameters = {n = "integer"}`, the HTTP API's spelling, is the same
--- declaration with a type name allowed for {type = ...}).
---
--- A run's input is checked and completed before the run starts: missing
--- parameters get their default (a string default is a template rendered
--- with sluice.template for the run: "{{yesterday}}" is the day before the
--- run's creation), a wrong type, a value out of range or a missing
--- required parameter is refused naming the parameter (exit 2 for the
--- command line). The stored input is the completed one, so a resume or a
--- replay sees the same values.
local json = require "sluice.json"
local sorted_names = require "sluice.sorted_keys"

local M = {}

local TYPES = { string = true, integer = true, number = true, boolean = true, array = true, object = true, any = true }
local FIELDS = { type = true, default = true, required = true, min = true, max = true, enum = true, description = true }

local function show(v)
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) == "table" then
    local ok, s = pcall(json.encode, v)
    return ok and s or tostring(v)
  end
  return tostring(v)
end

-- value converted to the parameter's type, or nil and why not
local function coerce(def, v)
  local t = def.type
  if t == "any" then return v end
  if t == "integer" then
    local i = math.type(v) == "float" and math.tointeger(v) or (math.type(v) == "integer" and v)
    if i then return i end
  elseif t == "number" then
    if type(v) == "number" then return v end
  elseif t == "string" or t == "boolean" then
    if type(v) == t then return v end
  elseif t == "array" then
    if type(v) == "table" and (next(v) == nil or json.is_array(v)) then return v end
  elseif t == "object" then
    if type(v) == "table" and not json.is_array(v) then return v end
  end
  local got = type(v)
  if got == "number" then got = math.type(v) end
  if got == "table" then got = json.is_array(v) and "array" or "object" end
  return nil, ("must be %s %s, got %s %s"):format(t:find("^[aeiou]") and "an" or "a", t, got, show(v))
end

local function check_value(def, v)
  local c, err = coerce(def, v)
  if c == nil then return nil, err end
  if def.min ~= nil and type(c) == "number" and c < def.min then return nil, ("must be >= %s, got %s"):format(def.min, c) end
  if def.max ~= nil and type(c) == "number" and c > def.max then return nil, ("must be <= %s, got %s"):format(def.max, c) end
  if def.enum then
    local found = false
    for _, e in ipairs(def.enum) do if e == c then found = true end end
    if not found then
      local opts = {}
      for i, e in ipairs(def.enum) do opts[i] = show(e) end
      return nil, ("must be one of %s, got %s"):format(table.concat(opts, ", "), show(c))
    end
  end
  return c
end

local function has_template(v)
  if type(v) == "string" then return v:find("{{", 1, true) ~= nil end
  if type(v) == "table" then
    for _, x in pairs(v) do if has_template(x) then return true end end
  end
  return false
end

--- The params declaration of pipeline options opts (params, or parameters
--- with type names expanded), or nil; raises at `level` if both are given.
---@param pname string
---@param opts table
---@param level integer
function M.declared(pname, opts, level)
  local spec = opts.parameters
  if spec == nil then return opts.params end
  if opts.params ~= nil then
    error(("pipeline '%s': params and parameters are one option: keep params"):format(pname), level + 1)
  end
  if type(spec) ~= "table" then return spec end -- check_spec names the mistake
  local out = {}
  for name, def in pairs(spec) do out[name] = type(def) == "string" and { type = def } or def end
  return out
end

--- Checks a params declaration (raises at `level` naming the parameter).
---@param pname string the pipeline
---@param spec table
---@param level integer
function M.check_spec(pname, spec, level)
  level = level + 1
  if type(spec) ~= "table" then
    error(("pipeline '%s': params must be a table {name = {type = ...}}"):format(pname), level)
  end
  for _, name in ipairs(sorted_names(spec)) do
    local def = spec[name]
    local where = ("pipeline '%s': parameter '%s'"):format(pname, tostring(name))
    if type(name) ~= "string" then error(("pipeline '%s': parameter names must be strings"):format(pname), level) end
    if type(def) ~= "table" then error(where .. ": expected a table {type = ..., default = ...}", level) end
    for k in pairs(def) do
      if not FIELDS[k] then
        error(("%s: unknown field '%s' (known: type, default, required, min, max, enum, description)"):format(where, tostring(k)), level)
      end
    end
    if not TYPES[def.type] then
      error(("%s: type must be one of string, integer, number, boolean, array, object, any; got %s"):format(where, show(def.type)), level)
    end
    if def.enum ~= nil and (type(def.enum) ~= "table" or #def.enum == 0) then
      error(where .. ": enum must be a non-empty list of values", level)
    end
    for _, k in ipairs({ "min", "max" }) do
      if def[k] ~= nil and type(def[k]) ~= "number" then error(("%s: %s must be a number"):format(where, k), level) end
    end
    if def.required and def.default ~= nil then
      error(where .. ": a required parameter has no default (drop one of required, default)", level)
    end
    -- a templated default is checked when a run renders it
    if def.default ~= nil and not has_template(def.default) then
      local _, err = check_value(def, def.default)
      if err then error(("%s: the default %s"):format(where, err), level) end
    end
  end
end

--- The completed input of a run of p, or nil, a message naming the
--- parameter and {code = "invalid_input" | "missing_field",
--- field = "input.<name>"} for the HTTP API. `run` is {id, pipeline,
--- created_us, namespace}, for templates.
---@param p table pipeline handle (p.params, p.name)
---@param input any
---@param run table
---@return table? input, string? err, table? why
function M.apply(p, input, run)
  local spec = p.params
  local prefix = ("invalid input for pipeline '%s': "):format(p.name)
  if input == nil or input == json.null then input = {} end
  if type(input) ~= "table" or (next(input) ~= nil and json.is_array(input)) then
    return nil, prefix .. ("the input must be an object of parameters (%s), got %s"):format(
      table.concat(sorted_names(spec), ", "), show(input)), { code = "invalid_input" }
  end
  for k in pairs(input) do
    if spec[k] == nil then
      local names = sorted_names(spec)
      return nil, prefix .. ("unknown parameter '%s' (parameters: %s)"):format(tostring(k),
        #names > 0 and table.concat(names, ", ") or "none"), { code = "invalid_input", field = "input." .. tostring(k) }
    end
  end
  local out = {}
  local template
  for _, name in ipairs(sorted_names(spec)) do
    local def = spec[name]
    local v = input[name]
    if v == json.null then v = nil end
    if v == nil and def.default ~= nil then
      v = def.default
      if has_template(v) then
        template = template or require "sluice.template"
        local ok, r = pcall(template.render, v, nil, { run = run, path = name })
        if not ok then return nil, prefix .. tostring(r), { code = "invalid_input", field = "input." .. name } end
        v = r
      end
    end
    if v == nil then
      if def.required then
        return nil, prefix .. ("parameter '%s' is required (%s)"):format(name, def.type),
          { code = "missing_field", field = "input." .. name }
      end
    else
      local c, err = check_value(def, v)
      if c == nil then
        return nil, prefix .. ("parameter '%s' %s"):format(name, err), { code = "invalid_input", field = "input." .. name }
      end
      out[name] = c
    end
  end
  return out
end

--- The parameters of p for listings: {name, type, default, required, min,
--- max, enum, description} each, by name.
---@param p table
---@return table[]
function M.describe(p)
  local list = json.array({})
  for _, name in ipairs(sorted_names(p.params or {})) do
    local d = p.params[name]
    list[#list + 1] = { name = name, type = d.type, default = d.default, required = d.required or false,
      min = d.min, max = d.max, enum = d.enum, description = d.description }
  end
  return list
end

return M
