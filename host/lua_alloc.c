/* lua_alloc.c: the Lua state's allocator (see lua_alloc.h). */
#include "lua_alloc.h"

#include <malloc.h>
#include <stdlib.h>

/* A cached block is poisoned but for its first 8 bytes, the link to the
 * next: LeakSanitizer does not follow pointers held in poisoned memory, and
 * a process that exits without lua_close still holds the cache */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((char *)(p) + sizeof(void *), (n) - sizeof(void *))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* malloc's chunks on 64-bit glibc hold 24, 40, 56, ... bytes: class k of a
 * size n is the smallest of them that holds n */
static inline unsigned class_of(size_t n) { return n <= 24 ? 1 : (unsigned)((n + 7) >> 4); }
static inline size_t class_size(unsigned k) { return 16 * (size_t)k + 8; }

void lua_alloc_init(lua_alloc *a, size_t cap) {
  for (unsigned k = 0; k < LUA_ALLOC_CLASSES; k++) a->free[k] = NULL;
  a->cached = 0;
  a->cap = cap;
}

static void *take(lua_alloc *a, size_t n) {
  unsigned k = class_of(n);
  void *b = a->free[k];
  if (b) {
    UNPOISON(b, class_size(k));
    a->free[k] = *(void **)b;
    a->cached -= class_size(k);
    return b;
  }
  return malloc(class_size(k));
}

/* malloc or realloc failed: the cached blocks go back to free before the
 * one retry (Lua then collects and asks again, or raises "not enough
 * memory") */
static int release_for_retry(lua_alloc *a) {
  if (a->cached == 0) return 0;
  lua_alloc_release(a);
  return 1;
}

static void give(lua_alloc *a, void *b, size_t n) {
  unsigned k = class_of(n);
  size_t sz = class_size(k);
  if (a->cached + sz > a->cap || malloc_usable_size(b) < sz) {
    free(b);
    return;
  }
  *(void **)b = a->free[k];
  POISON(b, sz);
  a->free[k] = b;
  a->cached += sz;
}

void *lua_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize) {
  lua_alloc *a = ud;
  if (!ptr) { /* osize is then the kind of object, not a size */
    if (nsize == 0) return NULL;
    void *b = nsize <= LUA_ALLOC_SMALL ? take(a, nsize) : malloc(nsize);
    if (!b && release_for_retry(a)) b = lua_alloc_fn(ud, NULL, osize, nsize);
    return b;
  }
  if (nsize == 0) {
    if (osize <= LUA_ALLOC_SMALL)
      give(a, ptr, osize);
    else
      free(ptr);
    return NULL;
  }
  if (osize <= LUA_ALLOC_SMALL && nsize <= LUA_ALLOC_SMALL && class_of(osize) == class_of(nsize))
    return ptr;
  /* a small block must hold its whole class, to be cached when freed */
  void *n = realloc(ptr, nsize <= LUA_ALLOC_SMALL ? class_size(class_of(nsize)) : nsize);
  if (n) return n;
  /* realloc failed and left ptr as it was. Lua counts on a block that
   * shrinks staying where it is then: the old one holds the new size */
  if (nsize <= osize) return ptr;
  return release_for_retry(a) ? lua_alloc_fn(ud, ptr, osize, nsize) : NULL;
}

void lua_alloc_release(lua_alloc *a) {
  for (unsigned k = 0; k < LUA_ALLOC_CLASSES; k++) {
    while (a->free[k]) {
      void *b = a->free[k];
      UNPOISON(b, class_size(k));
      a->free[k] = *(void **)b;
      free(b);
    }
  }
  a->cached = 0;
}
