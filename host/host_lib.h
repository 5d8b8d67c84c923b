/* host_lib.h: the internal module "sluice.host": the Lua engine's door to the
 * store, the writer, clocks and ids (l_host.c), step records (l_steps.c),
 * cron (l_cron.c), the writer lock (l_lock.c), event reads (l_stream.c), entry
 * points of the pipeline API (l_errors.c). Not for pipeline authors. Also the
 * control socket's module (l_control.c). */
#ifndef SLUICE_HOST_LIB_H
#define SLUICE_HOST_LIB_H
#include <lua.h>

#include "store_lmdb.h"

/* Add their functions to the module table on top of L. */
void steps_register(lua_State *L);
void cron_register(lua_State *L);
void lock_register(lua_State *L);
void stream_register(lua_State *L);
void errors_register(lua_State *L);

/* Raises unless a write can be queued from here: a store open for
 * writing and a coroutine the host can resume. */
void host_check_writable(lua_State *L);

/* Queues b (owned from here) and suspends the calling coroutine until it
 * is durable; it then gets true, or nil, message, code. Use as
 * `return host_submit(L, b);` after host_check_writable. */
struct store_batch;
int host_submit(lua_State *L, struct store_batch *b);

/* Adds the ops {db, key, value, ...} of the table at idx to b (value false
 * deletes). On a malformed op frees b and raises, naming `what`. */
int host_add_ops(lua_State *L, int idx, struct store_batch *b, const char *what);

/* The process's open store; raises if none. */
store *host_store(lua_State *L);

int luaopen_sluice_host(lua_State *L);

/* "sluice.control_socket" (l_control.c), and the closing of every control
 * handle Lua left open; vm_close calls it before luv's handles are walked. */
int luaopen_sluice_control_socket(lua_State *L);
void control_close_all(void);

/* "sluice.http_server" (l_http_server.c); http_lua_shutdown closes every
 * server still open, before the loop's last run. */
int luaopen_sluice_http_server(lua_State *L);
void http_lua_shutdown(void);

/* "sluice.crypto" (l_crypto.c): random bytes, SHA-256, constant-time equal. */
int luaopen_sluice_crypto(lua_State *L);
/* "sluice.edit" (l_edit.c): libedit's line editing for sluice repl. */
int luaopen_sluice_edit(lua_State *L);

/* "sluice.web" (l_web.c): the dashboard's files, embedded or from disk. */
int luaopen_sluice_web(lua_State *L);

/* Stops the writer (committing what is queued) and closes the store. The
 * loop must run once more afterwards so the writer's handle closes. */
void host_lib_shutdown(lua_State *L);

#endif
