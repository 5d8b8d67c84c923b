/* l_store_raw.c: "sluice._store_raw", reads and writes of the LMDB store by
 * database and key. Not used by the engine (whose writes are the record
 * operations of sluice._store, store.h): it is for tests and benchmarks
 * that plant what the record operations refuse to write (a corrupt record,
 * a key over LMDB's limit, a store of an older layout) and look at bytes. */
#include <lauxlib.h>
#include <string.h>

#include "l_store.h"
#include "sbuf.h"
#include "store_lmdb.h"
#include "writer.h"

/* The database named name, or -1. */
static int db_index(const char *name) {
  for (int d = 0; name && d < DB_COUNT; d++) {
    if (strcmp(store_db_name(d), name) == 0) return d;
  }
  return -1;
}

static int check_db(lua_State *L, int arg) {
  const char *name = luaL_checkstring(L, arg);
  int db = db_index(name);
  if (db < 0) return luaL_argerror(L, arg, lua_pushfstring(L, "no database named '%s'", name));
  return db;
}

/* Adds the ops {db, key, value, ...} of the table at idx to b (value false
 * deletes), or, if b is NULL, only checks them: raises naming `what` on a
 * malformed op. Callers check first, so that a raise leaves no batch half
 * built. */
static void add_ops(lua_State *L, int idx, store_batch *b, const char *what) {
  lua_Integer n = luaL_len(L, idx);
  if (n == 0 || n % 3 != 0) {
    luaL_error(L, "%s: expected {db, key, value, ...}, got %d items", what, (int)n);
  }
  for (lua_Integer i = 1; i <= n; i += 3) {
    lua_rawgeti(L, idx, i);
    lua_rawgeti(L, idx, i + 1);
    lua_rawgeti(L, idx, i + 2);
    int db = db_index(lua_tostring(L, -3));
    size_t kn, vn;
    const char *k = lua_tolstring(L, -2, &kn);
    int del = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
    const char *v = del ? NULL : lua_tolstring(L, -1, &vn);
    if (db < 0 || !k || (!del && !v)) {
      luaL_error(L, "%s: op %d needs a database name, a string key and a string value "
                           "(or false to delete)", what, (int)(i / 3 + 1));
    }
    if (b && del) {
      wbatch_del(b, db, k, kn);
    } else if (b) {
      wbatch_put(b, db, k, kn, v, vn);
    }
    lua_pop(L, 3);
  }
}

/* commit(ops) where ops = {db, key, value, db, key, value, ...} (value
 * false deletes): one atomic batch. Yields until durable; returns true, or
 * nil, "CODE: message", "CODE". */
static int l_raw_commit(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  l_store_check_writable(L);
  add_ops(L, 1, NULL, "commit");
  store_batch *b = store_batch_new();
  add_ops(L, 1, b, "commit");
  return l_store_submit(L, b);
}

/* ops(b, ops): adds the writes by key ops to the batch b (of
 * sluice._store) and returns b. */
static int l_raw_ops(lua_State *L) {
  store_batch *b = l_store_check_batch(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  add_ops(L, 2, NULL, "ops");
  add_ops(L, 2, b, "ops");
  lua_settop(L, 1);
  return 1;
}

/* get(db, key) -> value | nil (absent) | nil, "CODE: message", "CODE" */
static int l_raw_get(lua_State *L) {
  store *st = l_store_get(L);
  int db = check_db(L, 1);
  size_t klen;
  const char *key = luaL_checklstring(L, 2, &klen);
  sbuf out = SBUF_INIT;
  int found = 0;
  char err[512];
  int rc = store_get(st, db, key, klen, &out, &found, err, sizeof err);
  if (rc == 0 && found) lua_pushlstring(L, out.data ? out.data : "", out.len);
  sbuf_free(&out);
  if (rc != 0) return l_store_fail(L, rc, err);
  if (!found) lua_pushnil(L);
  return 1;
}

/* The rows of a scan, copied out of the read transaction as (klen, key,
 * vlen, value) so that nothing is pushed to Lua (which may raise) while it
 * is open. */
typedef struct {
  sbuf rows;
  lua_Integer n, limit;
} scan_ctx;

static int scan_cb(void *ud, const void *k, size_t kn, const void *v, size_t vn) {
  scan_ctx *c = ud;
  sbuf_add(&c->rows, &kn, sizeof kn);
  sbuf_add(&c->rows, k, kn);
  sbuf_add(&c->rows, &vn, sizeof vn);
  sbuf_add(&c->rows, v, vn);
  c->n++;
  return (c->limit > 0 && c->n >= c->limit) ? 1 : 0;
}

/* Pushes the string at *p (a size_t length, then the bytes) and moves on. */
static const char *push_row_field(lua_State *L, const char *p) {
  size_t n;
  memcpy(&n, p, sizeof n);
  lua_pushlstring(L, p + sizeof n, n);
  return p + sizeof n + n;
}

/* scan(db, prefix [, reverse [, limit [, from]]]) -> keys, values | nil,
 * "CODE: message", "CODE". from: start at the first key >= from (forward)
 * or at the last key < from (reverse). */
static int l_raw_scan(lua_State *L) {
  store *st = l_store_get(L);
  int db = check_db(L, 1);
  size_t plen, flen = 0;
  const char *prefix = luaL_optlstring(L, 2, "", &plen);
  int reverse = lua_toboolean(L, 3);
  scan_ctx c = {SBUF_INIT, 0, luaL_optinteger(L, 4, 0)};
  const char *from = luaL_optlstring(L, 5, NULL, &flen);
  char err[512];
  int rc = store_scan_from(st, db, prefix, plen, from, flen, reverse, scan_cb, &c, err, sizeof err);
  if (rc < 0) {
    sbuf_free(&c.rows);
    return l_store_fail(L, rc, err);
  }
  /* an out-of-memory error below leaks c.rows at most, never the txn */
  lua_createtable(L, (int)c.n, 0);
  lua_createtable(L, (int)c.n, 0);
  const char *p = c.rows.data;
  for (lua_Integer i = 1; i <= c.n; i++) {
    p = push_row_field(L, p);
    lua_rawseti(L, -3, i);
    p = push_row_field(L, p);
    lua_rawseti(L, -2, i);
  }
  sbuf_free(&c.rows);
  return 2;
}

int luaopen_sluice__store_raw(lua_State *L) {
  static const luaL_Reg fns[] = {{"commit", l_raw_commit},
                                 {"get", l_raw_get},
                                 {"scan", l_raw_scan},
                                 {"ops", l_raw_ops},
                                 {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
