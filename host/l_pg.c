/* l_pg.c: "sluice._pg", a thin Lua binding of pg.h (one PostgreSQL
 * connection on the loop, pipelined, group commit), for the specs of pg.c
 * and for `sluice store migrate`. The store's PostgreSQL backend calls
 * pg.h from C; pipelines do not see this module.
 *
 *   local pg = require "sluice._pg"
 *   local c = pg.connect(url [, {backoff_min_ms=, backoff_max_ms=,
 *                        connect_timeout_ms=, queue_timeout_ms=, group_max=}])
 *   c:query(sql, ...)   -> rows ({col = value} each) | nil, "CODE: msg", "CODE", sqlstate
 *   c:exec(sql, ...)    -> number of rows affected   | nil, ...
 *   c:batch{{sql, ...}, ...} -> true, {rows of each statement} | nil, ...
 *                          one transaction, grouped with other batches (pg_submit);
 *                          {sql, ..., row = k}: a row (pg_batch_add_row, key: the
 *                          first k parameters)
 *   c:stats() -> {commits, batches, reads, connects, lost, unknown, connected}
 *   c:close()
 * Every call but stats and close yields the calling coroutine until
 * PostgreSQL answered; the loop goes on meanwhile. Parameters: nil is NULL,
 * booleans, numbers and strings are sent as text (a string holding a NUL
 * byte as binary, for bytea). Values come back by column type: integers,
 * floats, booleans, bytea unescaped, anything else (numeric too) a string;
 * NULL is an absent field. A table of statement parameters may say its
 * length with n= when it holds nils. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modules.h"
#include "pg.h"
#include "vm.h"

#define CONN_MT "sluice.pg_conn"

typedef struct conn_ud {
  pg *p; /* NULL once closed */
  struct conn_ud *prev, *next; /* the open ones, for pg_lua_shutdown */
} conn_ud;

static struct {
  conn_ud *open;
  int closing; /* pg_lua_shutdown ran: resume nothing */
} G;

enum { W_CONNECT, W_QUERY, W_EXEC, W_BATCH };

typedef struct {
  lua_State *co;
  int co_ref;
  int ud_ref; /* W_CONNECT: the connection, returned on success */
  int kind;
} waiter;

static void unlink_conn(conn_ud *u) {
  if (u->prev) {
    u->prev->next = u->next;
  } else if (G.open == u) {
    G.open = u->next;
  }
  if (u->next) u->next->prev = u->prev;
  u->prev = u->next = NULL;
}

static void close_conn(conn_ud *u) {
  if (!u->p) return;
  pg *p = u->p;
  u->p = NULL;
  unlink_conn(u);
  pg_close(p);
}

/* ---- results into Lua -------------------------------------------------- */

static void push_value(lua_State *L, const PGresult *r, int row, int col) {
  const char *v = PQgetvalue(r, row, col);
  int len = PQgetlength(r, row, col);
  switch (PQftype(r, col)) {
    case 16: /* bool */
      lua_pushboolean(L, v[0] == 't');
      return;
    case 20: /* int8 */
    case 21: /* int2 */
    case 23: /* int4 */
    case 26: /* oid */
      lua_pushinteger(L, (lua_Integer)strtoll(v, NULL, 10));
      return;
    case 700: /* float4 */
    case 701: /* float8 */
      lua_pushnumber(L, strtod(v, NULL));
      return;
    case 17: { /* bytea */
      size_t n;
      unsigned char *raw = PQunescapeBytea((const unsigned char *)v, &n);
      if (!raw) luaL_error(L, "out of memory");
      lua_pushlstring(L, (const char *)raw, n); /* may raise: raw leaks then, only on OOM */
      PQfreemem(raw);
      return;
    }
    default:
      lua_pushlstring(L, v, (size_t)len);
  }
}

static void push_rows(lua_State *L, const PGresult *r) {
  int nrows = r ? PQntuples(r) : 0, ncols = r ? PQnfields(r) : 0;
  lua_createtable(L, nrows, 0);
  for (int i = 0; i < nrows; i++) {
    lua_createtable(L, 0, ncols);
    for (int j = 0; j < ncols; j++) {
      if (PQgetisnull(r, i, j)) continue;
      push_value(L, r, i, j);
      lua_setfield(L, -2, PQfname(r, j));
    }
    lua_rawseti(L, -2, i + 1);
  }
}

typedef struct {
  int kind;
  const pg_batch *b;
} push_args;

/* Under lua_pcall: pushes what the waiting call returns (may raise on OOM). */
static int push_success(lua_State *L) {
  push_args *a = lua_touserdata(L, 1);
  size_t n = pg_batch_count(a->b);
  switch (a->kind) {
    case W_QUERY:
      push_rows(L, pg_batch_result(a->b, 0));
      return 1;
    case W_EXEC: {
      const PGresult *r = pg_batch_result(a->b, 0);
      const char *t = r ? PQcmdTuples((PGresult *)r) : "";
      lua_pushinteger(L, t[0] ? (lua_Integer)strtoll(t, NULL, 10) : 0);
      return 1;
    }
    default:
      lua_pushboolean(L, 1);
      lua_createtable(L, (int)n, 0);
      for (size_t i = 0; i < n; i++) {
        push_rows(L, pg_batch_result(a->b, i));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
      }
      return 2;
  }
}

static void on_done(void *cookie, int status, const char *errmsg, const pg_batch *b) {
  waiter *w = cookie;
  lua_State *co = w->co;
  lua_State *L = vm_of(co)->L;
  int co_ref = w->co_ref, ud_ref = w->ud_ref, kind = w->kind;
  free(w);
  if (G.closing || lua_status(co) != LUA_YIELD) {
    luaL_unref(L, LUA_REGISTRYINDEX, ud_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, co_ref);
    return;
  }
  int nargs;
  if (status == 0 && kind == W_CONNECT) {
    lua_rawgeti(co, LUA_REGISTRYINDEX, ud_ref);
    nargs = 1;
  } else if (status == 0) {
    push_args a = {kind, b};
    int base = lua_gettop(L);
    lua_pushcfunction(L, push_success);
    lua_pushlightuserdata(L, &a);
    if (lua_pcall(L, 1, LUA_MULTRET, 0) == LUA_OK) {
      nargs = lua_gettop(L) - base;
      lua_xmove(L, co, nargs);
    } else {
      lua_pop(L, 1);
      status = STORE_EIO;
      errmsg = "out of memory reading the rows";
    }
  }
  if (status != 0) {
    if (kind == W_CONNECT) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, ud_ref);
      close_conn(lua_touserdata(L, -1));
      lua_pop(L, 1);
    }
    const char *code = store_status_code(status);
    lua_pushnil(co);
    lua_pushfstring(co, "%s: %s", code, errmsg ? errmsg : "failed");
    lua_pushstring(co, code);
    lua_pushstring(co, b ? pg_batch_sqlstate(b) : "");
    nargs = 4;
  }
  luaL_unref(L, LUA_REGISTRYINDEX, ud_ref);
  vm_resume(co, NULL, nargs);
  luaL_unref(L, LUA_REGISTRYINDEX, co_ref); /* only now: co may have ended above */
}

/* ---- calls ------------------------------------------------------------- */

static void check_yieldable(lua_State *L, const char *what) {
  if (!lua_isyieldable(L))
    luaL_error(L, "sluice._pg: %s waits for PostgreSQL and must run in a coroutine the host "
                  "resumes (a run, a task, a spec)", what);
}

static waiter *new_waiter(lua_State *L, int kind) {
  waiter *w = malloc(sizeof *w);
  if (!w) luaL_error(L, "out of memory");
  w->co = L;
  w->kind = kind;
  w->ud_ref = LUA_NOREF;
  lua_pushthread(L);
  w->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return w;
}

static uint32_t opt_ms(lua_State *L, int t, const char *name) {
  lua_getfield(L, t, name);
  lua_Integer v = lua_isnil(L, -1) ? 0 : luaL_checkinteger(L, -1);
  if (v < 0 || v > 86400000) luaL_error(L, "connect: %s must be between 0 and 86400000", name);
  lua_pop(L, 1);
  return (uint32_t)v;
}

/* connect(url [, opts]) -> conn | nil, msg, code */
static int l_connect(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  pg_opts o = {0, 0, 0, 0, 0};
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    o.backoff_min_ms = opt_ms(L, 2, "backoff_min_ms");
    o.backoff_max_ms = opt_ms(L, 2, "backoff_max_ms");
    o.connect_timeout_ms = opt_ms(L, 2, "connect_timeout_ms");
    o.queue_timeout_ms = opt_ms(L, 2, "queue_timeout_ms");
    o.group_max = opt_ms(L, 2, "group_max");
  }
  check_yieldable(L, "connect");
  conn_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  memset(u, 0, sizeof *u);
  luaL_setmetatable(L, CONN_MT);
  char err[1024];
  int rc = pg_open(&u->p, &vm_of(L)->loop, url, &o, err, sizeof err);
  if (rc != 0) {
    const char *code = store_status_code(rc);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", code, err);
    lua_pushstring(L, code);
    return 3;
  }
  u->next = G.open;
  if (G.open) G.open->prev = u;
  G.open = u;
  waiter *w = new_waiter(L, W_CONNECT);
  lua_pushvalue(L, -1); /* the connection, handed back once connected */
  w->ud_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (pg_when_connected(u->p, on_done, w) != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, w->ud_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, w->co_ref);
    free(w);
    return luaL_error(L, "connect: the connection closed at once");
  }
  return lua_yield(L, 0);
}

static conn_ud *check_conn(lua_State *L) {
  conn_ud *u = luaL_checkudata(L, 1, CONN_MT);
  if (!u->p) luaL_error(L, "sluice._pg: this connection is closed");
  return u;
}

/* Adds to b the statement whose SQL is on the stack at from, followed by
 * its count - 1 parameters. Leaves the stack as it was. */
static void add_stmt(lua_State *L, pg_batch *b, int from, int count, int row_key) {
  const char *sql = lua_tostring(L, from);
  int np = count - 1;
  if (np > 65535) luaL_error(L, "a statement takes at most 65535 parameters");
  const char **v = lua_newuserdatauv(L, sizeof *v * (size_t)(np ? np : 1), 0);
  int *len = lua_newuserdatauv(L, sizeof *len * (size_t)(np ? np : 1), 0);
  int *fmtv = lua_newuserdatauv(L, sizeof *fmtv * (size_t)(np ? np : 1), 0);
  luaL_checkstack(L, np, "too many parameters");
  for (int i = 0; i < np; i++) {
    int a = from + 1 + i;
    fmtv[i] = 0;
    len[i] = 0;
    switch (lua_type(L, a)) {
      case LUA_TNIL:
        v[i] = NULL;
        lua_pushnil(L);
        break;
      case LUA_TBOOLEAN:
        lua_pushstring(L, lua_toboolean(L, a) ? "true" : "false");
        v[i] = lua_tostring(L, -1);
        break;
      case LUA_TNUMBER:
        if (lua_isinteger(L, a)) {
          lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, a));
        } else {
          char num[64];
          snprintf(num, sizeof num, "%.17g", lua_tonumber(L, a));
          lua_pushstring(L, num);
        }
        v[i] = lua_tostring(L, -1);
        break;
      case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, a, &n);
        lua_pushvalue(L, a);
        v[i] = s;
        if (memchr(s, '\0', n)) {
          fmtv[i] = 1;
          if (n > 0x7fffffff) luaL_error(L, "parameter %d is too long", i + 1);
          len[i] = (int)n;
        }
        break;
      }
      default:
        luaL_error(L, "parameter %d: expected nil, a boolean, a number or a string, got %s",
                   i + 1, luaL_typename(L, a));
    }
  }
  if (row_key) {
    pg_batch_add_row(b, sql, np, row_key, v, len, fmtv);
  } else {
    pg_batch_add(b, sql, np, v, len, fmtv);
  }
  lua_pop(L, np + 3);
}

/* A batch userdata that frees its batch unless handed to pg: Lua may raise
 * while the statements are read. */
typedef struct {
  pg_batch *b;
} batch_box;

static int box_gc(lua_State *L) {
  batch_box *x = lua_touserdata(L, 1);
  pg_batch_free(x->b);
  x->b = NULL;
  return 0;
}

static batch_box *new_box(lua_State *L) {
  batch_box *x = lua_newuserdatauv(L, sizeof *x, 0);
  x->b = NULL;
  if (luaL_newmetatable(L, "sluice.pg_batch_box")) {
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  x->b = pg_batch_new();
  return x;
}

static int submit(lua_State *L, conn_ud *u, batch_box *x, int kind) {
  waiter *w = new_waiter(L, kind);
  pg_batch *b = x->b;
  x->b = NULL;
  int rc = kind == W_BATCH ? pg_submit(u->p, b, on_done, w) : pg_read(u->p, b, on_done, w);
  if (rc != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, w->co_ref);
    free(w);
    return luaL_error(L, "sluice._pg: this connection is closed");
  }
  return lua_yield(L, 0);
}

static int one_statement(lua_State *L, int kind) {
  conn_ud *u = check_conn(L);
  luaL_checkstring(L, 2);
  check_yieldable(L, kind == W_QUERY ? "query" : "exec");
  int top = lua_gettop(L);
  batch_box *x = new_box(L);
  lua_insert(L, 1); /* the box below the arguments: they stay where add_stmt wants them */
  add_stmt(L, x->b, 3, top - 1, 0);
  return submit(L, u, x, kind);
}

static int l_query(lua_State *L) { return one_statement(L, W_QUERY); }
static int l_exec(lua_State *L) { return one_statement(L, W_EXEC); }

/* c:batch{{sql, ...}, ...} */
static int l_batch(lua_State *L) {
  conn_ud *u = check_conn(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  check_yieldable(L, "batch");
  batch_box *x = new_box(L);
  lua_Integer n = luaL_len(L, 2);
  if (n == 0) return luaL_argerror(L, 2, "expected {{sql, params...}, ...}");
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    int t = lua_gettop(L);
    if (!lua_istable(L, t)) return luaL_error(L, "batch: statement %d is not a table {sql, ...}", (int)i);
    lua_getfield(L, t, "n");
    lua_Integer cnt = lua_isinteger(L, -1) ? lua_tointeger(L, -1) + 1 : luaL_len(L, t);
    lua_getfield(L, t, "row");
    lua_Integer row_key = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
    lua_pop(L, 2);
    if (row_key < 0 || row_key > 65535) return luaL_error(L, "batch: statement %d: bad row key", (int)i);
    if (cnt < 1 || cnt > 65536) return luaL_error(L, "batch: statement %d has no SQL", (int)i);
    luaL_checkstack(L, (int)cnt + 8, "too many parameters");
    for (lua_Integer k = 1; k <= cnt; k++) lua_rawgeti(L, t, k);
    if (lua_type(L, t + 1) != LUA_TSTRING)
      return luaL_error(L, "batch: statement %d: its first item must be the SQL", (int)i);
    add_stmt(L, x->b, t + 1, (int)cnt, (int)row_key);
    lua_settop(L, t - 1);
  }
  return submit(L, u, x, W_BATCH);
}

static int l_stats(lua_State *L) {
  conn_ud *u = check_conn(L);
  pg_stats s;
  pg_get_stats(u->p, &s);
  lua_createtable(L, 0, 7);
  lua_pushinteger(L, (lua_Integer)s.commits);
  lua_setfield(L, -2, "commits");
  lua_pushinteger(L, (lua_Integer)s.batches);
  lua_setfield(L, -2, "batches");
  lua_pushinteger(L, (lua_Integer)s.reads);
  lua_setfield(L, -2, "reads");
  lua_pushinteger(L, (lua_Integer)s.connects);
  lua_setfield(L, -2, "connects");
  lua_pushinteger(L, (lua_Integer)s.lost);
  lua_setfield(L, -2, "lost");
  lua_pushinteger(L, (lua_Integer)s.unknown);
  lua_setfield(L, -2, "unknown");
  lua_pushboolean(L, s.connected);
  lua_setfield(L, -2, "connected");
  return 1;
}

static int l_close(lua_State *L) {
  close_conn(luaL_checkudata(L, 1, CONN_MT));
  return 0;
}

void pg_lua_shutdown(lua_State *L) {
  (void)L;
  G.closing = 1;
  while (G.open) close_conn(G.open);
}

int luaopen_sluice__pg(lua_State *L) {
  static const luaL_Reg methods[] = {{"query", l_query}, {"exec", l_exec},   {"batch", l_batch},
                                     {"stats", l_stats}, {"close", l_close}, {NULL, NULL}};
  G.closing = 0;
  luaL_newmetatable(L, CONN_MT);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_close);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_connect);
  lua_setfield(L, -2, "connect");
  return 1;
}
