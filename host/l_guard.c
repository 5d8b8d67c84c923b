/* l_guard.c: "sluice._guard" (see guard.h): guards, their count hook, and the
 * idle handle that resumes the coroutines the hook preempted.
 *
 *   guard.new([ms [, err]]) -> g   a guard whose deadline is ms from now
 *                                  (nil: none); err is raised where a killed
 *                                  coroutine cannot be frozen
 *   g:attach(co)   co is bounded by g (its hook is set)
 *   g:kill([err])  user code on g's coroutines never runs again
 *   g:killed()     true once killed (by its deadline or by kill)
 *   g:release()    a guard no longer needed: its coroutines lose the hook
 *   g:rearm(ms)    a new deadline for the next use of a guard and its one
 *                  coroutine (a pooled worker): false if it cannot be reused
 *                  (killed, released, or other coroutines joined it)
 *   guard.of(co) -> g | nil        guard.live() -> guards not released
 *
 * Which coroutine has which guard is kept in a registry table with weak keys
 * (an ephemeron table): a coroutine that is collected takes its entry along,
 * and a guard lives as long as one of its coroutines (or the engine) holds it.
 * A guard refers to its coroutines strongly (its first user value: the one
 * coroutine, or a table of them): the cycle through the ephemeron table does
 * not keep them alive. No weak table per guard: the collector's atomic phase
 * walks every weak table, and a busy host makes many guards.
 * Lua 5.4 hooks are per coroutine; lua_newthread copies the creator's hook, so
 * a coroutine a step body creates carries the hook too: the first time it
 * fires there, while the host runs the body's task, the new coroutine is
 * attached to the task's guard. */
#include "guard.h"

#include <lauxlib.h>
#include <string.h>
#include <uv.h>

#include "embedded.h"
#include "modules.h"
#include "vm.h"

typedef struct guard guard;

struct guard {
  uint64_t deadline; /* uv_hrtime() after which it is killed; 0: none */
  int killed;
  int released;
};

#define SLICE_NS ((uint64_t)GUARD_SLICE_MS * 1000000u)
#define META "sluice._guard"

static char MAP_KEY;   /* registry: coroutine -> guard (weak keys) */
static char READY_KEY; /* registry: array of preempted coroutines */
static lua_CFunction xpcall_fn; /* the standard xpcall, whose handlers a kill disarms */

static void hook(lua_State *L, lua_Debug *ar);

/* A weak table in the registry at key, created on first use; pushed. */
static void push_weak(lua_State *L, char *key, const char *mode) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, mode);
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

/* Pushes thread t on L's stack; t is L or a coroutine that is not running. */
static void push_thread(lua_State *L, lua_State *t) {
  if (t == L) {
    lua_pushthread(L);
  } else {
    lua_pushthread(t);
    lua_xmove(t, L, 1);
  }
}

/* Pushes t's guard (or nil) and returns it. */
static guard *push_guard(lua_State *L, lua_State *t) {
  push_weak(L, &MAP_KEY, "k");
  push_thread(L, t);
  lua_rawget(L, -2);
  lua_remove(L, -2);
  return luaL_testudata(L, -1, META);
}

/* The guard of thread t, or NULL. Uses L's stack (balanced); t must be L or
 * a coroutine that is not running. */
static guard *guard_of(lua_State *L, lua_State *t) {
  if (!lua_checkstack(L, 4)) return NULL;
  guard *g = push_guard(L, t);
  lua_pop(L, 1);
  return g;
}

/* Code of the host's own modules: never interrupted (its bookkeeping must
 * complete). The chunk names of embedded modules; the pointers of those seen
 * are cached, and stay valid because those modules are never unloaded. */
static int host_source(const char *src) {
  static const char *seen[64];
  static int nseen;
  if (!src) return 0;
  for (int i = 0; i < nseen; i++) {
    if (seen[i] == src) return 1;
  }
  for (const embedded_file *f = embedded_files; f->module; f++) {
    if (strcmp(f->chunk, src) == 0) {
      if (nseen < (int)(sizeof seen / sizeof seen[0])) seen[nseen++] = src;
      return 1;
    }
  }
  return 0;
}

typedef void (*thread_fn)(lua_State *L, lua_State *t, guard *g);

/* Calls fn(t) if t is still attached to g (not to another guard since). */
static void if_mine(lua_State *L, int map, lua_State *t, guard *g, thread_fn fn) {
  push_thread(L, t);
  lua_rawget(L, map);
  int mine = lua_touserdata(L, -1) == g;
  lua_pop(L, 1);
  if (mine) fn(L, t, g);
}

/* Calls fn for each coroutine attached to the guard at gidx. */
static void each_thread(lua_State *L, int gidx, thread_fn fn) {
  guard *g = lua_touserdata(L, gidx);
  luaL_checkstack(L, 6, NULL);
  int type = lua_getiuservalue(L, gidx, 1);
  int set = lua_gettop(L);
  push_weak(L, &MAP_KEY, "k");
  int map = set + 1;
  if (type == LUA_TTHREAD) {
    if_mine(L, map, lua_tothread(L, set), g, fn);
  } else if (type == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, set)) {
      lua_pop(L, 1);
      lua_State *t = lua_tothread(L, -1);
      if (t) if_mine(L, map, t, g, fn);
    }
  }
  lua_settop(L, set - 1);
}

static void attach(lua_State *L, int gidx, lua_State *t) {
  guard *g = lua_touserdata(L, gidx);
  luaL_checkstack(L, 5, NULL);
  push_weak(L, &MAP_KEY, "k");
  push_thread(L, t);
  lua_pushvalue(L, gidx);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  /* its coroutines: the first one as it is, a table from the second on */
  int type = lua_getiuservalue(L, gidx, 1);
  if (type == LUA_TNIL) {
    lua_pop(L, 1);
    push_thread(L, t);
    lua_setiuservalue(L, gidx, 1);
  } else if (type == LUA_TTHREAD && lua_tothread(L, -1) == t) {
    lua_pop(L, 1);
  } else {
    if (type == LUA_TTHREAD) {
      lua_createtable(L, 0, 2);
      lua_insert(L, -2);
      lua_pushboolean(L, 1);
      lua_rawset(L, -3);
      lua_pushvalue(L, -1);
      lua_setiuservalue(L, gidx, 1);
    }
    push_thread(L, t);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  lua_sethook(t, hook, LUA_MASKCOUNT, g->killed ? 1 : GUARD_COUNT);
}

static void hook_every_instruction(lua_State *L, lua_State *t, guard *g) {
  (void)L, (void)g;
  lua_sethook(t, hook, LUA_MASKCOUNT, 1);
}

/* From now on the hook of every coroutine of the guard fires on each
 * instruction, and stops it at the first one of user code. */
static void kill_guard(lua_State *L, int gidx) {
  guard *g = lua_touserdata(L, gidx);
  if (g->killed) return;
  g->killed = 1;
  each_thread(L, gidx, hook_every_instruction);
}

static void unhook(lua_State *L, lua_State *t, guard *g) {
  (void)g;
  lua_sethook(t, NULL, 0, 0);
  push_weak(L, &MAP_KEY, "k");
  push_thread(L, t);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

static int passthrough(lua_State *L) {
  lua_settop(L, 1);
  return 1;
}

/* The error the hook raises runs the message handlers of the xpcalls on the
 * stack while hooks are off (Lua disables them inside a hook): a user
 * handler that loops would never be stopped. Replace every user handler on
 * L's stack with one that returns the error as it is (the handler is the
 * second value in xpcall's frame, where lua_pcallk's errfunc points). */
static void disarm_handlers(lua_State *L) {
  lua_Debug d;
  luaL_checkstack(L, 4, NULL);
  for (int level = 0; lua_getstack(L, level, &d); level++) {
    if (!lua_getinfo(L, "f", &d)) continue;
    int is_xpcall = lua_tocfunction(L, -1) == xpcall_fn;
    lua_pop(L, 1);
    if (!is_xpcall || !lua_getlocal(L, &d, 2)) continue;
    int user = 0;
    if (lua_type(L, -1) == LUA_TFUNCTION && !lua_iscfunction(L, -1)) {
      lua_Debug h;
      lua_pushvalue(L, -1);
      lua_getinfo(L, ">S", &h);
      user = !host_source(h.source);
    }
    lua_pop(L, 1);
    if (user) {
      lua_pushcfunction(L, passthrough);
      if (!lua_setlocal(L, &d, 2)) lua_pop(L, 1);
    }
  }
}

static void hook(lua_State *L, lua_Debug *ar) {
  vm *v = vm_of(L);
  int base = lua_gettop(L);
  guard *g = push_guard(L, L);
  int gidx = lua_gettop(L);
  if (!g && v->running && L != v->running && lua_checkstack(v->running, 1)) {
    /* a coroutine created inside a guarded task: the task is resuming it (so
     * it is inside a C function, with room on its stack); it joins the
     * task's guard */
    lua_pop(L, 1);
    g = push_guard(L, v->running);
    if (g && !g->released) attach(L, gidx, L);
  }
  if (!g || g->released) {
    lua_settop(L, base);
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  uint64_t now = uv_hrtime();
  if (!g->killed && g->deadline && now >= g->deadline) kill_guard(L, gidx);
  int killed = g->killed;
  int preempt = !killed && L == v->running && now - v->slice_start >= SLICE_NS;
  if (!killed && !preempt) {
    /* attached anew after a kill of its former guard */
    if (lua_gethookcount(L) != GUARD_COUNT) lua_sethook(L, hook, LUA_MASKCOUNT, GUARD_COUNT);
    lua_settop(L, base);
    return;
  }
  if (lua_getinfo(L, "S", ar) && host_source(ar->source)) {
    lua_settop(L, base);
    return;
  }
  if (lua_isyieldable(L)) {
    /* frozen (killed), or preempted: only the host resumes it then */
    if (!killed) v->preempted = L;
    lua_settop(L, base);
    lua_yield(L, 0);
    return;
  }
  if (!killed) {
    lua_settop(L, base);
    return; /* cannot yield here: preempt at a later count */
  }
  disarm_handlers(L);
  lua_getiuservalue(L, gidx, 2);
  if (lua_isnil(L, -1)) lua_pushliteral(L, "stopped: the step or run was cancelled or timed out");
  lua_error(L);
}

static guard *check_guard(lua_State *L) { return luaL_checkudata(L, 1, META); }

static int g_new(lua_State *L) {
  lua_settop(L, 2);
  lua_Number ms = luaL_optnumber(L, 1, -1);
  guard *g = lua_newuserdatauv(L, sizeof *g, 2);
  memset(g, 0, sizeof *g);
  if (!lua_isnoneornil(L, 1)) {
    uint64_t ns = ms > 0 ? (uint64_t)(ms * 1e6) : 0;
    g->deadline = uv_hrtime() + ns;
    if (g->deadline == 0) g->deadline = 1;
  }
  luaL_setmetatable(L, META);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 2);
  vm_of(L)->guards++;
  return 1;
}

static int g_attach(lua_State *L) {
  guard *g = check_guard(L);
  lua_State *co = lua_tothread(L, 2);
  luaL_argcheck(L, co != NULL, 2, "expected a coroutine");
  if (g->released) return luaL_error(L, "guard: attach after release");
  attach(L, 1, co);
  return 0;
}

static int g_kill(lua_State *L) {
  check_guard(L);
  if (!lua_isnoneornil(L, 2)) {
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, 1, 2);
  }
  kill_guard(L, 1);
  return 0;
}

static int g_killed(lua_State *L) {
  lua_pushboolean(L, check_guard(L)->killed);
  return 1;
}

static void drop(lua_State *L, guard *g) {
  if (g->released) return;
  g->released = 1;
  vm_of(L)->guards--;
}

/* A killed guard keeps its coroutines frozen: releasing it does nothing. */
static int g_release(lua_State *L) {
  guard *g = check_guard(L);
  if (g->released || g->killed) return 0;
  each_thread(L, 1, unhook);
  drop(L, g);
  return 0;
}

static int g_rearm(lua_State *L) {
  guard *g = check_guard(L);
  lua_settop(L, 2);
  int solo = lua_getiuservalue(L, 1, 1) != LUA_TTABLE;
  if (g->killed || g->released || !solo) {
    lua_pushboolean(L, 0);
    return 1;
  }
  g->deadline = 0;
  if (!lua_isnil(L, 2)) {
    lua_Number ms = luaL_checknumber(L, 2);
    g->deadline = uv_hrtime() + (ms > 0 ? (uint64_t)(ms * 1e6) : 0);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int g_gc(lua_State *L) {
  drop(L, lua_touserdata(L, 1));
  return 0;
}

static int l_of(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argcheck(L, co != NULL, 1, "expected a coroutine");
  push_guard(L, co);
  return 1;
}

static int l_live(lua_State *L) {
  lua_pushinteger(L, vm_of(L)->guards);
  return 1;
}

/* debug.sethook on a guarded coroutine would remove the hook that bounds it. */
static int l_sethook(lua_State *L) {
  lua_State *t = lua_isthread(L, 1) ? lua_tothread(L, 1) : L;
  guard *g = guard_of(L, t);
  if (g && !g->released) {
    return luaL_error(L, "debug.sethook: this coroutine is bounded by a timeout or a cancel "
                         "(its hook stops runaway code); change hooks outside steps and runs "
                         "with a timeout");
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 0);
  return 0;
}

static void on_ready(uv_idle_t *h) {
  vm *v = h->data;
  lua_State *L = v->L;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &READY_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    uv_idle_stop(h);
    return;
  }
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &READY_KEY);
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    lua_State *co = lua_tothread(L, -1);
    lua_pop(L, 1); /* still anchored by the list below */
    if (!co || lua_status(co) != LUA_YIELD) continue;
    guard *g = guard_of(L, co);
    if (g && g->killed) continue; /* frozen: it stays where it is */
    vm_resume(co, NULL, 0);
  }
  lua_pop(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &READY_KEY);
  if (lua_rawlen(L, -1) == 0) uv_idle_stop(h);
  lua_pop(L, 1);
}

void guard_requeue(lua_State *co) {
  vm *v = vm_of(co);
  if (v->ready_open < 0 || !lua_checkstack(co, 3)) return; /* shutting down */
  if (lua_rawgetp(co, LUA_REGISTRYINDEX, &READY_KEY) != LUA_TTABLE) {
    lua_pop(co, 1);
    lua_newtable(co);
    lua_pushvalue(co, -1);
    lua_rawsetp(co, LUA_REGISTRYINDEX, &READY_KEY);
  }
  lua_pushthread(co);
  lua_rawseti(co, -2, (lua_Integer)lua_rawlen(co, -2) + 1);
  lua_pop(co, 1);
  if (!v->ready_open) {
    if (uv_idle_init(&v->loop, &v->ready) != 0) return;
    v->ready.data = v;
    v->ready_open = 1;
  }
  if (!uv_is_active((uv_handle_t *)&v->ready)) uv_idle_start(&v->ready, on_ready);
}

void guard_shutdown(lua_State *L) {
  vm *v = vm_of(L);
  if (v->ready_open > 0) uv_close((uv_handle_t *)&v->ready, NULL);
  v->ready_open = -1;
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &READY_KEY);
}

int luaopen_sluice__guard(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"attach", g_attach}, {"kill", g_kill}, {"killed", g_killed},
      {"release", g_release}, {"rearm", g_rearm}, {NULL, NULL}};
  static const luaL_Reg fns[] = {{"new", g_new}, {"of", l_of}, {"live", l_live}, {NULL, NULL}};
  modules_class(L, META, methods, g_gc, 0);
  lua_getglobal(L, "xpcall");
  xpcall_fn = lua_tocfunction(L, -1);
  lua_pop(L, 1);
  lua_getglobal(L, "debug");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "sethook");
    if (lua_tocfunction(L, -1) != l_sethook && lua_isfunction(L, -1)) {
      lua_pushcclosure(L, l_sethook, 1);
      lua_setfield(L, -2, "sethook");
    } else {
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  luaL_newlib(L, fns);
  return 1;
}
