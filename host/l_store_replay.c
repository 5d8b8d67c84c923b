/* l_store_replay.c: "sluice._store" replay_steps(run): the stored steps of
 * a run that resumes, as its replay reads them (DESIGN §5, step 1). Each
 * step-like call of the resumed run (lua/engine_steps.lua) takes its record
 * by step id in one call, checked against the branch and position it was
 * recorded at, and gets its result decoded from the record: no Lua string
 * or table per stored step is made before it is asked for.
 *
 *   store.replay_steps(run) -> rs | nil, "CODE: message", "CODE"
 *   rs:take(id, branch, pos), or store.replay_take(rs, id, branch, pos) ->
 *     nil                   nothing recorded under this id nor at this place: run the step
 *     true, value           recorded completed: its result (value nil when it returned nil)
 *     false                 recorded failed: run it again
 *     "here", recorded_id   at this place the record is another step's (diverged)
 *     "elsewhere", branch, pos  this id was recorded at another place (diverged)
 *     "twice"               this id's record was already taken (a step id used twice)
 *     "corrupt", message    the stored result does not decode
 *   store.replay_count(rs) -> how many completed records were taken: the
 *     run's replayed steps (the global step's fast path takes them in C)
 *
 * The records (one read of the run's steps: store_load_steps, or
 * pgstore_load_steps on PostgreSQL, where the call waits) stay in C
 * behind two open-addressing hashes, by id and by (branch, position). Once
 * every record was taken, their results are freed: what is left (ids and
 * places) still tells a second use of an id. Records of steps in flight
 * ("running") are left out, as the replay never uses them. */
#include <lauxlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "l_store.h"

#define REPLAY_MT L_STORE_REPLAY_MT

typedef struct {
  uint32_t id, idn, branch, branchn; /* offsets and lengths in names */
  uint32_t pos;
  unsigned char status, has_payload, taken;
  const char *payload; /* in the records read (st), alive until they are freed */
  size_t payloadn;
} rec;

typedef struct {
  store_steps st;       /* the records as read; its buffer holds the results */
  rec *v;               /* the replayable records */
  size_t n, left;       /* how many, and how many not yet taken */
  size_t replayed;      /* completed records taken: the run's replayed steps */
  char *names;          /* every id and branch, kept after the results go */
  uint32_t *by_id, *by_pos; /* slots hold index + 1, 0 when empty */
  size_t mask;
} replay;

static uint64_t hash_bytes(const char *p, size_t n, uint64_t h) {
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
  return h;
}
#define FNV0 0xcbf29ce484222325ULL

static uint64_t hash_place(const char *br, size_t brn, uint64_t pos) {
  uint64_t h = hash_bytes(br, brn, FNV0) ^ (pos * 0x9e3779b97f4a7c15ULL);
  return h ^ (h >> 29);
}

static int same(const replay *r, uint32_t off, uint32_t len, const char *p, size_t n) {
  return len == n && memcmp(r->names + off, p, n) == 0;
}

/* the index of the record of id, or -1 */
static long find_id(const replay *r, const char *id, size_t n) {
  if (!r->by_id) return -1;
  for (size_t s = hash_bytes(id, n, FNV0) & r->mask;; s = (s + 1) & r->mask) {
    uint32_t i = r->by_id[s];
    if (!i) return -1;
    if (same(r, r->v[i - 1].id, r->v[i - 1].idn, id, n)) return (long)i - 1;
  }
}

/* the index of the record at (branch, pos), or -1 */
static long find_place(const replay *r, const char *br, size_t brn, uint64_t pos) {
  if (!r->by_pos) return -1;
  for (size_t s = hash_place(br, brn, pos) & r->mask;; s = (s + 1) & r->mask) {
    uint32_t i = r->by_pos[s];
    if (!i) return -1;
    const rec *e = &r->v[i - 1];
    if (e->pos == pos && same(r, e->branch, e->branchn, br, brn)) return (long)i - 1;
  }
}

static void replay_free(replay *r) {
  store_steps_free(&r->st);
  free(r->v);
  free(r->names);
  free(r->by_id);
  free(r->by_pos);
  memset(r, 0, sizeof *r);
}

static int replay_gc(lua_State *L) {
  replay_free(luaL_checkudata(L, 1, REPLAY_MT));
  return 0;
}

/* Builds the records and hashes of r from r->st; -1 when out of memory. */
static int build(replay *r) {
  size_t namesn = 0, n = 0;
  for (size_t i = 0; i < r->st.n; i++) {
    const store_step *s = &r->st.v[i];
    if (s->status == STORE_STEP_RUNNING) continue; /* in flight when written */
    namesn += s->id_len + s->branch_len;
    n++;
  }
  if (n == 0) return 0;
  if (n >= UINT32_MAX / 2 || namesn >= UINT32_MAX) return -1;
  size_t slots = 16;
  while (slots < 2 * n) slots *= 2; /* at most half full */
  r->v = malloc(n * sizeof *r->v);
  r->names = malloc(namesn ? namesn : 1);
  r->by_id = calloc(slots, sizeof *r->by_id);
  r->by_pos = calloc(slots, sizeof *r->by_pos);
  if (!r->v || !r->names || !r->by_id || !r->by_pos) return -1;
  r->mask = slots - 1;
  size_t at = 0;
  for (size_t i = 0; i < r->st.n; i++) {
    const store_step *s = &r->st.v[i];
    if (s->status == STORE_STEP_RUNNING) continue;
    rec *e = &r->v[r->n];
    e->id = (uint32_t)at;
    e->idn = (uint32_t)s->id_len;
    memcpy(r->names + at, s->id, s->id_len);
    at += s->id_len;
    e->branch = (uint32_t)at;
    e->branchn = (uint32_t)s->branch_len;
    memcpy(r->names + at, s->branch, s->branch_len);
    at += s->branch_len;
    e->pos = s->pos;
    e->status = (unsigned char)s->status;
    e->has_payload = s->has_payload != 0;
    e->taken = 0;
    e->payload = s->payload;
    e->payloadn = s->payload_len;
    r->n++;
    /* ids are unique (the record's key); two records at one place: the
     * later in id order is the one found, as the Lua tables had it */
    size_t k = hash_bytes(s->id, s->id_len, FNV0) & r->mask;
    while (r->by_id[k]) k = (k + 1) & r->mask;
    r->by_id[k] = (uint32_t)r->n;
    long j = find_place(r, s->branch, s->branch_len, s->pos);
    if (j >= 0) {
      for (k = hash_place(s->branch, s->branch_len, s->pos) & r->mask; r->by_pos[k] != (uint32_t)j + 1;
           k = (k + 1) & r->mask) {
      }
    } else {
      for (k = hash_place(s->branch, s->branch_len, s->pos) & r->mask; r->by_pos[k];
           k = (k + 1) & r->mask) {
      }
    }
    r->by_pos[k] = (uint32_t)r->n;
  }
  r->left = r->n;
  return 0;
}

/* The results are no longer needed once every record was taken. */
static void took(replay *r, rec *e) {
  e->taken = 1;
  if (--r->left == 0) store_steps_free(&r->st);
}

/* take(rs, id, branch, pos): the metatable is upvalue 1 (luaL_checkudata
 * would look its name up in the registry at each of 10,000 steps) */
static int l_take(lua_State *L) {
  if (!lua_getmetatable(L, 1) || !lua_rawequal(L, -1, lua_upvalueindex(1))) {
    return luaL_typeerror(L, 1, "a replay set");
  }
  lua_pop(L, 1);
  replay *r = lua_touserdata(L, 1);
  size_t idn, brn;
  const char *id = luaL_checklstring(L, 2, &idn);
  const char *br = luaL_checklstring(L, 3, &brn);
  lua_Integer pos = luaL_checkinteger(L, 4);
  long i = find_id(r, id, idn);
  if (i >= 0 && r->v[i].taken) {
    lua_pushliteral(L, "twice");
    return 1;
  }
  long here = pos >= 0 && pos <= UINT32_MAX ? find_place(r, br, brn, (uint64_t)pos) : -1;
  if (here >= 0 && here != i) {
    lua_pushliteral(L, "here");
    lua_pushlstring(L, r->names + r->v[here].id, r->v[here].idn);
    return 2;
  }
  if (i < 0) {
    lua_pushnil(L);
    return 1;
  }
  rec *e = &r->v[i];
  if (here < 0) {
    lua_pushliteral(L, "elsewhere");
    lua_pushlstring(L, r->names + e->branch, e->branchn);
    lua_pushinteger(L, e->pos);
    return 3;
  }
  if (e->status != STORE_STEP_COMPLETED) {
    took(r, e);
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushboolean(L, 1);
  if (!e->has_payload) {
    lua_pushnil(L);
  } else {
    char err[512];
    if (codec_decode(L, e->payload, e->payloadn, err, sizeof err) != 0) {
      lua_pushliteral(L, "corrupt");
      lua_pushstring(L, err);
      return 2;
    }
  }
  took(r, e);
  r->replayed++;
  return 2;
}

/* replay_count(rs) -> how many completed records were taken (by rs:take
 * and by l_store_replay_completed): the run's replayed steps */
static int l_count(lua_State *L) {
  if (!lua_getmetatable(L, 1) || !lua_rawequal(L, -1, lua_upvalueindex(1))) {
    return luaL_typeerror(L, 1, "a replay set");
  }
  const replay *r = lua_touserdata(L, 1);
  lua_pushinteger(L, (lua_Integer)r->replayed);
  return 1;
}

int l_store_replay_completed(lua_State *L, int rs, int mt, const char *id, size_t idn,
                              const char *br, size_t brn, lua_Integer pos) {
  if (!lua_getmetatable(L, rs)) return 0;
  int ours = lua_rawequal(L, -1, mt);
  lua_pop(L, 1);
  if (!ours || pos < 0 || pos > UINT32_MAX) return 0;
  replay *r = lua_touserdata(L, rs);
  /* the record at this place, if it is this id's: ids are unique (the
   * record's key), so it is also the one find_id would give */
  long i = find_place(r, br, brn, (uint64_t)pos);
  if (i < 0) return 0;
  rec *e = &r->v[i];
  if (e->taken || e->status != STORE_STEP_COMPLETED || !same(r, e->id, e->idn, id, idn)) return 0;
  if (!e->has_payload) {
    lua_pushnil(L);
  } else {
    char err[512];
    if (codec_decode(L, e->payload, e->payloadn, err, sizeof err) != 0) return 0; /* rs:take says it */
  }
  took(r, e);
  r->replayed++;
  return 1;
}

static replay *new_replay(lua_State *L) {
  replay *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  r->st = (store_steps)STORE_STEPS_INIT;
  luaL_setmetatable(L, REPLAY_MT);
  return r;
}

/* the replay set on top (its records read into r->st) made ready */
static int ready(lua_State *L, replay *r) {
  if (build(r) != 0) {
    replay_free(r);
    return luaL_error(L, "out of memory loading the steps of a run for its replay");
  }
  if (r->n == 0) store_steps_free(&r->st);
  return 1;
}

static int push_pg_replay(lua_State *L, l_pgread *rd) {
  if (rd->status) return l_store_pgfail(L, rd);
  replay *r = new_replay(L);
  r->st = rd->steps; /* owned by the replay set from here */
  rd->steps = (store_steps)STORE_STEPS_INIT;
  return ready(L, r);
}

/* replay_steps(run) -> rs */
static int l_replay_steps(lua_State *L) {
  size_t rn;
  const char *run = luaL_checklstring(L, 1, &rn);
  pgstore *pg = l_store_pg(L);
  if (pg) {
    l_pgread *rd = l_store_pgread(L);
    pgstore_load_steps(pg, run, rn, &rd->steps, l_store_pgread_done, rd);
    return l_store_await(L, rd, push_pg_replay);
  }
  store *s = l_store_get(L);
  replay *r = new_replay(L);
  char err[512];
  int rc = store_load_steps(s, run, rn, &r->st, err, sizeof err);
  if (rc) {
    replay_free(r);
    return l_store_fail(L, rc, err);
  }
  return ready(L, r);
}

void l_store_replay(lua_State *L, int module_idx) {
  luaL_newmetatable(L, REPLAY_MT);
  lua_pushcfunction(L, replay_gc);
  lua_setfield(L, -2, "__gc");
  lua_newtable(L);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, l_take, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, module_idx, "replay_take");
  lua_setfield(L, -2, "take");
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, l_count, 1);
  lua_setfield(L, module_idx, "replay_count");
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_replay_steps);
  lua_setfield(L, module_idx, "replay_steps");
}
