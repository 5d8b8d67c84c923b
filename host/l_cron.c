/* l_cron.c: "sluice._cron", the cron engine (cron.c) for Lua: parse and
 * canonicalize expressions, next fire times in a time zone, zone offsets.
 * Failures return nil, "EINVAL: message", "EINVAL" (a bad expression or
 * an unknown time zone). */
#include <lauxlib.h>

#include "cron.h"
#include "modules.h"

static const char *opt_tz(lua_State *L, int arg) {
  const char *tz = luaL_optstring(L, arg, NULL);
  return (tz && *tz) ? tz : NULL;
}

/* Parses the expression at arg into e; on error pushes the failure and
 * returns its count (else 0). */
static int parse(lua_State *L, int arg, cron_expr *e) {
  char err[CRON_ERRSZ];
  if (cron_parse(e, luaL_checkstring(L, arg), err, sizeof err) != 0)
    return modules_invalid(L, err);
  return 0;
}

/* canonical(expr) -> canonical text | failure */
static int l_canonical(lua_State *L) {
  cron_expr e;
  int nfail = parse(L, 1, &e);
  if (nfail) return nfail;
  char buf[CRON_FORMAT_MAX];
  cron_format(&e, buf, sizeof buf);
  lua_pushstring(L, buf);
  return 1;
}

/* next(expr, after_s [, tz]) -> t | false (never fires) | failure */
static int l_next(lua_State *L) {
  lua_Integer after = luaL_checkinteger(L, 2);
  const char *tz = opt_tz(L, 3);
  cron_expr e;
  int nfail = parse(L, 1, &e);
  if (nfail) return nfail;
  int64_t out;
  char err[CRON_ERRSZ];
  int rc = cron_next(&e, after, tz, &out, err, sizeof err);
  if (rc < 0) return modules_invalid(L, err);
  if (rc == 1)
    lua_pushboolean(L, 0);
  else
    lua_pushinteger(L, out);
  return 1;
}

/* tz_offset(tz, t) -> seconds east of UTC | failure */
static int l_tz_offset(lua_State *L) {
  const char *tz = opt_tz(L, 1);
  lua_Integer t = luaL_checkinteger(L, 2);
  int32_t off = 0;
  char err[CRON_ERRSZ];
  if (cron_tz_offset(tz, t, &off, err, sizeof err) != 0) return modules_invalid(L, err);
  lua_pushinteger(L, off);
  return 1;
}

/* tz_check(tz) -> true | failure */
static int l_tz_check(lua_State *L) {
  char err[CRON_ERRSZ];
  if (cron_tz_check(opt_tz(L, 1), err, sizeof err) != 0) return modules_invalid(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

int luaopen_sluice__cron(lua_State *L) {
  static const luaL_Reg fns[] = {{"canonical", l_canonical},
                                 {"next", l_next},
                                 {"tz_offset", l_tz_offset},
                                 {"tz_check", l_tz_check},
                                 {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
