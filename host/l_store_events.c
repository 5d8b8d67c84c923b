/* l_store_events.c: "sluice._store" operations on events of the stream with
 * their per-key index and trim marks, sends with their dispatch cursor, and
 * consumers' checkpoints (store.h). Rows come back in C memory held by a
 * box userdata (freed by __gc if pushing them raises), then become Lua
 * values; an event is {id, type, stream, ts, data}.
 *
 *   store.read_events{stream= | prefix=, after=seq, limit=} -> events, next_id
 *   store.events_last() -> seq, ts_us      store.events_after_time(us) -> seq
 *   store.events_trimmed{stream= | prefix=, after=seq} -> bool
 *   store.stream_keys{prefix=, after=key, limit=} -> {key, ...}
 *   store.event_id(seq) -> id              store.event_seq(id) -> seq | nil
 *   store.sends{after=, limit=} -> {{seq=, id=, name=, data=, ts=}, ...}
 *   store.sends_last() -> seq              store.dispatch_cursor() -> seq
 *   store.consumer(name) -> state | nil    store.consumers() -> {state, ...}
 *   b:append_events(list, first_seq, first_ts_us)  list of {type, stream, data}
 *   b:trim_events{stream= | prefix=, after=, before_us=, keep=, limit=} -> n, last, more
 *   b:put_send(seq, {name=, data=, ts=}) -> id
 *   b:set_dispatch_cursor(seq)             b:put_consumer(name, state)
 *   b:step_positions(run_id, step_id, "events" | "send")   PostgreSQL only:
 *       the step put in b gets the positions the commit allocates (store_pg.h)
 * Reads fail with nil, "CODE: message", "CODE"; a value that cannot be
 * stored raises with what is wrong (the caller names the event). */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "l_store.h"
#include "sbuf.h"

#define BOX_MT "sluice.store_events_rows" /* not ROWS_MT of l_store.c */

typedef struct {
  store_events ev;
  store_blob_rows rows;
  store_keys keys;
} box;

static int box_gc(lua_State *L) {
  box *x = luaL_checkudata(L, 1, BOX_MT);
  store_events_free(&x->ev);
  store_blob_rows_free(&x->rows);
  store_keys_free(&x->keys);
  return 0;
}

static box *new_box(lua_State *L) {
  box *x = lua_newuserdatauv(L, sizeof *x, 0);
  x->ev = (store_events)STORE_EVENTS_INIT;
  x->rows = (store_blob_rows)STORE_BLOB_ROWS_INIT;
  x->keys = (store_keys)STORE_KEYS_INIT;
  if (luaL_newmetatable(L, BOX_MT)) {
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return x;
}

static uint64_t opt_seq(lua_State *L, int t, const char *field) {
  lua_getfield(L, t, field);
  lua_Integer v = luaL_optinteger(L, -1, 0);
  if (v < 0) luaL_error(L, "%s must be a position >= 0", field);
  lua_pop(L, 1);
  return (uint64_t)v;
}

static size_t opt_limit(lua_State *L, int t, lua_Integer def) {
  lua_getfield(L, t, "limit");
  lua_Integer v = luaL_optinteger(L, -1, def);
  if (v < 1) luaL_error(L, "limit must be a positive integer");
  lua_pop(L, 1);
  return (size_t)v;
}

/* the stream= (one key) or prefix= of the options at t */
static const char *which_stream(lua_State *L, int t, size_t *n, int *exact) {
  lua_getfield(L, t, "stream");
  lua_getfield(L, t, "prefix");
  if (!lua_isnil(L, -2) && !lua_isnil(L, -1)) luaL_error(L, "give stream= or prefix=, not both");
  *exact = !lua_isnil(L, -2);
  const char *s = lua_isnil(L, -2) && lua_isnil(L, -1) ? (*n = 0, "")
                  : luaL_checklstring(L, *exact ? -2 : -1, n);
  lua_pop(L, 2); /* s stays alive: it is a field of the options table */
  return s;
}

static void push_id(lua_State *L, uint64_t seq) {
  char id[STORE_EVENT_ID_LEN + 1];
  store_event_id(seq, id);
  lua_pushlstring(L, id, STORE_EVENT_ID_LEN);
}

/* The event id of seq (16 lowercase hex digits, store_event_id's text)
 * into id, without snprintf: a page of 1,000 events formatted 2,000 times. */
static void hex_id(uint64_t seq, char id[STORE_EVENT_ID_LEN]) {
  static const char digits[] = "0123456789abcdef";
  for (int i = STORE_EVENT_ID_LEN - 1; i >= 0; i--, seq >>= 4) id[i] = digits[seq & 15];
}

static void put2(char *p, int v) {
  p[0] = (char)('0' + v / 10 % 10);
  p[1] = (char)('0' + v % 10);
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" of ts_us into out (24 bytes), or -1 for a time
 * gmtime cannot give */
static int ts_text(int64_t ts_us, char out[24]) {
  time_t t = (time_t)(ts_us / 1000000);
  struct tm tm;
  if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) return -1;
  int y = tm.tm_year + 1900;
  put2(out, y / 100);
  put2(out + 2, y % 100);
  out[4] = '-';
  put2(out + 5, tm.tm_mon + 1);
  out[7] = '-';
  put2(out + 8, tm.tm_mday);
  out[10] = 'T';
  put2(out + 11, tm.tm_hour);
  out[13] = ':';
  put2(out + 14, tm.tm_min);
  out[16] = ':';
  put2(out + 17, tm.tm_sec);
  out[19] = '.';
  int ms = (int)(ts_us % 1000000 / 1000);
  out[20] = (char)('0' + ms / 100);
  put2(out + 21, ms % 100);
  out[23] = 'Z';
  return 0;
}

/* What pushing a page reuses from one event to the next: the field names
 * and the last type, stream and time text pushed (stack slots from base),
 * so that events of one key and one millisecond share their strings
 * instead of interning them again. */
enum { K_ID, K_TYPE, K_STREAM, K_TS, K_DATA, LAST_TYPE, LAST_STREAM, LAST_TS, PAGE_SLOTS };
typedef struct {
  int base;
  const char *type, *stream; /* the bytes of the last pushed (in the page's rows) */
  size_t typen, streamn;
  int64_t ts_ms; /* INT64_MIN: none yet */
} page_cache;

static void page_begin(lua_State *L, page_cache *c) {
  luaL_checkstack(L, PAGE_SLOTS + 8, "reading events");
  c->base = lua_gettop(L) + 1;
  static const char *const names[] = {"id", "type", "stream", "ts", "data"};
  for (int i = 0; i < 5; i++) lua_pushstring(L, names[i]);
  for (int i = 0; i < 3; i++) lua_pushnil(L);
  c->type = c->stream = NULL;
  c->typen = c->streamn = 0;
  c->ts_ms = INT64_MIN;
}

/* pushes the string bytes, or the one at slot `last` if it has the same */
static void push_cached(lua_State *L, const page_cache *c, int last, const char **prev,
                        size_t *prevn, const char *p, size_t n) {
  if (*prev && *prevn == n && memcmp(*prev, p, n) == 0) {
    lua_pushvalue(L, c->base + last);
    return;
  }
  lua_pushlstring(L, p, n);
  lua_pushvalue(L, -1);
  lua_replace(L, c->base + last);
  *prev = p;
  *prevn = n;
}

/* Pushes {id, type, stream, ts, data}: each field's name, then its value,
 * then rawset (no stack rotation). */
static int push_event(lua_State *L, page_cache *c, const store_event *e, char *err, size_t errsz) {
  lua_createtable(L, 0, 5);
  char id[STORE_EVENT_ID_LEN];
  hex_id(e->seq, id);
  lua_pushvalue(L, c->base + K_ID);
  lua_pushlstring(L, id, STORE_EVENT_ID_LEN);
  lua_rawset(L, -3);
  lua_pushvalue(L, c->base + K_TYPE);
  push_cached(L, c, LAST_TYPE, &c->type, &c->typen, e->type, e->typen);
  lua_rawset(L, -3);
  lua_pushvalue(L, c->base + K_STREAM);
  push_cached(L, c, LAST_STREAM, &c->stream, &c->streamn, e->stream, e->streamn);
  lua_rawset(L, -3);
  lua_pushvalue(L, c->base + K_TS);
  int64_t ms = e->ts_us / 1000;
  if (ms == c->ts_ms) {
    lua_pushvalue(L, c->base + LAST_TS);
  } else {
    char ts[96];
    if (ts_text(e->ts_us, ts) == 0) {
      lua_pushlstring(L, ts, 24);
    } else { /* a year outside 0..9999: as printf writes it */
      time_t t = (time_t)(e->ts_us / 1000000);
      struct tm tm;
      if (!gmtime_r(&t, &tm)) memset(&tm, 0, sizeof tm);
      snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
               tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(e->ts_us % 1000000 / 1000));
      lua_pushstring(L, ts);
    }
    lua_pushvalue(L, -1);
    lua_replace(L, c->base + LAST_TS);
    c->ts_ms = ms;
  }
  lua_rawset(L, -3);
  lua_pushvalue(L, c->base + K_DATA);
  if (codec_decode(L, e->data, e->datan, err, errsz) != 0) {
    lua_pop(L, 2);
    return -1;
  }
  lua_rawset(L, -3);
  return 0;
}

/* read_events{stream= | prefix=, after=, limit=} -> events, next id (nil
 * at the start): the id of the last event read, else of the last position
 * examined, so the next page starts after it. */
static int push_events(lua_State *L, store_events *ev) {
  char err[512];
  page_cache c;
  page_begin(L, &c);
  lua_createtable(L, (int)(ev->n < INT32_MAX ? ev->n : 0), 0);
  for (size_t i = 0; i < ev->n; i++) {
    if (push_event(L, &c, &ev->rows[i], err, sizeof err) != 0) {
      char msg[700];
      snprintf(msg, sizeof msg, "the data of event %016llx: %s",
               (unsigned long long)ev->rows[i].seq, err);
      return l_store_fail(L, STORE_EBADSTORE, msg);
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  uint64_t next = ev->n ? ev->rows[ev->n - 1].seq : ev->last;
  if (ev->bcap > (4u << 20)) store_events_free(ev); /* a huge page: give it back */
  if (next) {
    push_id(L, next);
  } else {
    lua_pushnil(L);
  }
  return 2;
}

static int push_pg_events(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  return push_events(L, &r->ev);
}

static int l_read_events(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  store_event_query q;
  q.stream = which_stream(L, 1, &q.streamn, &q.exact);
  q.after = opt_seq(L, 1, "after");
  q.limit = opt_limit(L, 1, 1000);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_read_events(pg, &q, &r->ev, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_events);
  }
  /* the rows of every read go to one box kept between reads (an upvalue):
   * paging a stream allocates nothing in C after the first page */
  box *x = lua_touserdata(L, lua_upvalueindex(1));
  char err[512];
  int st = store_read_events(l_store_get(L), &q, &x->ev, err, sizeof err);
  if (st) return l_store_fail(L, st, err);
  return push_events(L, &x->ev);
}

/* PostgreSQL reads of one value: seq (and ts), a position, a flag */
static int push_pg_seq_ts(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  lua_pushinteger(L, (lua_Integer)r->seq);
  lua_pushinteger(L, (lua_Integer)r->i64);
  return 2;
}
static int push_pg_seq(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  lua_pushinteger(L, (lua_Integer)r->seq);
  return 1;
}
static int push_pg_flag(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  lua_pushboolean(L, r->flag);
  return 1;
}

static int l_events_last(lua_State *L) {
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_events_last(pg, &r->seq, &r->i64, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_seq_ts);
  }
  uint64_t seq;
  int64_t ts;
  char err[512];
  int st = store_events_last(l_store_get(L), &seq, &ts, err, sizeof err);
  if (st) return l_store_fail(L, st, err);
  lua_pushinteger(L, (lua_Integer)seq);
  lua_pushinteger(L, (lua_Integer)ts);
  return 2;
}

static int l_events_after_time(lua_State *L) {
  lua_Integer us = luaL_checkinteger(L, 1);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_events_after_time(pg, (int64_t)us, &r->seq, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_seq);
  }
  uint64_t after;
  char err[512];
  int st = store_events_after_time(l_store_get(L), (int64_t)us, &after, err, sizeof err);
  if (st) return l_store_fail(L, st, err);
  lua_pushinteger(L, (lua_Integer)after);
  return 1;
}

static int l_events_trimmed(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  size_t n;
  int exact, trimmed;
  const char *s = which_stream(L, 1, &n, &exact);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_events_trimmed(pg, s, n, exact, opt_seq(L, 1, "after"), &r->flag, l_store_pgread_done,
                           r);
    return l_store_await(L, r, push_pg_flag);
  }
  char err[512];
  int st = store_events_trimmed(l_store_get(L), s, n, exact, opt_seq(L, 1, "after"), &trimmed,
                                err, sizeof err);
  if (st) return l_store_fail(L, st, err);
  lua_pushboolean(L, trimmed);
  return 1;
}

static void push_keys(lua_State *L, const store_keys *k) {
  lua_createtable(L, (int)k->n, 0);
  for (size_t i = 0; i < k->n; i++) {
    lua_pushlstring(L, k->keys[i].key, k->keys[i].len);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

static int push_pg_keys(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  push_keys(L, &r->keys);
  return 1;
}

static int l_stream_keys(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  size_t pn = 0, an = 0;
  lua_getfield(L, 1, "prefix");
  const char *prefix = luaL_optlstring(L, -1, "", &pn);
  lua_getfield(L, 1, "after");
  const char *after = luaL_optlstring(L, -1, "", &an);
  size_t limit = opt_limit(L, 1, 100);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_stream_keys(pg, prefix, pn, after, an, limit, &r->keys, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_keys);
  }
  box *x = new_box(L);
  char err[512];
  int st = store_stream_keys(l_store_get(L), prefix, pn, after, an, limit, &x->keys, err,
                             sizeof err);
  if (st) {
    store_keys_free(&x->keys);
    return l_store_fail(L, st, err);
  }
  push_keys(L, &x->keys);
  store_keys_free(&x->keys);
  return 1;
}

static int l_event_id(lua_State *L) {
  lua_Integer seq = luaL_checkinteger(L, 1);
  luaL_argcheck(L, seq >= 0, 1, "a position is >= 0");
  push_id(L, (uint64_t)seq);
  return 1;
}

static int l_event_seq(lua_State *L) {
  size_t n = 0;
  const char *id = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
  uint64_t seq;
  if (!id || store_event_seq(id, n, &seq) != 0 || seq > (uint64_t)INT64_MAX) {
    lua_pushnil(L);
  } else {
    lua_pushinteger(L, (lua_Integer)seq);
  }
  return 1;
}

/* b:append_events(list, first_seq, first_ts_us) -> b: the events {type,
 * stream, data} of list at positions first_seq, first_seq + 1, ... (times
 * first_ts_us + i - 1). Everything is checked and encoded before anything
 * is added: a bad type, key or value raises "event i: ..." and leaves b as
 * it was. */
static int l_append_events(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer first = luaL_checkinteger(L, 3);
  lua_Integer ts0 = luaL_checkinteger(L, 4);
  lua_Integer n = luaL_len(L, 2);
  /* encoded data of each event, one after the other; ends[i] is where the
   * i-th ends (codec_encode reports errors, it does not raise) */
  sbuf data = SBUF_INIT;
  size_t *ends = n > 0 ? malloc((size_t)n * sizeof *ends) : NULL;
  if (n > 0 && !ends) return luaL_error(L, "out of memory");
  char err[512];
  const char *what = NULL;
  lua_Integer bad = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    if (!lua_istable(L, -1)) {
      what = "is not a table {type, stream_key, data}";
      bad = i;
      lua_pop(L, 1);
      break;
    }
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    lua_rawgeti(L, -3, 3);
    size_t tn = 0, kn = 0;
    const char *t = lua_type(L, -3) == LUA_TSTRING ? lua_tolstring(L, -3, &tn) : NULL;
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &kn) : NULL;
    if (!t) {
      what = "type must be a string";
    } else if (!k) {
      what = "stream key must be a string";
    } else if (store_event_check(t, tn, k, kn, err, sizeof err) != 0) {
      what = err;
    } else if (lua_isnil(L, -1)) {
      sbuf_adds(&data, "null");
    } else if (codec_encode(L, lua_gettop(L), "data", 0, &data, err, sizeof err) != 0) {
      what = err;
    }
    lua_pop(L, 4);
    if (what) {
      bad = i;
      break;
    }
    ends[i - 1] = data.len;
  }
  if (what) {
    sbuf_free(&data);
    free(ends);
    return luaL_error(L, "event %d: %s", (int)bad, what);
  }
  size_t start = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    size_t tn, kn;
    const char *t = lua_tolstring(L, -2, &tn);
    const char *k = lua_tolstring(L, -1, &kn);
    /* checked above: cannot fail */
    if (pb) { /* the commit allocates positions */
      pgstore_append_event(pb, (int64_t)(ts0 + i - 1), t, tn, k, kn, data.data + start,
                           ends[i - 1] - start, err, sizeof err);
    } else {
      store_append_event(b, (uint64_t)(first + i - 1), (int64_t)(ts0 + i - 1), t, tn, k, kn,
                         data.data + start, ends[i - 1] - start, err, sizeof err);
    }
    start = ends[i - 1];
    lua_pop(L, 3);
  }
  sbuf_free(&data);
  free(ends);
  lua_settop(L, 1);
  return 1;
}

/* b:trim_events{...} -> n, last, more | nil, msg, code (store.h's
 * store_trim_events: before_us= for events older than a time, keep= with
 * stream= for a key's events beyond its newest keep) */
static int push_pg_trim(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  lua_pushinteger(L, (lua_Integer)r->trim.n);
  lua_pushinteger(L, (lua_Integer)r->trim.last);
  lua_pushboolean(L, r->trim.more);
  return 3;
}

static int l_trim_events(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  store_trim_query q;
  q.stream = which_stream(L, 2, &q.streamn, &q.exact);
  q.after = opt_seq(L, 2, "after");
  lua_getfield(L, 2, "before_us");
  q.before_us = (int64_t)luaL_optinteger(L, -1, 0);
  lua_getfield(L, 2, "keep");
  q.keep = (int64_t)luaL_optinteger(L, -1, -1);
  lua_pop(L, 2);
  q.limit = opt_limit(L, 2, 1000);
  if (pb) {
    /* the query's key is a field of the options table: alive while the
     * coroutine waits, as r->tq is */
    l_pgread *r = l_store_pgread(L);
    r->tq = q;
    pgstore_trim_events(l_store_pg(L), pb, &r->tq, &r->trim, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_trim);
  }
  size_t n;
  uint64_t last;
  int more;
  char err[512];
  int st = store_trim_events(l_store_get(L), b, &q, &n, &last, &more, err, sizeof err);
  if (st) return l_store_fail(L, st, err);
  lua_pushinteger(L, (lua_Integer)n);
  lua_pushinteger(L, (lua_Integer)last);
  lua_pushboolean(L, more);
  return 3;
}

/* b:put_send(seq, {name=, data=, ts=}) -> id. A value that cannot be
 * stored raises "event.data.f: cannot store a function". */
static int l_put_send(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  lua_Integer seq = pb ? 0 : luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  sbuf rec = SBUF_INIT;
  char err[512];
  if (codec_encode(L, 3, "event", CODEC_RECORD, &rec, err, sizeof err) != 0) {
    sbuf_free(&rec);
    return luaL_error(L, "%s", err);
  }
  if (pb) { /* its position is the commit's (b:commit() returns it) */
    pgstore_put_send(pb, rec.data, rec.len);
    sbuf_free(&rec);
    return 0;
  }
  store_put_send(b, (uint64_t)seq, rec.data, rec.len);
  sbuf_free(&rec);
  push_id(L, (uint64_t)seq);
  return 1;
}

/* b:step_positions(run_id, step_id, "events" | "send") -> b: on a
 * PostgreSQL batch, the step (put in b before) records the ids of b's
 * events, or {seq = b's send}, as the commit allocates them. An LMDB batch
 * has no use for it: its positions are the caller's, known before. */
static int l_step_positions(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  size_t rn, sn;
  const char *run = luaL_checklstring(L, 2, &rn);
  const char *step = luaL_checklstring(L, 3, &sn);
  static const char *const kinds[] = {"events", "send", NULL};
  int kind = luaL_checkoption(L, 4, NULL, kinds) == 0 ? PGSTORE_EVENT_IDS : PGSTORE_FIRST_SEND;
  if (!pb) {
    return luaL_error(L, "step_positions is for a PostgreSQL batch: on LMDB the caller allocates "
                         "positions and records them itself");
  }
  if (pgstore_step_positions(pb, run, rn, step, sn, kind) != 0) {
    return luaL_error(L, "step_positions: a run or step id holds a NUL byte");
  }
  lua_settop(L, 1);
  return 1;
}

/* pushes the decoded JSON records of rows: sends get seq and id fields */
static int push_rows(lua_State *L, box *x, int sends) {
  char err[512];
  lua_createtable(L, (int)x->rows.n, 0);
  for (size_t i = 0; i < x->rows.n; i++) {
    const store_row *r = &x->rows.rows[i];
    if (codec_decode_ex(L, r->json, r->jsonn, CODEC_RECORD, err, sizeof err) != 0 ||
        !lua_istable(L, -1)) {
      char msg[800];
      if (sends) {
        snprintf(msg, sizeof msg, "the send %016llx is corrupt: %s", (unsigned long long)r->seq,
                 lua_istable(L, -1) ? err : "not an object");
      } else {
        snprintf(msg, sizeof msg, "the checkpoint of consumer '%.*s' is corrupt: %s",
                 (int)(r->namen > 200 ? 200 : r->namen), r->name,
                 lua_istable(L, -1) ? err : "not an object");
      }
      store_blob_rows_free(&x->rows);
      return l_store_fail(L, STORE_EBADSTORE, msg);
    }
    if (sends) {
      lua_pushinteger(L, (lua_Integer)r->seq);
      lua_setfield(L, -2, "seq");
      push_id(L, r->seq);
      lua_setfield(L, -2, "id");
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  store_blob_rows_free(&x->rows);
  return 1;
}

static int push_pg_sends(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  box *x = new_box(L);
  x->rows = r->rows; /* the box frees them if pushing raises */
  r->rows = (store_blob_rows)STORE_BLOB_ROWS_INIT;
  return push_rows(L, x, 1);
}

static int push_pg_consumers(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  box *x = new_box(L);
  x->rows = r->rows;
  r->rows = (store_blob_rows)STORE_BLOB_ROWS_INIT;
  return push_rows(L, x, 0);
}

static int push_pg_consumer(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  if (!r->found) {
    lua_pushnil(L);
    return 1;
  }
  int n = push_pg_consumers(L, r);
  if (n != 1) return n;
  lua_rawgeti(L, -1, 1);
  return 1;
}

static int l_sends(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  uint64_t after = opt_seq(L, 1, "after");
  size_t limit = opt_limit(L, 1, 256);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_sends(pg, after, limit, &r->rows, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_sends);
  }
  box *x = new_box(L);
  char err[512];
  int st = store_sends(l_store_get(L), after, limit, &x->rows, err, sizeof err);
  if (st) {
    store_blob_rows_free(&x->rows);
    return l_store_fail(L, st, err);
  }
  return push_rows(L, x, 1);
}

static int l_sends_last(lua_State *L) {
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_sends_last(pg, &r->seq, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_seq);
  }
  uint64_t seq;
  char err[512];
  int st = store_sends_last(l_store_get(L), &seq, err, sizeof err);
  if (st) return l_store_fail(L, st, err);
  lua_pushinteger(L, (lua_Integer)seq);
  return 1;
}

static int l_dispatch_cursor(lua_State *L) {
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_dispatch_cursor(pg, &r->seq, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_seq);
  }
  uint64_t seq;
  char err[512];
  int st = store_dispatch_cursor(l_store_get(L), &seq, err, sizeof err);
  if (st) return l_store_fail(L, st, err);
  lua_pushinteger(L, (lua_Integer)seq);
  return 1;
}

static int l_set_dispatch_cursor(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  lua_Integer seq = luaL_checkinteger(L, 2);
  luaL_argcheck(L, seq >= 0, 2, "a position is >= 0");
  if (pb) {
    pgstore_set_dispatch_cursor(pb, (uint64_t)seq);
  } else {
    store_set_dispatch_cursor(b, (uint64_t)seq);
  }
  lua_settop(L, 1);
  return 1;
}

static const char *check_name(lua_State *L, int idx, size_t *n) {
  const char *name = luaL_checklstring(L, idx, n);
  luaL_argcheck(L, *n > 0, idx, "a consumer name is not empty");
  return name;
}

static int l_put_consumer(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  size_t n;
  const char *name = check_name(L, 2, &n);
  luaL_checktype(L, 3, LUA_TTABLE);
  sbuf rec = SBUF_INIT;
  char err[512];
  if (codec_encode(L, 3, "consumer", CODEC_RECORD, &rec, err, sizeof err) != 0) {
    sbuf_free(&rec);
    return luaL_error(L, "%s", err);
  }
  int bad = pb ? pgstore_put_consumer(pb, name, n, rec.data, rec.len)
               : (store_put_consumer(b, name, n, rec.data, rec.len), 0);
  sbuf_free(&rec);
  if (bad) return luaL_argerror(L, 2, "a consumer name holds no NUL byte on PostgreSQL");
  lua_settop(L, 1);
  return 1;
}

static int l_consumer(lua_State *L) {
  size_t n;
  const char *name = check_name(L, 1, &n);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_get_consumer(pg, name, n, &r->rows, &r->found, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_consumer);
  }
  box *x = new_box(L);
  char err[512];
  int found;
  int st = store_get_consumer(l_store_get(L), name, n, &x->rows, &found, err, sizeof err);
  if (st) {
    store_blob_rows_free(&x->rows);
    return l_store_fail(L, st, err);
  }
  if (!found) {
    lua_pushnil(L);
    return 1;
  }
  int r = push_rows(L, x, 0);
  if (r != 1) return r;
  lua_rawgeti(L, -1, 1);
  return 1;
}

static int l_consumers(lua_State *L) {
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_consumers(pg, &r->rows, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_consumers);
  }
  box *x = new_box(L);
  char err[512];
  int st = store_consumers(l_store_get(L), &x->rows, err, sizeof err);
  if (st) {
    store_blob_rows_free(&x->rows);
    return l_store_fail(L, st, err);
  }
  return push_rows(L, x, 0);
}

void l_store_events(lua_State *L, int module_idx, int methods_idx) {
  static const luaL_Reg fns[] = {{"events_last", l_events_last},
                                 {"events_after_time", l_events_after_time},
                                 {"events_trimmed", l_events_trimmed},
                                 {"stream_keys", l_stream_keys},
                                 {"event_id", l_event_id},
                                 {"event_seq", l_event_seq},
                                 {"sends", l_sends},
                                 {"sends_last", l_sends_last},
                                 {"dispatch_cursor", l_dispatch_cursor},
                                 {"consumer", l_consumer},
                                 {"consumers", l_consumers},
                                 {NULL, NULL}};
  static const luaL_Reg methods[] = {{"append_events", l_append_events},
                                     {"trim_events", l_trim_events},
                                     {"put_send", l_put_send},
                                     {"set_dispatch_cursor", l_set_dispatch_cursor},
                                     {"put_consumer", l_put_consumer},
                                     {"step_positions", l_step_positions},
                                     {NULL, NULL}};
  lua_pushvalue(L, module_idx);
  luaL_setfuncs(L, fns, 0);
  new_box(L);
  lua_pushcclosure(L, l_read_events, 1);
  lua_setfield(L, -2, "read_events");
  lua_pushvalue(L, methods_idx);
  luaL_setfuncs(L, methods, 0);
  lua_pop(L, 2);
}
