/* modules.h: the C modules of sluice, listed in one table (modules.c) that
 * vm.c walks into package.preload, their shutdown, and the failure value
 * they share. Each l_<name>.c binds one module and exports
 * luaopen_sluice_<name>; the modules whose name begins with "sluice._" are
 * internal (lua/ and stdlib/ build on them; stdlib/ owns the public
 * sluice.* names). */
#ifndef SLUICE_MODULES_H
#define SLUICE_MODULES_H
#include <lauxlib.h>
#include <lua.h>

/* Puts every C module's luaopen function into the package.preload table on
 * top of L's stack (the table stays there). */
void modules_preload(lua_State *L);

/* Closes what the modules own on the loop (control sockets, the guards'
 * preempted coroutines, the store's writer, curl's sockets and timer,
 * SQLite databases, the HTTP API's server) without resuming the coroutines
 * still waiting on them. vm_close calls it before it runs the loop for the
 * last time, so the close callbacks run while the loop and the Lua state
 * are alive. */
void modules_shutdown(lua_State *L);

/* A runtime failure in luv's convention: pushes nil, "CODE: message",
 * "CODE" and returns 3 (`return modules_fail(L, "EINVAL", err);`). */
int modules_fail(lua_State *L, const char *code, const char *msg);

/* A value the caller gave that a validator (JSON, cron, a zone, a time)
 * refuses: pushes nil, message, "EINVAL" and returns 3. The message has no
 * code in front, as Lua's load: it is about the user's input and goes into
 * the caller's sentence ("every.cron(...): minute field: ..."). */
int modules_invalid(lua_State *L, const char *msg);

/* Raises the formatted message without a position: for the C cores of
 * stdlib/ modules, where the caller's position would be the Lua wrapper in
 * stdlib/, not the user's code (the traceback has it). */
int modules_error(lua_State *L, const char *fmt, ...);

/* Creates the metatable `name` of a userdata type (luaL_newmetatable):
 * __index = a table of methods (if not NULL), __gc = gc (if not NULL), and
 * __close = gc too when closable (for `local x <close>`). */
void modules_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                   int closable);

/* The modules, by file. */
int luaopen_sluice_json(lua_State *L);      /* l_json.c, wrapped by stdlib/sluice/json.lua */
int luaopen_sluice__codec(lua_State *L);    /* l_json.c, for sluice's own Lua code */
int luaopen_sluice__store(lua_State *L);    /* l_store.c (l_store.h) */
int luaopen_sluice__store_raw(lua_State *L); /* l_store_raw.c: by key, for tests */
int luaopen_sluice__store_tools(lua_State *L); /* l_store_tools.c: store copy and check */
int luaopen_sluice__clock(lua_State *L);    /* l_clock.c */
int luaopen_sluice__ids(lua_State *L);      /* l_ids.c */
int luaopen_sluice__vm(lua_State *L);       /* l_vm.c */
int luaopen_sluice__cron(lua_State *L);     /* l_cron.c */
int luaopen_sluice__fireq(lua_State *L);    /* l_fireq.c, under lua/scheduler.lua */
int luaopen_sluice__lock(lua_State *L);     /* l_lock.c */
int luaopen_sluice__errors(lua_State *L);   /* l_errors.c, under lua/errors.lua */
int luaopen_sluice__step(lua_State *L);     /* l_step.c, the global step (lua/engine.lua) */
int luaopen_sluice__idset(lua_State *L);    /* l_idset.c, a run's executed step ids */
int luaopen_sluice__guard(lua_State *L);    /* l_guard.c (guard.h) */
int luaopen_sluice__control(lua_State *L);  /* l_control.c */
int luaopen_sluice__http(lua_State *L);     /* l_http.c, under stdlib/sluice/http.lua */
int luaopen_sluice__csv(lua_State *L);      /* l_csv.c, under stdlib/sluice/csv.lua */
int luaopen_sluice__sqlite(lua_State *L);   /* l_sqlite.c, under stdlib/sluice/sqlite.lua */
int luaopen_sluice__http_server(lua_State *L); /* l_http_server.c */
int luaopen_sluice__crypto(lua_State *L);   /* l_crypto.c */
int luaopen_sluice__web(lua_State *L);      /* l_web.c */
int luaopen_sluice__edit(lua_State *L);     /* l_edit.c */
int luaopen_sluice__pg(lua_State *L);       /* l_pg.c: PostgreSQL (pg.h) */
int luaopen_sluice__hosts(lua_State *L);    /* l_store_hosts.c: hosts and leases (store_pg.h) */

/* Shutdown hooks (modules_shutdown calls them in this order). */
void control_close_all(void);        /* l_control.c: every control handle Lua left open */
void guard_shutdown(lua_State *L);   /* l_guard.c */
void l_store_shutdown(void);         /* l_store.c: the writer commits what is queued */
void http_shutdown(lua_State *L);    /* l_http.c */
void sqlite_shutdown(lua_State *L);  /* l_sqlite.c */
void pg_lua_shutdown(lua_State *L);  /* l_pg.c: connections still open */
void http_lua_shutdown(void);        /* l_http_server.c: the servers still open */

#endif
