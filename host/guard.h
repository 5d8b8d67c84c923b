/* guard.h: "sluice._guard", the count hook that bounds Lua code which never
 * yields (Redis's lua-time-limit model). A guard is a deadline (or none) and
 * a kill switch shared by a set of coroutines: the tasks of a step body or of
 * a run, and the coroutines those create. Every GUARD_COUNT instructions the
 * hook of a guarded coroutine checks the deadline; once the guard is killed
 * (by the deadline or by the engine), user code on its coroutines never runs
 * again: the coroutine is frozen (it yields from the hook and is never
 * resumed), which no pcall can catch; where it cannot yield (a sort
 * comparator, a message handler) the hook raises instead, with the user's
 * xpcall handlers disarmed, on every instruction until the error reaches
 * code that can yield. Code of the host's own modules (lua/, stdlib/) is
 * never interrupted, so the engine's bookkeeping completes.
 *
 * A guarded task the host resumed that runs user code for longer than a
 * slice (GUARD_SLICE_MS) without yielding is preempted: it yields from the
 * hook and the host resumes it from an idle handle on the next loop
 * iteration, after timers, I/O and signals ran. Coroutines without a guard
 * carry no hook and pay nothing. */
#ifndef SLUICE_GUARD_H
#define SLUICE_GUARD_H

#include <lua.h>

#define GUARD_COUNT 10000
#define GUARD_SLICE_MS 20

/* vm_resume hands over a coroutine the hook preempted: it is resumed on the
 * next loop iteration. */
void guard_requeue(lua_State *co);

/* Stops resuming preempted coroutines and closes the idle handle
 * (modules_shutdown, before the loop's last run). */
void guard_shutdown(lua_State *L);

#endif
