--- sluice.sched: the engine's tasks. A task is a coroutine the host resumes;
--- each carries a context (the run branch it belongs to). Wake-ups go
--- through one trampoline so that a task finishing inside another's resume
--- never nests resumes deeper than one level, and a task is only ever woken
--- while it waits.
local uv = require "luv"
local vm = require "sluice._vm"
local errors = require "sluice.errors"

local M = {}

local contexts = setmetatable({}, { __mode = "k" }) -- coroutine -> context
local waiting = setmetatable({}, { __mode = "k" })  -- coroutine -> token
local queue, head, tail = {}, 1, 0
local draining = false

--- The contexts by coroutine (read only: the engine's hot path reads it
--- without calling context).
M.contexts = contexts

--- The context of the running coroutine, or nil outside a task.
function M.context(co)
  return contexts[co or coroutine.running()]
end

function M.set_context(co, ctx)
  contexts[co] = ctx
end

local function drain()
  draining = true
  while head <= tail do
    local item = queue[head]
    queue[head] = nil
    head = head + 1
    -- vm.resume reports an error with the task's traceback; it raises
    -- only if the coroutine is not suspended (an engine bug), which must
    -- not leave the trampoline stuck with draining set
    local ok, err = pcall(vm.resume, item[1], item[2], table.unpack(item, 3, item.n))
    if not ok then io.stderr:write("sluice: internal error: ", tostring(err), "\n") end
  end
  head, tail = 1, 0
  draining = false
end

--- Wakes a task waiting in M.wait, passing it values. Waking a task that is
--- not waiting is a programming error of the engine.
function M.wake(co, ...)
  local token = waiting[co]
  if not token then
    error("sched.wake: the task is not waiting", 2)
  end
  waiting[co] = nil
  tail = tail + 1
  queue[tail] = table.pack(co, token, ...)
  if not draining then drain() end
end

--- Suspends the running task until M.wake. Other resumes of this coroutine
--- (a user's coroutine.resume from a stray callback) are ignored.
function M.wait()
  local co = coroutine.running()
  local token = {}
  waiting[co] = token
  -- a task whose context times its running (a REPL evaluation) is told
  local ctx = contexts[co]
  local on_wait = ctx and ctx.on_wait
  if on_wait then on_wait(true) end
  while true do
    local r = table.pack(coroutine.yield())
    if r[1] == token then
      if on_wait then on_wait(false) end
      return table.unpack(r, 2, r.n)
    end
    waiting[co] = token
  end
end

-- A task bounded by a guard (sluice.guard) gets it before its first
-- instruction: the one given, else the guard of its run (a run with a
-- timeout, or one being stopped).
local function start(ctx, guard, fn, on_done, ...)
  local args = table.pack(...)
  local co
  co = coroutine.create(function()
    local ok, res = xpcall(fn, M.traceback, table.unpack(args, 1, args.n))
    on_done(ok, res)
    -- a weak table with many dead keys costs every collection: drop it now
    contexts[co] = nil
  end)
  contexts[co] = ctx
  guard = guard or (ctx.run and ctx.run.guard)
  if guard then guard:attach(co) end
  waiting[co] = "start"
  M.wake(co)
  return co
end

--- Runs fn(...) in a new task with context ctx; on_done(ok, result_or_err)
--- runs inside the task when it ends. The task starts at once, or right
--- after the current resume if the trampoline is busy.
function M.spawn(ctx, fn, on_done, ...)
  return start(ctx, nil, fn, on_done, ...)
end

--- spawn, with the task bounded by guard (a step body with a timeout).
function M.spawn_guarded(ctx, guard, fn, on_done, ...)
  return start(ctx, guard, fn, on_done, ...)
end

--- Calls fn(co, ctx) for every task alive.
function M.each_task(fn)
  for co, ctx in pairs(contexts) do fn(co, ctx) end
end

local Handle = {}
Handle.__index = Handle

--- Starts fn(...) in a new task with context ctx, like spawn, and returns a
--- handle: handle:await(), from a task, waits for it to end and returns
--- ok, result_or_error (one awaiter per handle).
function M.go(ctx, fn, ...)
  local h = setmetatable({ done = false }, Handle)
  h.co = M.spawn(ctx, fn, function(ok, res) h:settle(ok, res) end, ...)
  return h
end

--- Ends the wait for the task: its awaiter gets ok, res now, and the task's
--- own end (if it ever comes) is ignored. For a task that is abandoned.
function Handle:settle(ok, res)
  if self.done then return end
  self.done, self.ok, self.res = true, ok, res
  local w = self.waiter
  if w then
    self.waiter = nil
    M.wake(w)
  end
end

function Handle:await()
  if not self.done then
    self.waiter = coroutine.running()
    M.wait()
  end
  return self.ok, self.res
end

--- Error handler: keeps error tables (they carry fields), makes others
--- {message=, traceback=}; the traceback (without the message) has
--- sluice's own frames trimmed (sluice.errors).
function M.traceback(err)
  if type(err) == "table" then
    if err.traceback == nil then err.traceback = errors.traceback(2) end
    return err
  end
  return { message = tostring(err), traceback = errors.traceback(2) }
end

--- Waits ms milliseconds on a loop timer (not durable).
function M.sleep_ms(ms)
  local co = coroutine.running()
  local t = uv.new_timer()
  uv.update_time()
  t:start(math.max(0, math.floor(ms + 0.5)), 0, function()
    t:close()
    M.wake(co)
  end)
  M.wait()
end

return M
