/* l_store_schedules.c: "sluice._store" operations on schedule records (store.h):
 *   store.schedule(name)              -> record | nil   (| nil, "CODE: msg", "CODE")
 *                                        (record.name: the name it is stored under)
 *   store.schedules([after [, limit]]) -> {record, ...}, the last name when
 *                                        limit rows came (the next page's after)
 *   b:put_schedule(name, record)      -> b   (record: a table, encoded once)
 *   b:delete_schedule(name)           -> b */
#include <lauxlib.h>
#include <stdio.h>

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

static int l_put_schedule(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  size_t n;
  const char *name = check_name(L, 2, &n);
  luaL_checktype(L, 3, LUA_TTABLE);
  sbuf *rec = l_store_new_buf(L);
  l_store_encode(L, 3, "schedule record", rec);
  if ((pb ? pgstore_put_schedule(pb, name, n, rec->data, rec->len)
          : store_put_schedule(b, name, n, rec->data, rec->len)) != 0) {
    return luaL_argerror(L, 3, "an empty schedule record");
  }
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
  static const luaL_Reg fns[] = {{"schedule", l_schedule}, {"schedules", l_schedules}, {NULL, NULL}};
  static const luaL_Reg methods[] = {
      {"put_schedule", l_put_schedule}, {"delete_schedule", l_delete_schedule}, {NULL, NULL}};
  lua_pushvalue(L, module_idx);
  luaL_setfuncs(L, fns, 0);
  lua_pushvalue(L, methods_idx);
  luaL_setfuncs(L, methods, 0);
  lua_pop(L, 2);
}
