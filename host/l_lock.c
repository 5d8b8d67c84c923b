/* l_lock.c: the store's writer lock (lock.c) for Lua, part of
 * "sluice.host":
 *
 *   lock(path, role) -> true | nil, message, holder_role, holder_pid, serve_waiting_pid
 *   lock_holder(path) -> nil (free) | holder_role, holder_pid, serve_waiting_pid
 *
 * role and holder_role are "serve" or "run" (any other writer: sluice run,
 * cancel, rerun). The lock is held until the process exits; locking the
 * same path again in this process succeeds at once. */
#include <errno.h>
#include <lauxlib.h>
#include <string.h>

#include "host_lib.h"
#include "lock.h"

static int push_holder(lua_State *L, const store_lock_holder *h) {
  lua_pushstring(L, h->serve ? "serve" : "run");
  lua_pushinteger(L, h->pid);
  if (h->serve_waiting > 0) lua_pushinteger(L, h->serve_waiting);
  else lua_pushnil(L);
  return 3;
}

static int l_lock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *role = luaL_optstring(L, 2, "run");
  store_lock_holder h;
  char err[600];
  int e = store_lock_take(path, strcmp(role, "serve") == 0, &h, err, sizeof err);
  if (e == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  if (e != EAGAIN) {
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushfstring(L, "%s is held by another sluice process (sluice %s, pid %d)", path,
                  h.serve ? "serve" : "run", (int)h.pid);
  return 2 + push_holder(L, &h);
}

static int l_lock_holder(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  store_lock_holder h;
  char err[600];
  int e = store_lock_query(path, &h, err, sizeof err);
  if (e != 0) return luaL_error(L, "%s", err);
  if (h.pid == 0) {
    lua_pushnil(L);
    return 1;
  }
  return push_holder(L, &h);
}

void lock_register(lua_State *L) {
  static const luaL_Reg fns[] = {{"lock", l_lock}, {"lock_holder", l_lock_holder}, {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
}
