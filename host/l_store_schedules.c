/* l_store_schedules.c: "sluice._store" operations on schedule records (store.h):
 *   store.schedule(name)              -> record | nil   (| nil, "CODE: msg", "CODE")
 *                                        (record.name: the name it is stored under)
 *   store.schedules([after [, limit]]) -> {record, ...}, the last name when
 *                                        limit rows came (the next page's after)
 *   store.schedule_states(after, limit, list) -> n, the last name when
 *                                        limit rows came: what the scheduler
 *                                        arms from, 7 values a record put in
 *                                        list[1 .. 7n] (reused from page to page):
 *                                        name, spec, next_at, last_at, runs,
 *                                        enabled, source (times in Unix seconds;
 *                                        false for a field left out or a time
 *                                        that does not parse; source true when
 *                                        the record has one)
 *   store.schedule_version(name)      -> record | false, version (PostgreSQL:
 *                                        the row version a fire writes over)
 *   b:put_schedule(name, record [, version]) -> b   (record: a table, encoded
 *                                        once; with a version, PostgreSQL only,
 *                                        written only if the record is still
 *                                        that version: else nothing is)
 *   b:delete_schedule(name)           -> b
 *   store.release_pages()             -> true (| nil, "CODE: msg", "CODE"):
 *                                        drops the store's pages from the
 *                                        process's resident set after a pass
 *                                        over all schedules (store.h); nothing
 *                                        on PostgreSQL */
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "codec.h"
#include "cron.h"
#include "l_store.h"

static const char *check_name(lua_State *L, int idx, size_t *len) {
  const char *s = luaL_checklstring(L, idx, len);
  if (*len == 0 || *len > STORE_NAME_MAX) {
    luaL_argerror(L, idx, "a schedule name is 1 to 400 bytes");
  }
  return s;
}

/* a record read as the nret values on top: its name is the key it is
 * stored under (argument 1), the record leaves it out */
static int named(lua_State *L, int nret) {
  if (nret == 1 && lua_istable(L, -1)) {
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "name");
  }
  return nret;
}

static int push_schedule(lua_State *L, l_pgread *r) {
  char what[256];
  size_t n;
  const char *name = lua_tolstring(L, 1, &n);
  snprintf(what, sizeof what, "schedule %.*s", (int)(n > 200 ? 200 : n), name);
  return named(L, l_store_push_record(L, r->status, r->err, r->found, &r->rec, what));
}

/* the rows of a page, and the next page's after when limit rows came */
static int push_page(lua_State *L, const store_named_rows *rows, lua_Integer limit) {
  int nret = l_store_push_rows(L, rows, "schedule", "name", NULL);
  if (nret != 1) return nret;
  if (limit > 0 && rows->n == (size_t)limit) {
    const store_named_row *last = &rows->rows[rows->n - 1];
    lua_pushlstring(L, last->name, last->name_len);
    return 2;
  }
  return 1;
}

static int push_pg_page(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  return push_page(L, &r->named, (lua_Integer)r->i64);
}

static int l_schedule(lua_State *L) {
  size_t n;
  const char *name = check_name(L, 1, &n);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_get_schedule(pg, name, n, &r->rec, &r->found, l_store_pgread_done, r);
    return l_store_await(L, r, push_schedule);
  }
  sbuf *rec = l_store_new_buf(L);
  char err[512], what[256];
  int found = 0;
  int st = store_get_schedule(l_store_get(L), name, n, rec, &found, err, sizeof err);
  snprintf(what, sizeof what, "schedule %s", name);
  int nret = l_store_push_record(L, st, err, found, rec, what);
  sbuf_free(rec); /* now, not at the collector's pace */
  return named(L, nret);
}

/* the record, then its row version (PostgreSQL's compare-and-set of a fire) */
static int push_schedule_version(lua_State *L, l_pgread *r) {
  int nret = push_schedule(L, r);
  if (r->status || nret != 1) return nret;
  if (!r->found) {
    lua_pop(L, 1);
    lua_pushboolean(L, 0);
  }
  lua_pushinteger(L, (lua_Integer)r->i64);
  return 2;
}

static int l_schedule_version(lua_State *L) {
  size_t n;
  const char *name = check_name(L, 1, &n);
  pgstore *pg = l_store_pg(L);
  if (!pg) {
    return luaL_error(L, "store.schedule_version: a PostgreSQL store only (one host fires and "
                         "writes an LMDB store's schedules: store.schedule reads them)");
  }
  l_pgread *r = l_store_pgread(L);
  pgstore_get_schedule_version(pg, name, n, &r->rec, &r->i64, &r->found, l_store_pgread_done, r);
  return l_store_await(L, r, push_schedule_version);
}

static int l_schedules(lua_State *L) {
  size_t alen = 0;
  const char *after = luaL_optlstring(L, 1, "", &alen);
  lua_Integer limit = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, limit >= 0, 2, "limit must be >= 0 (0: all)");
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    r->i64 = limit;
    pgstore_list_schedules(pg, after, alen, (size_t)limit, &r->named, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_page);
  }
  store_named_rows *rows = l_store_new_rows(L);
  char err[512];
  int st = store_list_schedules(l_store_get(L), after, alen, (size_t)limit, rows, err, sizeof err);
  if (st) return l_store_fail(L, st, err);
  int nret = push_page(L, rows, limit);
  /* now, not when the collector gets to the userdata: a pass over 100,000
   * records held every page in C until then */
  store_named_rows_free(rows);
  return nret;
}

/* The fields the scheduler arms from, read where they are in each record
 * (codec_members): no table per record, 100,000 of which were decoded
 * and dropped at each start. */
enum { F_SPEC, F_NEXT, F_LAST, F_RUNS, F_ENABLED, F_SOURCE, NFIELDS };
static const char *const state_fields[] = {"spec",    "next_at", "last_at", "runs",
                                           "enabled", "source",  NULL};
#define STATE_VALUES 7

/* pushes the value of span (decoded), or dflt when absent; -1 if it does not decode */
static int push_span(lua_State *L, const codec_span *v, int dflt_false) {
  char why[256];
  if (!v->p) {
    if (dflt_false) {
      lua_pushboolean(L, 0);
    } else {
      lua_pushnil(L);
    }
    return 0;
  }
  return codec_decode_ex(L, v->p, v->n, CODEC_RECORD, why, sizeof why);
}

/* pushes the Unix seconds of a time text (a plain JSON string), else false */
static void push_time(lua_State *L, const codec_span *v) {
  char text[64];
  int64_t t;
  char err[CRON_ERRSZ];
  if (v->p && v->n >= 2 && v->n - 2 < sizeof text && v->p[0] == '"' &&
      !memchr(v->p + 1, '\\', v->n - 2)) {
    memcpy(text, v->p + 1, v->n - 2);
    text[v->n - 2] = '\0';
    if (cron_parse_iso8601(text, &t, err, sizeof err) == 0) {
      lua_pushinteger(L, (lua_Integer)t);
      return;
    }
  }
  lua_pushboolean(L, 0);
}

/* fills the list at index 3 (the caller's, reused: no garbage per page) */
static int push_states(lua_State *L, const store_named_rows *rows, lua_Integer limit) {
  lua_pushvalue(L, 3);
  lua_Integer k = 0;
  for (size_t i = 0; i < rows->n; i++) {
    const store_named_row *row = &rows->rows[i];
    codec_span v[NFIELDS];
    char why[256] = "";
    int bad = codec_members(row->rec, row->rec_len, state_fields, v, why, sizeof why) != 0;
    lua_pushlstring(L, row->name, row->name_len);
    lua_rawseti(L, -2, ++k);
    if (!bad && push_span(L, &v[F_SPEC], 1) == 0) {
      lua_rawseti(L, -2, ++k);
      push_time(L, &v[F_NEXT]);
      lua_rawseti(L, -2, ++k);
      push_time(L, &v[F_LAST]);
      lua_rawseti(L, -2, ++k);
      if (v[F_RUNS].p) {
        bad = push_span(L, &v[F_RUNS], 0) != 0;
      } else {
        lua_pushinteger(L, 0);
      }
    } else {
      bad = 1;
    }
    if (!bad) {
      lua_rawseti(L, -2, ++k);
      if (v[F_ENABLED].p) {
        bad = push_span(L, &v[F_ENABLED], 0) != 0;
      } else {
        lua_pushboolean(L, 1);
      }
    }
    if (bad) {
      char err[512];
      snprintf(err, sizeof err, "schedule %.*s: its stored record does not decode%s%s",
               (int)(row->name_len < 80 ? row->name_len : 80), row->name, why[0] ? ": " : "", why);
      return l_store_fail(L, STORE_EBADSTORE, err);
    }
    lua_rawseti(L, -2, ++k);
    lua_pushboolean(L, v[F_SOURCE].p != NULL);
    lua_rawseti(L, -2, ++k);
  }
  lua_pop(L, 1);
  lua_pushinteger(L, (lua_Integer)rows->n);
  if (limit > 0 && rows->n == (size_t)limit) {
    const store_named_row *last = &rows->rows[rows->n - 1];
    lua_pushlstring(L, last->name, last->name_len);
    return 2;
  }
  return 1;
}

static int push_pg_states(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  return push_states(L, &r->named, (lua_Integer)r->i64);
}

static int l_schedule_states(lua_State *L) {
  size_t alen = 0;
  const char *after = luaL_optlstring(L, 1, "", &alen);
  lua_Integer limit = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, limit >= 0, 2, "limit must be >= 0 (0: all)");
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    r->i64 = limit;
    pgstore_list_schedules(pg, after, alen, (size_t)limit, &r->named, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_states);
  }
  store_named_rows *rows = l_store_new_rows(L);
  char err[512];
  int st = store_list_schedules(l_store_get(L), after, alen, (size_t)limit, rows, err, sizeof err);
  if (st) return l_store_fail(L, st, err);
  int nret = push_states(L, rows, limit);
  store_named_rows_free(rows);
  return nret;
}

static int l_release_pages(lua_State *L) {
  if (!l_store_pg(L)) {
    char err[512];
    int st = store_release_pages(l_store_get(L), err, sizeof err);
    if (st) return l_store_fail(L, st, err);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* put_schedule encodes into one buffer kept as its upvalue (the batch
 * copies the record): no buffer userdata per record of 100,000 stored at
 * start, each waiting for the collector */
static int l_put_schedule(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  size_t n;
  const char *name = check_name(L, 2, &n);
  luaL_checktype(L, 3, LUA_TTABLE);
  sbuf *rec = lua_touserdata(L, lua_upvalueindex(1));
  sbuf_reset(rec);
  l_store_encode(L, 3, "schedule record", rec);
  int bad;
  if (!lua_isnoneornil(L, 4)) { /* a version: written only over it (PostgreSQL) */
    lua_Integer version = luaL_checkinteger(L, 4);
    if (!pb) return luaL_argerror(L, 4, "a version is for a PostgreSQL store's batch only");
    bad = pgstore_put_schedule_if(pb, name, n, rec->data, rec->len, (int64_t)version) != 0;
  } else {
    bad = (pb ? pgstore_put_schedule(pb, name, n, rec->data, rec->len)
              : store_put_schedule(b, name, n, rec->data, rec->len)) != 0;
  }
  if (rec->cap > (64u << 10)) sbuf_free(rec); /* a big one: give it back */
  if (bad) return luaL_argerror(L, 3, "an empty schedule record");
  lua_settop(L, 1);
  return 1;
}

static int l_delete_schedule(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  size_t n;
  const char *name = check_name(L, 2, &n);
  if (pb) {
    if (pgstore_delete_schedule(pb, name, n) != 0) {
      return luaL_argerror(L, 2, "a schedule name holds no NUL byte on PostgreSQL");
    }
  } else {
    store_delete_schedule(b, name, n); /* the name is checked: it cannot fail */
  }
  lua_settop(L, 1);
  return 1;
}

void l_store_schedules(lua_State *L, int module_idx, int methods_idx) {
  static const luaL_Reg fns[] = {{"schedule", l_schedule},
                                 {"schedule_version", l_schedule_version},
                                 {"schedules", l_schedules},
                                 {"schedule_states", l_schedule_states},
                                 {"release_pages", l_release_pages},
                                 {NULL, NULL}};
  static const luaL_Reg methods[] = {{"delete_schedule", l_delete_schedule}, {NULL, NULL}};
  lua_pushvalue(L, module_idx);
  luaL_setfuncs(L, fns, 0);
  lua_pushvalue(L, methods_idx);
  luaL_setfuncs(L, methods, 0);
  l_store_new_buf(L);
  lua_pushcclosure(L, l_put_schedule, 1);
  lua_setfield(L, -2, "put_schedule");
  lua_pop(L, 2);
}
