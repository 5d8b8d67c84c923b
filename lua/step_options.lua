--- sluice.step_options: the options of a durable step (retries, backoff,
--- timeout), checked once where the user writes them: `step`, and `map`
--- and `dag` nodes, which pass them on to their steps (sluice.flow). The
--- callers are entry points (sluice.errors): an error names the user's line.
local duration = require "sluice.duration"
local errors = require "sluice.errors"

local M = {}

local show = errors.show
local backoff_fields = { initial = true, factor = true, max = true, jitter = true }

--- The option names a step takes.
M.known = { retries = true, backoff = true, timeout = true }

--- Checks the step options of o (other keys are the caller's); `what`
--- names the owner ("step 'x'", "map 'x'", "dag: node 'x'"). Returns the
--- step options alone ({retries=, backoff=, timeout=}), or nil when o sets
--- none of them.
function M.check(what, o)
  if o.retries == nil and o.backoff == nil and o.timeout == nil then return nil end
  local r = o.retries
  if r ~= nil and (math.type(r) ~= "integer" or r < 0) then
    error(("%s: retries must be an integer >= 0, got %s"):format(what, show(r)), 2)
  end
  if o.timeout ~= nil then duration.ms(o.timeout, what .. " timeout") end
  local b = o.backoff
  if type(b) == "table" then
    for k in pairs(b) do
      if not backoff_fields[k] then
        error(("%s: unknown backoff field '%s' (known: initial, factor, max, jitter)"):format(what, tostring(k)), 2)
      end
    end
    if b.initial ~= nil then duration.ms(b.initial, what .. " backoff.initial") end
    if b.max ~= nil then duration.ms(b.max, what .. " backoff.max") end
    if b.factor ~= nil and (type(b.factor) ~= "number" or not (b.factor >= 1 and b.factor < math.huge)) then
      error(("%s: backoff.factor must be a number >= 1, got %s"):format(what, show(b.factor)), 2)
    end
    if b.jitter ~= nil and (type(b.jitter) ~= "number" or not (b.jitter >= 0 and b.jitter <= 1)) then
      error(("%s: backoff.jitter must be a number from 0 to 1, got %s"):format(what, show(b.jitter)), 2)
    end
  elseif b ~= nil then
    if type(b) ~= "number" and type(b) ~= "string" then
      error(("%s: backoff must be a duration or a table {initial=, factor=, max=, jitter=}, got %s")
        :format(what, type(b)), 2)
    end
    duration.ms(b, what .. " backoff")
  end
  return { retries = o.retries, backoff = o.backoff, timeout = o.timeout }
end

--- The delay (ms) before attempt n+1 after attempt n failed, for a backoff
--- that check accepted.
function M.backoff_ms(b, n)
  local initial, factor, max, jitter = 1000, 2, 300000, 0.2
  if type(b) == "number" or type(b) == "string" then
    initial = duration.ms(b)
  elseif type(b) == "table" then
    if b.initial ~= nil then initial = duration.ms(b.initial) end
    if b.max ~= nil then max = duration.ms(b.max) end
    factor = b.factor or factor
    jitter = b.jitter or jitter
  end
  local d = math.min(max, initial * factor ^ (n - 1))
  if jitter > 0 then d = d * (1 - jitter + 2 * jitter * math.random()) end
  return d
end

return M
