/* l_clock.c: "sluice._clock", the clocks and time texts of the engine:
 *
 *   now() -> wall clock, integer microseconds since the epoch
 *   hrtime() -> monotonic nanoseconds (libuv's)
 *   iso(us) -> "2026-11-22T03:51:49.123Z"
 *   utc(t) -> "2026-01-05T09:00:00Z" (t in seconds)
 *   parse_time(iso) -> unix seconds | nil, "EINVAL: message", "EINVAL"
 *
 * Depends on: libuv, cron.h (ISO 8601 in and out). */
#include <lauxlib.h>
#include <stdio.h>
#include <time.h>
#include <uv.h>

#include "cron.h"
#include "modules.h"

static int l_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
  return 1;
}

static int l_hrtime(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_hrtime());
  return 1;
}

static int l_iso(lua_State *L) {
  lua_Integer us = luaL_checkinteger(L, 1);
  time_t secs = (time_t)(us / 1000000);
  int ms = (int)((us % 1000000) / 1000);
  if (ms < 0) {
    ms += 1000;
    secs -= 1;
  }
  struct tm tm;
  if (!gmtime_r(&secs, &tm)) return luaL_argerror(L, 1, "time out of range");
  char buf[64];
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  lua_pushstring(L, buf);
  return 1;
}

static int l_utc(lua_State *L) {
  char buf[21];
  cron_format_utc(luaL_checkinteger(L, 1), buf);
  lua_pushstring(L, buf);
  return 1;
}

static int l_parse_time(lua_State *L) {
  int64_t t;
  char err[CRON_ERRSZ];
  if (cron_parse_iso8601(luaL_checkstring(L, 1), &t, err, sizeof err) != 0)
    return modules_invalid(L, err);
  lua_pushinteger(L, t);
  return 1;
}

int luaopen_sluice__clock(lua_State *L) {
  static const luaL_Reg fns[] = {{"now", l_now},       {"hrtime", l_hrtime},
                                 {"iso", l_iso},       {"utc", l_utc},
                                 {"parse_time", l_parse_time}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
