/* l_store.h: what the files of the Lua binding "sluice._store" share
 * (l_store.c and one l_store_<type>.c per record type of store.h). The
 * binding calls store.h's record operations only: it knows no key byte.
 *
 * Lua sees:
 *   local store = require "sluice._store"
 *   local b = store.batch()          -- a batch of record writes
 *   b:put_run(...) b:put_step(...)   -- each type's batch methods
 *   local ok, msg, code = b:commit() -- yields until durable
 *   store.<type operation>(...)      -- reads, and one-record writes
 *   store.open(dir [, readonly]), store.close(), store.dir(), store.stats()
 *                                    -- the process's one store and writer
 * Failures at run time return nil, "CODE: message", "CODE"; misuse raises.
 *
 * Reads: the record operations return rows in C memory with no transaction
 * or lock held (store.h), so pushing them to Lua, which may raise on out of
 * memory, can leak at most that memory, never a transaction. */
#ifndef SLUICE_L_STORE_H
#define SLUICE_L_STORE_H

#include <lua.h>

#include "store.h"

#define L_STORE_BATCH_MT "sluice.store_batch"

/* The batch at idx (raises unless it is one not yet committed). */
store_batch *l_store_check_batch(lua_State *L, int idx);

/* The batch at idx, taken from its userdata (spent from here: the caller
 * owns it, to commit or free); raises as l_store_check_batch. */
store_batch *l_store_take_batch(lua_State *L, int idx);

/* The process's open store (raises if none). */
store *l_store_get(lua_State *L);

/* Pushes nil, "CODE: message", "CODE" and returns 3. */
int l_store_fail(lua_State *L, int status, const char *msg);

/* Raises unless a write can be queued from here: a store open for
 * writing and a coroutine the host can resume. */
void l_store_check_writable(lua_State *L);

/* Queues b (owned from here) and suspends the calling coroutine until it
 * is durable; it then gets true, or nil, "CODE: message", "CODE". Use as
 * `return l_store_submit(L, b);` after l_store_check_writable. */
int l_store_submit(lua_State *L, store_batch *b);

/* TRANSITIONAL (goes with b:raw_ops): adds the ops {db, key, value, ...}
 * of the table at idx to b (value false deletes). On a malformed op frees
 * b and raises, naming `what`. */
int l_store_add_ops(lua_State *L, int idx, store_batch *b, const char *what);

/* Stops the writer (committing what is queued) and closes the store. The
 * loop must run once more afterwards so the writer's handle closes. */
void l_store_shutdown(void);

/* Each record type's binding adds its module functions to the table at
 * module_idx and its batch methods to the table at methods_idx. */
void l_store_runs(lua_State *L, int module_idx, int methods_idx);      /* runs, steps, logs, idempotency */
void l_store_events(lua_State *L, int module_idx, int methods_idx);    /* events, sends, consumers */
void l_store_schedules(lua_State *L, int module_idx, int methods_idx); /* schedules */
void l_store_access(lua_State *L, int module_idx, int methods_idx);    /* keys, namespaces, quotas */
/* TRANSITIONAL: event reads and appends (l_stream.c), until their record
 * type is in store.h. */
void stream_register(lua_State *L);

int luaopen_sluice__store(lua_State *L);

#endif
