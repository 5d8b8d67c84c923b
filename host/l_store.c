/* l_store.c: "sluice._store", the engine's door to the store by record type
 * (see l_store.h): the batch userdata and its commit. Each record type's
 * operations are in l_store_<type>.c. */
#include "l_store.h"

#include <lauxlib.h>

#include "host_lib.h"

typedef struct {
  store_batch *b; /* NULL once committed */
} batch_ud;

store *l_store_get(lua_State *L) { return host_store(L); }

int l_store_fail(lua_State *L, int status, const char *msg) {
  const char *code = store_status_code(status);
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", code, msg);
  lua_pushstring(L, code);
  return 3;
}

store_batch *l_store_check_batch(lua_State *L, int idx) {
  batch_ud *u = luaL_checkudata(L, idx, L_STORE_BATCH_MT);
  if (!u->b) luaL_argerror(L, idx, "this batch was committed already: build a new one");
  return u->b;
}

/* batch() -> an empty batch */
static int l_batch(lua_State *L) {
  batch_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->b = NULL;
  luaL_setmetatable(L, L_STORE_BATCH_MT);
  u->b = store_batch_new();
  return 1;
}

/* b:count() -> the number of writes in b */
static int l_batch_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)store_batch_count(l_store_check_batch(L, 1)));
  return 1;
}

/* b:commit() -> true | nil, "CODE: message", "CODE". Yields until the batch
 * is durable; b is spent afterwards, whatever the outcome. */
static int l_batch_commit(lua_State *L) {
  batch_ud *u = luaL_checkudata(L, 1, L_STORE_BATCH_MT);
  if (!u->b) return luaL_argerror(L, 1, "this batch was committed already: build a new one");
  host_check_writable(L);
  store_batch *b = u->b;
  u->b = NULL;
  return host_submit(L, b);
}

/* b:raw_ops{db, key, value, ...}: writes by key, for the record types
 * whose operations are not in store.h yet (removed with the last of them). */
static int l_batch_raw_ops(lua_State *L) {
  store_batch *b = l_store_check_batch(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  batch_ud *u = lua_touserdata(L, 1);
  u->b = NULL; /* host_add_ops frees b when it raises */
  host_add_ops(L, 2, b, "raw_ops");
  u->b = b;
  lua_settop(L, 1);
  return 1;
}

static int l_batch_gc(lua_State *L) {
  batch_ud *u = luaL_checkudata(L, 1, L_STORE_BATCH_MT);
  if (u->b) store_batch_free(u->b);
  u->b = NULL;
  return 0;
}

int luaopen_sluice__store(lua_State *L) {
  static const luaL_Reg fns[] = {{"batch", l_batch}, {NULL, NULL}};
  static const luaL_Reg methods[] = {{"count", l_batch_count},
                                     {"commit", l_batch_commit},
                                     {"raw_ops", l_batch_raw_ops},
                                     {NULL, NULL}};
  luaL_newlib(L, fns);
  int module_idx = lua_gettop(L);
  luaL_newmetatable(L, L_STORE_BATCH_MT);
  lua_pushcfunction(L, l_batch_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, l_batch_gc);
  lua_setfield(L, -2, "__close");
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  int methods_idx = lua_gettop(L);
  l_store_runs(L, module_idx, methods_idx);
  l_store_events(L, module_idx, methods_idx);
  l_store_schedules(L, module_idx, methods_idx);
  l_store_access(L, module_idx, methods_idx);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1); /* the metatable */
  return 1;
}
