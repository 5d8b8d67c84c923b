/* l_store.c: "sluice._store", the engine's door to the store by record type
 * (see l_store.h): the process's one store and its writer (open, close,
 * dir, stats), the batch userdata and its commit. Each record type's
 * operations are in l_store_<type>.c. Glue only: store_lmdb.c and writer.c
 * know nothing of Lua.
 *
 * Failures at run time return nil, "CODE: message", "CODE" (luv's
 * convention); misuse raises. A commit suspends the calling coroutine until
 * its batch is durable, so it must be called from a coroutine the host can
 * resume. */
#include "l_store.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "modules.h"
#include "sbuf.h"
#include "store_lmdb.h"
#include "vm.h"
#include "writer.h"

static struct {
  store *st;
  writer *w;
  int readonly;
  pgstore *pg; /* instead of st and w: a PostgreSQL store */
  char *url;
  int quiet; /* shutting down: completions resume no coroutine */
} H;

typedef struct {
  store_batch *b;    /* NULL once committed */
  pgstore_batch *pb; /* a PostgreSQL store's batch instead */
} batch_ud;

store *l_store_get(lua_State *L) {
  if (H.pg) {
    luaL_error(L, "this operation reads or writes LMDB's databases by key, which a PostgreSQL "
                  "store does not have: use an LMDB store (--store DIR) for it");
  }
  if (!H.st) luaL_error(L, "sluice._store: no store is open");
  return H.st;
}

pgstore *l_store_pg(lua_State *L) {
  (void)L;
  return H.pg;
}

int l_store_fail(lua_State *L, int status, const char *msg) {
  return modules_fail(L, store_status_code(status), msg);
}

/* Closes the store; what is in flight on PostgreSQL fails (EIO), and its
 * coroutines get that failure unless the host is shutting down. */
static void close_store(void) {
  if (H.pg) {
    pgstore_close(H.pg);
    H.pg = NULL;
    free(H.url);
    H.url = NULL;
  }
  if (H.w) {
    writer_stop(H.w);
    H.w = NULL;
  }
  if (H.st) {
    store_close(H.st);
    H.st = NULL;
  }
}

void l_store_shutdown(void) {
  H.quiet = 1;
  close_store();
  H.quiet = 0;
}

/* open(dir [, readonly]) -> true | nil, "CODE: message", "CODE". Reopening
 * the same dir is a no-op; another dir closes the first (its queued writes
 * commit first). */
static int is_url(const char *s) {
  return strncmp(s, "postgres://", 11) == 0 || strncmp(s, "postgresql://", 13) == 0;
}

static int l_open(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  int readonly = lua_toboolean(L, 2);
  if (((H.st && strcmp(store_dir(H.st), dir) == 0) || (H.pg && strcmp(H.url, dir) == 0)) &&
      H.readonly == readonly) {
    lua_pushboolean(L, 1);
    return 1;
  }
  close_store();
  char err[512];
  if (is_url(dir)) {
    /* connects in the background: the first operation waits for it */
    int rc = pgstore_open(&H.pg, &vm_of(L)->loop, dir, err, sizeof err);
    if (rc != 0) {
      H.pg = NULL;
      return l_store_fail(L, rc, err);
    }
    H.url = strdup(dir);
    if (!H.url) return luaL_error(L, "out of memory");
    H.readonly = readonly;
    lua_pushboolean(L, 1);
    return 1;
  }
  int rc = store_open(&H.st, dir, readonly ? STORE_READONLY : 0, err, sizeof err);
  if (rc != 0) {
    H.st = NULL;
    return l_store_fail(L, rc, err);
  }
  H.readonly = readonly;
  if (!readonly && writer_start(&H.w, H.st, &vm_of(L)->loop, err, sizeof err) != 0) {
    store_close(H.st);
    H.st = NULL;
    return l_store_fail(L, STORE_EIO, err);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* remote() -> true when the store is PostgreSQL (reads yield; positions of
 * events and sends are allocated by the commit, which returns them) */
static int l_remote(lua_State *L) {
  lua_pushboolean(L, H.pg != NULL);
  return 1;
}

static int l_close(lua_State *L) {
  (void)L;
  close_store();
  return 0;
}

static int l_dir(lua_State *L) {
  if (H.pg) {
    lua_pushstring(L, pgstore_name(H.pg));
    return 1;
  }
  if (!H.st) return 0;
  lua_pushstring(L, store_dir(H.st));
  return 1;
}

static void push_hist(lua_State *L, const uint64_t *hist, const uint64_t *bounds,
                      const char *name) {
  lua_createtable(L, WRITER_HIST, 0);
  for (int i = 0; i < WRITER_HIST; i++) {
    lua_pushinteger(L, (lua_Integer)hist[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, name);
  lua_createtable(L, WRITER_HIST - 1, 0);
  for (int i = 0; i < WRITER_HIST - 1; i++) {
    lua_pushinteger(L, (lua_Integer)bounds[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushfstring(L, "%s_bounds", name);
  lua_insert(L, -2);
  lua_settable(L, -3);
}

static void set_count(lua_State *L, const char *name, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, name);
}

/* stats() -> {commits, batches, ops, grows, batch_hist, batch_hist_bounds,
 * commit_hist, commit_hist_bounds (us), commit_us_sum, map_bytes}; on
 * PostgreSQL commits and batches are the connection's, with reads, lost and
 * unknown (pgstore_stats) */
static int l_stats(lua_State *L) {
  writer_stats s;
  memset(&s, 0, sizeof s);
  if (H.w) writer_get_stats(H.w, &s);
  pgstore_stats ps;
  memset(&ps, 0, sizeof ps);
  if (H.pg) { /* its group commits, counted as the writer's */
    pgstore_get_stats(H.pg, &ps);
    s.commits = ps.commits;
    s.batches = ps.batches;
    s.commit_us_sum = ps.commit_us_sum;
    memcpy(s.batch_hist, ps.batch_hist, sizeof s.batch_hist);
    memcpy(s.commit_hist, ps.commit_hist, sizeof s.commit_hist);
  }
  lua_createtable(L, 0, 10);
  push_hist(L, s.batch_hist, writer_batch_bounds, "batch_hist");
  push_hist(L, s.commit_hist, writer_commit_bounds_us, "commit_hist");
  MDB_envinfo info;
  if (H.st && mdb_env_info(store_env(H.st), &info) == 0) set_count(L, "map_bytes", info.me_mapsize);
  set_count(L, "commit_us_sum", s.commit_us_sum);
  set_count(L, "commits", s.commits);
  set_count(L, "batches", s.batches);
  set_count(L, "ops", s.ops);
  set_count(L, "grows", s.grows);
  if (H.w) set_count(L, "lmdb_commits", s.lmdb_commits);
  if (H.pg) {
    set_count(L, "reads", ps.reads);
    set_count(L, "lost", ps.lost);
    set_count(L, "unknown", ps.unknown);
  }
  return 1;
}

/* ---- writes ------------------------------------------------------------- */

/* A suspended coroutine waiting for its batch. */
typedef struct {
  lua_State *co;
  int ref;
} waiter;

static void commit_done(void *cookie, int status, const char *errmsg) {
  waiter *wt = cookie;
  lua_State *co = wt->co;
  lua_State *L = vm_of(co)->L;
  int nargs = 1;
  if (lua_status(co) != LUA_YIELD) {
    /* resumed by somebody else meanwhile: nothing to hand the result to */
    fprintf(stderr, "sluice: a coroutine waiting for a commit was resumed elsewhere; "
                    "result dropped\n");
    luaL_unref(L, LUA_REGISTRYINDEX, wt->ref);
    free(wt);
    return;
  }
  if (status == 0) {
    lua_pushboolean(co, 1);
  } else {
    nargs = l_store_fail(co, status, errmsg ? errmsg : "write failed");
  }
  int ref = wt->ref;
  free(wt);
  vm_resume(co, NULL, nargs);
  /* drop the anchor only now: the coroutine may have finished above */
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

void l_store_check_writable(lua_State *L) {
  if (!H.st && !H.pg) luaL_error(L, "sluice._store: no store is open");
  if (H.readonly || (!H.pg && !H.w)) {
    luaL_error(L, "the store %s is open read-only", H.pg ? pgstore_name(H.pg) : store_dir(H.st));
  }
  if (!lua_isyieldable(L)) {
    luaL_error(L, "a durable write must run inside a run (a coroutine the host resumes), not in "
                  "a callback or at the top of the main thread");
  }
}

int l_store_submit(lua_State *L, store_batch *b) {
  if (!H.w) {
    store_batch_free(b);
    l_store_get(L); /* raises: a PostgreSQL store has no LMDB writer */
  }
  waiter *wt = malloc(sizeof *wt);
  if (!wt) {
    store_batch_free(b);
    return luaL_error(L, "out of memory");
  }
  wt->co = L;
  lua_pushthread(L);
  wt->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (writer_submit(H.w, b, commit_done, wt) != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, wt->ref);
    free(wt);
    return l_store_fail(L, STORE_EIO, "the writer is stopping");
  }
  return lua_yield(L, 0);
}

/* A PostgreSQL commit: true, the first position of its events, of its sends
 * (allocated by the commit: 0 when the batch had none). */
static void pg_commit_done(void *cookie, int status, const char *errmsg,
                           const pgstore_commit_info *info) {
  waiter *wt = cookie;
  lua_State *co = wt->co;
  lua_State *L = vm_of(co)->L;
  int ref = wt->ref;
  free(wt);
  if (H.quiet) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return;
  }
  if (lua_status(co) != LUA_YIELD) {
    fprintf(stderr, "sluice: a coroutine waiting for a commit was resumed elsewhere; "
                    "result dropped\n");
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return;
  }
  int nargs = 3;
  if (status == 0) {
    lua_pushboolean(co, 1);
    lua_pushinteger(co, (lua_Integer)info->first_event);
    lua_pushinteger(co, (lua_Integer)info->first_send);
  } else {
    nargs = l_store_fail(co, status, errmsg ? errmsg : "write failed");
  }
  vm_resume(co, NULL, nargs);
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

static int submit_pg(lua_State *L, pgstore_batch *b) {
  waiter *wt = malloc(sizeof *wt);
  if (!wt) {
    pgstore_batch_free(b);
    return luaL_error(L, "out of memory");
  }
  wt->co = L;
  lua_pushthread(L);
  wt->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (pgstore_commit(H.pg, b, pg_commit_done, wt) != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, wt->ref);
    free(wt);
    return l_store_fail(L, STORE_EIO, "the PostgreSQL store is closing");
  }
  return lua_yield(L, 0);
}

/* ---- reads of a PostgreSQL store ------------------------------------------ */

#define PGREAD_MT "sluice.store_pgread"

static int pgread_gc(lua_State *L) {
  l_pgread *r = luaL_checkudata(L, 1, PGREAD_MT);
  store_events_free(&r->ev);
  store_blob_rows_free(&r->rows);
  store_keys_free(&r->keys);
  store_named_rows_free(&r->named);
  sbuf_free(&r->rec);
  store_rows_free(&r->runs);
  store_steps_free(&r->steps);
  free(r->ids);
  r->ids = NULL;
  return 0;
}

l_pgread *l_store_pgread(lua_State *L) {
  if (!lua_isyieldable(L)) {
    luaL_error(L, "a read of a PostgreSQL store waits on the network: it must run inside a run or "
                  "a task (a coroutine the host resumes)");
  }
  l_pgread *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  r->ev = (store_events)STORE_EVENTS_INIT;
  r->rows = (store_blob_rows)STORE_BLOB_ROWS_INIT;
  r->keys = (store_keys)STORE_KEYS_INIT;
  r->named = (store_named_rows)STORE_NAMED_ROWS_INIT;
  r->rec = (sbuf)SBUF_INIT;
  r->runs = (store_rows)STORE_ROWS_INIT;
  r->steps = (store_steps)STORE_STEPS_INIT;
  r->co_ref = r->ud_ref = LUA_NOREF;
  if (luaL_newmetatable(L, PGREAD_MT)) {
    lua_pushcfunction(L, pgread_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  /* the read writes into r until its done: r lives until then, whatever
   * happens to the coroutine */
  lua_pushvalue(L, -1);
  r->ud_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  r->co = L;
  return r;
}

void l_store_pgread_done(void *cookie, int status, const char *err) {
  l_pgread *r = cookie;
  lua_State *co = r->co;
  lua_State *L = vm_of(co)->L;
  r->done = 1;
  r->status = status;
  snprintf(r->err, sizeof r->err, "%s", status ? (err ? err : "the read failed") : "");
  int co_ref = r->co_ref, ud_ref = r->ud_ref;
  r->co_ref = r->ud_ref = LUA_NOREF;
  if (co_ref != LUA_NOREF) { /* waiting in l_store_await */
    if (H.quiet) {
      /* shutting down: nothing is resumed any more */
    } else if (lua_status(co) == LUA_YIELD) {
      vm_resume(co, NULL, 0);
    } else {
      fprintf(stderr, "sluice: a coroutine waiting for a store read was resumed elsewhere; "
                      "result dropped\n");
    }
    luaL_unref(L, LUA_REGISTRYINDEX, co_ref);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, ud_ref);
}

static int await_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  l_pgread *r = (l_pgread *)k;
  return r->push(L, r);
}

int l_store_await(lua_State *L, l_pgread *r, l_pgread_push push) {
  r->push = push;
  if (r->done) return push(L, r); /* refused before anything was sent */
  lua_pushthread(L);
  r->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return lua_yieldk(L, 0, (lua_KContext)r, await_k);
}

int l_store_pgfail(lua_State *L, const l_pgread *r) { return l_store_fail(L, r->status, r->err); }

/* ---- batches ------------------------------------------------------------ */

/* registry[&batch_mt_key]: the batch metatable, also under its name. A
 * step calls four methods of its batch: luaL_checkudata's lookup of the
 * name (a string made and compared each time) was ~2% of a step's CPU. */
static const char batch_mt_key = 0;

/* luaL_checkudata(L, idx, L_STORE_BATCH_MT), looking the metatable up by
 * a pointer key; anything else gets luaL_checkudata's error */
static batch_ud *to_batch(lua_State *L, int idx) {
  batch_ud *u = lua_touserdata(L, idx);
  if (u && lua_getmetatable(L, idx)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &batch_mt_key);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (same) return u;
  }
  return luaL_checkudata(L, idx, L_STORE_BATCH_MT);
}

store_batch *l_store_check_batch(lua_State *L, int idx) {
  batch_ud *u = to_batch(L, idx);
  if (u->pb) l_store_get(L); /* raises: this operation has no PostgreSQL path */
  if (!u->b) luaL_argerror(L, idx, "this batch was committed already: build a new one");
  return u->b;
}

store_batch *l_store_take_batch(lua_State *L, int idx) {
  store_batch *b = l_store_check_batch(L, idx);
  ((batch_ud *)lua_touserdata(L, idx))->b = NULL;
  return b;
}

pgstore_batch *l_store_pg_batch(lua_State *L, int idx) {
  batch_ud *u = to_batch(L, idx);
  if (!u->pb && !u->b) luaL_argerror(L, idx, "this batch was committed already: build a new one");
  return u->pb;
}

/* batch() -> an empty batch (of the open store's backend) */
static int l_batch(lua_State *L) {
  batch_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->b = NULL;
  u->pb = NULL;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &batch_mt_key);
  lua_setmetatable(L, -2);
  if (H.pg) {
    u->pb = pgstore_batch_new();
  } else {
    u->b = store_batch_new();
  }
  return 1;
}

/* b:count() -> the number of writes in b */
static int l_batch_count(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  lua_pushinteger(L, (lua_Integer)(pb ? pgstore_batch_count(pb)
                                      : store_batch_count(l_store_check_batch(L, 1))));
  return 1;
}

/* b:commit() -> true | nil, "CODE: message", "CODE". Yields until the batch
 * is durable; b is spent afterwards, whatever the outcome. */
static int l_batch_commit(lua_State *L) {
  batch_ud *u = to_batch(L, 1);
  if (!u->b && !u->pb) return luaL_argerror(L, 1, "this batch was committed already: build a new one");
  l_store_check_writable(L);
  if (u->pb) {
    if (!H.pg) return luaL_argerror(L, 1, "a batch of a PostgreSQL store that was closed");
    pgstore_batch *pb = u->pb;
    u->pb = NULL;
    return submit_pg(L, pb);
  }
  if (!H.st) return luaL_argerror(L, 1, "an LMDB batch, but the store open is PostgreSQL");
  store_batch *b = u->b;
  u->b = NULL;
  return l_store_submit(L, b);
}

static int l_batch_gc(lua_State *L) {
  batch_ud *u = to_batch(L, 1);
  if (u->b) store_batch_free(u->b);
  if (u->pb) pgstore_batch_free(u->pb);
  u->b = NULL;
  u->pb = NULL;
  return 0;
}

void l_store_encode(lua_State *L, int idx, const char *what, sbuf *out) {
  char err[256];
  if (codec_encode(L, idx, what, CODEC_RECORD, out, err, sizeof err) != 0) luaL_error(L, "%s", err);
}

#define BUF_MT "sluice.store_buf"

static int buf_gc(lua_State *L) {
  sbuf_free(luaL_checkudata(L, 1, BUF_MT));
  return 0;
}

sbuf *l_store_new_buf(lua_State *L) {
  sbuf *b = lua_newuserdatauv(L, sizeof *b, 0);
  *b = (sbuf)SBUF_INIT;
  if (luaL_newmetatable(L, BUF_MT)) {
    lua_pushcfunction(L, buf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return b;
}

int l_store_push_record(lua_State *L, int status, const char *err, int found, const sbuf *rec,
                        const char *what) {
  if (status) return l_store_fail(L, status, err);
  if (!found) {
    lua_pushnil(L);
    return 1;
  }
  char why[512];
  int st = l_store_decode(L, rec->data ? rec->data : "", rec->len, what, why, sizeof why);
  return st ? l_store_fail(L, st, why) : 1;
}

int l_store_decode(lua_State *L, const char *rec, size_t len, const char *what, char *err,
                   size_t errsz) {
  char why[256];
  if (codec_decode_ex(L, rec, len, CODEC_RECORD, why, sizeof why) == 0) return 0;
  snprintf(err, errsz, "%s: its stored record does not decode: %s", what, why);
  return STORE_EBADSTORE;
}

#define ROWS_MT "sluice.store_rows"

static int rows_gc(lua_State *L) {
  store_named_rows_free(luaL_checkudata(L, 1, ROWS_MT));
  return 0;
}

store_named_rows *l_store_new_rows(lua_State *L) {
  store_named_rows *r = lua_newuserdatauv(L, sizeof *r, 0);
  *r = (store_named_rows)STORE_NAMED_ROWS_INIT;
  if (luaL_newmetatable(L, ROWS_MT)) {
    lua_pushcfunction(L, rows_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return r;
}

int l_store_push_rows(lua_State *L, const store_named_rows *rows, const char *what,
                      const char *name_field, const char *extra_field) {
  lua_createtable(L, rows->n < INT32_MAX ? (int)rows->n : 0, 0);
  for (size_t i = 0; i < rows->n; i++) {
    const store_named_row *row = &rows->rows[i];
    char err[512], why[256];
    if (codec_decode_ex(L, row->rec, row->rec_len, CODEC_RECORD, why, sizeof why) != 0) {
      /* the record's name is formatted only then: not once per row read */
      snprintf(err, sizeof err, "%s %.*s: its stored record does not decode: %s", what,
               (int)(row->name_len < 80 ? row->name_len : 80), row->name, why);
      return l_store_fail(L, STORE_EBADSTORE, err);
    }
    if (name_field && lua_istable(L, -1)) {
      lua_pushlstring(L, row->name, row->name_len);
      lua_setfield(L, -2, name_field);
    }
    if (extra_field && row->extra && lua_istable(L, -1)) {
      lua_pushlstring(L, row->extra, row->extra_len);
      lua_setfield(L, -2, extra_field);
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

int luaopen_sluice__store(lua_State *L) {
  static const luaL_Reg fns[] = {{"open", l_open},
                                 {"close", l_close},
                                 {"dir", l_dir},
                                 {"remote", l_remote},
                                 {"stats", l_stats},
                                 {"batch", l_batch},
                                 {NULL, NULL}};
  static const luaL_Reg methods[] = {{"count", l_batch_count},
                                     {"commit", l_batch_commit},
                                     {NULL, NULL}};
  luaL_newlib(L, fns);
  int module_idx = lua_gettop(L);
  luaL_newmetatable(L, L_STORE_BATCH_MT);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &batch_mt_key);
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
  l_store_replay(L, module_idx);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1); /* the metatable */
  return 1;
}
