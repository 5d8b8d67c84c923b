/* test_lua_alloc.c: the Lua state's allocator (lua_alloc.c): a freed small
 * block is handed out again for its size class and holds all of it, no
 * more than the cap is kept, a block whose chunk is smaller than its class
 * is not kept, realloc keeps the contents across classes, a Lua state on
 * it runs a collector-heavy script to the same result as on malloc, and
 * blocks still cached at exit are not leaks to LeakSanitizer. */
#include <lauxlib.h>
#include <lualib.h>
#include <malloc.h>

#include "lua_alloc.h"
#include "unit.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

static void test_recycles_by_class(void) {
  lua_alloc a;
  lua_alloc_init(&a, LUA_ALLOC_CACHE);
  char *p = lua_alloc_fn(&a, NULL, LUA_TTABLE, 56);
  CHECK(p != NULL);
  CHECK(malloc_usable_size(p) >= 56);
  lua_alloc_fn(&a, p, 56, 0);
  CHECK(a.cached == 56);
#if defined(__SANITIZE_ADDRESS__)
  CHECK(__asan_address_is_poisoned(p + 8)); /* a cached block is not to be touched */
#endif
  /* 41..56 bytes share the class: the same block again, all 56 usable */
  char *q = lua_alloc_fn(&a, NULL, LUA_TSTRING, 41);
  CHECK(q == p);
  CHECK(a.cached == 0);
  memset(q, 'x', 56);
  /* another class: not that block */
  lua_alloc_fn(&a, q, 41, 0);
  char *r = lua_alloc_fn(&a, NULL, LUA_TSTRING, 57);
  CHECK(r != q);
  CHECK(malloc_usable_size(r) >= 72);
  lua_alloc_fn(&a, r, 57, 0);
  /* large blocks go to malloc and free */
  char *big = lua_alloc_fn(&a, NULL, 0, LUA_ALLOC_SMALL + 1);
  CHECK(big != NULL);
  lua_alloc_fn(&a, big, LUA_ALLOC_SMALL + 1, 0);
  CHECK(a.cached == 56 + 72);
  lua_alloc_release(&a);
  CHECK(a.cached == 0);
  for (unsigned k = 0; k < LUA_ALLOC_CLASSES; k++) CHECK(a.free[k] == NULL);
}

static void test_cap(void) {
  lua_alloc a;
  lua_alloc_init(&a, 100);
  void *b[4];
  for (int i = 0; i < 4; i++) b[i] = lua_alloc_fn(&a, NULL, 0, 40);
  for (int i = 0; i < 4; i++) lua_alloc_fn(&a, b[i], 40, 0);
  CHECK(a.cached == 80); /* two of 40 fit under 100, the others were freed */
  lua_alloc_release(&a);
}

static void test_foreign_block_not_kept(void) {
  lua_alloc a;
  lua_alloc_init(&a, LUA_ALLOC_CACHE);
  /* a block from plain malloc whose chunk may hold less than its class
   * under ASan (exactly what was asked), or a size Lua got wrong: a chunk
   * of 24 bytes said to be 100 is never cached as a block of 104 */
  void *p = malloc(20);
  lua_alloc_fn(&a, p, 100, 0);
  CHECK(a.cached == 0);
  lua_alloc_release(&a);
}

static void test_realloc(void) {
  lua_alloc a;
  lua_alloc_init(&a, LUA_ALLOC_CACHE);
  unsigned char *p = lua_alloc_fn(&a, NULL, 0, 10);
  for (int i = 0; i < 10; i++) p[i] = (unsigned char)i;
  unsigned char *q = lua_alloc_fn(&a, p, 10, 20); /* same class: in place */
  CHECK(q == p);
  q = lua_alloc_fn(&a, q, 20, 300); /* to a larger class */
  CHECK(q != NULL && malloc_usable_size(q) >= 312);
  for (int i = 10; i < 300; i++) q[i] = (unsigned char)i;
  unsigned char *r = lua_alloc_fn(&a, q, 300, 2000); /* beyond the cached sizes */
  CHECK(r != NULL);
  int same = 1;
  for (int i = 0; i < 300; i++) same &= r[i] == (unsigned char)i;
  CHECK(same);
  r = lua_alloc_fn(&a, r, 2000, 30); /* back into a class: holds all of it */
  CHECK(r != NULL && malloc_usable_size(r) >= 40);
  same = 1;
  for (int i = 0; i < 30; i++) same &= r[i] == (unsigned char)i;
  CHECK(same);
  lua_alloc_fn(&a, r, 30, 0);
  CHECK(a.cached == 40);
  lua_alloc_release(&a);
}

/* tables, strings and closures made and dropped by the thousand, with a
 * result that depends on every one of them */
static const char *script =
    "local keep, sum = {}, 0\n"
    "for i = 1, 200000 do\n"
    "  local t = {i = i, s = 's' .. i, f = function() return i end}\n"
    "  sum = sum + t.f() + #t.s\n"
    "  if i % 1000 == 0 then keep[#keep + 1] = t end\n"
    "end\n"
    "for _, t in ipairs(keep) do sum = sum + t.i end\n"
    "return sum\n";

static lua_Integer run_script(lua_State *L) {
  luaL_openlibs(L);
  lua_gc(L, LUA_GCGEN, 0, 0);
  if (luaL_dostring(L, script) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    return -1;
  }
  return lua_tointeger(L, -1);
}

static void test_lua_state(void) {
  lua_State *plain = luaL_newstate();
  lua_Integer want = run_script(plain);
  lua_close(plain);
  lua_alloc a;
  lua_alloc_init(&a, LUA_ALLOC_CACHE);
  lua_State *L = luaL_newstate();
  lua_setallocf(L, lua_alloc_fn, &a); /* as vm.c does: after luaL_newstate */
  lua_Integer got = run_script(L);
  CHECK(got == want && want > 0);
  CHECK(a.cached > 0 && a.cached <= LUA_ALLOC_CACHE);
  lua_close(L);
  lua_alloc_release(&a);
  CHECK(a.cached == 0);
}

/* A process may exit without closing its Lua state (os.exit, a signal):
 * cached blocks are then still reachable from the cache, as the state's
 * own objects are from it, and LeakSanitizer must see them so (under
 * ASan, a cached block's link to the next stays unpoisoned). */
static lua_alloc kept_at_exit;

static void test_cached_blocks_reachable_at_exit(void) {
  lua_alloc_init(&kept_at_exit, LUA_ALLOC_CACHE);
  void *b[64];
  for (int i = 0; i < 64; i++) b[i] = lua_alloc_fn(&kept_at_exit, NULL, 0, 24 + 16 * (i % 4));
  for (int i = 0; i < 64; i++) lua_alloc_fn(&kept_at_exit, b[i], 24 + 16 * (i % 4), 0);
  CHECK(kept_at_exit.cached > 0); /* not released: the leak check at exit looks */
}

int main(void) {
  RUN(test_recycles_by_class);
  RUN(test_cap);
  RUN(test_foreign_block_not_kept);
  RUN(test_realloc);
  RUN(test_lua_state);
  RUN(test_cached_blocks_reachable_at_exit);
  return UNIT_DONE();
}
