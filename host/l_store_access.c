/* l_store_access.c: "sluice._store" operations on API keys, namespaces and
 * their daily quota counters (store.h). Records are tables, encoded once.
 *   store.key(id) -> record | nil        store.key_count() -> n
 *   store.keys() -> {record + id, last_used_at}, by id
 *   b:add_key(id, record)  b:revoke_key(id)  b:touch_key(id, when)
 *   store.namespace(ns) -> record | nil  store.namespaces() -> {record, ...}
 *   b:put_namespace(ns, record)
 *   b:count_run(ns, day)                 store.quota_used(ns, day) -> n
 * Batch methods return the batch. Reads that fail return
 * nil, "CODE: message", "CODE". */
#include <lauxlib.h>
#include <stdio.h>

#include "l_store.h"

static const char *check_name(lua_State *L, int idx, const char *what, size_t *len) {
  const char *s = luaL_checklstring(L, idx, len);
  if (*len == 0 || *len > STORE_NAME_MAX) {
    luaL_argerror(L, idx, lua_pushfstring(L, "%s must be 1 to 400 bytes", what));
  }
  return s;
}

typedef int (*put_fn)(store_batch *, const char *, size_t, const char *, size_t);
typedef int (*pgput_fn)(pgstore_batch *, const char *, size_t, const char *, size_t);
typedef int (*get_fn)(store *, const char *, size_t, sbuf *, int *, char *, size_t);
typedef void (*pgget_fn)(pgstore *, const char *, size_t, sbuf *, int *, pgstore_done_fn, void *);

/* put-style batch method: b, name, record table */
static int put_record(lua_State *L, const char *what, put_fn put, pgput_fn pgput) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  size_t n;
  const char *name = check_name(L, 2, what, &n);
  luaL_checktype(L, 3, LUA_TTABLE);
  sbuf *rec = l_store_new_buf(L);
  l_store_encode(L, 3, what, rec);
  if ((pb ? pgput(pb, name, n, rec->data, rec->len) : put(b, name, n, rec->data, rec->len)) != 0) {
    return luaL_argerror(L, 2, lua_pushfstring(L, "not a valid %s name", what));
  }
  lua_settop(L, 1);
  return 1;
}

static int push_pg_record(lua_State *L, l_pgread *r) {
  char label[256];
  size_t n;
  const char *name = lua_tolstring(L, 1, &n);
  snprintf(label, sizeof label, "%s %.*s", r->what,
           (int)(n > 200 ? 200 : n), name);
  return l_store_push_record(L, r->status, r->err, r->found, &r->rec, label);
}

/* get-style read: name -> record | nil */
static int get_record(lua_State *L, const char *what, get_fn get, pgget_fn pgget) {
  size_t n;
  const char *name = check_name(L, 1, what, &n);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    r->what = what;
    pgget(pg, name, n, &r->rec, &r->found, l_store_pgread_done, r);
    return l_store_await(L, r, push_pg_record);
  }
  sbuf *rec = l_store_new_buf(L);
  char err[512], label[256];
  int found = 0;
  int st = get(l_store_get(L), name, n, rec, &found, err, sizeof err);
  snprintf(label, sizeof label, "%s %s", what, name);
  return l_store_push_record(L, st, err, found, rec, label);
}

/* ---- API keys ---- */

static int l_key(lua_State *L) { return get_record(L, "API key", store_get_key, pgstore_get_key); }

static int push_count(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  lua_pushinteger(L, (lua_Integer)r->i64);
  return 1;
}

static int l_key_count(lua_State *L) {
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_key_count(pg, &r->i64, l_store_pgread_done, r);
    return l_store_await(L, r, push_count);
  }
  int64_t n;
  char err[512];
  int st = store_key_count(l_store_get(L), &n, err, sizeof err);
  if (st) return l_store_fail(L, st, err);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

static int push_keys(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  return l_store_push_rows(L, &r->named, "API key", "id", "last_used_at");
}

static int push_namespaces(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  return l_store_push_rows(L, &r->named, "namespace", NULL, NULL);
}

static int l_keys(lua_State *L) {
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_list_keys(pg, &r->named, l_store_pgread_done, r);
    return l_store_await(L, r, push_keys);
  }
  store_named_rows *rows = l_store_new_rows(L);
  char err[512];
  int st = store_list_keys(l_store_get(L), rows, err, sizeof err);
  if (st) return l_store_fail(L, st, err);
  return l_store_push_rows(L, rows, "API key", "id", "last_used_at");
}

static int l_add_key(lua_State *L) {
  return put_record(L, "API key", store_add_key, pgstore_add_key);
}

static int l_revoke_key(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  size_t n;
  const char *id = check_name(L, 2, "API key", &n);
  if ((pb ? pgstore_revoke_key(pb, id, n) : store_revoke_key(b, id, n)) != 0) return luaL_argerror(L, 2, "not a valid API key id");
  lua_settop(L, 1);
  return 1;
}

static int l_touch_key(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  size_t n, wn;
  const char *id = check_name(L, 2, "API key", &n);
  const char *when = luaL_checklstring(L, 3, &wn);
  if ((pb ? pgstore_touch_key(pb, id, n, when, wn) : store_touch_key(b, id, n, when, wn)) != 0) {
    return luaL_argerror(L, 3, "an empty time");
  }
  lua_settop(L, 1);
  return 1;
}

/* ---- namespaces and quota counters ---- */

static int l_namespace(lua_State *L) {
  return get_record(L, "namespace", store_get_namespace, pgstore_get_namespace);
}

static int l_namespaces(lua_State *L) {
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_list_namespaces(pg, &r->named, l_store_pgread_done, r);
    return l_store_await(L, r, push_namespaces);
  }
  store_named_rows *rows = l_store_new_rows(L);
  char err[512];
  int st = store_list_namespaces(l_store_get(L), rows, err, sizeof err);
  if (st) return l_store_fail(L, st, err);
  return l_store_push_rows(L, rows, "namespace", NULL, NULL);
}

static int l_put_namespace(lua_State *L) {
  return put_record(L, "namespace", store_put_namespace, pgstore_put_namespace);
}

static int l_count_run(lua_State *L) {
  pgstore_batch *pb = l_store_pg_batch(L, 1);
  store_batch *b = pb ? NULL : l_store_check_batch(L, 1);
  size_t n, dn;
  const char *ns = check_name(L, 2, "namespace", &n);
  const char *day = luaL_checklstring(L, 3, &dn);
  if ((pb ? pgstore_count_run(pb, ns, n, day, dn) : store_count_run(b, ns, n, day, dn)) != 0) {
    return luaL_argerror(L, 3, "a day is YYYY-MM-DD (UTC)");
  }
  lua_settop(L, 1);
  return 1;
}

static int l_quota_used(lua_State *L) {
  size_t n, dn;
  const char *ns = check_name(L, 1, "namespace", &n);
  const char *day = luaL_checklstring(L, 2, &dn);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *r = l_store_pgread(L);
    pgstore_quota_used(pg, ns, n, day, dn, &r->i64, l_store_pgread_done, r);
    if (r->done && r->status == STORE_EINVAL) luaL_argerror(L, 2, "a day is YYYY-MM-DD (UTC)");
    return l_store_await(L, r, push_count);
  }
  int64_t used;
  char err[512];
  int st = store_quota_used(l_store_get(L), ns, n, day, dn, &used, err, sizeof err);
  if (st == STORE_EINVAL) return luaL_argerror(L, 2, "a day is YYYY-MM-DD (UTC)");
  if (st) return l_store_fail(L, st, err);
  lua_pushinteger(L, (lua_Integer)used);
  return 1;
}

void l_store_access(lua_State *L, int module_idx, int methods_idx) {
  static const luaL_Reg fns[] = {{"key", l_key},
                                 {"key_count", l_key_count},
                                 {"keys", l_keys},
                                 {"namespace", l_namespace},
                                 {"namespaces", l_namespaces},
                                 {"quota_used", l_quota_used},
                                 {NULL, NULL}};
  static const luaL_Reg methods[] = {{"add_key", l_add_key},
                                     {"revoke_key", l_revoke_key},
                                     {"touch_key", l_touch_key},
                                     {"put_namespace", l_put_namespace},
                                     {"count_run", l_count_run},
                                     {NULL, NULL}};
  lua_pushvalue(L, module_idx);
  luaL_setfuncs(L, fns, 0);
  lua_pushvalue(L, methods_idx);
  luaL_setfuncs(L, methods, 0);
  lua_pop(L, 2);
}
