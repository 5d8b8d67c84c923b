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
#include "store_pg.h"

#define L_STORE_BATCH_MT "sluice.store_batch"
#define L_STORE_REPLAY_MT "sluice.store_replay" /* store.replay_steps's sets */

/* The replay set at rs (a userdata whose metatable is the one at mt, else
 * it is not one) has under id a completed record at (br, pos) not yet
 * taken: takes it, pushes its result (a fresh value) and returns 1.
 * Otherwise returns 0 with nothing pushed or changed: rs:take tells what
 * else is there (l_step.c: a replayed step's way in). */
int l_store_replay_completed(lua_State *L, int rs, int mt, const char *id, size_t idn,
                             const char *br, size_t brn, lua_Integer pos);

/* The PostgreSQL store when the process's store is one (store.open of a
 * postgres:// URL), else NULL: each operation then takes the PostgreSQL
 * path (store_pg.h, reads yield) or the LMDB one (store.h, reads return at
 * once), so the LMDB path costs one test. l_store_get raises on a
 * PostgreSQL store: an operation that reaches it has no PostgreSQL path
 * (sluice._store_raw's, which are LMDB's by design). */
pgstore *l_store_pg(lua_State *L);

/* The PostgreSQL batch at idx, or NULL when it is an LMDB batch (then
 * l_store_check_batch gives it). l_store_check_batch raises on a
 * PostgreSQL batch, naming the operation that has no PostgreSQL path. */
pgstore_batch *l_store_pg_batch(lua_State *L, int idx);

/* A read of the PostgreSQL store in flight: the outputs of every read kind
 * (a read fills the ones it needs) and its outcome. */
typedef struct l_pgread l_pgread;
typedef int (*l_pgread_push)(lua_State *L, l_pgread *r);
struct l_pgread {
  int status, done;
  char err[600];
  lua_State *co;
  int co_ref, ud_ref;
  l_pgread_push push;
  const char *what; /* a static name of the record read, for messages */
  store_events ev;
  store_blob_rows rows;
  store_keys keys;
  store_named_rows named;
  sbuf rec;
  uint64_t seq;
  int64_t i64;
  int flag, found;
  pgstore_trim_result trim;
  store_trim_query tq;
  store_rows runs; /* runs, steps, run logs (l_store_runs.c) */
  store_steps steps;
  int64_t *ids;
};

/* Pushes a new read (a userdata freeing its outputs by __gc, anchored until
 * its done runs) after checking that the caller can wait: a coroutine the
 * host resumes (raises otherwise, before anything is sent). Pass
 * l_store_pgread_done and it as the read's done and cookie, then return
 * l_store_await(L, r, push): push runs once the read completed (r->status
 * 0 or a failure: push turns it into nil, "CODE: message", "CODE" with
 * l_store_pgfail) and its results are the Lua function's. */
l_pgread *l_store_pgread(lua_State *L);
void l_store_pgread_done(void *cookie, int status, const char *err);
int l_store_await(lua_State *L, l_pgread *r, l_pgread_push push);
/* l_store_fail with r's failure (status != 0). */
int l_store_pgfail(lua_State *L, const l_pgread *r);

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

/* Stops the writer (committing what is queued) and closes the store. The
 * loop must run once more afterwards so the writer's handle closes. */
void l_store_shutdown(void);

/* Record bodies (JSON, store.h) to and from Lua values, with the codec of
 * store records (codec.h, CODEC_RECORD). l_store_encode appends the value
 * at idx to out, or raises naming `what` (a value that cannot be stored is
 * the caller's mistake): out must be l_store_new_buf's, so nothing leaks. l_store_decode pushes the value of a
 * record and returns 0, or pushes nothing and returns STORE_EBADSTORE with
 * err naming `what`. */
void l_store_encode(lua_State *L, int idx, const char *what, sbuf *out);
int l_store_decode(lua_State *L, const char *rec, size_t len, const char *what, char *err,
                   size_t errsz);

/* Pushes a userdata that owns an empty sbuf (freed by its __gc) and
 * returns the sbuf. */
sbuf *l_store_new_buf(lua_State *L);

/* Pushes a userdata that owns an empty store_named_rows (freed by its __gc,
 * so a raise while pushing rows leaks nothing) and returns the rows. */
store_named_rows *l_store_new_rows(lua_State *L);

/* Pushes the rows as a sequence of decoded records; name_field and
 * extra_field (either may be NULL) name the fields of each record that get
 * the row's name and extra. Returns 1, or l_store_fail's 3 for a record
 * that does not decode (what names the record type). */
int l_store_push_rows(lua_State *L, const store_named_rows *rows, const char *what,
                      const char *name_field, const char *extra_field);

/* Finishes a read of one record into rec: pushes its decoded value, or nil
 * when not found, or l_store_fail's 3 when the read failed (status) or the
 * record does not decode. Returns the number of values pushed. */
int l_store_push_record(lua_State *L, int status, const char *err, int found, const sbuf *rec,
                        const char *what);

/* Each record type's binding adds its module functions to the table at
 * module_idx and its batch methods to the table at methods_idx. */
void l_store_runs(lua_State *L, int module_idx, int methods_idx);      /* runs, steps, logs, idempotency */
void l_store_events(lua_State *L, int module_idx, int methods_idx);    /* events, sends, consumers */
void l_store_schedules(lua_State *L, int module_idx, int methods_idx); /* schedules */
void l_store_access(lua_State *L, int module_idx, int methods_idx);    /* keys, namespaces, quotas */
void l_store_replay(lua_State *L, int module_idx);                      /* a run's steps for its replay */

int luaopen_sluice__store(lua_State *L);

#endif
