---@meta sluice.log
-- types/sluice/log.lua: LuaCATS stub of require "sluice.log" (stdlib/sluice/log.lua).
-- Lines carry time, level, run, pipeline and step; logfmt or JSON on stderr;
-- lines logged inside a step are stored with the run (sluice status RUN --logs).

local log = {}

--- At most this many lines are kept per run.
log.MAX_PER_RUN = 1000

---@param msg any
---@param fields? table
function log.debug(msg, fields) end
---@param msg any
---@param fields? table
function log.info(msg, fields) end
---@param msg any
---@param fields? table
function log.warn(msg, fields) end
---@param msg any
---@param fields? table
function log.error(msg, fields) end

--- One line at a level; extra adds or overrides the attached fields.
---@param level "debug"|"info"|"warn"|"error"
---@param msg any
---@param fields? table
---@param extra? table
function log.write(level, msg, fields, extra) end

--- printf-style line at level info (the host's own lines).
---@param fmt string
---@param ... any
function log.host(fmt, ...) end

---@param f "logfmt"|"json"
function log.set_format(f) end

---@return "logfmt"|"json"
function log.get_format() end

---@param level "debug"|"info"|"warn"|"error"
function log.set_level(level) end

--- The text of a record {time, level, msg, run?, pipeline?, step?, fields?}.
---@param rec table
---@param fmt? "logfmt"|"json"
---@return string
function log.render(rec, fmt) end

--- The stored lines of a run, oldest first.
---@param run_id string
---@return {time: string, level: string, msg: string, step: string, attempt: integer, fields?: table}[]
function log.read(run_id) end

--- For the engine: adds the step's lines to the store batch of its commit.
---@param b userdata
---@param run table
---@param step_id string
function log.add(b, run, step_id) end

return log
