/* l_json.c: the sluice.json Lua module, a thin binding over codec.c, and
 * sluice._codec, the same module for sluice's own Lua code.
 *
 * encode(v [, {pretty=true}]) -> text, decode(text) -> value; both raise
 * with the codec's message ("value.a[2]: cannot store a function",
 * "line 1, column 7 (byte 6): unexpected token"). null is json.null (a light
 * userdata NULL); array(t) marks t as a JSON array; is_array(t) tells
 * whether encode would write t as an array.
 *
 * Three flavours, one binding (codec.h explains the flags):
 *  - sluice.json, the user's: an edge. NaN and infinities are written as
 *    null with a warning on stderr, once per line of code that encodes them:
 *    "sluice: warning: etl.lua:7: json.encode: value.ratio is NaN: written
 *    as null (JSON has no NaN or Infinity)". Values nest at most
 *    CODEC_MAX_DEPTH, for encode and decode alike.
 *  - sluice._codec: store records, exact (tags), CODEC_RECORD; and
 *    try_encode/try_decode, which return the error instead of raising.
 *  - sluice._codec.edge: what the command line prints, an edge for records;
 *    one warning per process ("... printed as null ...").
 * Depends on: codec.h, sbuf.h.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>

#include "codec.h"
#include "modules.h"

typedef struct {
  int enc_flags, dec_flags;
  int warn; /* 0 none, 1 per call site (the user's), 2 once (the CLI's) */
} flavour;

static const flavour user_flavour = {CODEC_EDGE, 0, 1};
static const flavour store_flavour = {CODEC_RECORD, CODEC_RECORD, 0};
static const flavour cli_flavour = {CODEC_EDGE | CODEC_RECORD, CODEC_RECORD, 2};

/* Output buffer reused across encode calls (an upvalue of encode); big ones
 * are released after use so one huge value does not pin its memory. */
typedef struct {
  sbuf b;
} json_buf;

#define JSON_BUF_KEEP (64 * 1024)

static int json_buf_gc(lua_State *L) {
  json_buf *jb = lua_touserdata(L, 1);
  sbuf_free(&jb->b);
  return 0;
}

/* The warning of an edge encoding that wrote NaN or an infinity as null;
 * `warned` (upvalue 3 of encode) holds the call sites already warned. */
static void warn_nonfinite(lua_State *L, const flavour *fl, const codec_report *rep) {
  if (fl->warn == 1)
    luaL_where(L, 1); /* the line that called encode, "" if none */
  else
    lua_pushliteral(L, "");
  lua_pushvalue(L, -1);
  if (lua_rawget(L, lua_upvalueindex(3)) != LUA_TNIL) {
    lua_pop(L, 2);
    return;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, -1);
  lua_pushboolean(L, 1);
  lua_rawset(L, lua_upvalueindex(3));
  char more[48] = "";
  if (rep->nonfinite > 1) snprintf(more, sizeof more, " (and %zu more)", rep->nonfinite - 1);
  if (fl->warn == 1)
    fprintf(stderr, "sluice: warning: %sjson.encode: %s%s: written as null (JSON has no NaN or Infinity)\n",
            lua_tostring(L, -1), rep->first, more);
  else
    fprintf(stderr, "sluice: warning: %s%s: printed as null (JSON has no NaN or Infinity; "
                    "the store keeps the exact value)\n", rep->first, more);
  fflush(stderr);
  lua_pop(L, 1);
}

/* upvalues: 1 json_buf, 2 flavour (light userdata), 3 table of warned sites */
static int f_encode(lua_State *L) {
  luaL_checkany(L, 1);
  const flavour *fl = lua_touserdata(L, lua_upvalueindex(2));
  int flags = fl->enc_flags;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "pretty");
    if (lua_toboolean(L, -1)) flags |= CODEC_PRETTY;
    lua_pop(L, 1);
  }
  lua_settop(L, 1);
  json_buf *jb = lua_touserdata(L, lua_upvalueindex(1));
  sbuf_reset(&jb->b);
  char err[512];
  codec_report rep;
  int rc = codec_encode_ex(L, 1, "value", flags, &jb->b, err, sizeof err, &rep);
  if (rc == 0) lua_pushlstring(L, jb->b.data ? jb->b.data : "", jb->b.len);
  if (jb->b.cap > JSON_BUF_KEEP) sbuf_free(&jb->b);
  if (rc != 0) return luaL_error(L, "%s", err);
  if (rep.nonfinite && fl->warn) warn_nonfinite(L, fl, &rep);
  return 1;
}

/* upvalue: 1 flavour */
static int f_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  const flavour *fl = lua_touserdata(L, lua_upvalueindex(1));
  char err[512];
  if (codec_decode_ex(L, s, n, fl->dec_flags, err, sizeof err) != 0) return luaL_error(L, "%s", err);
  return 1;
}

/* array([t]) -> t, marked as a JSON array (a new table without t) */
static int f_array(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  } else {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
  }
  luaL_newmetatable(L, CODEC_ARRAY_MT);
  if (lua_getmetatable(L, 1)) {
    /* replacing a class metatable would silently break the object */
    if (!lua_rawequal(L, -1, -2)) return luaL_argerror(L, 1, "table already has a metatable");
    lua_pop(L, 1);
  }
  lua_setmetatable(L, 1);
  return 1;
}

/* is_array(v) -> true when encode writes v as a JSON array: a table marked
 * with array(), or a non-empty sequence 1..n with no other keys. */
static int f_is_array(lua_State *L) {
  if (!lua_istable(L, 1)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_settop(L, 1);
  int marked = 0;
  if (lua_getmetatable(L, 1)) {
    luaL_getmetatable(L, CODEC_ARRAY_MT);
    marked = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }
  lua_Integer count = 0, max = 0;
  int ok = 1;
  lua_pushnil(L);
  while (ok && lua_next(L, 1)) {
    lua_pop(L, 1);
    if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
      lua_Integer k = lua_tointeger(L, -1);
      count++;
      if (k > max) max = k;
    } else {
      ok = 0;
      lua_pop(L, 1);
    }
  }
  lua_pushboolean(L, ok && count == max && (count > 0 || marked));
  return 1;
}

/* Pushes a module table of flavour fl. */
static void push_module(lua_State *L, const flavour *fl) {
  static const luaL_Reg fns[] = {{"array", f_array}, {"is_array", f_is_array}, {NULL, NULL}};
  luaL_newlib(L, fns);

  json_buf *jb = lua_newuserdatauv(L, sizeof *jb, 0);
  jb->b = (sbuf)SBUF_INIT;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, json_buf_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_pushlightuserdata(L, (void *)fl);
  lua_newtable(L);
  lua_pushcclosure(L, f_encode, 3);
  lua_setfield(L, -2, "encode");

  lua_pushlightuserdata(L, (void *)fl);
  lua_pushcclosure(L, f_decode, 1);
  lua_setfield(L, -2, "decode");

  codec_push_null(L);
  lua_setfield(L, -2, "null");
}

int luaopen_sluice_json(lua_State *L) {
  push_module(L, &user_flavour);
  return 1;
}

/* try_encode(v, root [, record]) -> json | nil, "EINVAL: root.path: message",
 * "EINVAL": a value for the store (record: a store record wrapping values,
 * CODEC_RECORD), checked where a bad value is the user's error to report. */
static int f_try_encode(lua_State *L) {
  luaL_checkany(L, 1);
  const char *root = luaL_optstring(L, 2, "value");
  int flags = lua_toboolean(L, 3) ? CODEC_RECORD : 0;
  sbuf out = SBUF_INIT;
  char err[512];
  int rc = codec_encode(L, 1, root, flags, &out, err, sizeof err);
  if (rc == 0) lua_pushlstring(L, out.data ? out.data : "", out.len);
  sbuf_free(&out);
  return rc == 0 ? 1 : modules_invalid(L, err);
}

/* try_decode(s [, init]) -> value | nil, "EINVAL: line L, column C (byte B):
 * message", "EINVAL"; init (1-based) decodes the text from that byte on. */
static int f_try_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_Integer init = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, init >= 1 && (size_t)init <= n + 1, 2, "out of range");
  char err[512];
  if (codec_decode(L, s + init - 1, n - (size_t)(init - 1), err, sizeof err) != 0)
    return modules_invalid(L, err);
  return 1;
}

int luaopen_sluice__codec(lua_State *L) {
  push_module(L, &store_flavour);
  lua_pushcfunction(L, f_try_encode);
  lua_setfield(L, -2, "try_encode");
  lua_pushcfunction(L, f_try_decode);
  lua_setfield(L, -2, "try_decode");
  push_module(L, &cli_flavour);
  lua_setfield(L, -2, "edge");
  return 1;
}
