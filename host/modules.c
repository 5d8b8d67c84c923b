/* modules.c: the one table of C modules (see modules.h). */
#include "modules.h"

#include <lauxlib.h>
#include <stdarg.h>

static const luaL_Reg modules[] = {
    {"sluice._json", luaopen_sluice_json},
    {"sluice._codec", luaopen_sluice__codec},
    {"sluice._store", luaopen_sluice__store},
    {"sluice._store_raw", luaopen_sluice__store_raw}, /* tests and benchmarks */
    {"sluice._store_tools", luaopen_sluice__store_tools}, /* sluice store copy, check */
    {"sluice._clock", luaopen_sluice__clock},
    {"sluice._ids", luaopen_sluice__ids},
    {"sluice._vm", luaopen_sluice__vm},
    {"sluice._cron", luaopen_sluice__cron},
    {"sluice._fireq", luaopen_sluice__fireq},
    {"sluice._lock", luaopen_sluice__lock},
    {"sluice._errors", luaopen_sluice__errors},
    {"sluice._step", luaopen_sluice__step}, /* l_step.c: a replayed step in one call */
    {"sluice._idset", luaopen_sluice__idset}, /* l_idset.c: a run's executed step ids */
    {"sluice._guard", luaopen_sluice__guard},
    {"sluice._control", luaopen_sluice__control},
    {"sluice._http", luaopen_sluice__http},
    {"sluice._csv", luaopen_sluice__csv},
    {"sluice._sqlite", luaopen_sluice__sqlite},
    {"sluice._http_server", luaopen_sluice__http_server},
    {"sluice._crypto", luaopen_sluice__crypto},
    {"sluice._web", luaopen_sluice__web},
    {"sluice._edit", luaopen_sluice__edit},
    {"sluice._pg", luaopen_sluice__pg}, /* l_pg.c: PostgreSQL (specs, sluice store migrate) */
    {"sluice._hosts", luaopen_sluice__hosts}, /* l_store_hosts.c: several hosts on PostgreSQL */
    {NULL, NULL},
};

void modules_preload(lua_State *L) {
  for (const luaL_Reg *m = modules; m->name; m++) {
    lua_pushcfunction(L, m->func);
    lua_setfield(L, -2, m->name);
  }
}

void modules_shutdown(lua_State *L) {
  control_close_all(); /* C handles, closed by the loop's next run */
  guard_shutdown(L);   /* preempted coroutines are not resumed any more */
  l_store_shutdown();  /* the writer: commits what is queued */
  http_shutdown(L);
  sqlite_shutdown(L);
  pg_lua_shutdown(L);
  http_lua_shutdown(); /* the HTTP API's server and connections */
}

void modules_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                   int closable) {
  luaL_newmetatable(L, name);
  if (methods) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  if (gc) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
  }
  if (gc && closable) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
}

int modules_fail(lua_State *L, const char *code, const char *msg) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", code, msg);
  lua_pushstring(L, code);
  return 3;
}

int modules_invalid(lua_State *L, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushliteral(L, "EINVAL");
  return 3;
}

int modules_error(lua_State *L, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return lua_error(L);
}
