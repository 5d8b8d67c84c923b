/* l_ids.c: "sluice._ids", identifiers the engine makes:
 *
 *   new_id() -> a ULID, the id of a run (26 characters, sorted by creation)
 *   hash(s) -> 16 hex digits of FNV-1a 64 of s: tells one version of a
 *              source file from another in run records; not for security
 *              (sluice._crypto has SHA-256). */
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "modules.h"

/* 48 bits of milliseconds then 80 random bits, incremented within one
 * millisecond so ids made by this process sort in creation order; in
 * Crockford base32. */
static int l_new_id(lua_State *L) {
  static uint64_t last_ms;
  static unsigned char last_rand[10];
  static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
  if (ms <= last_ms) {
    ms = last_ms;
    for (int i = 9; i >= 0; i--) {
      if (++last_rand[i] != 0) break;
    }
  } else {
    if (getrandom(last_rand, sizeof last_rand, 0) != (ssize_t)sizeof last_rand) {
      for (int i = 0; i < 10; i++) last_rand[i] = (unsigned char)rand();
    }
    last_rand[0] &= 0x7f; /* room to increment without overflowing */
    last_ms = ms;
  }
  unsigned char bytes[16];
  for (int i = 0; i < 6; i++) bytes[i] = (unsigned char)(ms >> (40 - 8 * i));
  memcpy(bytes + 6, last_rand, 10);
  /* 128 bits -> 26 base32 digits, most significant first */
  char out[27];
  for (int i = 25; i >= 0; i--) {
    int bit = (25 - i) * 5; /* bits from the least significant end */
    int v = 0;
    for (int j = 0; j < 5; j++) {
      int b = bit + j;
      if (b < 128 && (bytes[15 - b / 8] >> (b % 8) & 1)) v |= 1 << j;
    }
    out[i] = alphabet[v];
  }
  out[26] = '\0';
  lua_pushstring(L, out);
  return 1;
}

static int l_hash(lua_State *L) {
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= 1099511628211ULL;
  }
  char buf[17];
  snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  lua_pushstring(L, buf);
  return 1;
}

int luaopen_sluice__ids(lua_State *L) {
  static const luaL_Reg fns[] = {{"new_id", l_new_id}, {"hash", l_hash}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
