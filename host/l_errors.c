/* l_errors.c: "sluice._errors", the C half of sluice.errors (lua/errors.lua): entry points
 * of the pipeline API, and which chunks are sluice's own.
 *
 * An entry point is a C function in front of the Lua function of the API.
 * Lua drops the caller's frame when a Lua function is tail-called
 * (`return step(...)` is the usual last line of a pipeline), so an error
 * raised inside could not name the user's line any more; a C function
 * called in tail position keeps it. The entry calls its Lua function under
 * lua_pcallk with a message handler (errors.relocate), which runs where the
 * error was raised, with the whole stack, and gives it the user's position.
 * lua_pcallk with a continuation keeps the call yieldable: a step may wait
 * on the loop inside it.
 * Depends on: Lua 5.4, embedded.h.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embedded.h"
#include "modules.h"

/* the results of the entry's function are everything above the handler */
static int entry_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  if (status != LUA_OK && status != LUA_YIELD) return lua_error(L);
  return lua_gettop(L) - 1;
}

/* upvalues: 1 the Lua function, 2 the message handler, and maybe 3 a
 * function of fixed arity called instead for at most upvalue 4 arguments:
 * a vararg Lua function copies its frame at each call, which the engine's
 * step (called 10,000 times by a replay) would pay for nothing */
static int entry_call(lua_State *L) {
  int nargs = lua_gettop(L);
  luaL_checkstack(L, 2, "calling a sluice function");
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_insert(L, 1);
  int fast = !lua_isnone(L, lua_upvalueindex(3)) && nargs <= lua_tointeger(L, lua_upvalueindex(4));
  lua_pushvalue(L, lua_upvalueindex(fast ? 3 : 1));
  lua_insert(L, 2);
  return entry_k(L, lua_pcallk(L, nargs, LUA_MULTRET, 1, 0, entry_k), 0);
}

/* entry(fn, handler [, fast, nfast]) -> a C function calling fn(...)
 * under handler (fast(...) when given at most nfast arguments) */
static int l_entry(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (lua_isnoneornil(L, 3)) {
    lua_settop(L, 2);
    lua_pushcclosure(L, entry_call, 2);
    return 1;
  }
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_checkinteger(L, 4);
  lua_settop(L, 4);
  lua_pushcclosure(L, entry_call, 4);
  return 1;
}

/* internal_sources() -> the chunk names (debug.getinfo's `source`) of the
 * Lua files compiled into the binary: "@lua/engine.lua", ..., or, with
 * SLUICE_LUA_ROOT set, the paths they are loaded from instead (vm.c). */
static int l_internal_sources(lua_State *L) {
  const char *root = getenv("SLUICE_LUA_ROOT");
  lua_newtable(L);
  lua_Integer i = 0;
  for (const embedded_file *f = embedded_files; f->module; f++) {
    if (root && *root)
      lua_pushfstring(L, "@%s/%s", root, f->chunk + 1);
    else
      lua_pushstring(L, f->chunk);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

/* where(internal, level) -> "short_src:line" of the first frame at or
 * above level (1: the caller of where's caller) that is Lua code whose
 * source is not a key of the table internal, or nothing. debug.getinfo made
 * a table per frame walked: every schedule of a file that defines 100,000
 * asks where it is defined. */
static int l_where(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int level = (int)luaL_checkinteger(L, 2) + 1;
  lua_Debug ar;
  while (lua_getstack(L, level++, &ar)) {
    if (!lua_getinfo(L, "Sl", &ar)) break;
    if (strcmp(ar.what, "C") == 0) continue;
    lua_getfield(L, 1, ar.source);
    int own = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (own) continue;
    /* the same site as the last call (a file's loop defining 100,000
     * schedules): the same string, not a new one each (a site longer than
     * Lua's short strings is not interned: 100,000 of them were garbage
     * that fragmented the heap by ~2.5 MB) */
    char site[LUA_IDSIZE + 24];
    int n = snprintf(site, sizeof site, "%s:%d", ar.short_src, ar.currentline);
    if (n < 0 || (size_t)n >= sizeof site) n = (int)sizeof site - 1;
    size_t last_len;
    const char *last = lua_tolstring(L, lua_upvalueindex(1), &last_len);
    if (last && last_len == (size_t)n && memcmp(last, site, last_len) == 0) {
      lua_pushvalue(L, lua_upvalueindex(1));
    } else {
      lua_pushlstring(L, site, (size_t)n);
      lua_pushvalue(L, -1);
      lua_replace(L, lua_upvalueindex(1));
    }
    return 1;
  }
  return 0;
}

int luaopen_sluice__errors(lua_State *L) {
  static const luaL_Reg fns[] = {{"entry", l_entry},
                                 {"internal_sources", l_internal_sources},
                                 {NULL, NULL}};
  luaL_newlib(L, fns);
  lua_pushnil(L); /* the last site it returned */
  lua_pushcclosure(L, l_where, 1);
  lua_setfield(L, -2, "where");
  return 1;
}
