/* l_crypto.c: "sluice._crypto", what API keys need (lua/keys.lua): bytes
 * from the OS random source, SHA-256 from OpenSSL's libcrypto, and a
 * comparison whose time does not depend on where two strings differ.
 * Internal, not for pipeline authors.
 *
 *   random(n) -> n bytes (getrandom(2); raises if the kernel cannot give them)
 *   sha256(s) -> 64 hex digits
 *   equal(a, b) -> boolean, in time that depends only on the lengths */
#include <errno.h>
#include <lauxlib.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "modules.h"

static int l_random(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n > 0 && n <= 256, 1, "1 to 256 bytes");
  unsigned char buf[256];
  size_t got = 0;
  while (got < (size_t)n) {
    ssize_t r = getrandom(buf + got, (size_t)n - got, 0);
    if (r < 0) return luaL_error(L, "the OS random source failed: %s", strerror(errno));
    got += (size_t)r;
  }
  lua_pushlstring(L, (const char *)buf, (size_t)n);
  return 1;
}

static int l_sha256(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  if (EVP_Digest(s, n, md, &mdlen, EVP_sha256(), NULL) != 1) {
    return luaL_error(L, "sha256: libcrypto failed");
  }
  char hex[2 * EVP_MAX_MD_SIZE + 1];
  for (unsigned int i = 0; i < mdlen; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
  lua_pushlstring(L, hex, 2 * mdlen);
  return 1;
}

static int l_equal(lua_State *L) {
  size_t an, bn;
  const char *a = luaL_checklstring(L, 1, &an);
  const char *b = luaL_checklstring(L, 2, &bn);
  lua_pushboolean(L, an == bn && CRYPTO_memcmp(a, b, an) == 0);
  return 1;
}

int luaopen_sluice__crypto(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"random", l_random}, {"sha256", l_sha256}, {"equal", l_equal}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
