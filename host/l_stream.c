/* l_stream.c: reading the event log into Lua tables in C (part of
 * "sluice._store"). lua/stream.lua owns the record format and the policy;
 * this file only walks LMDB cursors and builds {id, type, stream, ts, data}
 * tables inside one read transaction, because doing it in Lua cost a
 * string.unpack, a decode call and an ISO time call per event (~2 us).
 *
 * Event record (lua/stream.lua): int64 LE ts_us, uint16 LE length + type,
 * uint16 LE length + stream, then the JSON of data. Log key: be64 seq.
 * Index key: stream "\0" be64 seq. */
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "l_store.h"
#include "sbuf.h"
#include "writer.h"

typedef struct {
  int64_t ts;
  const char *type, *stream, *data;
  size_t typen, streamn, datan;
} event_rec;

static int parse_event(const unsigned char *v, size_t n, event_rec *e) {
  if (n < 12) return -1;
  uint64_t ts = 0;
  for (int i = 7; i >= 0; i--) ts = (ts << 8) | v[i];
  e->ts = (int64_t)ts;
  size_t off = 8;
  e->typen = (size_t)v[off] | (size_t)v[off + 1] << 8;
  off += 2;
  if (off + e->typen + 2 > n) return -1;
  e->type = (const char *)v + off;
  off += e->typen;
  e->streamn = (size_t)v[off] | (size_t)v[off + 1] << 8;
  off += 2;
  if (off + e->streamn > n) return -1;
  e->stream = (const char *)v + off;
  off += e->streamn;
  e->data = (const char *)v + off;
  e->datan = n - off;
  return 0;
}

/* Pushes {id, type, stream, ts, data}. The time text is cached per second. */
static int push_event(lua_State *L, uint64_t seq, const event_rec *e, char *err, size_t errsz) {
  static int64_t cached_sec = INT64_MIN;
  static char cached[64];
  lua_createtable(L, 0, 5);
  char id[17];
  snprintf(id, sizeof id, "%016llx", (unsigned long long)seq);
  lua_pushlstring(L, id, 16);
  lua_setfield(L, -2, "id");
  lua_pushlstring(L, e->type, e->typen);
  lua_setfield(L, -2, "type");
  lua_pushlstring(L, e->stream, e->streamn);
  lua_setfield(L, -2, "stream");
  int64_t sec = e->ts / 1000000;
  if (sec != cached_sec) {
    time_t t = (time_t)sec;
    struct tm tm;
    if (!gmtime_r(&t, &tm)) memset(&tm, 0, sizeof tm);
    snprintf(cached, sizeof cached, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    cached_sec = sec;
  }
  char ts[96];
  snprintf(ts, sizeof ts, "%s.%03dZ", cached, (int)(e->ts % 1000000 / 1000));
  lua_pushstring(L, ts);
  lua_setfield(L, -2, "ts");
  if (codec_decode(L, e->data, e->datan, err, errsz) != 0) return -1;
  lua_setfield(L, -2, "data");
  return 0;
}

static void key_be64(unsigned char k[8], uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) k[i] = (unsigned char)(v & 0xff);
}

static uint64_t be64_at(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

/* read_events(after_seq, limit, prefix_or_nil, exact) -> events, last_seq.
 * exact: prefix is one stream key, read through its index; else every
 * event after after_seq whose stream starts with prefix ("" or nil: all),
 * in log order. last_seq is the last position examined. Raises on a store
 * error or a corrupt record. */
static int l_read_events(lua_State *L) {
  lua_Integer after = luaL_checkinteger(L, 1);
  lua_Integer limit = luaL_checkinteger(L, 2);
  size_t pn = 0;
  const char *prefix = luaL_optlstring(L, 3, "", &pn);
  int exact = lua_toboolean(L, 4);
  luaL_argcheck(L, limit > 0, 2, "limit must be positive");
  store *st = l_store_get(L);
  if (store_dbi(st, DB_EVENTS) == 0 || store_dbi(st, DB_STREAMS) == 0) {
    /* a read-only store written before the stream existed: empty */
    lua_newtable(L);
    lua_pushinteger(L, after);
    return 2;
  }
  char err[256];
  MDB_txn *txn;
  if (store_read_begin(st, &txn, err, sizeof err) != 0) return luaL_error(L, "%s", err);
  MDB_cursor *log = NULL, *idx = NULL;
  int rc = mdb_cursor_open(txn, store_dbi(st, DB_EVENTS), &log);
  if (rc == 0 && exact) rc = mdb_cursor_open(txn, store_dbi(st, DB_STREAMS), &idx);
  lua_createtable(L, (int)(limit < 1024 ? limit : 1024), 0);
  lua_Integer n = 0;
  uint64_t last = (uint64_t)after;
  const char *fail = NULL;
  sbuf key = SBUF_INIT;
  if (rc == 0 && !exact) {
    unsigned char k0[8];
    key_be64(k0, (uint64_t)after + 1);
    MDB_val k = {8, k0}, v;
    rc = mdb_cursor_get(log, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && n < limit) {
      if (k.mv_size != 8) break;
      last = be64_at(k.mv_data);
      event_rec e;
      if (parse_event(v.mv_data, v.mv_size, &e) != 0) {
        fail = "corrupt event record";
        break;
      }
      if (e.streamn >= pn && memcmp(e.stream, prefix, pn) == 0) {
        if (push_event(L, last, &e, err, sizeof err) != 0) {
          fail = err;
          break;
        }
        lua_rawseti(L, -2, ++n);
      }
      rc = mdb_cursor_get(log, &k, &v, MDB_NEXT);
    }
  } else if (rc == 0) {
    sbuf_add(&key, prefix, pn);
    sbuf_addc(&key, '\0');
    size_t kp = key.len;
    sbuf_add_be64(&key, (uint64_t)after + 1);
    MDB_val k = {key.len, key.data}, v;
    rc = mdb_cursor_get(idx, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && n < limit) {
      if (k.mv_size != kp + 8 || memcmp(k.mv_data, key.data, kp) != 0) break;
      last = be64_at((const unsigned char *)k.mv_data + kp);
      unsigned char lk[8];
      key_be64(lk, last);
      MDB_val ek = {8, lk}, ev;
      int grc = mdb_get(txn, store_dbi(st, DB_EVENTS), &ek, &ev);
      if (grc == 0) {
        event_rec e;
        if (parse_event(ev.mv_data, ev.mv_size, &e) != 0) {
          fail = "corrupt event record";
          break;
        }
        if (push_event(L, last, &e, err, sizeof err) != 0) {
          fail = err;
          break;
        }
        lua_rawseti(L, -2, ++n);
      }
      rc = mdb_cursor_get(idx, &k, &v, MDB_NEXT);
    }
  }
  sbuf_free(&key);
  if (idx) mdb_cursor_close(idx);
  if (log) mdb_cursor_close(log);
  store_read_end(st, txn);
  if (fail) return luaL_error(L, "reading events: %s", fail);
  if (rc != 0 && rc != MDB_NOTFOUND) return luaL_error(L, "reading events: %s", mdb_strerror(rc));
  lua_pushinteger(L, (lua_Integer)last);
  return 2;
}

static void put_le(sbuf *b, uint64_t v, int n) {
  unsigned char k[8];
  for (int i = 0; i < n; i++, v >>= 8) k[i] = (unsigned char)(v & 0xff);
  sbuf_add(b, k, (size_t)n);
}

/* Checks a type or stream key; returns NULL or what is wrong. */
static const char *bad_name(lua_State *L, int idx, size_t *n) {
  if (lua_type(L, idx) != LUA_TSTRING) return "must be a string";
  const char *s = lua_tolstring(L, idx, n);
  if (*n == 0) return "must not be empty";
  if (*n > 0xffff) return "is longer than 65535 bytes";
  if (memchr(s, '\0', *n)) return "must not contain NUL bytes";
  return NULL;
}

/* append_events(list, first_seq, first_ts_us [, extra_ops]) -> true | nil,
 * msg, code: the events {type, stream, data} of list as log records
 * first_seq, first_seq + 1, ... (time stamps first_ts_us + i - 1) and their
 * index entries, in one batch with extra_ops {db, key, value, ...} (the
 * memo record of an emit inside a run); suspends until durable. Raises,
 * naming the event, on a bad type, key or value, before anything is queued. */
static int l_append_events(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer first = luaL_checkinteger(L, 2);
  lua_Integer ts0 = luaL_checkinteger(L, 3);
  l_store_check_writable(L);
  lua_Integer n = luaL_len(L, 1);
  /* a store batch (sluice._store) as extra: the events join it */
  wbatch *b = lua_isuserdata(L, 4) ? l_store_take_batch(L, 4) : wbatch_new();
  sbuf rec = SBUF_INIT, key = SBUF_INIT;
  char err[256];
  const char *what = NULL;
  lua_Integer bad = 0;
  for (lua_Integer i = 1; i <= n && !what; i++) {
    lua_rawgeti(L, 1, i);
    if (!lua_istable(L, -1)) {
      what = "is not a table {type, stream_key, data}";
      bad = i;
      lua_pop(L, 1);
      break;
    }
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    lua_rawgeti(L, -3, 3);
    size_t tn, kn;
    const char *why;
    if ((why = bad_name(L, -3, &tn))) {
      snprintf(err, sizeof err, "type %s", why);
    } else if ((why = bad_name(L, -2, &kn))) {
      snprintf(err, sizeof err, "stream key %s", why);
    }
    if (why) {
      what = err;
      bad = i;
      lua_pop(L, 4);
      break;
    }
    uint64_t seq = (uint64_t)(first + i - 1);
    sbuf_reset(&rec);
    put_le(&rec, (uint64_t)(ts0 + i - 1), 8);
    put_le(&rec, tn, 2);
    sbuf_add(&rec, lua_tostring(L, -3), tn);
    put_le(&rec, kn, 2);
    sbuf_add(&rec, lua_tostring(L, -2), kn);
    if (lua_isnil(L, -1)) {
      sbuf_adds(&rec, "null");
    } else if (codec_encode(L, lua_gettop(L), "data", 0, &rec, err, sizeof err) != 0) {
      what = err;
      bad = i;
      lua_pop(L, 4);
      break;
    }
    sbuf_reset(&key);
    sbuf_add_be64(&key, seq);
    wbatch_put(b, DB_EVENTS, key.data, key.len, rec.data, rec.len);
    sbuf_reset(&key);
    sbuf_add(&key, lua_tostring(L, -2), kn);
    sbuf_addc(&key, '\0');
    sbuf_add_be64(&key, seq);
    wbatch_put(b, DB_STREAMS, key.data, key.len, "", 0);
    lua_pop(L, 4);
  }
  sbuf_free(&rec);
  sbuf_free(&key);
  if (what) {
    wbatch_free(b);
    return luaL_error(L, "event %d: %s", (int)bad, what);
  }
  if (lua_istable(L, 4)) l_store_add_ops(L, 4, b, "append_events");
  return l_store_submit(L, b);
}

void stream_register(lua_State *L) {
  static const luaL_Reg fns[] = {{"read_events", l_read_events},
                                 {"append_events", l_append_events},
                                 {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
}
