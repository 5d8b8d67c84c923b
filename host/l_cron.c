/* l_cron.c: the cron engine (cron.c) for Lua, part of "sluice.host": parse
 * and canonicalize expressions, next fire times in a time zone, zone
 * offsets, ISO 8601. */
#include <lauxlib.h>

#include "cron.h"
#include "host_lib.h"

static const char *opt_tz(lua_State *L, int arg) {
  const char *tz = luaL_optstring(L, arg, NULL);
  return (tz && *tz) ? tz : NULL;
}

/* cron_canonical(expr) -> canonical text | nil, message */
static int l_cron_canonical(lua_State *L) {
  const char *text = luaL_checkstring(L, 1);
  cron_expr e;
  char err[CRON_ERRSZ];
  if (cron_parse(&e, text, err, sizeof err) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  char buf[CRON_FORMAT_MAX];
  cron_format(&e, buf, sizeof buf);
  lua_pushstring(L, buf);
  return 1;
}

/* cron_next(expr, after_s [, tz]) -> t | false (never fires) | nil, message */
static int l_cron_next(lua_State *L) {
  const char *text = luaL_checkstring(L, 1);
  lua_Integer after = luaL_checkinteger(L, 2);
  const char *tz = opt_tz(L, 3);
  cron_expr e;
  char err[CRON_ERRSZ];
  if (cron_parse(&e, text, err, sizeof err) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  int64_t out;
  int rc = cron_next(&e, after, tz, &out, err, sizeof err);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  if (rc == 1) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushinteger(L, out);
  return 1;
}

/* tz_offset(tz, t) -> seconds east of UTC | nil, message */
static int l_tz_offset(lua_State *L) {
  const char *tz = opt_tz(L, 1);
  lua_Integer t = luaL_checkinteger(L, 2);
  int32_t off = 0;
  char err[CRON_ERRSZ];
  if (cron_tz_offset(tz, t, &off, err, sizeof err) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushinteger(L, off);
  return 1;
}

/* tz_check(tz) -> true | nil, message */
static int l_tz_check(lua_State *L) {
  char err[CRON_ERRSZ];
  if (cron_tz_check(opt_tz(L, 1), err, sizeof err) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* utc(t) -> "2026-01-05T09:00:00Z" */
static int l_utc(lua_State *L) {
  char buf[21];
  cron_format_utc(luaL_checkinteger(L, 1), buf);
  lua_pushstring(L, buf);
  return 1;
}

/* parse_time(iso) -> unix seconds | nil, message */
static int l_parse_time(lua_State *L) {
  int64_t t;
  char err[CRON_ERRSZ];
  if (cron_parse_iso8601(luaL_checkstring(L, 1), &t, err, sizeof err) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushinteger(L, t);
  return 1;
}

void cron_register(lua_State *L) {
  static const luaL_Reg fns[] = {{"cron_canonical", l_cron_canonical},
                                 {"cron_next", l_cron_next},
                                 {"tz_offset", l_tz_offset},
                                 {"tz_check", l_tz_check},
                                 {"utc", l_utc},
                                 {"parse_time", l_parse_time},
                                 {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
}
