/* vm.h: the Lua state on the host's libuv loop. Creates the state with the
 * standard libraries, luv bound to our loop, the embedded modules of lua/
 * and stdlib/ on package.searchers, the C modules in package.preload;
 * resumes coroutines the host suspended; reports errors of callbacks and
 * coroutines with a traceback and never exits the process. */
#ifndef SLUICE_VM_H
#define SLUICE_VM_H

#include <lua.h>
#include <stdint.h>
#include <uv.h>

#include "lua_alloc.h"

typedef struct vm {
  lua_State *L;
  uv_loop_t loop;
  lua_State *main_co; /* the coroutine running the main chunk, if any */
  int main_failed;    /* set when main_co ended with an error */
  int stop_with_main; /* stop the loop when main_co ends (commands, not scripts) */
  int open;
  /* guards (guard.h): the coroutine vm_resume runs now; when it was resumed
   * (for the preemption slice); how many guards are live (none: vm_resume
   * does no guard work); the coroutine the hook just preempted; the idle
   * handle that resumes preempted coroutines */
  lua_State *running;
  uint64_t slice_start;
  int guards;
  lua_State *preempted;
  uv_idle_t ready;
  int ready_open;
  lua_alloc alloc; /* the Lua state's small blocks (lua_alloc.h) */
} vm;

/* Creates the loop and the Lua state. Returns 0, or -1 with err. */
int vm_open(vm *v, char *err, size_t errsz);

/* Closes in the order libuv and luv need: C handles (the store's writer),
 * every luv handle, the loop run until it drains, lua_close, uv_loop_close. */
void vm_close(vm *v);

/* The vm that owns a Lua state (any thread of it). */
vm *vm_of(lua_State *L);

/* Calls the function below nargs arguments on L's stack under a traceback
 * handler. On success returns the number of results left on the stack; on
 * error prints "sluice: <message and traceback>" on stderr, leaves nothing
 * and returns -status. luv runs every callback through it, so an error in a
 * callback never exits the process. */
int vm_pcall(lua_State *L, int nargs, int nresults, int flags);

/* Resumes the suspended coroutine co (from the running thread `from`, or
 * NULL from C callbacks) with the nargs values on top of its stack. A
 * finished coroutine's results are dropped; an error is reported with co's
 * traceback and co is reset; the main coroutine's end is noted (main_failed,
 * stop_with_main). Returns the lua_resume status. */
int vm_resume(lua_State *co, lua_State *from, int nargs);

/* Starts the function below nargs arguments on L's stack as the main
 * coroutine (v->main_co) and resumes it once. Returns 0, or -1 if it failed
 * before its first yield (already reported). */
int vm_start_main(vm *v, int nargs);

/* Pushes the message of the error value on top of L (any type, even nil or
 * a table without __tostring) with a traceback of co from level. */
void vm_push_traceback(lua_State *L, lua_State *co, int level);

#endif
