--- sluice.engine_core: the engine's table and the state its parts share
--- (sluice.engine assembles them): the live pipelines, the runs executing in
--- this process, the host's shutdown flags and hooks, and the error a step
--- failure raises.
local registry = require "sluice.registry"

local M = {}

M.pipelines = registry.live.pipelines -- name -> handle, of every file (sluice.registry)

--- Set by a host that is shutting down: no step starts any more; a run
--- reaching a step that would execute parks there (it stays "running" in
--- the store and resumes at the next start). M.executing counts steps whose
--- function runs now; M.on_idle() is called when it drops to 0 while
--- stopping.
M.stopping = false
M.executing = 0
M.on_idle = nil
--- Set by the HTTP API's metrics: on_step(pipeline_name, attempts, us, ok)
--- after each executed step.
M.on_step = nil

--- Set by a host that shares its store with other hosts (lua/hosts.lua):
--- take(id) before a run executes here (waits while another host holds
--- the run; true when it waited), ended(id, record | nil) when it ended
--- here; hold(kind, name, stopped) and release(kind, name) for the leases
--- of the singletons (a consumer's batches), lapsed() true while this host
--- may have lost its lease (no step starts then). nil: the store has one host.
M.leases = nil

--- The statuses a run ends with (store.h's store_run_status_final).
M.FINAL = { completed = true, failed = true, cancelled = true }

--- The timeout (ms) of steps that set none (serve/run --step-timeout); nil:
--- such steps run unbounded.
M.step_timeout_ms = nil

--- The error raised when a step fails; a run that ends with it records the
--- step id.
local StepError = {}
StepError.__index = StepError
StepError.__tostring = function(e) return e.message end
M.StepError = StepError

--- The error that ends a run stopped for `reason` ("cancelled", "timeout",
--- or "lost": M.store_lost), wherever the run stands; its final status comes
--- from run.stop whatever user code does with the error.
local STOP_CODES = { cancelled = "ECANCELLED", lost = "EIO" }
function M.stop_error(reason, message)
  return setmetatable({ code = STOP_CODES[reason] or "ETIMEOUT", message = message,
    stopped = reason }, StepError)
end

--- Whether a store failure of a run (its code) leaves the run to execute
--- again rather than fail: on a remote store (PostgreSQL), EIO is a
--- connection lost before a commit was confirmed (it may or may not have
--- committed) or no connection at all. The run then stops where it stands,
--- as if its host had died there: no final record, and it executes again in
--- this process from what the store holds (engine_runs.lua), so a step whose
--- record did not commit runs again and one whose record did is replayed
--- (at-least-once at the step boundary; an emit and its step record are one
--- commit, so the event is there once either way).
function M.store_lost(code)
  return code == "EIO" and require("sluice._store").remote()
end

-- runs executing in this process: id -> {run=, waiters={}}
local active = {}
M.active = active

return M
