--- sluice.duration: durations as users write them: numbers are seconds,
--- strings are a number and a unit ("250ms", "30s", "1.5m", "2h", "1d") or
--- such parts written together ("1h30m"), with no spaces and no sign; at
--- most 100 years. Errors name the field (`what`) and carry no position:
--- the pipeline API's entry points give them the user's (sluice.errors).
local M = {}

local units = { ms = 1, s = 1000, m = 60000, h = 3600000, d = 86400000 }

--- The longest duration, in ms: 100 years (a timer, a wake time in
--- microseconds and their sums stay exact integers far below this).
M.MAX_MS = 100 * 365 * units.d

local FORMS = 'use a number of seconds or a string like "250ms", "30s", "1.5m", "2h", "1d" ' ..
  'or "1h30m", without spaces'

local function fail(what, fmt, ...)
  error(("%s: " .. fmt):format(what, ...), 0)
end

--- Parses a duration into milliseconds (a number, maybe fractional).
---@param v number|string
---@param what string? names the field in errors, e.g. "step 'x' timeout"
---@return number ms
function M.ms(v, what)
  what = what or "duration"
  if type(v) == "number" then
    if v ~= v or v < 0 then fail(what, "%s is not a duration (expected seconds >= 0)", tostring(v)) end
    if v * 1000 > M.MAX_MS then fail(what, "%s seconds is longer than 100 years", tostring(v)) end
    return v * 1000
  end
  if type(v) ~= "string" then fail(what, "expected a duration (%s), got %s", FORMS, type(v)) end
  if v == "" then fail(what, "empty duration (%s)", FORMS) end
  local total, pos = 0, 1
  while pos <= #v do
    local num, unit, nxt = v:match("^(%d+%.%d+)(%a+)()", pos)
    if not num then num, unit, nxt = v:match("^(%d+)(%a+)()", pos) end
    if not num or not units[unit] then fail(what, "%q is not a duration (%s)", v, FORMS) end
    total = total + tonumber(num) * units[unit]
    pos = nxt
  end
  if total > M.MAX_MS then fail(what, "%q is longer than 100 years", v) end
  return total
end

return M
