/* l_step.c: "sluice._step", the global `step`'s way in (lua/engine.lua).
 * A resumed run calls most of its steps to get their stored results back:
 * such a replayed step is done here in one C call, with no Lua frame, no
 * pcall and no Lua-side checks; every other call (a step to execute, any
 * mistake, a divergence, a run being stopped) goes to the Lua step
 * (lua/engine_steps.lua, behind its errors.entry point) unchanged, which
 * checks everything again in its own order and raises its own errors.
 *
 *   local fast = require("sluice._step").new(contexts, step_entry)
 *     contexts    sched.contexts: coroutine -> branch context
 *                 {run=, name=, pos=, in_step=, abandoned=}
 *     step_entry  the Lua step behind its entry point
 *
 * The fast path is taken only for step(id, fn [, arg]) with a valid id,
 * called from a branch of a run that is not stopped, not inside a step,
 * whose replay set (run.replay) holds under this id a completed record at
 * the branch's next position not yet taken. That record not taken also
 * says that the id was not executed before in this run (run.seen, which
 * the Lua step checks first): the replay set is there before the run's
 * body starts, and a step executes only when its id has no record or its
 * record was taken (recorded failed). It then does what the Lua step's
 * replay does: br.pos + 1, the result decoded afresh (the replay set
 * counts the run's replayed steps: store.replay_count).
 * The fields are read raw: a branch context and a run are plain tables
 * (engine_runs.lua, engine_steps.lua new_branch).
 *
 *   local fn, line = require("sluice._step").site(level)
 *     the function and current line of the first Lua frame at or above
 *     `level` (1: the caller of site), as debug.getinfo(level, "Slf") would
 *     find them skipping C frames, but without its table and strings: every
 *     executed step notes where it was called from (engine_steps.lua
 *     note_site). Nothing when there is no Lua frame there. */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "l_store.h"

#define MAX_STEP_ID 255 /* engine_steps.lua M.MAX_STEP_ID */

/* the upvalues of the way in: the tables and function, then the field names */
enum { U_CONTEXTS = 1, U_ENTRY, U_REPLAY_MT, U_RUN, U_ABANDONED, U_IN_STEP, U_STOP, U_REPLAY,
       U_POS, U_NAME, U_COUNT = U_NAME };
static const char *const field_names[] = {"run", "abandoned", "in_step", "stop", "replay", "pos", "name"};

/* pushes t[name of upvalue k], returns its type */
static int field(lua_State *L, int t, int k) {
  lua_pushvalue(L, lua_upvalueindex(k));
  return lua_rawget(L, t);
}

static void set_integer(lua_State *L, int t, int k, lua_Integer v) {
  lua_pushvalue(L, lua_upvalueindex(k));
  lua_pushinteger(L, v);
  lua_rawset(L, t);
}

static int entry_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return lua_gettop(L);
}

/* the Lua step with the call's nargs arguments; a C function in between
 * keeps the user's frame for its errors, as the entry point does; lua_callk
 * with a continuation keeps the call yieldable (a step waits on the loop) */
static int general(lua_State *L, int nargs) {
  lua_settop(L, nargs);
  lua_pushvalue(L, lua_upvalueindex(U_ENTRY));
  lua_insert(L, 1);
  lua_callk(L, nargs, LUA_MULTRET, 0, entry_k);
  return entry_k(L, LUA_OK, 0);
}

static int step_call(lua_State *L) {
  int nargs = lua_gettop(L);
  if (nargs < 2 || nargs > 3 || lua_type(L, 1) != LUA_TSTRING || lua_type(L, 2) != LUA_TFUNCTION)
    return general(L, nargs);
  size_t idn;
  const char *id = lua_tolstring(L, 1, &idn);
  if (idn == 0 || idn > MAX_STEP_ID || memchr(id, 0, idn)) return general(L, nargs);
  int br = nargs + 1, run = nargs + 2;
  lua_pushthread(L);
  if (lua_rawget(L, lua_upvalueindex(U_CONTEXTS)) != LUA_TTABLE) return general(L, nargs);
  if (field(L, br, U_RUN) != LUA_TTABLE) return general(L, nargs);
  field(L, br, U_ABANDONED);
  field(L, br, U_IN_STEP);
  field(L, run, U_STOP);
  if (lua_toboolean(L, -1) || lua_toboolean(L, -2) || lua_toboolean(L, -3)) return general(L, nargs);
  lua_pop(L, 3);
  int rs = run + 1, pos_i = run + 2, name_i = run + 3;
  if (field(L, run, U_REPLAY) != LUA_TUSERDATA) return general(L, nargs);
  field(L, br, U_POS);
  field(L, br, U_NAME);
  int isnum;
  lua_Integer pos = lua_tointegerx(L, pos_i, &isnum);
  size_t brn;
  const char *name = lua_type(L, name_i) == LUA_TSTRING ? lua_tolstring(L, name_i, &brn) : NULL;
  if (!isnum || !name || pos < 0 || pos >= LUA_MAXINTEGER) return general(L, nargs);
  if (!l_store_replay_completed(L, rs, lua_upvalueindex(U_REPLAY_MT), id, idn, name, brn, pos + 1))
    return general(L, nargs);
  set_integer(L, br, U_POS, pos + 1);
  return 1;
}

/* site(level) -> function, current line of the first Lua frame at or
 * above level */
static int l_site(lua_State *L) {
  lua_Integer level = luaL_checkinteger(L, 1);
  luaL_argcheck(L, level >= 0 && level < 1000000, 1, "level out of range");
  lua_Debug ar;
  for (int lv = (int)level; lua_getstack(L, lv, &ar); lv++) {
    /* "f" tells a C function as well as "S" does, without its chunkid */
    if (!lua_getinfo(L, "lf", &ar)) return 0;
    if (!lua_iscfunction(L, -1)) {
      lua_pushinteger(L, ar.currentline);
      return 2;
    }
    lua_pop(L, 1);
  }
  return 0;
}

/* new(contexts, step_entry) -> the global step */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  if (luaL_getmetatable(L, L_STORE_REPLAY_MT) != LUA_TTABLE)
    return luaL_error(L, "sluice._step: require sluice._store first");
  for (size_t i = 0; i < sizeof field_names / sizeof *field_names; i++)
    lua_pushstring(L, field_names[i]);
  lua_pushcclosure(L, step_call, U_COUNT);
  return 1;
}

int luaopen_sluice__step(lua_State *L) {
  static const luaL_Reg fns[] = {{"new", l_new}, {"site", l_site}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
