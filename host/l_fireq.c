/* l_fireq.c: "sluice._fireq", the scheduler's fire state in C: one compact
 * slot per schedule name (next and last fire, runs, runs in flight,
 * enabled) and a binary heap of the slots that have a next fire, ordered by
 * (next fire, slot id). A Lua table per schedule cost ~450 bytes (the slot,
 * its empty queue, a heap item); a slot here is 40 bytes, its name's bytes
 * in one buffer, 4 in the heap and 8 in the name index, so
 * 100,000 schedules arm in a few MB (issue 14).
 *
 *   local q = fireq.new()
 *   q:id(name) -> id          (the slot of name, made if new; ids from 1)
 *   q:find(name) -> id | nil  q:name(id) -> name       q:count() -> n
 *   q:state(id) -> next_at, last_at, runs, active, enabled
 *                (times in Unix seconds, nil when none)
 *   q:set_next(id, t | nil)   (moves the slot in the heap; nil takes it out)
 *   q:set_last(id, t | nil)   q:set_runs(id, n)   q:set_enabled(id, bool)
 *   q:arm(id, next_at | nil, last_at | nil, runs, enabled)   (all of a slot's state at once;
 *                the slot is armed from then)
 *   q:disarm(id)   q:armed(id) -> bool   (its definition went: out of the heap, not armed)
 *   q:reserve(n)   (room for n slots, made at once)
 *   q:add_active(id, delta) -> active
 *   q:top() -> next_at, id | nil   (the earliest fire; lowest id first)
 * Misuse (an unknown id) raises. */
#include <lauxlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "modules.h"

#define FIREQ_MT "sluice.fireq"
#define NONE INT64_MIN

typedef struct {
  int64_t next_at, last_at, runs;
  int32_t active;
  uint32_t heap_pos; /* index in heap + 1; 0: not in it */
  uint32_t name_off; /* the name is names[name_off .. + name_len] */
  uint16_t name_len;
  uint8_t enabled;
  uint8_t armed; /* by q:arm, for a live definition, until q:disarm */
} slot;

typedef struct {
  slot *slots; /* slots[0] unused: ids start at 1 */
  uint32_t n, cap;
  uint32_t *index; /* open addressing by name hash: ids, 0 empty */
  uint32_t index_cap; /* a power of 2, > 2 n */
  uint32_t *heap;
  uint32_t heap_n;
  char *names; /* every name, one after the other (no allocation each) */
  size_t names_len, names_cap;
} fireq;

static uint32_t hash(const char *s, size_t n) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

/* The methods have the metatable as upvalue 1: luaL_checkudata would look
 * its name up in the registry at each of the calls arming 100,000 slots. */
static fireq *check_q(lua_State *L) {
  if (!lua_getmetatable(L, 1) || !lua_rawequal(L, -1, lua_upvalueindex(1))) {
    luaL_typeerror(L, 1, FIREQ_MT);
  }
  lua_pop(L, 1);
  return lua_touserdata(L, 1);
}

static slot *check_slot(lua_State *L, fireq *q, int arg, uint32_t *id) {
  lua_Integer i = luaL_checkinteger(L, arg);
  if (i < 1 || i > (lua_Integer)q->n) luaL_argerror(L, arg, "no slot with this id");
  *id = (uint32_t)i;
  return &q->slots[i];
}

static int64_t opt_time(lua_State *L, int arg) {
  return lua_isnoneornil(L, arg) ? NONE : (int64_t)luaL_checkinteger(L, arg);
}

static void push_time(lua_State *L, int64_t t) {
  if (t == NONE) {
    lua_pushnil(L);
  } else {
    lua_pushinteger(L, (lua_Integer)t);
  }
}

/* the index slot where name is, or the empty one where it goes */
static uint32_t *lookup(fireq *q, const char *name, size_t n) {
  uint32_t mask = q->index_cap - 1;
  for (uint32_t i = hash(name, n) & mask;; i = (i + 1) & mask) {
    uint32_t id = q->index[i];
    if (id == 0) return &q->index[i];
    const slot *s = &q->slots[id];
    if (s->name_len == n && memcmp(q->names + s->name_off, name, n) == 0) return &q->index[i];
  }
}

static int grow_index(fireq *q) {
  uint32_t cap = q->index_cap ? q->index_cap * 2 : 64;
  uint32_t *old = q->index, old_cap = q->index_cap;
  q->index = calloc(cap, sizeof *q->index);
  if (!q->index) {
    q->index = old;
    return -1;
  }
  q->index_cap = cap;
  for (uint32_t i = 0; i < old_cap; i++) {
    if (!old[i]) continue;
    const slot *s = &q->slots[old[i]];
    *lookup(q, q->names + s->name_off, s->name_len) = old[i];
  }
  free(old);
  return 0;
}

/* ---- the heap: ordered by (next_at, id) ---- */

static int before(const fireq *q, uint32_t a, uint32_t b) {
  const slot *x = &q->slots[a], *y = &q->slots[b];
  return x->next_at != y->next_at ? x->next_at < y->next_at : a < b;
}

static void heap_place(fireq *q, uint32_t i, uint32_t id) {
  q->heap[i] = id;
  q->slots[id].heap_pos = i + 1;
}

static void sift_up(fireq *q, uint32_t i) {
  uint32_t id = q->heap[i];
  while (i > 0) {
    uint32_t p = (i - 1) / 2;
    if (!before(q, id, q->heap[p])) break;
    heap_place(q, i, q->heap[p]);
    i = p;
  }
  heap_place(q, i, id);
}

static void sift_down(fireq *q, uint32_t i) {
  uint32_t id = q->heap[i];
  for (;;) {
    uint32_t l = 2 * i + 1, m = i;
    uint32_t best = id;
    if (l < q->heap_n && before(q, q->heap[l], best)) m = l, best = q->heap[l];
    if (l + 1 < q->heap_n && before(q, q->heap[l + 1], best)) m = l + 1, best = q->heap[l + 1];
    if (m == i) break;
    heap_place(q, i, best);
    i = m;
  }
  heap_place(q, i, id);
}

static void heap_remove(fireq *q, uint32_t id) {
  uint32_t i = q->slots[id].heap_pos - 1;
  q->slots[id].heap_pos = 0;
  uint32_t last = q->heap[--q->heap_n];
  if (i == q->heap_n) return;
  heap_place(q, i, last);
  sift_down(q, i);
  sift_up(q, q->slots[last].heap_pos - 1);
}

/* ---- the methods ---- */

static int l_new(lua_State *L) {
  fireq *q = lua_newuserdatauv(L, sizeof *q, 0);
  memset(q, 0, sizeof *q);
  luaL_setmetatable(L, FIREQ_MT);
  return 1;
}

static int q_gc(lua_State *L) {
  fireq *q = luaL_checkudata(L, 1, FIREQ_MT);
  free(q->names);
  free(q->slots);
  free(q->index);
  free(q->heap);
  memset(q, 0, sizeof *q);
  return 0;
}

static int q_find(lua_State *L) {
  fireq *q = check_q(L);
  size_t n;
  const char *name = luaL_checklstring(L, 2, &n);
  uint32_t id = q->index_cap ? *lookup(q, name, n) : 0;
  if (id) {
    lua_pushinteger(L, id);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

static int q_id(lua_State *L) {
  fireq *q = check_q(L);
  size_t n;
  const char *name = luaL_checklstring(L, 2, &n);
  if (n > UINT16_MAX) return luaL_argerror(L, 2, "a schedule name is at most 65535 bytes");
  if (q->index_cap) {
    uint32_t id = *lookup(q, name, n);
    if (id) {
      lua_pushinteger(L, id);
      return 1;
    }
  }
  if (q->n + 1 >= UINT32_MAX / 2) return luaL_error(L, "too many schedules");
  if (2 * (q->n + 1) >= q->index_cap && grow_index(q) != 0) return luaL_error(L, "out of memory");
  if (q->n + 1 >= q->cap) {
    uint32_t cap = q->cap ? q->cap * 2 : 64;
    slot *s = realloc(q->slots, cap * sizeof *s);
    uint32_t *h = s ? realloc(q->heap, cap * sizeof *h) : NULL;
    if (s) q->slots = s;
    if (!s || !h) return luaL_error(L, "out of memory");
    q->heap = h;
    q->cap = cap;
  }
  if (q->names_len + n > q->names_cap) {
    size_t cap = q->names_cap ? q->names_cap * 2 : 4096;
    while (cap < q->names_len + n) cap *= 2;
    if (cap > UINT32_MAX) return luaL_error(L, "too many schedule names");
    char *p = realloc(q->names, cap);
    if (!p) return luaL_error(L, "out of memory");
    q->names = p;
    q->names_cap = cap;
  }
  memcpy(q->names + q->names_len, name, n);
  uint32_t id = ++q->n;
  q->slots[id] = (slot){NONE, NONE, 0, 0, 0, (uint32_t)q->names_len, (uint16_t)n, 1, 0};
  q->names_len += n;
  *lookup(q, name, n) = id;
  lua_pushinteger(L, id);
  return 1;
}

static int q_name(lua_State *L) {
  fireq *q = check_q(L);
  uint32_t id;
  slot *s = check_slot(L, q, 2, &id);
  lua_pushlstring(L, q->names + s->name_off, s->name_len);
  return 1;
}

static int q_count(lua_State *L) {
  lua_pushinteger(L, check_q(L)->n);
  return 1;
}

static int q_state(lua_State *L) {
  fireq *q = check_q(L);
  uint32_t id;
  slot *s = check_slot(L, q, 2, &id);
  push_time(L, s->next_at);
  push_time(L, s->last_at);
  lua_pushinteger(L, (lua_Integer)s->runs);
  lua_pushinteger(L, s->active);
  lua_pushboolean(L, s->enabled);
  return 5;
}

static int q_set_next(lua_State *L) {
  fireq *q = check_q(L);
  uint32_t id;
  slot *s = check_slot(L, q, 2, &id);
  int64_t t = opt_time(L, 3);
  if (s->heap_pos) heap_remove(q, id);
  s->next_at = t;
  if (t != NONE) {
    heap_place(q, q->heap_n++, id);
    sift_up(q, q->heap_n - 1);
  }
  return 0;
}

/* q:arm(id, next_at | nil, last_at | nil, runs, enabled): the state of a
 * slot armed at start, in one call (set_runs, set_last, set_enabled, then
 * set_next) */
/* disarm(id): no longer armed (its definition went), out of the heap */
static int q_disarm(lua_State *L) {
  fireq *q = check_q(L);
  uint32_t id;
  slot *s = check_slot(L, q, 2, &id);
  if (s->heap_pos) heap_remove(q, id);
  s->next_at = NONE;
  s->armed = 0;
  return 0;
}

static int q_armed(lua_State *L) {
  fireq *q = check_q(L);
  uint32_t id;
  lua_pushboolean(L, check_slot(L, q, 2, &id)->armed);
  return 1;
}

/* reserve(n): room for n slots in all, made once (arming 100,000 at start
 * grows nothing: doubling would leave up to twice the room) */
static int q_reserve(lua_State *L) {
  fireq *q = check_q(L);
  lua_Integer n = luaL_checkinteger(L, 2);
  if (n < 0 || n >= UINT32_MAX / 4) return luaL_argerror(L, 2, "a count of schedules");
  uint32_t want = (uint32_t)n + 1; /* slots[0] unused */
  if (want > q->cap) {
    slot *s = realloc(q->slots, want * sizeof *s);
    if (s) q->slots = s;
    uint32_t *h = s ? realloc(q->heap, want * sizeof *h) : NULL;
    if (!s || !h) return luaL_error(L, "out of memory");
    q->heap = h;
    q->cap = want;
  }
  while (2 * want >= q->index_cap) {
    if (grow_index(q) != 0) return luaL_error(L, "out of memory");
  }
  return 0;
}

static int q_arm(lua_State *L) {
  fireq *q = check_q(L);
  uint32_t id;
  slot *s = check_slot(L, q, 2, &id);
  int64_t t = opt_time(L, 3), last = opt_time(L, 4);
  int64_t runs = (int64_t)luaL_checkinteger(L, 5);
  s->last_at = last;
  s->runs = runs;
  s->enabled = (uint8_t)lua_toboolean(L, 6);
  s->armed = 1;
  if (s->heap_pos) heap_remove(q, id);
  s->next_at = t;
  if (t != NONE) {
    heap_place(q, q->heap_n++, id);
    sift_up(q, q->heap_n - 1);
  }
  return 0;
}

static int q_set_last(lua_State *L) {
  fireq *q = check_q(L);
  uint32_t id;
  check_slot(L, q, 2, &id)->last_at = opt_time(L, 3);
  return 0;
}

static int q_set_runs(lua_State *L) {
  fireq *q = check_q(L);
  uint32_t id;
  check_slot(L, q, 2, &id)->runs = (int64_t)luaL_checkinteger(L, 3);
  return 0;
}

static int q_set_enabled(lua_State *L) {
  fireq *q = check_q(L);
  uint32_t id;
  check_slot(L, q, 2, &id)->enabled = (uint8_t)lua_toboolean(L, 3);
  return 0;
}

static int q_add_active(lua_State *L) {
  fireq *q = check_q(L);
  uint32_t id;
  slot *s = check_slot(L, q, 2, &id);
  s->active += (int32_t)luaL_checkinteger(L, 3);
  lua_pushinteger(L, s->active);
  return 1;
}

static int q_top(lua_State *L) {
  fireq *q = check_q(L);
  if (!q->heap_n) return 0;
  push_time(L, q->slots[q->heap[0]].next_at);
  lua_pushinteger(L, q->heap[0]);
  return 2;
}

int luaopen_sluice__fireq(lua_State *L) {
  static const luaL_Reg methods[] = {{"id", q_id},
                                     {"find", q_find},
                                     {"name", q_name},
                                     {"count", q_count},
                                     {"state", q_state},
                                     {"set_next", q_set_next},
                                     {"set_last", q_set_last},
                                     {"set_runs", q_set_runs},
                                     {"set_enabled", q_set_enabled},
                                     {"add_active", q_add_active},
                                     {"top", q_top},
                                     {"arm", q_arm},
                                     {"disarm", q_disarm},
                                     {"armed", q_armed},
                                     {"reserve", q_reserve},
                                     {NULL, NULL}};
  luaL_newmetatable(L, FIREQ_MT);
  lua_newtable(L);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, methods, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, q_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {{"new", l_new}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
