/* l_idset.c: "sluice._idset", the step ids a run has executed, each with
 * where it was called from (lua/engine_steps.lua: check_unique, note_site).
 *
 * A Lua table of id -> site cost ~60 bytes per executed step (a hash node,
 * and the id's string kept alive as its key): 64 runs of 4,000 steps held
 * ~15 MB of the loop's heap (bench/RESULTS.md, issue 14's anonymous RSS).
 * Here an id costs its bytes, a length, its site as a varint and a 4-byte
 * slot: ~15 bytes for "s1234". The ids are compared byte for byte, so the
 * set is exact; the slots hold only where an entry begins in the arena.
 *
 *   local idset = require("sluice._idset")
 *   local set = idset.new()
 *   idset.get(set, id)        -> the site put with id, or nil
 *   idset.put(set, id, site)  site: an integer >= 0 (engine_steps.lua's
 *                             function index * 2^24 + line); an id put
 *                             again takes the new site
 *   idset.clear(set)          frees what the set holds; it stays usable
 *
 * Memory is malloc'd (freed by clear and __gc), not the Lua state's: a run
 * clears its set when it ends (engine_runs.lua), so how soon the collector
 * finds the run does not decide when the memory goes back. */
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "modules.h"

#define IDSET_MT "sluice.idset"

typedef struct {
  uint32_t *slots;  /* arena offset + 1 of an entry; 0: empty */
  uint32_t cap;     /* slots: 0 or a power of two */
  uint32_t n;       /* entries */
  unsigned char *arena; /* entries: varint site, varint length, id bytes */
  size_t alen, acap;
} idset;

static idset *check_set(lua_State *L) { return luaL_checkudata(L, 1, IDSET_MT); }

/* FNV-1a: ids are short (engine_steps.lua caps them at 255 bytes) */
static uint32_t hash(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return (uint32_t)(h ^ h >> 32);
}

static size_t put_varint(unsigned char *p, uint64_t v) {
  size_t i = 0;
  while (v >= 0x80) {
    p[i++] = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  p[i++] = (unsigned char)v;
  return i;
}

static const unsigned char *get_varint(const unsigned char *p, uint64_t *v) {
  uint64_t r = 0;
  int shift = 0;
  while (*p & 0x80) {
    r |= (uint64_t)(*p++ & 0x7f) << shift;
    shift += 7;
  }
  *v = r | (uint64_t)*p++ << shift;
  return p;
}

/* the entry at arena offset at: its site, and whether its id is s */
static int entry_is(const idset *set, uint32_t at, const char *s, size_t n, uint64_t *site) {
  uint64_t len;
  const unsigned char *p = get_varint(get_varint(set->arena + at, site), &len);
  return len == n && memcmp(p, s, n) == 0;
}

static uint32_t *find(const idset *set, const char *s, size_t n, uint32_t h, uint64_t *site) {
  uint32_t mask = set->cap - 1;
  for (uint32_t i = h & mask;; i = (i + 1) & mask) {
    uint32_t *slot = &set->slots[i];
    if (!*slot || entry_is(set, *slot - 1, s, n, site)) return slot;
  }
}

/* rehashes every entry into cap slots (the newest entry of an id is the
 * one a slot points to: older ones are unreachable and not moved) */
static int grow_slots(idset *set, uint32_t cap) {
  uint32_t *slots = calloc(cap, sizeof *slots);
  if (!slots) return -1;
  for (uint32_t i = 0; i < set->cap; i++) {
    uint32_t at1 = set->slots[i];
    if (!at1) continue;
    uint64_t site, len;
    const unsigned char *p = get_varint(get_varint(set->arena + at1 - 1, &site), &len);
    uint32_t j = hash((const char *)p, len) & (cap - 1);
    while (slots[j]) j = (j + 1) & (cap - 1);
    slots[j] = at1;
  }
  free(set->slots);
  set->slots = slots;
  set->cap = cap;
  return 0;
}

static int l_new(lua_State *L) {
  idset *set = lua_newuserdatauv(L, sizeof *set, 0);
  memset(set, 0, sizeof *set);
  luaL_setmetatable(L, IDSET_MT);
  return 1;
}

static int l_get(lua_State *L) {
  idset *set = check_set(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  uint64_t site;
  if (set->n == 0 || !*find(set, s, n, hash(s, n), &site)) return 0;
  lua_pushinteger(L, (lua_Integer)site);
  return 1;
}

static int l_put(lua_State *L) {
  idset *set = check_set(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  lua_Integer site = luaL_checkinteger(L, 3);
  luaL_argcheck(L, site >= 0, 3, "a site is an integer >= 0");
  /* load at most 3/4 (linear probing) */
  if ((uint64_t)(set->n + 1) * 4 > (uint64_t)set->cap * 3) {
    if (set->cap >= 1u << 31 || grow_slots(set, set->cap ? set->cap * 2 : 16))
      return luaL_error(L, "step ids of one run: out of memory (%u ids)", set->n);
  }
  size_t need = set->alen + 20 + n;
  if (need > UINT32_MAX) return luaL_error(L, "step ids of one run: more than 4 GiB of ids");
  if (need > set->acap) {
    size_t cap = set->acap ? set->acap + set->acap / 2 : 256; /* 1.5x: less slack than doubling */
    if (cap < need) cap = need;
    unsigned char *a = realloc(set->arena, cap);
    if (!a) return luaL_error(L, "step ids of one run: out of memory (%u ids)", set->n);
    set->arena = a;
    set->acap = cap;
  }
  uint64_t old;
  uint32_t *slot = find(set, s, n, hash(s, n), &old);
  if (!*slot) set->n++;
  *slot = (uint32_t)set->alen + 1;
  unsigned char *p = set->arena + set->alen;
  p += put_varint(p, (uint64_t)site);
  p += put_varint(p, n);
  memcpy(p, s, n);
  set->alen = (size_t)(p + n - set->arena);
  return 0;
}

static void release(idset *set) {
  free(set->slots);
  free(set->arena);
  memset(set, 0, sizeof *set);
}

static int l_clear(lua_State *L) {
  release(check_set(L));
  return 0;
}

static int l_gc(lua_State *L) {
  release(check_set(L));
  return 0;
}

int luaopen_sluice__idset(lua_State *L) {
  static const luaL_Reg meta[] = {{"__gc", l_gc}, {NULL, NULL}};
  static const luaL_Reg fns[] = {
      {"new", l_new}, {"get", l_get}, {"put", l_put}, {"clear", l_clear}, {NULL, NULL}};
  luaL_newmetatable(L, IDSET_MT);
  luaL_setfuncs(L, meta, 0);
  lua_pop(L, 1);
  luaL_newlib(L, fns);
  return 1;
}
