/* l_http_server.c: "sluice._http_server", the Lua binding of http_server.h
 * (glue only). Used by lua/http.lua; not for pipeline authors.
 *
 *   local srv = hs.new{on_request = fn, max_body =, max_head =, max_connections =,
 *                      header_timeout_ms =, body_timeout_ms =, idle_timeout_ms =}
 *   srv:listen(host, port) -> "host:port" | nil, "CODE: msg", "CODE"
 *   srv:stats() -> {accepted, requests, rejected, errors, connections}
 *   srv:close()
 *
 * on_request(req, res) runs on the main thread from the loop (through
 * vm_pcall: an error is logged, never fatal, and the request gets a 500).
 * req = {method, target, headers = {lowercased name = value}, body, id,
 * peer}. res answers once: res:send(status, header_lines, body), or
 * res:start(status, header_lines) then res:write(data)... res:finish().
 * They return true, or nil once the client is gone. res:on_close(fn) runs fn
 * if the connection closes before the response ends; res:queued() is the
 * bytes not yet written to a slow client.
 *
 * A response userdata is anchored in the registry while its request is in
 * flight; the connection forgets it (and it forgets the connection) when
 * the response ends or the connection closes, whichever is first. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "modules.h"
#include "http_server.h"
#include "vm.h"

#define SERVER_MT "sluice._http_server"
#define RES_MT "sluice.http_response"

typedef struct lserver {
  http_server *s;
  lua_State *L; /* the main state */
  int on_request;
  int self;             /* registry ref while open: the C server points here */
  struct lserver *next; /* open servers, closed at host shutdown */
} lserver;

typedef struct {
  http_conn *c;
  int self;     /* registry ref while in flight */
  int on_close; /* registry ref of the Lua function, or LUA_NOREF */
} lres;

static lserver *open_servers;

static void forget(lua_State *L, lres *r) {
  if (r->c) http_conn_set_data(r->c, NULL);
  r->c = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, r->on_close);
  r->on_close = LUA_NOREF;
  int self = r->self;
  r->self = LUA_NOREF;
  luaL_unref(L, LUA_REGISTRYINDEX, self);
}

static void push_request(lua_State *L, http_conn *c, http_request *req) {
  lua_createtable(L, 0, 7);
  lua_pushstring(L, req->method);
  lua_setfield(L, -2, "method");
  lua_pushlstring(L, req->target.data ? req->target.data : "", req->target.len);
  lua_setfield(L, -2, "target");
  lua_pushlstring(L, req->body.data ? req->body.data : "", req->body.len);
  lua_setfield(L, -2, "body");
  lua_pushstring(L, http_conn_request_id(c));
  lua_setfield(L, -2, "id");
  lua_pushstring(L, http_conn_peer(c));
  lua_setfield(L, -2, "peer");
  lua_createtable(L, 0, (int)req->nheaders);
  const char *s = req->head.data, *end = s ? s + req->head.len : NULL;
  while (s && s < end) {
    size_t nn = strlen(s);
    const char *v = s + nn + 1;
    size_t vn = strlen(v);
    lua_pushlstring(L, s, nn);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {
      /* a repeated header: its values joined as one list (RFC 9110 5.3) */
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, v, vn);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, v, vn);
    }
    lua_rawset(L, -3);
    s = v + vn + 1;
  }
  lua_setfield(L, -2, "headers");
}

static void on_request(void *ud, http_conn *c, http_request *req) {
  lserver *ls = ud;
  lua_State *L = ls->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ls->on_request);
  push_request(L, c, req);
  lres *r = lua_newuserdatauv(L, sizeof *r, 0);
  r->c = c;
  r->on_close = LUA_NOREF;
  luaL_setmetatable(L, RES_MT);
  lua_pushvalue(L, -1);
  r->self = luaL_ref(L, LUA_REGISTRYINDEX);
  http_conn_set_data(c, r);
  if (vm_pcall(L, 2, 0, 0) < 0 && r->c) {
    /* the router itself failed (logged by vm_pcall) */
    static const char body[] = "{\"error\":\"internal error\",\"code\":\"internal\"}\n";
    static const char hdrs[] = "Content-Type: application/json\r\n";
    http_conn *cc = r->c;
    forget(L, r);
    http_respond(cc, 500, hdrs, sizeof hdrs - 1, body, sizeof body - 1);
  }
}

static void on_closed(void *ud, http_conn *c) {
  lserver *ls = ud;
  lua_State *L = ls->L;
  lres *r = http_conn_get_data(c);
  if (!r) return;
  r->c = NULL;
  http_conn_set_data(c, NULL);
  if (r->on_close != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->on_close);
    vm_pcall(L, 0, 0, 0);
  }
  forget(L, r);
}

static lserver *check_server(lua_State *L) {
  lserver *ls = luaL_checkudata(L, 1, SERVER_MT);
  if (!ls->s) luaL_error(L, "the HTTP server is closed");
  return ls;
}

static lua_Integer opt_int(lua_State *L, int t, const char *k, lua_Integer def) {
  lua_getfield(L, t, k);
  lua_Integer v = def;
  if (!lua_isnil(L, -1)) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) <= 0) {
      luaL_error(L, "http_server.new: %s must be a positive integer", k);
    }
    v = lua_tointeger(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

/* new(opts) -> server */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  http_limits lim;
  http_limits_default(&lim);
  lim.max_body = (size_t)opt_int(L, 1, "max_body", (lua_Integer)lim.max_body);
  lim.max_head = (size_t)opt_int(L, 1, "max_head", (lua_Integer)lim.max_head);
  lim.max_connections = (int)opt_int(L, 1, "max_connections", lim.max_connections);
  lim.header_timeout_ms = (uint64_t)opt_int(L, 1, "header_timeout_ms", (lua_Integer)lim.header_timeout_ms);
  lim.body_timeout_ms = (uint64_t)opt_int(L, 1, "body_timeout_ms", (lua_Integer)lim.body_timeout_ms);
  lim.idle_timeout_ms = (uint64_t)opt_int(L, 1, "idle_timeout_ms", (lua_Integer)lim.idle_timeout_ms);
  lua_getfield(L, 1, "on_request");
  luaL_argcheck(L, lua_isfunction(L, -1), 1, "on_request must be a function");
  lserver *ls = lua_newuserdatauv(L, sizeof *ls, 0);
  memset(ls, 0, sizeof *ls);
  ls->on_request = ls->self = LUA_NOREF;
  luaL_setmetatable(L, SERVER_MT);
  ls->L = vm_of(L)->L;
  lua_pushvalue(L, -2);
  ls->on_request = luaL_ref(L, LUA_REGISTRYINDEX);
  http_callbacks cb = {on_request, on_closed};
  char err[256];
  if (http_server_new(&ls->s, &vm_of(L)->loop, &lim, &cb, ls, err, sizeof err) != 0) {
    ls->s = NULL;
    return luaL_error(L, "%s", err);
  }
  ls->next = open_servers;
  open_servers = ls;
  lua_pushvalue(L, -1);
  ls->self = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

/* srv:listen(host, port) -> "host:port" | nil, "CODE: msg", "CODE" */
static int l_listen(lua_State *L) {
  lserver *ls = check_server(L);
  const char *host = luaL_checkstring(L, 2);
  lua_Integer port = luaL_checkinteger(L, 3);
  luaL_argcheck(L, port >= 0 && port <= 65535, 3, "port must be 0 to 65535");
  char bound[128], err[256];
  int rc = http_server_listen(ls->s, host, (int)port, bound, sizeof bound, err, sizeof err);
  if (rc != 0) return modules_fail(L, uv_err_name(rc), err);
  lua_pushstring(L, bound);
  return 1;
}

static void unlink_server(lserver *ls) {
  for (lserver **pp = &open_servers; *pp; pp = &(*pp)->next) {
    if (*pp == ls) {
      *pp = ls->next;
      break;
    }
  }
}

static void close_server(lua_State *L, lserver *ls, int quiet) {
  if (!ls->s) return;
  http_server *s = ls->s;
  ls->s = NULL;
  unlink_server(ls);
  http_server_close(s, quiet);
  luaL_unref(L, LUA_REGISTRYINDEX, ls->on_request);
  ls->on_request = LUA_NOREF;
  luaL_unref(L, LUA_REGISTRYINDEX, ls->self);
  ls->self = LUA_NOREF;
}

static int l_close(lua_State *L) {
  lserver *ls = luaL_checkudata(L, 1, SERVER_MT);
  close_server(L, ls, 0);
  return 0;
}

static int l_stats(lua_State *L) {
  lserver *ls = check_server(L);
  http_stats st;
  http_server_stats(ls->s, &st);
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, (lua_Integer)st.accepted);
  lua_setfield(L, -2, "accepted");
  lua_pushinteger(L, (lua_Integer)st.requests);
  lua_setfield(L, -2, "requests");
  lua_pushinteger(L, (lua_Integer)st.rejected);
  lua_setfield(L, -2, "rejected");
  lua_pushinteger(L, (lua_Integer)st.errors);
  lua_setfield(L, -2, "errors");
  lua_pushinteger(L, st.connections);
  lua_setfield(L, -2, "connections");
  return 1;
}

void http_lua_shutdown(void) {
  while (open_servers) {
    lserver *ls = open_servers;
    open_servers = ls->next;
    http_server *s = ls->s;
    ls->s = NULL;
    if (s) http_server_close(s, 1);
  }
}

/* ---- responses --------------------------------------------------------- */

static lres *check_res(lua_State *L) { return luaL_checkudata(L, 1, RES_MT); }

static int gone(lua_State *L) { return modules_fail(L, "ECONNRESET", "the client is gone"); }

/* res:send(status, header_lines, body) -> true | nil, "ECONNRESET: the client is gone", "ECONNRESET" */
static int l_send(lua_State *L) {
  lres *r = check_res(L);
  int status = (int)luaL_checkinteger(L, 2);
  size_t hn = 0, bn = 0;
  const char *h = luaL_optlstring(L, 3, "", &hn);
  const char *b = luaL_optlstring(L, 4, "", &bn);
  luaL_argcheck(L, status >= 100 && status <= 999, 2, "not an HTTP status");
  if (!r->c) return gone(L);
  http_conn *c = r->c;
  forget(L, r);
  if (http_respond(c, status, h, hn, b, bn) != 0) return gone(L);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_start(lua_State *L) {
  lres *r = check_res(L);
  int status = (int)luaL_checkinteger(L, 2);
  size_t hn = 0;
  const char *h = luaL_optlstring(L, 3, "", &hn);
  if (!r->c || http_stream_start(r->c, status, h, hn) != 0) return gone(L);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_write(lua_State *L) {
  lres *r = check_res(L);
  size_t n;
  const char *d = luaL_checklstring(L, 2, &n);
  if (!r->c || http_stream_write(r->c, d, n) != 0) return gone(L);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_finish(lua_State *L) {
  lres *r = check_res(L);
  if (!r->c) return 0;
  http_conn *c = r->c;
  forget(L, r);
  http_stream_end(c);
  return 0;
}

static int l_on_close(lua_State *L) {
  lres *r = check_res(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (!r->c) return 0;
  luaL_unref(L, LUA_REGISTRYINDEX, r->on_close);
  lua_pushvalue(L, 2);
  r->on_close = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static int l_closed(lua_State *L) {
  lua_pushboolean(L, check_res(L)->c == NULL);
  return 1;
}

static int l_queued(lua_State *L) {
  lres *r = check_res(L);
  lua_pushinteger(L, r->c ? (lua_Integer)http_conn_queued(r->c) : 0);
  return 1;
}

int luaopen_sluice__http_server(lua_State *L) {
  static const luaL_Reg server_methods[] = {
      {"listen", l_listen}, {"close", l_close}, {"stats", l_stats}, {NULL, NULL}};
  static const luaL_Reg res_methods[] = {
      {"send", l_send},         {"start", l_start},   {"write", l_write},
      {"finish", l_finish},     {"on_close", l_on_close}, {"closed", l_closed},
      {"queued", l_queued},     {NULL, NULL}};
  modules_class(L, SERVER_MT, server_methods, NULL, 0);
  modules_class(L, RES_MT, res_methods, NULL, 0);
  static const luaL_Reg fns[] = {{"new", l_new}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
