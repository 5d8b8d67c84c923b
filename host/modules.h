/* modules.h: the C modules of sluice, listed in one table (modules.c) that
 * vm.c walks into package.preload, and the shutdown hooks of the modules
 * that own handles on the loop or threads. */
#ifndef SLUICE_MODULES_H
#define SLUICE_MODULES_H
#include <lua.h>

/* Puts every C module's luaopen function into the package.preload table on
 * top of L's stack (the table stays there). */
void modules_preload(lua_State *L);

/* Closes what the modules own on the loop (curl's sockets and timer,
 * SQLite databases) without resuming the coroutines still waiting on them.
 * vm_close calls it before it runs the loop for the last time, so the
 * close callbacks run while the loop and the Lua state are alive. */
void modules_shutdown(lua_State *L);

/* The modules' luaopen functions and shutdown hooks. */
int luaopen_sluice__http(lua_State *L);
void http_shutdown(lua_State *L);
int luaopen_sluice__csv(lua_State *L);
int luaopen_sluice__sqlite(lua_State *L);
void sqlite_shutdown(lua_State *L);

#endif
