/* l_lock.c: "sluice._lock", the store's writer lock (lock.c) for Lua:
 *
 *   take(path, role) -> true | nil, "EBUSY: message", "EBUSY", holder_role,
 *                       holder_pid, serve_waiting_pid | nil, "CODE: message", "CODE"
 *   holder(path) -> false (free) | holder_role, holder_pid, serve_waiting_pid
 *                   | nil, "CODE: message", "CODE"
 *
 * role and holder_role are "serve" or "run" (any other writer: sluice run,
 * cancel, rerun). The lock is held until the process exits; taking it again
 * in this process succeeds at once. CODE is the errno's name (EACCES, ...). */
#include <errno.h>
#include <lauxlib.h>
#include <string.h>
#include <uv.h>

#include "lock.h"
#include "modules.h"

static int push_holder(lua_State *L, const store_lock_holder *h) {
  lua_pushstring(L, h->serve ? "serve" : "run");
  lua_pushinteger(L, h->pid);
  if (h->serve_waiting > 0) lua_pushinteger(L, h->serve_waiting);
  else lua_pushnil(L);
  return 3;
}

static int l_take(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *role = luaL_optstring(L, 2, "run");
  store_lock_holder h;
  char err[600];
  int e = store_lock_take(path, strcmp(role, "serve") == 0, &h, err, sizeof err);
  if (e == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (e != EAGAIN) return modules_fail(L, uv_err_name(-e), err);
  lua_pushfstring(L, "%s is held by another sluice process (sluice %s, pid %d)", path,
                  h.serve ? "serve" : "run", (int)h.pid);
  modules_fail(L, "EBUSY", lua_tostring(L, -1));
  lua_remove(L, -4);
  return 3 + push_holder(L, &h);
}

static int l_holder(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  store_lock_holder h;
  char err[600];
  int e = store_lock_query(path, &h, err, sizeof err);
  if (e != 0) return modules_fail(L, uv_err_name(-e), err);
  if (h.pid == 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  return push_holder(L, &h);
}

int luaopen_sluice__lock(lua_State *L) {
  static const luaL_Reg fns[] = {{"take", l_take}, {"holder", l_holder}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
