--- sluice.engine: pipelines, runs, durable steps, replay, retries and
--- parallel branches (DESIGN §1-2).
---
--- A run executes its pipeline function from the top every time it starts
--- or resumes. Each `step` is memoized per (run, step id): the first time its
--- function runs and its result is committed through the writer before
--- `step` returns; later, the stored result is returned and the function
--- does not run. Steps are also recorded by position within their branch
--- (the main function is branch "", each function given to `parallel` its
--- own branch), so a resume whose code calls steps in another order fails
--- loudly instead of handing a stored result to the wrong step.
---
--- The parts: sluice.engine_core (shared state), engine_define (pipeline()),
--- engine_steps (steps, replay), engine_runs (run lifecycle, child runs),
--- engine_queries (reading runs and steps). This module is their one table.
local errors = require "sluice.errors"
local M = require "sluice.engine_core"
require "sluice.engine_define"
require "sluice.engine_steps"
require "sluice.engine_runs"
require "sluice.engine_queries"

--- Puts the pipeline API into the given environment (default _G).
--- Each function is installed behind an entry point (sluice.errors), so
--- that an error it raises names the user's line.
function M.install(env)
  env = env or _G
  local entry = errors.entry
  env.pipeline = entry(M.pipeline)
  -- a replayed step is one C call (l_step.c); every other step is M.step's
  env.step = require("sluice._step").new(require("sluice.sched").contexts, errors.entry(M.step, M.step3, 3))
  env.parallel = entry(M.parallel)
  env.ctx = entry(M.ctx)
  env.sleep = entry(M.sleep)
  env.call, env.start, env.cancel = entry(M.call), entry(M.start), entry(M.cancel)
  local events = require "sluice.events"
  env.send, env.on, env.wait_for = entry(events.send), entry(events.on), entry(events.wait_for)
  local stream = require "sluice.stream"
  env.emit, env.emit_many = entry(stream.emit), entry(stream.emit_many)
  env.read, env.consume = entry(stream.read), entry(stream.consume)
  env.retention = entry(stream.retention)
  env.every = require("sluice.every").every -- its builders are entry points themselves
  local flow = require "sluice.flow"
  env.map = entry(flow.map)
  env.dag = entry(flow.dag)
end

return M
