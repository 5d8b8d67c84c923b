/* l_host.c: "sluice.host", the engine's door to the store and the writer
 * (glue only: store.c and writer.c know nothing of Lua), plus the clock, ids
 * and hashing the engine needs. One store per process.
 *
 * Failures at run time return nil, "message", "CODE" (luv's convention);
 * misuse raises. commit() suspends the calling coroutine until its batch is
 * durable, so it must be called from a coroutine the host can resume. */
#include "host_lib.h"

#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "codec.h"
#include "embedded.h"
#include "store_lmdb.h"
#include "vm.h"
#include "writer.h"

static struct {
  store *st;
  writer *w;
  int readonly;
} H;

static int fail(lua_State *L, int status, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, store_status_code(status));
  return 3;
}

static int db_index(const char *name);

static int check_db(lua_State *L, int arg) {
  const char *name = luaL_checkstring(L, arg);
  int db = db_index(name);
  if (db < 0) return luaL_argerror(L, arg, lua_pushfstring(L, "no database named '%s'", name));
  return db;
}

static store *check_store(lua_State *L) {
  if (!H.st) luaL_error(L, "sluice.host: no store is open");
  return H.st;
}

store *host_store(lua_State *L) { return check_store(L); }

void host_lib_shutdown(lua_State *L) {
  (void)L;
  if (H.w) {
    writer_stop(H.w);
    H.w = NULL;
  }
  if (H.st) {
    store_close(H.st);
    H.st = NULL;
  }
}

/* open(dir [, readonly]) -> true | nil, msg, code. Reopening the same dir is
 * a no-op; another dir closes the first (its queued writes commit first). */
static int l_open(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  int readonly = lua_toboolean(L, 2);
  if (H.st && strcmp(store_dir(H.st), dir) == 0 && H.readonly == readonly) {
    lua_pushboolean(L, 1);
    return 1;
  }
  host_lib_shutdown(L);
  char err[512];
  int rc = store_open(&H.st, dir, readonly ? STORE_READONLY : 0, err, sizeof err);
  if (rc != 0) {
    H.st = NULL;
    return fail(L, rc, err);
  }
  H.readonly = readonly;
  if (!readonly) {
    if (writer_start(&H.w, H.st, &vm_of(L)->loop, err, sizeof err) != 0) {
      store_close(H.st);
      H.st = NULL;
      return fail(L, STORE_EIO, err);
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_close(lua_State *L) {
  host_lib_shutdown(L);
  return 0;
}

static int l_dir(lua_State *L) {
  if (!H.st) return 0;
  lua_pushstring(L, store_dir(H.st));
  return 1;
}

/* get(db, key) -> value | nil (absent) | nil, msg, code */
static int l_get(lua_State *L) {
  store *st = check_store(L);
  int db = check_db(L, 1);
  size_t klen;
  const char *key = luaL_checklstring(L, 2, &klen);
  sbuf out = SBUF_INIT;
  int found = 0;
  char err[512];
  int rc = store_get(st, db, key, klen, &out, &found, err, sizeof err);
  if (rc != 0) {
    sbuf_free(&out);
    return fail(L, rc, err);
  }
  if (found) {
    lua_pushlstring(L, out.data ? out.data : "", out.len);
  } else {
    lua_pushnil(L);
  }
  sbuf_free(&out);
  return 1;
}

typedef struct {
  lua_State *L;
  lua_Integer n, limit;
} scan_ctx;

static int scan_cb(void *ud, const void *k, size_t kn, const void *v, size_t vn) {
  scan_ctx *c = ud;
  if (!lua_checkstack(c->L, 4)) return STORE_EIO;
  c->n++;
  lua_pushlstring(c->L, k, kn);
  lua_rawseti(c->L, -3, c->n);
  lua_pushlstring(c->L, v, vn);
  lua_rawseti(c->L, -2, c->n);
  return (c->limit > 0 && c->n >= c->limit) ? 1 : 0;
}

/* scan(db, prefix [, reverse [, limit [, from]]]) -> keys, values | nil,
 * msg, code. from: start at the first key >= from (forward) or at the last
 * key < from (reverse). */
static int l_scan(lua_State *L) {
  store *st = check_store(L);
  int db = check_db(L, 1);
  size_t plen, flen = 0;
  const char *prefix = luaL_optlstring(L, 2, "", &plen);
  int reverse = lua_toboolean(L, 3);
  scan_ctx c = {L, 0, luaL_optinteger(L, 4, 0)};
  const char *from = luaL_optlstring(L, 5, NULL, &flen);
  lua_settop(L, 5);
  lua_newtable(L);
  lua_newtable(L);
  char err[512];
  int rc = store_scan_from(st, db, prefix, plen, from, flen, reverse, scan_cb, &c, err, sizeof err);
  if (rc < 0) return fail(L, rc, err);
  return 2;
}

/* A suspended coroutine waiting for its batch. */
typedef struct {
  lua_State *co;
  int ref;
} waiter;

static void commit_done(void *cookie, int status, const char *errmsg) {
  waiter *wt = cookie;
  lua_State *co = wt->co;
  lua_State *L = vm_of(co)->L;
  int nargs;
  if (lua_status(co) != LUA_YIELD) {
    /* resumed by somebody else meanwhile: nothing to hand the result to */
    fprintf(stderr, "sluice: a coroutine waiting for a commit was resumed elsewhere; "
                    "result dropped\n");
    luaL_unref(L, LUA_REGISTRYINDEX, wt->ref);
    free(wt);
    return;
  }
  if (status == 0) {
    lua_pushboolean(co, 1);
    nargs = 1;
  } else {
    lua_pushnil(co);
    lua_pushstring(co, errmsg ? errmsg : "write failed");
    lua_pushstring(co, store_status_code(status));
    nargs = 3;
  }
  int ref = wt->ref;
  free(wt);
  vm_resume(co, NULL, nargs);
  /* drop the anchor only now: the coroutine may have finished above */
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

/* The database named name, or -1. */
static int db_index(const char *name) {
  for (int d = 0; name && d < DB_COUNT; d++) {
    if (strcmp(store_db_name(d), name) == 0) return d;
  }
  return -1;
}

int host_add_ops(lua_State *L, int idx, wbatch *b, const char *what) {
  lua_Integer n = luaL_len(L, idx);
  if (n % 3 != 0) {
    wbatch_free(b);
    return luaL_error(L, "%s: expected {db, key, value, ...}, got %d items", what, (int)n);
  }
  for (lua_Integer i = 1; i <= n; i += 3) {
    lua_rawgeti(L, idx, i);
    lua_rawgeti(L, idx, i + 1);
    lua_rawgeti(L, idx, i + 2);
    int db = db_index(lua_tostring(L, -3));
    size_t kn, vn;
    const char *k = lua_tolstring(L, -2, &kn);
    int del = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
    const char *v = del ? NULL : lua_tolstring(L, -1, &vn);
    if (db < 0 || !k || (!del && !v)) {
      wbatch_free(b);
      return luaL_error(L, "%s: op %d needs a database name, a string key and a string value "
                           "(or false to delete)", what, (int)(i / 3 + 1));
    }
    if (del) {
      wbatch_del(b, db, k, kn);
    } else {
      wbatch_put(b, db, k, kn, v, vn);
    }
    lua_pop(L, 3);
  }
  return 0;
}

/* commit(ops) where ops = {db, key, value, db, key, value, ...} (value false
 * deletes): one atomic batch. Yields until durable; returns true, or nil,
 * msg, code. */
static int l_commit(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  host_check_writable(L);
  if (luaL_len(L, 1) == 0) return luaL_argerror(L, 1, "expected {db, key, value, ...}");
  wbatch *b = wbatch_new();
  host_add_ops(L, 1, b, "commit");
  return host_submit(L, b);
}

void host_check_writable(lua_State *L) {
  if (!H.st) luaL_error(L, "sluice.host: no store is open");
  if (!H.w) luaL_error(L, "the store %s is open read-only", store_dir(H.st));
  if (!lua_isyieldable(L)) {
    luaL_error(L, "a durable write must run inside a run (a coroutine the host resumes), not in "
                  "a callback or at the top of the main thread");
  }
}

int host_submit(lua_State *L, wbatch *b) {
  waiter *wt = malloc(sizeof *wt);
  if (!wt) {
    wbatch_free(b);
    return luaL_error(L, "out of memory");
  }
  wt->co = L;
  lua_pushthread(L);
  wt->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (writer_submit(H.w, b, commit_done, wt) != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, wt->ref);
    free(wt);
    return fail(L, STORE_EIO, "the writer is stopping");
  }
  return lua_yield(L, 0);
}

static void push_hist(lua_State *L, const uint64_t *hist, const uint64_t *bounds,
                      const char *name) {
  lua_createtable(L, WRITER_HIST, 0);
  for (int i = 0; i < WRITER_HIST; i++) {
    lua_pushinteger(L, (lua_Integer)hist[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, name);
  lua_createtable(L, WRITER_HIST - 1, 0);
  for (int i = 0; i < WRITER_HIST - 1; i++) {
    lua_pushinteger(L, (lua_Integer)bounds[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushfstring(L, "%s_bounds", name);
  lua_insert(L, -2);
  lua_settable(L, -3);
}

/* stats() -> {commits, batches, ops, grows, batch_hist, batch_hist_bounds,
 * commit_hist, commit_hist_bounds (us), commit_us_sum, map_bytes} */
static int l_stats(lua_State *L) {
  writer_stats s;
  memset(&s, 0, sizeof s);
  if (H.w) writer_get_stats(H.w, &s);
  lua_createtable(L, 0, 10);
  push_hist(L, s.batch_hist, writer_batch_bounds, "batch_hist");
  push_hist(L, s.commit_hist, writer_commit_bounds_us, "commit_hist");
  lua_pushinteger(L, (lua_Integer)s.commit_us_sum);
  lua_setfield(L, -2, "commit_us_sum");
  if (H.st) {
    MDB_envinfo info;
    if (mdb_env_info(store_env(H.st), &info) == 0) {
      lua_pushinteger(L, (lua_Integer)info.me_mapsize);
      lua_setfield(L, -2, "map_bytes");
    }
  }
  lua_pushinteger(L, (lua_Integer)s.commits);
  lua_setfield(L, -2, "commits");
  lua_pushinteger(L, (lua_Integer)s.batches);
  lua_setfield(L, -2, "batches");
  lua_pushinteger(L, (lua_Integer)s.ops);
  lua_setfield(L, -2, "ops");
  lua_pushinteger(L, (lua_Integer)s.grows);
  lua_setfield(L, -2, "grows");
  return 1;
}

/* now() -> wall clock in integer microseconds since the epoch */
static int l_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
  return 1;
}

/* hrtime() -> monotonic nanoseconds */
static int l_hrtime(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_hrtime());
  return 1;
}

/* iso(us) -> "2026-11-22T03:51:49.123Z" */
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

/* new_id() -> a ULID: 26 characters of Crockford base32, 48 bits of
 * milliseconds then 80 random bits, incremented within one millisecond so
 * ids made by this process sort in creation order. */
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

/* hash(s) -> 16 hex digits of FNV-1a 64: tells one source file version from
 * another in run records; not for security. */
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

/* encode(v, root [, record]) -> json | nil, "root.path: message"; record:
 * v is a store record wrapping values (CODEC_RECORD) */
static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  const char *root = luaL_optstring(L, 2, "value");
  int flags = lua_toboolean(L, 3) ? CODEC_RECORD : 0;
  sbuf out = SBUF_INIT;
  char err[512];
  if (codec_encode(L, 1, root, flags, &out, err, sizeof err) != 0) {
    sbuf_free(&out);
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushlstring(L, out.data ? out.data : "", out.len);
  sbuf_free(&out);
  return 1;
}

/* quote(s) -> s as a JSON string literal */
static int l_quote(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  sbuf out = SBUF_INIT;
  codec_encode_string(&out, s, n);
  lua_pushlstring(L, out.data, out.len);
  sbuf_free(&out);
  return 1;
}

/* decode(s [, init]) -> value | nil, "line L, column C (byte B): message";
 * init (1-based) decodes the text from that byte on. */
static int l_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_Integer init = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, init >= 1 && (size_t)init <= n + 1, 2, "out of range");
  s += init - 1;
  n -= (size_t)init - 1;
  char err[512];
  if (codec_decode(L, s, n, err, sizeof err) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  return 1;
}

/* resume(co, ...): resumes a suspended coroutine as the host does (errors
 * reported with a traceback, the main coroutine's end noted). Returns the
 * status: "yield", "ok" or "error". */
static int l_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argcheck(L, co != NULL, 1, "expected a coroutine");
  int st = lua_status(co);
  if (co == L || (st != LUA_YIELD && !(st == LUA_OK && lua_gettop(co) > 0))) {
    return luaL_error(L, "sluice.host.resume: the coroutine is not suspended");
  }
  int nargs = lua_gettop(L) - 1;
  if (!lua_checkstack(co, nargs + 1)) return luaL_error(L, "stack overflow");
  lua_xmove(L, co, nargs);
  int rc = vm_resume(co, L, nargs);
  lua_pushstring(L, rc == LUA_YIELD ? "yield" : rc == LUA_OK ? "ok" : "error");
  return 1;
}

/* stop(): stops the loop (a command is done; user handles left open do not
 * keep the process alive). */
static int l_stop(lua_State *L) {
  uv_stop(&vm_of(L)->loop);
  return 0;
}

/* embedded(prefix) -> {path = source} of the files compiled into the
 * binary whose repository path starts with prefix ("types/"): what
 * `sluice types DIR` writes out. */
static int l_embedded(lua_State *L) {
  size_t plen;
  const char *prefix = luaL_checklstring(L, 1, &plen);
  lua_newtable(L);
  for (const embedded_file *f = embedded_files; f->module; f++) {
    if (strncmp(f->chunk + 1, prefix, plen) != 0) continue;
    lua_pushlstring(L, f->src, f->len);
    lua_setfield(L, -2, f->chunk + 1);
  }
  return 1;
}

static int l_isyieldable(lua_State *L) {
  lua_pushboolean(L, lua_isyieldable(L));
  return 1;
}

int luaopen_sluice_host(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"open", l_open},     {"close", l_close},   {"dir", l_dir},
      {"get", l_get},       {"scan", l_scan},     {"commit", l_commit},
      {"stats", l_stats},   {"now", l_now},       {"hrtime", l_hrtime},
      {"iso", l_iso},       {"new_id", l_new_id}, {"hash", l_hash},
      {"encode", l_encode}, {"quote", l_quote},   {"decode", l_decode},
      {"isyieldable", l_isyieldable}, {"resume", l_resume},
      {"stop", l_stop},     {"embedded", l_embedded},
      {NULL, NULL}};
  luaL_newlib(L, fns);
  steps_register(L);
  cron_register(L);
  lock_register(L);
  stream_register(L);
  errors_register(L);
  return 1;
}
