/* records_steps.c: the LMDB records of steps and of run logs (store.h
 * "steps", "run logs"). The only code that knows their keys and format:
 *   steps  run \0 step_id -> step record
 *   logs   run \0 be64(us) be32(seq) -> JSON line
 *
 * A step record is a small binary header then the payload: the JSON of the
 * step's result (or of its error). Only the payload is a user value; the
 * header is read without parsing JSON, which is what makes resuming a
 * 10,000-step run cost milliseconds (a JSON record per step cost ~1.3 us to
 * decode, most of it for fields the replay does not need).
 *
 *   offset size
 *   0      1    format (1)
 *   1      1    status: 1 completed, 2 failed, 3 running (a step in flight)
 *   2      1    1 if a payload follows
 *   3      1    reserved (0)
 *   4      4    attempts            (little-endian unsigned)
 *   8      4    position in branch
 *   12     8    started, us since the epoch (little-endian signed)
 *   20     8    duration, us
 *   28     2    length of id        then id bytes
 *   ..     2    length of branch    then branch bytes
 *   ..          payload (JSON) to the end
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "store_lmdb.h"
#include "writer.h"

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

int store_step_status(const char *name) {
  for (int i = 1; name && i <= 3; i++)
    if (strcmp(name, STATUS[i]) == 0) return i;
  return 0;
}

const char *store_step_status_name(int status) {
  return status >= 1 && status <= 3 ? STATUS[status] : "failed";
}

static void step_key(sbuf *k, const char *run, size_t rn, const char *id, size_t idn) {
  sbuf_add(k, run, rn);
  sbuf_addc(k, '\0');
  sbuf_add(k, id, idn);
}

int store_put_step(store_batch *b, const char *run, size_t run_len, const store_step *st,
                   store_fill_fn fill, void *ud, char *err, size_t errsz) {
  if (run_len == 0 || memchr(run, '\0', run_len)) {
    snprintf(err, errsz, "a step needs a run id without NUL");
    return STORE_EINVAL;
  }
  if (st->id_len == 0 || st->id_len > 0xffff || memchr(st->id, '\0', st->id_len)) {
    snprintf(err, errsz, "a step id is 1 to 65535 bytes without NUL");
    return STORE_EINVAL;
  }
  if (st->branch_len > 0xffff) {
    snprintf(err, errsz, "step '%.*s': branch name longer than 65535 bytes", (int)st->id_len, st->id);
    return STORE_EINVAL;
  }
  if (st->status < 1 || st->status > 3) {
    snprintf(err, errsz, "step '%.*s': no step status %d", (int)st->id_len, st->id, st->status);
    return STORE_EINVAL;
  }
  sbuf k = SBUF_INIT;
  step_key(&k, run, run_len, st->id, st->id_len);
  sbuf *out = wbatch_put_begin(b, DB_STEPS, k.data, k.len);
  sbuf_free(&k);
  size_t at = out->len;
  unsigned char head[4] = {1, (unsigned char)st->status, fill ? 1 : 0, 0};
  sbuf_add(out, head, 4);
  put_le(out, st->attempts, 4);
  put_le(out, st->pos, 4);
  put_le(out, (uint64_t)st->started_us, 8);
  put_le(out, (uint64_t)st->duration_us, 8);
  put_le(out, st->id_len, 2);
  sbuf_add(out, st->id, st->id_len);
  put_le(out, st->branch_len, 2);
  sbuf_add(out, st->branch, st->branch_len);
  if (fill && fill(ud, out, err, errsz) != 0) {
    wbatch_put_cancel(b);
    return STORE_EINVAL;
  }
  (void)at;
  wbatch_put_end(b);
  return 0;
}

void store_steps_free(store_steps *l) {
  free(l->v);
  sbuf_free(&l->buf);
  *l = (store_steps)STORE_STEPS_INIT;
}

/* Parses the record at v (n bytes) into r, pointers into v. */
static int parse(const unsigned char *v, size_t n, store_step *r) {
  if (n < HDR + 4 || v[0] != 1) return -1;
  r->status = v[1];
  r->has_payload = v[2];
  r->attempts = (uint32_t)get_le(v + 4, 4);
  r->pos = (uint32_t)get_le(v + 8, 4);
  r->started_us = (int64_t)get_le(v + 12, 8);
  r->duration_us = (int64_t)get_le(v + 20, 8);
  r->id_len = (size_t)get_le(v + 28, 2);
  if (HDR + 2 + r->id_len + 2 > n) return -1;
  r->id = (const char *)v + HDR + 2;
  r->branch_len = (size_t)get_le((const unsigned char *)r->id + r->id_len, 2);
  r->branch = r->id + r->id_len + 2;
  size_t off = HDR + 4 + r->id_len + r->branch_len;
  if (off > n) return -1;
  r->payload = (const char *)v + off;
  r->payload_len = n - off;
  return 0;
}

typedef struct {
  store_steps *out;
  int bad;
} load_ctx;

/* Copies each record into out->buf; the pointers are fixed up at the end
 * (the buffer moves as it grows): meanwhile they hold offsets. */
static int load_cb(void *ud, const void *k, size_t kn, const void *val, size_t vn) {
  (void)k, (void)kn;
  load_ctx *c = ud;
  store_steps *l = c->out;
  store_step r;
  if (parse(val, vn, &r) != 0) {
    c->bad = 1;
    return STORE_EBADSTORE;
  }
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    store_step *v = realloc(l->v, cap * sizeof *v);
    if (!v) abort();
    l->v = v, l->cap = cap;
  }
  size_t base = l->buf.len;
  sbuf_add(&l->buf, val, vn);
  const char *p = val;
  r.id = (const char *)(base + (size_t)(r.id - p));
  r.branch = (const char *)(base + (size_t)(r.branch - p));
  r.payload = (const char *)(base + (size_t)(r.payload - p));
  l->v[l->n++] = r;
  return 0;
}

static int load(store *s, const char *run, size_t rn, const char *id, size_t idn,
                store_steps *out, char *err, size_t errsz) {
  sbuf k = SBUF_INIT;
  step_key(&k, run, rn, id ? id : "", id ? idn : 0);
  load_ctx c = {out, 0};
  size_t first = out->n;
  int rc;
  if (id) {
    sbuf v = SBUF_INIT;
    int found = 0;
    rc = store_get(s, DB_STEPS, k.data, k.len, &v, &found, err, errsz);
    if (rc == 0 && found) rc = load_cb(&c, k.data, k.len, v.data, v.len);
    sbuf_free(&v);
  } else {
    rc = store_scan(s, DB_STEPS, k.data, k.len, 0, load_cb, &c, err, errsz);
  }
  sbuf_free(&k);
  if (c.bad) {
    snprintf(err, errsz, "store %s: run %.*s has a corrupt step record", store_dir(s), (int)rn, run);
    rc = STORE_EBADSTORE;
  }
  for (size_t i = first; i < out->n; i++) {
    store_step *r = &out->v[i];
    r->id = out->buf.data + (size_t)r->id;
    r->branch = out->buf.data + (size_t)r->branch;
    r->payload = out->buf.data + (size_t)r->payload;
  }
  return rc < 0 ? rc : 0;
}

int store_load_steps(store *s, const char *run, size_t run_len, store_steps *out, char *err,
                     size_t errsz) {
  return load(s, run, run_len, NULL, 0, out, err, errsz);
}

int store_get_step(store *s, const char *run, size_t run_len, const char *id, size_t id_len,
                   store_steps *out, char *err, size_t errsz) {
  return load(s, run, run_len, id, id_len, out, err, errsz);
}

/* ---- run logs ---------------------------------------------------------- */

static void log_key(sbuf *k, const char *run, size_t rn, int64_t us, uint32_t seq) {
  sbuf_add(k, run, rn);
  sbuf_addc(k, '\0');
  sbuf_add_be64(k, (uint64_t)us);
  sbuf_add_be32(k, seq);
}

int store_put_log(store_batch *b, const char *run, size_t run_len, int64_t us, uint32_t seq,
                  const void *json, size_t len, char *err, size_t errsz) {
  if (run_len == 0 || memchr(run, '\0', run_len)) {
    snprintf(err, errsz, "a log line needs a run id without NUL");
    return STORE_EINVAL;
  }
  sbuf k = SBUF_INIT;
  log_key(&k, run, run_len, us, seq);
  wbatch_put(b, DB_LOGS, k.data, k.len, json, len);
  sbuf_free(&k);
  return 0;
}

void store_del_log(store_batch *b, const char *run, size_t run_len, int64_t us, uint32_t seq) {
  sbuf k = SBUF_INIT;
  log_key(&k, run, run_len, us, seq);
  wbatch_del(b, DB_LOGS, k.data, k.len);
  sbuf_free(&k);
}

typedef struct {
  store_rows *rows;
  sbuf ids; /* int64 pairs */
  size_t plen;
  int bad;
} logs_ctx;

static int logs_cb(void *ud, const void *k, size_t kn, const void *v, size_t vn) {
  logs_ctx *c = ud;
  if (kn != c->plen + 12) {
    c->bad = 1;
    return STORE_EBADSTORE;
  }
  const char *p = (const char *)k + c->plen;
  int64_t pair[2] = {(int64_t)sbuf_read_be64(p), (int64_t)sbuf_read_be32(p + 8)};
  sbuf_add(&c->ids, pair, sizeof pair);
  store_rows_add(c->rows, "", 0, v, vn);
  return 0;
}

int store_read_logs(store *s, const char *run, size_t run_len, store_rows *rows, int64_t **ids,
                    char *err, size_t errsz) {
  sbuf k = SBUF_INIT;
  sbuf_add(&k, run, run_len);
  sbuf_addc(&k, '\0');
  logs_ctx c = {rows, SBUF_INIT, k.len, 0};
  int rc = store_scan(s, DB_LOGS, k.data, k.len, 0, logs_cb, &c, err, errsz);
  sbuf_free(&k);
  if (c.bad) {
    snprintf(err, errsz, "store %s: run %.*s has a log line under a malformed key", store_dir(s),
             (int)run_len, run);
    rc = STORE_EBADSTORE;
  }
  if (rc < 0 || !ids) {
    sbuf_free(&c.ids);
    if (ids) *ids = NULL;
    return rc < 0 ? rc : 0;
  }
  *ids = (int64_t *)c.ids.data; /* ownership moves to the caller */
  return 0;
}
