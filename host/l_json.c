/* l_json.c: the sluice.json Lua module, a thin binding over codec.c.
 *
 * encode(v [, {pretty=true}]) -> text, decode(text) -> value; both raise
 * with the codec's message ("value.a[2]: cannot store a function",
 * "line 1, column 7 (byte 6): unexpected token"). null is json.null (a light
 * userdata NULL); array(t) marks t as a JSON array; is_array(t) tells
 * whether encode would write t as an array.
 * Depends on: codec.h, sbuf.h.
 */
#include <lauxlib.h>
#include <stdlib.h>

#include "codec.h"

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

static int f_encode(lua_State *L) {
  luaL_checkany(L, 1);
  int pretty = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "pretty");
    pretty = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  lua_settop(L, 1);
  json_buf *jb = lua_touserdata(L, lua_upvalueindex(1));
  sbuf_reset(&jb->b);
  char err[512];
  int rc = codec_encode(L, 1, "value", pretty, &jb->b, err, sizeof err);
  if (rc == 0) lua_pushlstring(L, jb->b.data ? jb->b.data : "", jb->b.len);
  if (jb->b.cap > JSON_BUF_KEEP) sbuf_free(&jb->b);
  if (rc != 0) return luaL_error(L, "%s", err);
  return 1;
}

static int f_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  char err[512];
  if (codec_decode(L, s, n, err, sizeof err) != 0) return luaL_error(L, "%s", err);
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

int luaopen_sluice_json(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"decode", f_decode}, {"array", f_array}, {"is_array", f_is_array}, {NULL, NULL}};
  luaL_newlib(L, fns);

  json_buf *jb = lua_newuserdatauv(L, sizeof *jb, 0);
  jb->b = (sbuf)SBUF_INIT;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, json_buf_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_pushcclosure(L, f_encode, 1);
  lua_setfield(L, -2, "encode");

  codec_push_null(L);
  lua_setfield(L, -2, "null");
  return 1;
}
