---@meta sluice.template
-- types/sluice/template.lua: LuaCATS stub of require "sluice.template" (stdlib/sluice/template.lua).

local template = {}

--- Renders {{name}} placeholders in a string or in every string of a table.
--- Built-ins: date, yesterday, tomorrow, year, month, day, hour (of the
--- run's creation, UTC unless tz), run_id, pipeline, namespace, org_slug, env.
--- An unknown variable raises naming it and its path.
---@generic T
---@param value T
---@param vars? table caller variables (take precedence; dotted names read nested tables)
---@param opts? {tz?: string, run?: {id?: string, pipeline?: string, created_us?: integer, namespace?: string}, path?: string}
---@return T
function template.render(value, vars, opts) end

--- The built-in variables for a run (default: the running one).
---@param run? {id?: string, pipeline?: string, created_us?: integer, namespace?: string}
---@param tz? string
---@return table<string, string>
function template.builtins(run, tz) end

return template
