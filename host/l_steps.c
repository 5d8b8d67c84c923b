/* l_steps.c: the step record, the one value written per step, and the
 * loader that replays a run's stored steps (part of "sluice._store").
 *
 * A record is a small binary header then the JSON of the step's result (or
 * of its error). Only the result is a user value, so only it goes through
 * the codec; the header is read in C without building a Lua table per
 * step, which is what makes resuming a 10,000-step run cost milliseconds:
 * a JSON record per step cost ~1.3 us to decode, most of it building tables
 * for fields the replay does not need.
 *
 *   offset size
 *   0      1    format (1)
 *   1      1    status: 1 completed, 2 failed, 3 running (a step in flight,
 *                written late and without waiting for it by lua/engine.lua so
 *                that `sluice status` can show it; the step's result record
 *                replaces it, and the replay loader skips it)
 *   2      1    1 if a payload (result or error JSON) follows
 *   3      1    reserved (0)
 *   4      4    attempts            (little-endian unsigned)
 *   8      4    position in branch
 *   12     8    started, us since the epoch (little-endian signed)
 *   20     8    duration, us
 *   28     2    length of id        then id bytes
 *   ..     2    length of branch    then branch bytes
 *   ..          payload (JSON) to the end
 */
#include <lauxlib.h>
#include <stdint.h>
#include <string.h>

#include "codec.h"
#include "sbuf.h"
#include "l_store.h"
#include "store_lmdb.h"

#define HDR 28

static void put_le(sbuf *b, uint64_t v, int n) {
  unsigned char k[8];
  for (int i = 0; i < n; i++, v >>= 8) k[i] = (unsigned char)(v & 0xff);
  sbuf_add(b, k, (size_t)n);
}

static uint64_t get_le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static const char *const STATUS[] = {"?", "completed", "failed", "running"};

/* step_record(status, attempts, pos, started_us, duration_us, id, branch
 * [, payload]) -> bytes. status is "completed", "failed" or "running". */
static int l_step_record(lua_State *L) {
  const char *status = luaL_checkstring(L, 1);
  int st = 0;
  for (int i = 1; i <= 3; i++)
    if (strcmp(status, STATUS[i]) == 0) st = i;
  luaL_argcheck(L, st != 0, 1, "status must be \"completed\", \"failed\" or \"running\"");
  lua_Integer attempts = luaL_checkinteger(L, 2);
  lua_Integer pos = luaL_checkinteger(L, 3);
  lua_Integer started = luaL_checkinteger(L, 4);
  lua_Integer duration = luaL_checkinteger(L, 5);
  size_t idn, brn, pn = 0;
  const char *id = luaL_checklstring(L, 6, &idn);
  const char *br = luaL_checklstring(L, 7, &brn);
  const char *payload = luaL_optlstring(L, 8, NULL, &pn);
  luaL_argcheck(L, idn <= 0xffff, 6, "step id longer than 65535 bytes");
  luaL_argcheck(L, brn <= 0xffff, 7, "branch name longer than 65535 bytes");
  sbuf b = SBUF_INIT;
  sbuf_reserve(&b, HDR + 4 + idn + brn + pn);
  unsigned char head[4] = {1, (unsigned char)st, payload ? 1 : 0, 0};
  sbuf_add(&b, head, 4);
  put_le(&b, (uint64_t)attempts, 4);
  put_le(&b, (uint64_t)pos, 4);
  put_le(&b, (uint64_t)started, 8);
  put_le(&b, (uint64_t)duration, 8);
  put_le(&b, idn, 2);
  sbuf_add(&b, id, idn);
  put_le(&b, brn, 2);
  sbuf_add(&b, br, brn);
  if (payload) sbuf_add(&b, payload, pn);
  lua_pushlstring(L, b.data, b.len);
  sbuf_free(&b);
  return 1;
}

typedef struct {
  const unsigned char *id, *branch;
  size_t idn, brn, off; /* off: where the payload starts */
  uint32_t attempts, pos;
  int64_t started, duration;
  int status, has_payload;
} step_rec;

static int parse(const unsigned char *v, size_t n, step_rec *r) {
  if (n < HDR + 4 || v[0] != 1) return -1;
  r->status = v[1];
  r->has_payload = v[2];
  r->attempts = (uint32_t)get_le(v + 4, 4);
  r->pos = (uint32_t)get_le(v + 8, 4);
  r->started = (int64_t)get_le(v + 12, 8);
  r->duration = (int64_t)get_le(v + 20, 8);
  r->idn = (size_t)get_le(v + 28, 2);
  if (HDR + 2 + r->idn + 2 > n) return -1;
  r->id = v + HDR + 2;
  r->brn = (size_t)get_le(r->id + r->idn, 2);
  r->branch = r->id + r->idn + 2;
  r->off = HDR + 4 + r->idn + r->brn;
  if (r->off > n) return -1;
  return 0;
}

/* step_fields(record) -> {status=, attempts=, pos=, started_us=,
 * duration_us=, id=, branch=, size=}, payload_offset | nil (no payload).
 * payload_offset is 1-based, for decode(record, offset). */
static int l_step_fields(lua_State *L) {
  size_t n;
  const unsigned char *v = (const unsigned char *)luaL_checklstring(L, 1, &n);
  step_rec r;
  if (parse(v, n, &r) != 0) return luaL_error(L, "corrupt step record (%d bytes)", (int)n);
  lua_createtable(L, 0, 8);
  lua_pushstring(L, r.status >= 1 && r.status <= 3 ? STATUS[r.status] : "failed");
  lua_setfield(L, -2, "status");
  lua_pushinteger(L, r.attempts);
  lua_setfield(L, -2, "attempts");
  lua_pushinteger(L, r.pos);
  lua_setfield(L, -2, "pos");
  lua_pushinteger(L, r.started);
  lua_setfield(L, -2, "started_us");
  lua_pushinteger(L, r.duration);
  lua_setfield(L, -2, "duration_us");
  lua_pushlstring(L, (const char *)r.id, r.idn);
  lua_setfield(L, -2, "id");
  lua_pushlstring(L, (const char *)r.branch, r.brn);
  lua_setfield(L, -2, "branch");
  lua_pushinteger(L, (lua_Integer)(n - r.off));
  lua_setfield(L, -2, "size");
  if (r.has_payload) {
    lua_pushinteger(L, (lua_Integer)r.off + 1);
  } else {
    lua_pushnil(L);
  }
  return 2;
}

/* step_result(record) -> completed, value: false for a failed step; else
 * true and the decoded result (nil when the step returned nil). */
static int l_step_result(lua_State *L) {
  size_t n;
  const unsigned char *v = (const unsigned char *)luaL_checklstring(L, 1, &n);
  step_rec r;
  if (parse(v, n, &r) != 0) return luaL_error(L, "corrupt step record (%d bytes)", (int)n);
  if (r.status != 1) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushboolean(L, 1);
  if (!r.has_payload) return 1;
  char err[256];
  if (codec_decode(L, (const char *)v + r.off, n - r.off, err, sizeof err) != 0) {
    return luaL_error(L, "corrupt result of step '%s': %s",
                      lua_pushlstring(L, (const char *)r.id, r.idn), err);
  }
  return 2;
}

typedef struct {
  lua_State *L;
  int raw, order; /* stack indices */
  lua_Integer n;
} load_ctx;

static int load_cb(void *ud, const void *k, size_t kn, const void *val, size_t vn) {
  (void)k;
  (void)kn;
  load_ctx *c = ud;
  lua_State *L = c->L;
  step_rec r;
  if (parse(val, vn, &r) != 0) return STORE_EBADSTORE;
  if (r.status == 3) return 0; /* in flight when written: nothing to replay */
  /* raw[id] = record */
  lua_pushlstring(L, (const char *)r.id, r.idn);
  lua_pushvalue(L, -1);
  lua_pushlstring(L, val, vn);
  lua_rawset(L, c->raw); /* the id stays on the stack for order below */
  /* order[branch][pos] = id */
  lua_pushlstring(L, (const char *)r.branch, r.brn);
  if (lua_rawget(L, c->order) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushlstring(L, (const char *)r.branch, r.brn);
    lua_pushvalue(L, -2);
    lua_rawset(L, c->order);
  }
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, r.pos);
  lua_pop(L, 2);
  c->n++;
  return 0;
}

/* load_steps(run_id) -> raw, order, n: raw[step_id] = record,
 * order[branch][pos] = step_id | nil, msg, code */
static int l_load_steps(lua_State *L) {
  size_t n;
  const char *run = luaL_checklstring(L, 1, &n);
  store *st = l_store_get(L);
  sbuf prefix = SBUF_INIT;
  sbuf_add(&prefix, run, n);
  sbuf_addc(&prefix, '\0');
  lua_newtable(L);
  lua_newtable(L);
  load_ctx c = {L, lua_gettop(L) - 1, lua_gettop(L), 0};
  char err[512];
  int rc = store_scan(st, DB_STEPS, prefix.data, prefix.len, 0, load_cb, &c, err, sizeof err);
  sbuf_free(&prefix);
  if (rc < 0) {
    lua_pushnil(L);
    if (rc == STORE_EBADSTORE) {
      lua_pushfstring(L, "run %s has a corrupt step record", run);
    } else {
      lua_pushstring(L, err);
    }
    lua_pushstring(L, "EBADSTORE");
    return 3;
  }
  lua_pushinteger(L, c.n);
  return 3;
}

void steps_register(lua_State *L) {
  static const luaL_Reg fns[] = {{"step_record", l_step_record},
                                 {"step_fields", l_step_fields},
                                 {"step_result", l_step_result},
                                 {"load_steps", l_load_steps},
                                 {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
}
