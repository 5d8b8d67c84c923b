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

/* The process's open store (raises if none). */
store *l_store_get(lua_State *L);

/* Pushes nil, "CODE: message", "CODE" and returns 3. */
int l_store_fail(lua_State *L, int status, const char *msg);

/* Each record type's binding adds its module functions to the table at
 * module_idx and its batch methods to the table at methods_idx. */
void l_store_runs(lua_State *L, int module_idx, int methods_idx);      /* runs, steps, logs, idempotency */
void l_store_events(lua_State *L, int module_idx, int methods_idx);    /* events, sends, consumers */
void l_store_schedules(lua_State *L, int module_idx, int methods_idx); /* schedules */
void l_store_access(lua_State *L, int module_idx, int methods_idx);    /* keys, namespaces, quotas */

int luaopen_sluice__store(lua_State *L);

#endif
