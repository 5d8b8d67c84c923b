/* lua_alloc.h: the Lua state's allocator (lua_Alloc). Lua allocates and
 * frees small blocks at a high rate: a replayed step makes its result's
 * table and node array, and the pipeline a string and a closure with its
 * upvalue, all garbage soon after; malloc and free of each were ~20 % of a
 * replay's CPU. Freed blocks up to LUA_ALLOC_SMALL bytes are kept on free
 * lists by size class (malloc's own 16-byte steps) and handed out again,
 * up to LUA_ALLOC_CACHE bytes in all; the rest goes to malloc and free.
 *
 * Every block is still one malloc'd chunk: a block is cached only when its
 * chunk holds its whole class (malloc_usable_size), so a block Lua got from
 * another allocator, or a size Lua misreports, goes back to free; under
 * AddressSanitizer each block keeps its redzones and a cached block is
 * poisoned, but for its link to the next, until it is handed out again (a
 * use after free is still reported). When malloc fails, the cached blocks
 * are freed and it is tried once more. Single-threaded, as the Lua state
 * is. */
#ifndef SLUICE_LUA_ALLOC_H
#define SLUICE_LUA_ALLOC_H

#include <stddef.h>

#define LUA_ALLOC_SMALL 504          /* the largest cached block: class 31 */
#define LUA_ALLOC_CLASSES 32         /* class k holds blocks of 16k + 8 bytes */
#define LUA_ALLOC_CACHE (1024 * 1024) /* cached bytes at most, all classes */

typedef struct lua_alloc {
  void *free[LUA_ALLOC_CLASSES]; /* each block's first bytes point to the next */
  size_t cached;                 /* bytes on the lists */
  size_t cap;                    /* LUA_ALLOC_CACHE, or less (tests) */
} lua_alloc;

/* A cache with nothing in it that keeps at most cap bytes. */
void lua_alloc_init(lua_alloc *a, size_t cap);

/* The lua_Alloc function; ud is a lua_alloc. */
void *lua_alloc_fn(void *ud, void *ptr, size_t osize, size_t nsize);

/* Gives every cached block back to free (before malloc_trim, and after
 * lua_close). */
void lua_alloc_release(lua_alloc *a);

#endif
