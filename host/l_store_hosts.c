/* l_store_hosts.c: "sluice._hosts", the hosts and leases of the process's
 * PostgreSQL store (store_pg.h, "hosts and leases") for lua/hosts.lua:
 *
 *   local h = require "sluice._hosts"
 *   h.register{id=, name=, pid=, lease_ms=, info=table, claims=bool} -> true
 *   h.renew(id, lease_ms)          -> alive (false: expired, stop)
 *   h.deregister(id)               -> true
 *   h.expire(id)                   -> true (a host known dead: its leases free at the next reap)
 *   h.fence(id | nil)              every write transaction checks id is alive
 *   h.claim(id, {pipeline, ...}, limit, floor) -> {runs = {{id=, pipeline=, record=}, ...},
 *                                     free = unleased runs before} (floor <= n <= limit
 *                                     runs: this host's share of the backlog)
 *   h.runs(id)                     -> the same, of the active runs id holds
 *   h.cancelled(id)                -> {run id, ...}: runs id holds that another host cancelled
 *   h.run_hosts({run id, ...})     -> {[run id] = {host=, alive=, machine=, pid=}} of those leased
 *   h.api_schedules()              -> {{name=, record=}, ...}: the schedules created over HTTP
 *   h.hold_run(b, id, run)         -> b: the lease of new run `run`, in batch b (fails the
 *                                     commit, "leased to another host", if another holds it)
 *   h.take(id, kind, name)         -> the holder's id (id: taken, or held)
 *   h.release(id, kind, {name, ...}) -> true
 *   h.list(recent_s)               -> {{id=, name=, pid=, alive=, leases=, named=, ...}, ...}
 * Each call but fence yields until PostgreSQL answered; failures return
 * nil, "CODE: message", "CODE". On a store that is not PostgreSQL every
 * call raises: one host per LMDB store, no leases. */
#include <lauxlib.h>
#include <string.h>

#include "l_store.h"
#include "modules.h"

static pgstore *pg_of(lua_State *L) {
  pgstore *s = l_store_pg(L);
  if (!s) {
    luaL_error(L, "sluice._hosts: the store open is not PostgreSQL (several hosts share a "
                  "PostgreSQL store; an LMDB store has one host, which its lock ensures)");
  }
  return s;
}

static int push_ok(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  lua_pushboolean(L, 1);
  return 1;
}

static int push_alive(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  lua_pushboolean(L, r->flag);
  return 1;
}

static int push_text(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  lua_pushlstring(L, r->rec.data ? r->rec.data : "", r->rec.len);
  return 1;
}

static int push_json(lua_State *L, l_pgread *r) {
  if (r->status) return l_store_pgfail(L, r);
  char err[512];
  int st = l_store_decode(L, r->rec.data ? r->rec.data : "[]", r->rec.len ? r->rec.len : 2,
                          r->what, err, sizeof err);
  return st ? l_store_fail(L, st, err) : 1;
}

/* a host id: non-empty text without NUL (it is a C string below) */
static const char *check_id(lua_State *L, int idx) {
  size_t n;
  const char *id = luaL_checklstring(L, idx, &n);
  luaL_argcheck(L, n > 0 && n < 200 && strlen(id) == n, idx, "a host id is 1 to 199 bytes, no NUL");
  return id;
}

static uint32_t check_ms(lua_State *L, int idx) {
  lua_Integer ms = luaL_checkinteger(L, idx);
  luaL_argcheck(L, ms > 0 && ms <= 86400000, idx, "a lease is 1 ms to 24 h");
  return (uint32_t)ms;
}

/* the list of names at idx as a JSON array into a buffer (a userdata on
 * the stack); NULL when the list is empty */
static sbuf *names_json(lua_State *L, int idx) {
  luaL_checktype(L, idx, LUA_TTABLE);
  if (lua_rawlen(L, idx) == 0) return NULL;
  sbuf *b = l_store_new_buf(L);
  l_store_encode(L, idx, "names", b);
  return b;
}

static int l_register(lua_State *L) {
  pgstore *s = pg_of(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  pgstore_host h = {0};
  lua_getfield(L, 1, "id");
  h.id = check_id(L, -1);
  lua_getfield(L, 1, "name");
  h.name = check_id(L, -1);
  lua_getfield(L, 1, "pid");
  h.pid = (int)luaL_checkinteger(L, -1);
  lua_getfield(L, 1, "lease_ms");
  h.lease_ms = check_ms(L, -1);
  lua_getfield(L, 1, "claims");
  h.claims = lua_isnil(L, -1) || lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, 1, "info");
  if (!lua_isnil(L, -1)) {
    sbuf *info = l_store_new_buf(L);
    l_store_encode(L, -2, "host info", info);
    h.info = info->data;
    h.infon = info->len;
  }
  l_pgread *r = l_store_pgread(L); /* the strings above stay on the stack until done */
  pgstore_host_register(s, &h, l_store_pgread_done, r);
  return l_store_await(L, r, push_ok);
}

static int l_renew(lua_State *L) {
  pgstore *s = pg_of(L);
  const char *id = check_id(L, 1);
  uint32_t ms = check_ms(L, 2);
  l_pgread *r = l_store_pgread(L);
  pgstore_host_renew(s, id, ms, &r->flag, l_store_pgread_done, r);
  return l_store_await(L, r, push_alive);
}

static int l_deregister(lua_State *L) {
  pgstore *s = pg_of(L);
  const char *id = check_id(L, 1);
  l_pgread *r = l_store_pgread(L);
  pgstore_host_deregister(s, id, l_store_pgread_done, r);
  return l_store_await(L, r, push_ok);
}

static int l_expire(lua_State *L) {
  pgstore *s = pg_of(L);
  const char *id = check_id(L, 1);
  l_pgread *r = l_store_pgread(L);
  pgstore_host_expire(s, id, l_store_pgread_done, r);
  return l_store_await(L, r, push_ok);
}

static int l_fence(lua_State *L) {
  pgstore *s = pg_of(L);
  pgstore_host_fence(s, lua_isnoneornil(L, 1) ? NULL : check_id(L, 1));
  return 0;
}

static int l_claim(lua_State *L) {
  pgstore *s = pg_of(L);
  const char *id = check_id(L, 1);
  lua_Integer limit = luaL_checkinteger(L, 3);
  luaL_argcheck(L, limit > 0, 3, "the limit must be positive");
  lua_Integer floor = luaL_checkinteger(L, 4);
  luaL_argcheck(L, floor > 0 && floor <= limit, 4, "the floor must be positive, at most the limit");
  sbuf *names = names_json(L, 2);
  if (!names) { /* no pipeline: no run to claim */
    lua_createtable(L, 0, 2);
    lua_newtable(L);
    lua_setfield(L, -2, "runs");
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "free");
    return 1;
  }
  l_pgread *r = l_store_pgread(L);
  r->what = "the runs claimed";
  pgstore_claim_runs(s, id, names->data, names->len, (size_t)limit, (size_t)floor, &r->rec,
                     l_store_pgread_done, r);
  return l_store_await(L, r, push_json);
}

static int l_runs(lua_State *L) {
  pgstore *s = pg_of(L);
  const char *id = check_id(L, 1);
  l_pgread *r = l_store_pgread(L);
  r->what = "the runs of a host";
  pgstore_host_runs(s, id, &r->rec, l_store_pgread_done, r);
  return l_store_await(L, r, push_json);
}

static int l_cancelled(lua_State *L) {
  pgstore *s = pg_of(L);
  const char *id = check_id(L, 1);
  l_pgread *r = l_store_pgread(L);
  r->what = "the cancelled runs of a host";
  pgstore_host_cancelled(s, id, &r->rec, l_store_pgread_done, r);
  return l_store_await(L, r, push_json);
}

static int l_run_hosts(lua_State *L) {
  pgstore *s = pg_of(L);
  sbuf *ids = names_json(L, 1);
  if (!ids) {
    lua_newtable(L);
    return 1;
  }
  l_pgread *r = l_store_pgread(L);
  r->what = "the hosts of runs";
  pgstore_run_hosts(s, ids->data, ids->len, &r->rec, l_store_pgread_done, r);
  return l_store_await(L, r, push_json);
}

static int l_api_schedules(lua_State *L) {
  pgstore *s = pg_of(L);
  l_pgread *r = l_store_pgread(L);
  r->what = "the schedules created over the API";
  pgstore_api_schedules(s, &r->rec, l_store_pgread_done, r);
  return l_store_await(L, r, push_json);
}

static int l_hold_run(lua_State *L) {
  pgstore_batch *b = l_store_pg_batch(L, 1);
  if (!b) luaL_argerror(L, 1, "a batch of a PostgreSQL store");
  const char *id = check_id(L, 2);
  size_t n;
  const char *run = luaL_checklstring(L, 3, &n);
  if (pgstore_hold_run(b, id, run, n) != 0) luaL_argerror(L, 3, "a run id without NUL bytes");
  lua_settop(L, 1);
  return 1;
}

static int l_take(lua_State *L) {
  pgstore *s = pg_of(L);
  const char *id = check_id(L, 1);
  const char *kind = check_id(L, 2);
  size_t n;
  const char *name = luaL_checklstring(L, 3, &n);
  l_pgread *r = l_store_pgread(L);
  pgstore_take_lease(s, id, kind, name, n, &r->rec, l_store_pgread_done, r);
  return l_store_await(L, r, push_text);
}

static int l_release(lua_State *L) {
  pgstore *s = pg_of(L);
  const char *id = check_id(L, 1);
  const char *kind = check_id(L, 2);
  sbuf *names = names_json(L, 3);
  if (!names) {
    lua_pushboolean(L, 1);
    return 1;
  }
  l_pgread *r = l_store_pgread(L);
  pgstore_release_leases(s, id, kind, names->data, names->len, l_store_pgread_done, r);
  return l_store_await(L, r, push_ok);
}

static int l_list(lua_State *L) {
  pgstore *s = pg_of(L);
  lua_Integer recent = luaL_optinteger(L, 1, 600);
  luaL_argcheck(L, recent >= 0 && recent <= 86400 * 365, 1, "seconds from 0 to a year");
  l_pgread *r = l_store_pgread(L);
  r->what = "the hosts";
  pgstore_list_hosts(s, (uint32_t)recent, &r->rec, l_store_pgread_done, r);
  return l_store_await(L, r, push_json);
}

int luaopen_sluice__hosts(lua_State *L) {
  static const luaL_Reg fns[] = {{"register", l_register}, {"renew", l_renew},
                                 {"deregister", l_deregister}, {"expire", l_expire},
                                 {"fence", l_fence},
                                 {"claim", l_claim}, {"runs", l_runs},
                                 {"cancelled", l_cancelled}, {"run_hosts", l_run_hosts},
                                 {"api_schedules", l_api_schedules}, {"hold_run", l_hold_run},
                                 {"take", l_take}, {"release", l_release},
                                 {"list", l_list}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
