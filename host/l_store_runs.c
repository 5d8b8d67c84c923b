/* l_store_runs.c: "sluice._store" operations on runs with their indexes,
 * steps, run logs and idempotency keys (store.h). Calls store.h only.
 *
 * Each operation takes the PostgreSQL path (store_pg.h: a read yields the
 * calling coroutine until it completes) when the store is one, else the
 * LMDB one (store.h): the Lua side calls the same functions on both.
 *
 * Module functions (reads return nil, "CODE: message", "CODE" on failure):
 *   get_run(id) -> record | nil
 *   runs{namespace=, pipeline=, status=, before=, since_us=, limit=}
 *       -> runs, next | nil (the last page), skipped (messages of records
 *          that do not decode, left out)
 *   unfinished_runs() -> records of the runs not yet final, oldest first
 *   load_steps(run) -> done, order, n: for the replay, done[step_id] = the
 *       JSON of a completed step's result (true: it returned nil) or false
 *       (it failed); order[branch][pos] = step_id. Steps in flight are left
 *       out.
 *   get_steps(run) -> {id, status, attempts, pos, branch, started_us,
 *       duration_us, size, result | error}, ... in the order they started
 *   get_step(run, id) -> {..., value} | nil (value: result or error)
 *   read_logs(run) -> lines, oldest first; log_ids(run) -> {us, seq, us, ...}
 *   get_idempotency(ns, pipeline, key) -> run id | nil
 *   runs_indexed() -> boolean; set_run_observer(fn(rec, prev, status))
 * Batch methods (return the batch; misuse and values that cannot be stored
 * raise, except put_step's value: nil, "EINVAL: message", "EINVAL"):
 *   b:put_run(rec [, {new=true}])
 *   b:put_step(run, branch, pos, id, status, attempts, t0_us, dur_us [, value])
 *   b:copy_steps(from_run, to_run, ids)
 *   b:put_log(run, us, seq, line) b:del_log(run, us, seq)
 *   b:put_idempotency(ns, pipeline, key, run_id)
 *   b:index_runs(after, max) -> next | nil, count
 *
 * A run's index entries move with its status: the status a record table was
 * read with or last put with is kept (a weak table keyed by the record), so
 * no put reads the store first. put_run of a table that was neither read
 * from the store nor created with {new=true} raises. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "l_store.h"

#define STATUS_KEY "sluice.store.run_status" /* record table -> indexed status */
#define OBSERVER_KEY "sluice.store.run_observer"
#define HOLDER_MT "sluice.store.rows"

/* C memory a read returned, owned by a userdata so that an error while
 * pushing it to Lua frees it (l_store.h: free before you raise). */
typedef struct {
  store_rows rows;
  store_steps steps;
  sbuf buf;
  int64_t *ids;
} holder;

static void holder_free(holder *h) {
  store_rows_free(&h->rows);
  store_steps_free(&h->steps);
  sbuf_free(&h->buf);
  free(h->ids);
  h->ids = NULL;
}

static int holder_gc(lua_State *L) {
  holder_free(luaL_checkudata(L, 1, HOLDER_MT));
  return 0;
}

/* pushes a holder and returns it */
static holder *holder_new(lua_State *L) {
  holder *h = lua_newuserdatauv(L, sizeof *h, 0);
  h->rows = (store_rows)STORE_ROWS_INIT;
  h->steps = (store_steps)STORE_STEPS_INIT;
  h->buf = (sbuf)SBUF_INIT;
  h->ids = NULL;
  luaL_setmetatable(L, HOLDER_MT);
  return h;
}

/* ---- runs -------------------------------------------------------------- */

static void push_status_table(lua_State *L) { lua_getfield(L, LUA_REGISTRYINDEX, STATUS_KEY); }

/* notes that the record at idx has index entries with status `status` */
static void note_status(lua_State *L, int idx, int status_idx) {
  idx = lua_absindex(L, idx);
  status_idx = lua_absindex(L, status_idx);
  push_status_table(L);
  lua_pushvalue(L, idx);
  if (lua_isnil(L, status_idx)) {
    lua_pushboolean(L, 0);
  } else {
    lua_pushvalue(L, status_idx);
  }
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* The open store, for messages: its directory or its URL. */
static const char *store_name(lua_State *L) {
  pgstore *pg = l_store_pg(L);
  return pg ? pgstore_name(pg) : store_dir(l_store_get(L));
}

/* Decodes the run record JSON and pushes it (noted as read), or pushes a
 * message naming the run and returns -1. */
static int push_run(lua_State *L, const char *json, size_t n, const char *id, size_t idn) {
  char err[256];
  int top = lua_gettop(L);
  int ok = codec_decode_ex(L, json, n, CODEC_RECORD, err, sizeof err) == 0;
  if (ok && !lua_istable(L, -1)) {
    ok = 0;
    snprintf(err, sizeof err, "not a JSON object");
  }
  if (!ok) {
    lua_settop(L, top);
    lua_pushliteral(L, "the record of run ");
    lua_pushlstring(L, id, idn);
    lua_pushfstring(L, " in %s is corrupt (%s): the store was damaged or written by another program",
                    store_name(L), err);
    lua_concat(L, 3);
    return -1;
  }
  lua_getfield(L, -1, "status");
  note_status(L, -2, -1);
  lua_pop(L, 1);
  return 0;
}

/* the record of run id (argument 1) read into buf */
static int push_got_run(lua_State *L, int rc, const char *err, int found, const sbuf *buf) {
  if (rc) return l_store_fail(L, rc, err);
  if (!found) {
    lua_pushnil(L);
    return 1;
  }
  size_t idn;
  const char *id = lua_tolstring(L, 1, &idn);
  int top = lua_gettop(L);
  if (push_run(L, buf->data, buf->len, id, idn) != 0) {
    const char *msg = lua_tostring(L, -1);
    lua_settop(L, top);
    return l_store_fail(L, STORE_EBADSTORE, msg ? msg : "corrupt run record");
  }
  return 1;
}

static int push_pg_run(lua_State *L, l_pgread *r) {
  return push_got_run(L, r->status, r->err, r->found, &r->rec);
}

/* get_run(id) -> record | nil */
static int l_get_run(lua_State *L) {
  const char *id = luaL_checkstring(L, 1);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_get_run(pg, id, &r->rec, &r->found, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_run);
  }
  store *s = l_store_get(L);
  holder *h = holder_new(L);
  int found = 0;
  char err[512];
  int rc = store_get_run(s, id, &h->buf, &found, err, sizeof err);
  return push_got_run(L, rc, err, found, &h->buf);
}

static const char *opt_field(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *v = NULL;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "runs: %s must be a string", k);
    v = lua_tostring(L, -1);
  }
  lua_pop(L, 1); /* the string stays alive: it is in the table */
  return v;
}

static int push_runs_page(lua_State *L, const store_rows *rows, const sbuf *next);

static int push_pg_runs(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  return push_runs_page(L, &r->runs, &r->rec);
}

/* runs{...} -> runs, next | nil, skipped */
static int l_runs(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  store_run_filter f = {opt_field(L, 1, "namespace"), opt_field(L, 1, "pipeline"), opt_field(L, 1, "status"),
                        opt_field(L, 1, "before"), 0, 20};
  lua_getfield(L, 1, "since_us");
  f.since_us = luaL_optinteger(L, -1, 0);
  lua_getfield(L, 1, "limit");
  lua_Integer limit = luaL_optinteger(L, -1, 20);
  luaL_argcheck(L, limit >= 1, 1, "limit must be at least 1");
  f.limit = (size_t)limit;
  lua_pop(L, 2);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    /* f's strings are fields of the options table: alive while it waits */
    l_pgread *r = l_store_pgread(L);
    pgstore_list_runs(pg, &f, &r->runs, &r->rec, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_runs);
  }
  store *s = l_store_get(L);
  holder *h = holder_new(L);
  char err[512];
  int rc = store_list_runs(s, &f, &h->rows, &h->buf, err, sizeof err);
  if (rc) return l_store_fail(L, rc, err);
  return push_runs_page(L, &h->rows, &h->buf);
}

/* a page of runs: runs, next | nil, skipped */
static int push_runs_page(lua_State *L, const store_rows *rows, const sbuf *next) {
  lua_createtable(L, (int)rows->n, 0);
  int out = lua_gettop(L);
  lua_newtable(L);
  int skipped = lua_gettop(L);
  lua_Integer n = 0, ns = 0;
  for (size_t i = 0; i < rows->n; i++) {
    if (push_run(L, rows->buf.data + rows->off[i], rows->len[i], rows->buf.data + rows->name_off[i], rows->name_len[i]) != 0) {
      lua_rawseti(L, skipped, ++ns);
      continue;
    }
    lua_rawseti(L, out, ++n);
  }
  lua_pushvalue(L, out);
  if (next->len) {
    lua_pushlstring(L, next->data, next->len);
  } else {
    lua_pushnil(L);
  }
  lua_pushvalue(L, skipped);
  return 3;
}

static int by_created(lua_State *L) {
  lua_getfield(L, 1, "created_us");
  lua_getfield(L, 2, "created_us");
  lua_Integer a = lua_tointeger(L, -2), b = lua_tointeger(L, -1);
  lua_pushboolean(L, a < b);
  return 1;
}

/* unfinished_runs() -> records, oldest first (runs waiting on a concurrency
 * key keep their turn) */
static int push_unfinished(lua_State *L, store_rows *rows) {
  lua_createtable(L, (int)rows->n, 0);
  int out = lua_gettop(L);
  lua_Integer n = 0;
  for (size_t i = 0; i < rows->n; i++) {
    if (push_run(L, rows->buf.data + rows->off[i], rows->len[i], rows->buf.data + rows->name_off[i], rows->name_len[i]) != 0) {
      const char *msg = lua_tostring(L, -1);
      return l_store_fail(L, STORE_EBADSTORE, msg ? msg : "corrupt run record");
    }
    lua_getfield(L, -1, "status");
    int fin = store_run_status_final(lua_tostring(L, -1));
    lua_pop(L, 1);
    if (fin) {
      lua_pop(L, 1);
      continue;
    }
    lua_rawseti(L, out, ++n);
  }
  store_rows_free(rows);
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "sort");
  lua_pushvalue(L, out);
  lua_pushcfunction(L, by_created);
  lua_call(L, 2, 0);
  lua_pushvalue(L, out);
  return 1;
}

static int push_pg_unfinished(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  return push_unfinished(L, &r->runs);
}

static int l_unfinished_runs(lua_State *L) {
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_active_runs(pg, &r->runs, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_unfinished);
  }
  store *s = l_store_get(L);
  holder *h = holder_new(L);
  char err[512];
  int rc = store_active_runs(s, &h->rows, err, sizeof err);
  if (rc) return l_store_fail(L, rc, err);
  return push_unfinished(L, &h->rows);
}

typedef struct {
  lua_State *L;
  int idx, flags;
  const char *root;
} fill_ctx;

static int fill_lua(void *ud, sbuf *out, char *err, size_t errsz) {
  fill_ctx *c = ud;
  return codec_encode(c->L, c->idx, c->root, c->flags, out, err, errsz);
}

/* rec[k]: a string (alive while rec holds it) or NULL for nil */
static const char *rec_string(lua_State *L, int t, const char *k) {
  int type = lua_getfield(L, t, k);
  if (type != LUA_TSTRING && type != LUA_TNIL)
    luaL_error(L, "put_run: the run's %s must be a string, got %s", k, lua_typename(L, type));
  const char *v = lua_tostring(L, -1);
  if (v && strlen(v) != lua_rawlen(L, -1)) luaL_error(L, "put_run: the run's %s holds a NUL byte", k);
  lua_pop(L, 1);
  return v;
}

/* b:put_run(rec [, {new=true}]) -> b */
static int l_put_run(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  int is_new = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "new");
    is_new = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  store_run r = {rec_string(L, 2, "id"), rec_string(L, 2, "pipeline"), rec_string(L, 2, "namespace"),
                 rec_string(L, 2, "status"), 0};
  lua_getfield(L, 2, "created_us");
  r.created_us = lua_tointeger(L, -1);
  lua_pop(L, 1);
  push_status_table(L);
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  int prev_idx = lua_gettop(L); /* nil: unknown; false: read without a status */
  if (!is_new && lua_isnil(L, prev_idx)) {
    return luaL_error(L, "put_run: run %s: this record was neither read from the store nor created "
                         "with {new=true}", r.id ? r.id : "?");
  }
  const char *prev = is_new ? NULL : lua_tostring(L, prev_idx);
  if (!is_new && !prev) prev = NULL;
  fill_ctx c = {L, 2, CODEC_RECORD, "run"};
  char err[512];
  int rc = pb ? pgstore_put_run(pb, &r, is_new, prev, fill_lua, &c, err, sizeof err)
              : store_put_run(b, &r, is_new, prev, fill_lua, &c, err, sizeof err);
  if (rc) return luaL_error(L, "put_run: %s", err);
  const char *status = r.status ? r.status : "pending";
  int changed = is_new || !prev || strcmp(prev, status) != 0;
  lua_pushstring(L, status);
  note_status(L, 2, -1);
  if (changed && lua_getfield(L, LUA_REGISTRYINDEX, OBSERVER_KEY) == LUA_TFUNCTION) {
    lua_pushvalue(L, 2);
    if (is_new) {
      lua_pushnil(L);
    } else {
      lua_pushvalue(L, prev_idx);
    }
    lua_pushstring(L, status);
    lua_call(L, 3, 0);
  }
  lua_settop(L, 1);
  return 1;
}

/* set_run_observer(fn | nil): fn(rec, previous_status, status) at each put
 * that changes the status a run record is indexed with. */
static int l_set_run_observer(lua_State *L) {
  if (!lua_isnil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, OBSERVER_KEY);
  return 0;
}

/* runs_indexed() -> true if the listings of an older store were filled */
static int l_runs_indexed(lua_State *L) {
  /* PostgreSQL: the listings are indexes of the runs table, always there */
  lua_pushboolean(L, l_store_pg(L) ? 1 : store_runs_indexed(l_store_get(L)));
  return 1;
}

/* b:index_runs(after, max) -> next | nil, count: the listing entries of
 * at most max runs after the id `after` (an older store's); next is the
 * last id read, nil once all are done (b then marks the store). Records
 * that do not decode, or lack an id or a pipeline, are left out. */
static int l_index_runs(lua_State *L) {
  if (l_store_pg_batch(L, 1)) { /* nothing to fill: every run is in the indexes */
    lua_pushnil(L);
    lua_pushinteger(L, 0);
    return 2;
  }
  store_batch *b = l_store_check_batch(L, 1);
  const char *after = luaL_optstring(L, 2, NULL);
  lua_Integer max = luaL_optinteger(L, 3, 1000);
  luaL_argcheck(L, max >= 1, 3, "at least 1");
  holder *h = holder_new(L);
  char err[512];
  int rc = store_read_runs(l_store_get(L), after, (size_t)max, &h->rows, err, sizeof err);
  if (rc) return l_store_fail(L, rc, err);
  lua_Integer count = 0;
  for (size_t i = 0; i < h->rows.n; i++) {
    int top = lua_gettop(L);
    if (codec_decode_ex(L, h->rows.buf.data + h->rows.off[i], h->rows.len[i], CODEC_RECORD, err,
                        sizeof err) == 0 && lua_istable(L, -1)) {
      int t = lua_gettop(L);
      lua_getfield(L, t, "id");
      lua_getfield(L, t, "pipeline");
      lua_getfield(L, t, "namespace");
      lua_getfield(L, t, "status");
      lua_getfield(L, t, "created_us");
      store_run r = {lua_type(L, t + 1) == LUA_TSTRING ? lua_tostring(L, t + 1) : NULL,
                     lua_type(L, t + 2) == LUA_TSTRING ? lua_tostring(L, t + 2) : NULL,
                     lua_type(L, t + 3) == LUA_TSTRING ? lua_tostring(L, t + 3) : NULL,
                     lua_type(L, t + 4) == LUA_TSTRING ? lua_tostring(L, t + 4) : NULL,
                     lua_tointeger(L, t + 5)};
      if (r.id && r.pipeline && store_put_run_listings(b, &r, err, sizeof err) == 0) count++;
    }
    lua_settop(L, top);
  }
  if (h->rows.n == (size_t)max) {
    size_t last = h->rows.n - 1;
    lua_pushlstring(L, h->rows.buf.data + h->rows.name_off[last], h->rows.name_len[last]);
  } else {
    store_mark_runs_indexed(b);
    lua_pushnil(L);
  }
  lua_pushinteger(L, count);
  return 2;
}

/* ---- steps ------------------------------------------------------------- */

/* done, order, n of the steps read */
static int push_replay(lua_State *L, store_steps *steps) {
  lua_createtable(L, 0, (int)steps->n);
  int done = lua_gettop(L);
  lua_newtable(L);
  int order = lua_gettop(L);
  lua_Integer n = 0;
  for (size_t i = 0; i < steps->n; i++) {
    const store_step *st = &steps->v[i];
    if (st->status == STORE_STEP_RUNNING) continue; /* in flight when written */
    lua_pushlstring(L, st->id, st->id_len);
    lua_pushvalue(L, -1);
    if (st->status != STORE_STEP_COMPLETED) {
      lua_pushboolean(L, 0);
    } else if (st->has_payload) {
      lua_pushlstring(L, st->payload, st->payload_len);
    } else {
      lua_pushboolean(L, 1);
    }
    lua_rawset(L, done); /* the id stays on the stack for order below */
    lua_pushlstring(L, st->branch, st->branch_len);
    if (lua_rawget(L, order) != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushlstring(L, st->branch, st->branch_len);
      lua_pushvalue(L, -2);
      lua_rawset(L, order);
    }
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, st->pos);
    lua_pop(L, 2);
    n++;
  }
  store_steps_free(steps);
  lua_pushinteger(L, n);
  return 3;
}

static int push_pg_replay(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  return push_replay(L, &r->steps);
}

/* load_steps(run) -> done, order, n */
static int l_load_steps(lua_State *L) {
  size_t rn;
  const char *run = luaL_checklstring(L, 1, &rn);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_load_steps(pg, run, rn, &r->steps, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_replay);
  }
  store *s = l_store_get(L);
  holder *h = holder_new(L);
  char err[512];
  int rc = store_load_steps(s, run, rn, &h->steps, err, sizeof err);
  if (rc) return l_store_fail(L, rc, err);
  return push_replay(L, &h->steps);
}

/* Pushes the step as a table; with `value` the decoded payload goes there,
 * else under result or error. Returns 0, or -1 with a message pushed. */
static int push_step(lua_State *L, const char *run, const store_step *st, const char *value) {
  lua_createtable(L, 0, 9);
  lua_pushstring(L, store_step_status_name(st->status));
  lua_setfield(L, -2, "status");
  lua_pushinteger(L, st->attempts);
  lua_setfield(L, -2, "attempts");
  lua_pushinteger(L, st->pos);
  lua_setfield(L, -2, "pos");
  lua_pushinteger(L, st->started_us);
  lua_setfield(L, -2, "started_us");
  lua_pushinteger(L, st->duration_us);
  lua_setfield(L, -2, "duration_us");
  lua_pushlstring(L, st->id, st->id_len);
  lua_setfield(L, -2, "id");
  lua_pushlstring(L, st->branch, st->branch_len);
  lua_setfield(L, -2, "branch");
  lua_pushinteger(L, (lua_Integer)st->payload_len);
  lua_setfield(L, -2, "size");
  if (st->has_payload) {
    char err[256];
    if (codec_decode(L, st->payload, st->payload_len, err, sizeof err) != 0) {
      lua_pop(L, 1);
      lua_pushfstring(L, "step '%s' of run %s: its stored value does not decode: %s",
                      lua_pushlstring(L, st->id, st->id_len), run, err);
      return -1;
    }
    lua_setfield(L, -2, value ? value : st->status == STORE_STEP_COMPLETED ? "result" : "error");
  }
  return 0;
}

static int cmp_started(const void *a, const void *b) {
  const store_step *x = a, *y = b;
  if (x->started_us != y->started_us) return x->started_us < y->started_us ? -1 : 1;
  size_t n = x->id_len < y->id_len ? x->id_len : y->id_len;
  int c = memcmp(x->id, y->id, n);
  return c ? c : (x->id_len > y->id_len) - (x->id_len < y->id_len);
}

/* the steps read of run (argument 1) in the order they started */
static int push_steps(lua_State *L, store_steps *steps) {
  const char *run = lua_tostring(L, 1);
  if (steps->n > 1) qsort(steps->v, steps->n, sizeof *steps->v, cmp_started);
  lua_createtable(L, (int)steps->n, 0);
  for (size_t i = 0; i < steps->n; i++) {
    if (push_step(L, run, &steps->v[i], NULL) != 0) {
      const char *msg = lua_tostring(L, -1);
      return l_store_fail(L, STORE_EBADSTORE, msg);
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int push_pg_steps(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  return push_steps(L, &r->steps);
}

/* get_steps(run) -> steps in the order they started */
static int l_get_steps(lua_State *L) {
  size_t rn;
  const char *run = luaL_checklstring(L, 1, &rn);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_load_steps(pg, run, rn, &r->steps, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_steps);
  }
  store *s = l_store_get(L);
  holder *h = holder_new(L);
  char err[512];
  int rc = store_load_steps(s, run, rn, &h->steps, err, sizeof err);
  if (rc) return l_store_fail(L, rc, err);
  return push_steps(L, &h->steps);
}

/* the step read (none: nil) of run (argument 1), with its value */
static int push_one_step(lua_State *L, const store_steps *steps) {
  if (steps->n == 0) {
    lua_pushnil(L);
    return 1;
  }
  if (push_step(L, lua_tostring(L, 1), &steps->v[0], "value") != 0) {
    return l_store_fail(L, STORE_EBADSTORE, lua_tostring(L, -1));
  }
  return 1;
}

static int push_pg_step(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  return push_one_step(L, &r->steps);
}

/* get_step(run, id) -> step with its value | nil */
static int l_get_step(lua_State *L) {
  size_t rn, idn;
  const char *run = luaL_checklstring(L, 1, &rn);
  const char *id = luaL_checklstring(L, 2, &idn);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_get_steps(pg, run, rn, &id, &idn, 1, &r->steps, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_step);
  }
  store *s = l_store_get(L);
  holder *h = holder_new(L);
  char err[512];
  int rc = store_get_step(s, run, rn, id, idn, &h->steps, err, sizeof err);
  if (rc) return l_store_fail(L, rc, err);
  return push_one_step(L, &h->steps);
}

/* b:put_step(run, branch, pos, id, status, attempts, t0_us, dur_us [, value])
 * -> b | nil, "EINVAL: message", "EINVAL" (value cannot be stored) */
static int l_put_step(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  size_t rn;
  const char *run = luaL_checklstring(L, 2, &rn);
  store_step st;
  memset(&st, 0, sizeof st);
  st.branch = luaL_checklstring(L, 3, &st.branch_len);
  lua_Integer pos = luaL_checkinteger(L, 4);
  st.id = luaL_checklstring(L, 5, &st.id_len);
  st.status = store_step_status(luaL_checkstring(L, 6));
  luaL_argcheck(L, st.status != 0, 6, "status must be \"completed\", \"failed\" or \"running\"");
  lua_Integer attempts = luaL_checkinteger(L, 7);
  luaL_argcheck(L, pos >= 0 && pos <= UINT32_MAX, 4, "out of range");
  luaL_argcheck(L, attempts >= 0 && attempts <= UINT32_MAX, 7, "out of range");
  st.pos = (uint32_t)pos;
  st.attempts = (uint32_t)attempts;
  st.started_us = luaL_checkinteger(L, 8);
  st.duration_us = luaL_checkinteger(L, 9);
  int has_value = !lua_isnoneornil(L, 10);
  fill_ctx c = {L, 10, 0, st.status == STORE_STEP_COMPLETED ? "result" : "error"};
  char err[512];
  int rc = pb ? pgstore_put_step(pb, run, rn, &st, has_value ? fill_lua : NULL, &c, err, sizeof err)
              : store_put_step(b, run, rn, &st, has_value ? fill_lua : NULL, &c, err, sizeof err);
  if (rc) return l_store_fail(L, rc, err);
  lua_settop(L, 1);
  return 1;
}

static int fill_bytes(void *ud, sbuf *out, char *err, size_t errsz) {
  (void)err, (void)errsz;
  const store_step *st = ud;
  sbuf_add(out, st->payload, st->payload_len);
  return 0;
}

/* b:copy_steps(from_run, to_run, ids) -> b: the records of those steps of
 * from_run, as they are, under to_run (a rerun reusing them) */
static int cmp_id(const void *key, const void *elem) {
  const store_step *x = key, *y = elem;
  size_t n = x->id_len < y->id_len ? x->id_len : y->id_len;
  int c = memcmp(x->id, y->id, n);
  return c ? c : (x->id_len > y->id_len) - (x->id_len < y->id_len);
}

/* PostgreSQL: the steps of from_run were read at once (in id order); put
 * each one asked for under to_run, in the batch (argument 1, still open) */
static int push_pg_copied(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  if (!pb) return luaL_argerror(L, 1, "the batch changed backend while copying steps");
  size_t tn;
  const char *from = lua_tostring(L, 2), *to = lua_tolstring(L, 3, &tn);
  char err[512];
  lua_Integer n = luaL_len(L, 4);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 4, i);
    store_step key;
    key.id = luaL_checklstring(L, -1, &key.id_len);
    const store_step *st = bsearch(&key, r->steps.v, r->steps.n, sizeof *r->steps.v, cmp_id);
    if (!st) return luaL_error(L, "copy_steps: run %s has no step '%s'", from, key.id);
    int rc = pgstore_put_step(pb, to, tn, st, st->has_payload ? fill_bytes : NULL, (void *)st,
                              err, sizeof err);
    if (rc) return l_store_fail(L, rc, err);
    lua_pop(L, 1);
  }
  lua_settop(L, 1);
  return 1;
}

/* b:copy_steps on PostgreSQL: one read of the steps asked for */
static int copy_steps_pg(lua_State *L, pgstore *pg) {
  size_t fn;
  const char *from = lua_tolstring(L, 2, &fn);
  lua_Integer n = luaL_len(L, 4);
  if (n == 0) {
    lua_settop(L, 1);
    return 1;
  }
  const char **ids = lua_newuserdatauv(L, (size_t)n * (sizeof *ids + sizeof(size_t)), 0);
  size_t *lens = (size_t *)(ids + n);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 4, i);
    ids[i - 1] = luaL_checklstring(L, -1, &lens[i - 1]); /* alive: the table holds it */
    lua_pop(L, 1);
  }
  l_pgread *r = l_store_pgread(L);
  pgstore_get_steps(pg, from, fn, ids, lens, (size_t)n, &r->steps, l_store_pgread_done, r);
  return l_store_await(L, r, push_pg_copied);
}

static int l_copy_steps(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  if (pb) {
    luaL_checkstring(L, 2);
    luaL_checkstring(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    return copy_steps_pg(L, l_store_pg(L));
  }
  store_batch *b = l_store_check_batch(L, 1);
  size_t fn, tn;
  const char *from = luaL_checklstring(L, 2, &fn);
  const char *to = luaL_checklstring(L, 3, &tn);
  luaL_checktype(L, 4, LUA_TTABLE);
  store *s = l_store_get(L);
  holder *h = holder_new(L);
  char err[512];
  lua_Integer n = luaL_len(L, 4);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 4, i);
    size_t idn;
    const char *id = luaL_checklstring(L, -1, &idn);
    store_steps_free(&h->steps);
    int rc = store_get_step(s, from, fn, id, idn, &h->steps, err, sizeof err);
    if (rc) return l_store_fail(L, rc, err);
    if (h->steps.n == 0) return luaL_error(L, "copy_steps: run %s has no step '%s'", from, id);
    const store_step *st = &h->steps.v[0];
    rc = store_put_step(b, to, tn, st, st->has_payload ? fill_bytes : NULL, (void *)st, err, sizeof err);
    if (rc) return l_store_fail(L, rc, err);
    lua_pop(L, 1);
  }
  lua_settop(L, 1);
  return 1;
}

/* ---- run logs ---------------------------------------------------------- */

/* b:put_log(run, us, seq, line_json) -> b */
static int l_put_log(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  size_t rn, ln;
  const char *run = luaL_checklstring(L, 2, &rn);
  lua_Integer us = luaL_checkinteger(L, 3), seq = luaL_checkinteger(L, 4);
  const char *line = luaL_checklstring(L, 5, &ln);
  char err[256];
  if ((pb ? pgstore_put_log(pb, run, rn, us, (uint32_t)seq, line, ln, err, sizeof err)
         : store_put_log(b, run, rn, us, (uint32_t)seq, line, ln, err, sizeof err)) != 0)
    return luaL_error(L, "put_log: %s", err);
  lua_settop(L, 1);
  return 1;
}

/* b:del_log(run, us, seq) -> b */
static int l_del_log(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  size_t rn;
  const char *run = luaL_checklstring(L, 2, &rn);
  lua_Integer us = luaL_checkinteger(L, 3), seq = luaL_checkinteger(L, 4);
  if (pb) {
    pgstore_del_log(pb, run, rn, us, (uint32_t)seq);
  } else {
    store_del_log(b, run, rn, us, (uint32_t)seq);
  }
  lua_settop(L, 1);
  return 1;
}

/* the lines of run (argument 1) read: decoded, or their (us, seq) pairs */
static int push_logs(lua_State *L, const store_rows *rows, const int64_t *ids) {
  const char *run = lua_tostring(L, 1);
  char err[512];
  lua_createtable(L, (int)rows->n * (ids ? 2 : 1), 0);
  for (size_t i = 0; i < rows->n; i++) {
    if (ids) {
      lua_pushinteger(L, ids[2 * i]);
      lua_rawseti(L, -2, (lua_Integer)(2 * i + 1));
      lua_pushinteger(L, ids[2 * i + 1]);
      lua_rawseti(L, -2, (lua_Integer)(2 * i + 2));
      continue;
    }
    if (codec_decode_ex(L, rows->buf.data + rows->off[i], rows->len[i], CODEC_RECORD, err,
                        sizeof err) != 0) {
      return l_store_fail(L, STORE_EBADSTORE,
                          lua_pushfstring(L, "a log line of run %s does not decode: %s", run, err));
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int push_pg_lines(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  return push_logs(L, &r->runs, NULL);
}
static int push_pg_log_ids(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  return push_logs(L, &r->runs, r->ids);
}

static int read_logs(lua_State *L, int ids) {
  size_t rn;
  const char *run = luaL_checklstring(L, 1, &rn);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_read_logs(pg, run, rn, &r->runs, ids ? &r->ids : NULL, l_store_pgread_done, r);
    return l_store_await(L, r, ids ? push_pg_log_ids : push_pg_lines);
  }
  store *s = l_store_get(L);
  holder *h = holder_new(L);
  char err[512];
  int rc = store_read_logs(s, run, rn, &h->rows, ids ? &h->ids : NULL, err, sizeof err);
  if (rc) return l_store_fail(L, rc, err);
  return push_logs(L, &h->rows, ids ? h->ids : NULL);
}

/* read_logs(run) -> decoded lines, oldest first */
static int l_read_logs(lua_State *L) { return read_logs(L, 0); }
/* log_ids(run) -> {us, seq, us, seq, ...}, oldest first */
static int l_log_ids(lua_State *L) { return read_logs(L, 1); }

/* ---- idempotency keys -------------------------------------------------- */

/* get_idempotency(ns, pipeline, key) -> run id | nil */
static int push_run_id(lua_State *L, int rc, const char *err, int found, const sbuf *buf) {
  if (rc) return l_store_fail(L, rc, err);
  if (found) {
    lua_pushlstring(L, buf->data ? buf->data : "", buf->len);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

static int push_pg_run_id(lua_State *L, l_pgread *r) {
  return push_run_id(L, r->status, r->err, r->found, &r->rec);
}

static int l_get_idempotency(lua_State *L) {
  const char *ns = luaL_checkstring(L, 1), *pipeline = luaL_checkstring(L, 2);
  size_t kn;
  const char *key = luaL_checklstring(L, 3, &kn);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_get_idempotency(pg, ns, pipeline, key, kn, &r->rec, &r->found, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_run_id);
  }
  store *s = l_store_get(L);
  holder *h = holder_new(L);
  int found = 0;
  char err[512];
  int rc = store_get_idempotency(s, ns, pipeline, key, kn, &h->buf, &found, err, sizeof err);
  return push_run_id(L, rc, err, found, &h->buf);
}

/* b:put_idempotency(ns, pipeline, key, run_id) -> b */
static int l_put_idempotency(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  const char *ns = luaL_checkstring(L, 2), *pipeline = luaL_checkstring(L, 3);
  size_t kn;
  const char *key = luaL_checklstring(L, 4, &kn);
  const char *run = luaL_checkstring(L, 5);
  char err[256];
  if ((pb ? pgstore_put_idempotency(pb, ns, pipeline, key, kn, run, err, sizeof err)
         : store_put_idempotency(b, ns, pipeline, key, kn, run, err, sizeof err)) != 0)
    return luaL_error(L, "put_idempotency: %s", err);
  lua_settop(L, 1);
  return 1;
}

void l_store_runs(lua_State *L, int module_idx, int methods_idx) {
  static const luaL_Reg fns[] = {{"get_run", l_get_run},
                                 {"runs", l_runs},
                                 {"unfinished_runs", l_unfinished_runs},
                                 {"runs_indexed", l_runs_indexed},
                                 {"set_run_observer", l_set_run_observer},
                                 {"load_steps", l_load_steps},
                                 {"get_steps", l_get_steps},
                                 {"get_step", l_get_step},
                                 {"read_logs", l_read_logs},
                                 {"log_ids", l_log_ids},
                                 {"get_idempotency", l_get_idempotency},
                                 {NULL, NULL}};
  static const luaL_Reg methods[] = {{"put_run", l_put_run},
                                     {"index_runs", l_index_runs},
                                     {"put_step", l_put_step},
                                     {"copy_steps", l_copy_steps},
                                     {"put_log", l_put_log},
                                     {"del_log", l_del_log},
                                     {"put_idempotency", l_put_idempotency},
                                     {NULL, NULL}};
  luaL_newmetatable(L, HOLDER_MT);
  lua_pushcfunction(L, holder_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_newtable(L); /* record table -> indexed status, weak keys */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, STATUS_KEY);
  lua_pushvalue(L, module_idx);
  luaL_setfuncs(L, fns, 0);
  lua_pushliteral(L, STORE_DEFAULT_NS); /* of runs started without one */
  lua_setfield(L, -2, "DEFAULT_NS");
  lua_pushvalue(L, methods_idx);
  luaL_setfuncs(L, methods, 0);
  lua_pop(L, 2);
}
