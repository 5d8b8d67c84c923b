--- sluice.engine_define: defining pipelines (DESIGN §1): `pipeline()`, its
--- options checked at the definition, and loading a pipeline file through
--- the registry.
local duration = require "sluice.duration"
local errors = require "sluice.errors"
local registry = require "sluice.registry"
local M = require "sluice.engine_core"

local show = errors.show

local Pipeline = {}
Pipeline.__index = Pipeline
Pipeline.__tostring = function(p) return "pipeline " .. p.name end

--- Defines a pipeline. Returns its handle.
---@param name string
---@param fn fun(input:any):any
---@param opts table?
function M.pipeline(name, fn, opts)
  if type(name) ~= "string" or name == "" then
    error("pipeline: the name must be a non-empty string", 2)
  end
  if #name > 200 then -- the store's run listings are keyed by it
    error(("pipeline '%s...': the name is %d bytes; the most is 200"):format(name:sub(1, 40), #name), 2)
  end
  if type(fn) ~= "function" then
    error(("pipeline '%s': expected a function as second argument, got %s"):format(name, type(fn)), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("pipeline '%s': options must be a table, got %s"):format(name, type(opts)), 2)
  end
  if opts then M.check_pipeline_opts(name, opts) end
  local site = errors.where() or "?"
  -- the file being loaded (sluice.registry), or the live set
  local set = registry.target()
  local prev = set.pipelines[name]
  if prev then
    error(("pipeline '%s' is defined twice: at %s and at %s"):format(name, prev.site, site), 2)
  end
  local p = setmetatable({
    name = name, fn = fn, opts = opts or {}, site = site, params = opts and require("sluice.params").declared(name, opts, 3),
    file = set.file, hash = set.hash,
  }, Pipeline)
  set.pipelines[name] = p
  set.defined[#set.defined + 1] = p
  return p
end


--- Options the HTTP API reads (lua/api/runs.lua, lua/api/ops.lua), each
--- with its check: raises (level 3: the pipeline call) when wrong.
M.api_options = {
  description = function(what, v)
    if type(v) ~= "string" then error(("%s: description must be a string"):format(what), 4) end
  end,
  namespaces = function(what, v)
    if type(v) ~= "table" or #v == 0 then error(("%s: namespaces must be a list of namespace names"):format(what), 4) end
  end,
}

--- Checks pipeline options {timeout=, concurrency={key=, limit=}} at the
--- definition, not at the first run.
function M.check_pipeline_opts(name, opts)
  local what = ("pipeline '%s'"):format(name)
  for k in pairs(opts) do
    if k ~= "timeout" and k ~= "concurrency" and k ~= "params" and k ~= "parameters" and not M.api_options[k] then
      error(("%s: unknown option '%s' (known: timeout, concurrency, params, description, parameters, namespaces)")
        :format(what, tostring(k)), 2)
    end
    if M.api_options[k] then M.api_options[k](what, opts[k]) end
  end
  local spec = require("sluice.params").declared(name, opts, 3)
  if spec ~= nil then require("sluice.params").check_spec(name, spec, 2) end
  if opts.timeout ~= nil then duration.ms(opts.timeout, what .. " timeout") end
  local c = opts.concurrency
  if c ~= nil then
    if type(c) ~= "table" then
      error(("%s: concurrency must be a table {key = function(input) ... end, limit = n}, got %s")
        :format(what, show(c)), 2)
    end
    for k in pairs(c) do
      if k ~= "key" and k ~= "limit" then
        error(("%s: unknown concurrency field '%s' (known: key, limit)"):format(what, tostring(k)), 2)
      end
    end
    if c.limit ~= nil and (math.type(c.limit) ~= "integer" or c.limit < 1) then
      error(("%s: concurrency.limit must be a positive integer, got %s"):format(what, show(c.limit)), 2)
    end
  end
end

--- The file being loaded, or nil.
function M.loading_file()
  return registry.loading_file()
end

--- Loads a pipeline file through the registry (stage, validate, swap: a
--- second load replaces the file's definitions). A syntax error is
--- "file:line: msg". Returns the pipelines it defines, in order.
---@return table? defined, string? err, string? kind  "syntax"|"runtime"|"io"|"invalid"
function M.load_file(path, opts)
  local d, err, kind, tb = registry.load(path, opts)
  if not d then return nil, tb or err, kind end
  return d.defined
end

return M
