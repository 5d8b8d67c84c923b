/* l_store_tools.c: "sluice._store_tools", the store tools for the command
 * line (lua/cli_store.lua): store_copy.h and store_check.h, run on the loop
 * while the calling coroutine waits.
 *
 *   local tools = require "sluice._store_tools"
 *   tools.copy(from, to [, {page=, batch=, progress=true}])
 *     -> {ok, refused, verified, error, source = census, destination = census,
 *         copied = {kind = n}} | nil, "CODE: message", "CODE" (a store did not open)
 *   tools.check(where [, {page=, progress=true}])
 *     -> {ok, count, problems = {{what, message}, ...}, census, checked = {kind = n}}
 *        | nil, "CODE: message", "CODE" (the store did not open, or a read failed)
 *   tools.kinds -> the record types in the order of store.h (census keys)
 * A census is {kind = n, ..., events_last, events_ts, sends_last, dispatched}.
 *
 * The tools read run records' fields and check that records decode with
 * the record codec (codec.h), which is Lua's: they call back into a Lua
 * thread of their own for that (protected: a failure is a finding, never a
 * raise on the loop). */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "modules.h"
#include "store_check.h"
#include "store_copy.h"
#include "vm.h"

typedef struct {
  lua_State *co; /* the caller, waiting */
  lua_State *T;  /* the decoding thread */
  int co_ref, t_ref, yielded, finished;
  int nres; /* values op_finish left on co's stack */
} op;

/* ---- decoding, on op's thread ---------------------------------------------- */

typedef struct {
  const char *json;
  size_t n;
  char *err;
  size_t errsz;
  int ok;
} dec_args;

static int p_decode(lua_State *T) {
  dec_args *a = lua_touserdata(T, 1);
  a->ok = codec_decode_ex(T, a->json, a->n, CODEC_RECORD, a->err, a->errsz) == 0;
  return a->ok ? 1 : 0;
}

/* decodes json onto T's stack (protected): 1, or 0 with err */
static int decode_on(lua_State *T, const char *json, size_t n, char *err, size_t errsz) {
  lua_settop(T, 0);
  dec_args a = {json, n, err, errsz, 0};
  lua_pushcfunction(T, p_decode);
  lua_pushlightuserdata(T, &a);
  if (lua_pcall(T, 1, 1, 0) != LUA_OK) {
    snprintf(err, errsz, "%s", lua_isstring(T, -1) ? lua_tostring(T, -1) : "out of memory");
    lua_settop(T, 0);
    return 0;
  }
  if (!a.ok) lua_settop(T, 0);
  return a.ok;
}

static int decodes(void *ud, const char *json, size_t n, char *err, size_t errsz) {
  op *o = ud;
  int ok = decode_on(o->T, json, n, err, errsz);
  lua_settop(o->T, 0);
  return ok ? 0 : -1;
}

/* t[k] into out (at most 200 bytes, no NUL), or def when absent */
static int text_field(lua_State *T, const char *k, const char *def, char *out, char *err,
                      size_t errsz) {
  lua_pushstring(T, k);
  lua_rawget(T, 1);
  size_t len = 0;
  const char *v = lua_type(T, -1) == LUA_TSTRING ? lua_tolstring(T, -1, &len) : NULL;
  int absent = lua_isnil(T, -1);
  lua_pop(T, 1);
  if (absent && def) v = def, len = strlen(def);
  if (!v || len == 0 || len > 200 || memchr(v, '\0', len)) {
    snprintf(err, errsz, "its %s is %s", k, absent ? "missing" : "not a string of 1 to 200 bytes");
    return -1;
  }
  memcpy(out, v, len);
  out[len] = '\0';
  return 0;
}

/* the fields of a run record as the engine's put_run reads them
 * (l_store_runs.c): a missing namespace is "default", status "pending" */
static int run_fields(void *ud, const char *json, size_t n, store_run_fields *f, char *err,
                      size_t errsz) {
  op *o = ud;
  lua_State *T = o->T;
  memset(f, 0, sizeof *f);
  if (!decode_on(T, json, n, err, errsz)) return -1;
  int rc = -1;
  if (!lua_istable(T, 1)) {
    snprintf(err, errsz, "not a JSON object");
  } else if (text_field(T, "id", NULL, f->id, err, errsz) == 0 &&
             text_field(T, "pipeline", NULL, f->pipeline, err, errsz) == 0 &&
             text_field(T, "namespace", STORE_DEFAULT_NS, f->ns, err, errsz) == 0 &&
             text_field(T, "status", "pending", f->status, err, errsz) == 0) {
    lua_pushliteral(T, "created_us");
    lua_rawget(T, 1);
    f->created_us = lua_tointeger(T, -1);
    rc = 0;
  }
  lua_settop(T, 0);
  return rc;
}

/* ---- the operation ---------------------------------------------------------- */

static op *op_new(lua_State *L) {
  if (!lua_isyieldable(L)) {
    luaL_error(L, "sluice._store_tools: call it from a coroutine the host resumes");
  }
  op *o = calloc(1, sizeof *o);
  if (!o) luaL_error(L, "out of memory");
  o->co = L;
  o->T = lua_newthread(L);
  o->t_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushthread(L);
  o->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return o;
}

/* the nres results are on o->co's stack: resume it (or let the call return
 * them) */
static void op_finish(op *o, int nres) {
  lua_State *co = o->co;
  luaL_unref(co, LUA_REGISTRYINDEX, o->t_ref);
  int ref = o->co_ref, yielded = o->yielded;
  o->finished = 1;
  o->nres = nres;
  if (!yielded) return; /* done before the call returned: it returns them */
  free(o);
  if (lua_status(co) == LUA_YIELD) {
    vm_resume(co, NULL, nres);
  } else { /* resumed by somebody else meanwhile: nothing to hand it to */
    fprintf(stderr, "sluice: a coroutine waiting for a store tool was resumed elsewhere; "
                    "result dropped\n");
  }
  luaL_unref(vm_of(co)->L, LUA_REGISTRYINDEX, ref);
}

/* waits for op_finish (unless it ran already) */
static int op_wait(lua_State *L, op *o) {
  if (o->finished) {
    int nres = o->nres;
    luaL_unref(L, LUA_REGISTRYINDEX, o->co_ref);
    free(o);
    return nres;
  }
  o->yielded = 1;
  return lua_yield(L, 0);
}

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

static void push_counts(lua_State *L, const int64_t *n) {
  lua_createtable(L, 0, STORE_KINDS);
  for (int k = 0; k < STORE_KINDS; k++) set_int(L, store_kind_names[k], n[k]);
}

static void push_census(lua_State *L, const store_census *c) {
  push_counts(L, c->n);
  set_int(L, "events_last", (lua_Integer)c->events_last);
  set_int(L, "events_ts", c->events_ts);
  set_int(L, "sends_last", (lua_Integer)c->sends_last);
  set_int(L, "dispatched", (lua_Integer)c->dispatched);
}

static void opts_of(lua_State *L, int idx, size_t *page, size_t *batch, FILE **progress) {
  *page = *batch = 0;
  *progress = NULL;
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_getfield(L, idx, "page");
  lua_Integer p = luaL_optinteger(L, -1, 0);
  lua_getfield(L, idx, "batch");
  lua_Integer b = luaL_optinteger(L, -1, 0);
  lua_getfield(L, idx, "progress");
  if (lua_toboolean(L, -1)) *progress = stderr;
  lua_pop(L, 3);
  luaL_argcheck(L, p >= 0 && b >= 0, idx, "page and batch are counts");
  *page = (size_t)p;
  *batch = (size_t)b;
}

/* ---- copy ---------------------------------------------------------------- */

static void copy_done(void *cookie, const store_copy_result *r) {
  op *o = cookie;
  lua_State *L = o->co;
  lua_createtable(L, 0, 8);
  lua_pushboolean(L, r->status == 0 && r->verified);
  lua_setfield(L, -2, "ok");
  lua_pushboolean(L, r->refused);
  lua_setfield(L, -2, "refused");
  lua_pushboolean(L, r->status == 0 && r->verified);
  lua_setfield(L, -2, "verified");
  if (r->status || !r->verified) {
    lua_pushstring(L, r->err);
    lua_setfield(L, -2, "error");
  }
  if (r->status) {
    lua_pushstring(L, store_status_code(r->status));
    lua_setfield(L, -2, "code");
  }
  push_census(L, &r->src);
  lua_setfield(L, -2, "source");
  push_census(L, &r->dst);
  lua_setfield(L, -2, "destination");
  push_counts(L, r->copied);
  lua_setfield(L, -2, "copied");
  op_finish(o, 1);
}

static int l_copy(lua_State *L) {
  const char *from = luaL_checkstring(L, 1), *to = luaL_checkstring(L, 2);
  store_copy_opts so = {0, 0, NULL, run_fields, NULL};
  opts_of(L, 3, &so.page, &so.batch, &so.progress);
  op *o = op_new(L);
  so.ud = o;
  char err[1024];
  int rc = store_copy(&vm_of(L)->loop, from, to, &so, copy_done, o, err, sizeof err);
  if (rc) {
    luaL_unref(L, LUA_REGISTRYINDEX, o->t_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, o->co_ref);
    free(o);
    return modules_fail(L, store_status_code(rc), err);
  }
  return op_wait(L, o);
}

/* ---- check ----------------------------------------------------------------- */

static void check_done(void *cookie, const store_check_result *r) {
  op *o = cookie;
  lua_State *L = o->co;
  if (r->status) return op_finish(o, modules_fail(L, store_status_code(r->status), r->err));
  lua_createtable(L, 0, 6);
  lua_pushboolean(L, r->problems == 0);
  lua_setfield(L, -2, "ok");
  set_int(L, "count", (lua_Integer)r->problems);
  lua_createtable(L, r->problems < STORE_CHECK_SHOWN ? (int)r->problems : STORE_CHECK_SHOWN, 0);
  const char *p = r->found.data, *end = r->found.data + r->found.len;
  for (int i = 1; p && p < end; i++) {
    lua_createtable(L, 2, 0);
    lua_pushstring(L, p);
    lua_rawseti(L, -2, 1);
    p += strlen(p) + 1;
    lua_pushstring(L, p);
    lua_rawseti(L, -2, 2);
    p += strlen(p) + 1;
    lua_rawseti(L, -2, i);
  }
  lua_setfield(L, -2, "problems");
  push_census(L, &r->census);
  lua_setfield(L, -2, "census");
  push_counts(L, r->checked);
  lua_setfield(L, -2, "checked");
  op_finish(o, 1);
}

static int l_check(lua_State *L) {
  const char *where = luaL_checkstring(L, 1);
  size_t batch;
  store_check_opts so = {0, NULL, run_fields, decodes, NULL};
  opts_of(L, 2, &so.page, &batch, &so.progress);
  op *o = op_new(L);
  so.ud = o;
  char err[1024];
  int rc = store_check(&vm_of(L)->loop, where, &so, check_done, o, err, sizeof err);
  if (rc) {
    luaL_unref(L, LUA_REGISTRYINDEX, o->t_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, o->co_ref);
    free(o);
    return modules_fail(L, store_status_code(rc), err);
  }
  return op_wait(L, o);
}

int luaopen_sluice__store_tools(lua_State *L) {
  static const luaL_Reg fns[] = {{"copy", l_copy}, {"check", l_check}, {NULL, NULL}};
  luaL_newlib(L, fns);
  lua_createtable(L, STORE_KINDS, 0);
  for (int k = 0; k < STORE_KINDS; k++) {
    lua_pushstring(L, store_kind_names[k]);
    lua_rawseti(L, -2, k + 1);
  }
  lua_setfield(L, -2, "kinds");
  return 1;
}
