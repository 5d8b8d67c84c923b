--- sluice.duration: durations as users write them: numbers are seconds,
--- strings are "250ms", "30s", "5m", "2h", "1d" (and sums like "1h30m").
local M = {}

local units = { ms = 1, s = 1000, m = 60000, h = 3600000, d = 86400000 }

--- Parses a duration into milliseconds (a number, maybe fractional).
---@param v number|string
---@param what string? names the field in errors, e.g. "step 'x' timeout"
---@return number ms
function M.ms(v, what)
  what = what or "duration"
  if type(v) == "number" then
    if v ~= v or v < 0 or v == math.huge then
      error(("%s: %s is not a duration (expected seconds >= 0)"):format(what, tostring(v)), 3)
    end
    return v * 1000
  end
  if type(v) ~= "string" then
    error(("%s: expected a number of seconds or a string like \"30s\", got %s"):format(what, type(v)), 3)
  end
  local total, pos, s = 0, 1, v:gsub("%s+", "")
  if s == "" then error(("%s: empty duration"):format(what), 3) end
  while pos <= #s do
    local num, unit, nxt = s:match("^(%d+%.?%d*)(%a+)()", pos)
    if not num or not units[unit] then
      error(("%s: %q is not a duration (use e.g. \"250ms\", \"30s\", \"5m\", \"2h\", \"1d\")"):format(what, v), 3)
    end
    total = total + tonumber(num) * units[unit]
    pos = nxt
  end
  return total
end

return M
