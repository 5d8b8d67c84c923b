---@meta _
-- types/pipeline.lua: LuaCATS stubs of the globals sluice gives pipeline
-- files (lua/engine.lua install), for lua-language-server. Definitions
-- only: nothing here runs. `sluice types DIR` writes this folder out; add
-- it to "workspace.library" in .luarc.json (README, "Editor support").

---@alias sluice.Duration number|string seconds, or "250ms", "30s", "5m", "2h", "1d"

---@class sluice.Pipeline
---@field name string
---@field site string file:line of its definition

---@class sluice.Param
---@field type "string"|"integer"|"number"|"boolean"|"array"|"object"|"any"
---@field default? any a string default is a template ("{{yesterday}}"), rendered when the run is created
---@field required? boolean a run without it is refused (exit 2)
---@field min? number
---@field max? number
---@field enum? any[] the allowed values
---@field description? string

---@class sluice.PipelineOpts
---@field params? table<string, sluice.Param> declared parameters: the input is checked and defaulted before the run starts
---@field timeout? sluice.Duration the run fails with reason "timeout" past it (counted from its creation)
---@field concurrency? {key?: string|fun(input:any):any, limit?: integer} runs sharing a key beyond limit wait in "pending"

--- Defines a pipeline: `fn(input)` returns the run's result.
---@param name string
---@param fn fun(input: any): any
---@param opts? sluice.PipelineOpts
---@return sluice.Pipeline
function pipeline(name, fn, opts) end

---@class sluice.Backoff
---@field initial? sluice.Duration default 1s
---@field factor? number default 2
---@field max? sluice.Duration default 5m
---@field jitter? number default 0.2

---@class sluice.StepOpts
---@field retries? integer attempts after the first
---@field backoff? sluice.Duration|sluice.Backoff delay before a retry
---@field timeout? sluice.Duration stop waiting for an attempt after this

--- A durable step, memoized per (run, id): the first time `fn(...)` runs
--- and its one result is committed before `step` returns; later (a resume,
--- a replay) the stored result is returned and `fn` does not run.
--- `step(id, fn, ...)` or `step(id, opts, fn, ...)`.
---@param id string unique within the run
---@param opts_or_fn sluice.StepOpts|fun(...): any
---@param ... any the function (after opts) and its arguments
---@return any
function step(id, opts_or_fn, ...) end

--- Runs the functions as concurrent branches of this run; returns their
--- results in order. If one fails the others finish, then the first error
--- (argument order) is raised.
---@param ... fun(): any
---@return any ...
function parallel(...) end

---@class sluice.MapOpts: sluice.StepOpts
---@field concurrency? integer items in flight at most (default 8)
---@field settle? boolean run every item; results are {ok = value} or {err = message}

--- One durable step per item (`id#1`, `id#2`, ...), at most
--- opts.concurrency in flight; results in item order.
---@param id string
---@param items any[]
---@param fn fun(item: any, i: integer): any
---@param opts? sluice.MapOpts
---@return any[]
function map(id, items, fn, opts) end

--- Steps with dependencies: each node a durable step started when the nodes
--- it is `after` have finished; `fn(deps)` gets their results by name.
--- Returns every node's result by name.
---@param nodes table<string, fun(deps: table): any|{after?: string[], [1]: fun(deps: table): any, retries?: integer, backoff?: any, timeout?: sluice.Duration}>
---@return table<string, any>
function dag(nodes) end

--- Durable sleep: a restart sleeps only what remains. Status "sleeping".
---@param d sluice.Duration
function sleep(d) end

---@class sluice.SendEvent
---@field id string
---@field name string
---@field data any
---@field ts string

--- Waits durably for the first matching send(name, ...) after the wait
--- began; returns data, event, or nil, "timeout".
---@param name string
---@param opts? {match?: table|fun(data: any): boolean, timeout?: sluice.Duration}
---@return any data
---@return sluice.SendEvent|string event_or_timeout
function wait_for(name, opts) end

--- Durable fire-and-forget event: each on() handler whose pattern matches
--- gets a run. Inside a run it is recorded like a step (replay never sends
--- twice). Returns the event id.
---@param name string
---@param data? any
---@return string
function send(name, data) end

--- An event trigger: each event whose name matches (a trailing * matches a
--- prefix) becomes a run of fn(data, event).
---@param pattern string
---@param fn fun(data: any, event: sluice.SendEvent): any
---@param opts? {name?: string}
---@return sluice.Pipeline
function on(pattern, fn, opts) end

---@class sluice.StreamEvent
---@field id string 16 hex digits of the log position: sorts in append order
---@field type string
---@field stream string the stream key ("orders:42")
---@field ts string ISO 8601
---@field data any

--- Appends an event to the durable stream; returns its id once durable.
---@param type string
---@param stream_key string
---@param data? any
---@return string
function emit(type, stream_key, data) end

--- Appends several events {type, stream_key, data} in one commit.
---@param list {[1]: string, [2]: string, [3]: any}[]
---@return string[]
function emit_many(list) end

--- Reads events of a stream key or prefix (`orders:*`) by position.
---@param opts {stream: string, after?: string, from?: "TRIM_HORIZON"|"LATEST"|string, limit?: integer}
---@return sluice.StreamEvent[] events
---@return {next?: string, trimmed?: boolean} info
function read(opts) end

--- A checkpointed stream consumer (at-least-once): fn gets batches of
--- events inside runs; the checkpoint moves after fn returns.
---@param consumer string
---@param stream_pattern string
---@param fn fun(events: sluice.StreamEvent[]): any
---@param opts? {batch?: integer, from?: string}
function consume(consumer, stream_pattern, fn, opts) end

--- Trims a stream by age and/or count (applied by sluice serve).
---@param stream_pattern string
---@param opts {max_age?: sluice.Duration, max_count?: integer}
function retention(stream_pattern, opts) end

--- A child run that the parent waits for durably; a failed child raises.
---@param p sluice.Pipeline|string
---@param input? any
---@param opts? {id?: string}
---@return any result
function call(p, input, opts) end

--- A child run that goes on on its own; returns its id.
---@param p sluice.Pipeline|string
---@param input? any
---@param opts? {id?: string}
---@return string run_id
function start(p, input, opts) end

--- Stops a run at its next step boundary, sleep or wait.
---@param run_id string
---@return true|nil ok
---@return string? why_not
function cancel(run_id) end

---@class sluice.Ctx
---@field run_id string
---@field pipeline string
---@field step_id? string the step running now, if any
---@field attempt? integer the attempt of that step (1 first)
---@field branch string "" for the main function
---@field namespace? string the run's namespace, if it has one

--- The running run, for idempotency keys to other systems.
---@return sluice.Ctx
function ctx() end

---@class sluice.ScheduleOpts
---@field tz? string IANA zone, default UTC
---@field catch_up? "latest"|"all"|"none"
---@field overlap? "skip"|"queue"|"allow"
---@field jitter? sluice.Duration
---@field name? string

--- A schedule: called with (pipeline | name | fn [, input [, opts]]).
---@alias sluice.Schedule fun(p: sluice.Pipeline|string|function, input?: any, opts?: sluice.ScheduleOpts)

---@class sluice.AtSpec
---@field at fun(time: string, opts?: sluice.ScheduleOpts): sluice.Schedule "2am", "2:30pm", "14:05", "noon", "midnight"

---@class sluice.Interval
---@field seconds sluice.Schedule
---@field minutes sluice.Schedule
---@field hours sluice.Schedule
---@field days sluice.Schedule|sluice.AtSpec

---@class sluice.Every
---@overload fun(n: integer): sluice.Interval
---@field day sluice.AtSpec|sluice.Schedule
---@field weekday sluice.AtSpec|sluice.Schedule
---@field monday sluice.AtSpec|sluice.Schedule
---@field tuesday sluice.AtSpec|sluice.Schedule
---@field wednesday sluice.AtSpec|sluice.Schedule
---@field thursday sluice.AtSpec|sluice.Schedule
---@field friday sluice.AtSpec|sluice.Schedule
---@field saturday sluice.AtSpec|sluice.Schedule
---@field sunday sluice.AtSpec|sluice.Schedule
---@field hour sluice.Schedule
---@field minute sluice.Schedule
---@field cron fun(expr: string, opts?: sluice.ScheduleOpts): sluice.Schedule 5-field Vixie cron

--- The schedule DSL: every.day.at("2am")(etl), every(15).minutes(etl),
--- every.cron("0 */6 * * *")(etl).
---@type sluice.Every
every = nil
