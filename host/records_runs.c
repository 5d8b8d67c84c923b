/* records_runs.c: the LMDB records of runs (store.h "runs"): the run record
 * and its indexes, the listings read from them, idempotency keys. The only
 * code that knows these key layouts (store_lmdb.h lists them):
 *   runs              id -> JSON record
 *   runs_by_time      be64(created_us) id
 *   runs_by_ns        ns \0 be64(created_us) id
 *   runs_by_pipeline  ns \0 pipeline \0 be64(created_us) id
 *   runs_by_status    ns \0 status \0 be64(created_us) id
 *   active_runs       id
 *   idempotency       ns \0 pipeline \0 key -> run id
 *   meta              "runs_indexed" -> "1" (every run has its listings)
 * The part after a listing's prefix, be64(created_us) id, is a run's place
 * in every listing: a page's cursor is its hex. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "store_lmdb.h"
#include "writer.h"

#define FIELD_MAX 200

static int seterr(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int seterr(char *err, size_t errsz, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errsz, fmt, ap);
  va_end(ap);
  return STORE_EINVAL;
}

void store_rows_free(store_rows *r) {
  free(r->off);
  free(r->len);
  free(r->name_off);
  free(r->name_len);
  sbuf_free(&r->buf);
  *r = (store_rows)STORE_ROWS_INIT;
}

static size_t *grow(size_t *a, size_t cap) {
  size_t *p = realloc(a, cap * sizeof *p);
  if (!p) {
    fprintf(stderr, "sluice: out of memory\n");
    abort();
  }
  return p;
}

void store_rows_add(store_rows *r, const void *name, size_t nn, const void *p, size_t n) {
  if (r->n == r->cap) {
    r->cap = r->cap ? r->cap * 2 : 16;
    r->off = grow(r->off, r->cap);
    r->len = grow(r->len, r->cap);
    r->name_off = grow(r->name_off, r->cap);
    r->name_len = grow(r->name_len, r->cap);
  }
  r->name_off[r->n] = r->buf.len;
  r->name_len[r->n] = nn;
  sbuf_add(&r->buf, name, nn);
  r->off[r->n] = r->buf.len;
  r->len[r->n] = n;
  sbuf_add(&r->buf, p, n);
  r->n++;
}

static const char *const FINAL[] = {"completed", "failed", "cancelled"};

int store_run_status_final(const char *status) {
  for (size_t i = 0; status && i < 3; i++)
    if (strcmp(status, FINAL[i]) == 0) return 1;
  return 0;
}

static int check_field(const char *what, const char *v, char *err, size_t errsz) {
  if (!v || !*v) return seterr(err, errsz, "a run record has no %s", what);
  if (strlen(v) > FIELD_MAX)
    return seterr(err, errsz, "a run's %s is longer than %d bytes", what, FIELD_MAX);
  return 0;
}

static void put_suffix(sbuf *k, const store_run *r) {
  sbuf_add_be64(k, (uint64_t)r->created_us);
  sbuf_adds(k, r->id);
}

/* key of r in a listing: ns \0 [mid \0] suffix */
static void listing_key(sbuf *k, const store_run *r, const char *mid) {
  sbuf_reset(k);
  sbuf_adds(k, r->ns ? r->ns : STORE_DEFAULT_NS);
  sbuf_addc(k, '\0');
  if (mid) {
    sbuf_adds(k, mid);
    sbuf_addc(k, '\0');
  }
  put_suffix(k, r);
}

/* the listing entries of r: namespace, pipeline and status */
static void put_listings(store_batch *b, const store_run *r, sbuf *k) {
  listing_key(k, r, NULL);
  wbatch_put(b, DB_RUNS_BY_NS, k->data, k->len, "", 0);
  listing_key(k, r, r->pipeline);
  wbatch_put(b, DB_RUNS_BY_PIPELINE, k->data, k->len, "", 0);
  listing_key(k, r, r->status ? r->status : "pending");
  wbatch_put(b, DB_RUNS_BY_STATUS, k->data, k->len, "", 0);
}

int store_put_run(store_batch *b, const store_run *r, int is_new, const char *prev_status,
                  store_fill_fn fill, void *ud, char *err, size_t errsz) {
  const char *status = r->status ? r->status : "pending";
  int rc;
  if ((rc = check_field("id", r->id, err, errsz)) || (rc = check_field("pipeline", r->pipeline, err, errsz)) ||
      (r->ns && (rc = check_field("namespace", r->ns, err, errsz))) ||
      (rc = check_field("status", status, err, errsz)))
    return rc;
  if (prev_status && (rc = check_field("previous status", prev_status, err, errsz))) return rc;
  if (r->created_us < 0) return seterr(err, errsz, "run %s: created_us is negative", r->id);
  size_t idn = strlen(r->id);
  sbuf *out = wbatch_put_begin(b, DB_RUNS, r->id, idn);
  if (fill(ud, out, err, errsz) != 0) {
    wbatch_put_cancel(b);
    return STORE_EINVAL;
  }
  wbatch_put_end(b);
  sbuf k = SBUF_INIT;
  if (is_new) {
    put_suffix(&k, r);
    wbatch_put(b, DB_RUNS_BY_TIME, k.data, k.len, "", 0);
    put_listings(b, r, &k);
  } else if (!prev_status || strcmp(prev_status, status) != 0) {
    if (prev_status) {
      listing_key(&k, r, prev_status);
      wbatch_del(b, DB_RUNS_BY_STATUS, k.data, k.len);
    }
    listing_key(&k, r, status);
    wbatch_put(b, DB_RUNS_BY_STATUS, k.data, k.len, "", 0);
  }
  sbuf_free(&k);
  if (store_run_status_final(status)) {
    if (!is_new) wbatch_del(b, DB_ACTIVE, r->id, idn);
  } else {
    wbatch_put(b, DB_ACTIVE, r->id, idn, "", 0);
  }
  return 0;
}

int store_get_run(store *s, const char *id, sbuf *out, int *found, char *err, size_t errsz) {
  return store_get(s, DB_RUNS, id, strlen(id), out, found, err, errsz);
}

/* ---- listings ---------------------------------------------------------- */

static int db_error(store *s, int db, int rc, char *err, size_t errsz) {
  snprintf(err, errsz, "reading %s in store %s: %s", store_db_name(db), store_dir(s),
           mdb_strerror(rc));
  return store_status(rc);
}

static int sfx_cmp(const char *a, size_t an, const char *b, size_t bn) {
  int c = memcmp(a, b, an < bn ? an : bn);
  return c ? c : (an > bn) - (an < bn);
}

/* The entries one source (a listing's prefix) gave: suffixes in `found`
 * (rows without values), and where the source stopped before its end. */
typedef struct {
  store_rows found;
  int capped; /* stopped at the examine cap: nothing below stop was read */
  sbuf stop;  /* its suffix when capped */
} source;

typedef struct {
  MDB_txn *txn;
  MDB_dbi status_dbi; /* for a pipeline listing filtered by status; 0: none */
  const char *ns, *status;
  int64_t since_us;
  size_t want, examine;
} list_ctx;

/* Reads one source newest first into src: at most want matches, at most
 * examine entries. */
static int read_source(store *s, list_ctx *c, int db, const sbuf *prefix, const sbuf *from,
                       source *src, char *err, size_t errsz) {
  MDB_dbi dbi = store_dbi(s, db);
  if (!dbi) return 0; /* a read-only store from before this listing */
  MDB_cursor *cur;
  int rc = mdb_cursor_open(c->txn, dbi, &cur);
  if (rc) return db_error(s, db, rc, err, errsz);
  MDB_val k, v;
  if (from->len) {
    k.mv_size = from->len, k.mv_data = from->data;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_PREV)
                 : rc == MDB_NOTFOUND ? mdb_cursor_get(cur, &k, &v, MDB_LAST) : rc;
  } else {
    /* the last key with the prefix: the one before the first key after it */
    sbuf after = SBUF_INIT;
    sbuf_add(&after, prefix->data, prefix->len);
    while (after.len && (unsigned char)after.data[after.len - 1] == 0xff) after.len--;
    if (after.len) {
      after.data[after.len - 1]++;
      k.mv_size = after.len, k.mv_data = after.data;
      rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
      rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_PREV)
                   : rc == MDB_NOTFOUND ? mdb_cursor_get(cur, &k, &v, MDB_LAST) : rc;
    } else {
      rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    }
    sbuf_free(&after);
  }
  size_t examined = 0;
  sbuf sk = SBUF_INIT;
  while (rc == 0) {
    if (k.mv_size < prefix->len + 9 || (prefix->len && memcmp(k.mv_data, prefix->data, prefix->len) != 0)) break;
    const char *sfx = (const char *)k.mv_data + prefix->len;
    size_t sn = k.mv_size - prefix->len;
    if (c->since_us > 0 && (int64_t)sbuf_read_be64(sfx) < c->since_us) break;
    if (src->found.n >= c->want) break;
    int match = 1;
    if (c->status_dbi) {
      sbuf_reset(&sk);
      sbuf_adds(&sk, c->ns);
      sbuf_addc(&sk, '\0');
      sbuf_adds(&sk, c->status);
      sbuf_addc(&sk, '\0');
      sbuf_add(&sk, sfx, sn);
      MDB_val kk = {sk.len, sk.data}, vv;
      int g = mdb_get(c->txn, c->status_dbi, &kk, &vv);
      if (g && g != MDB_NOTFOUND) {
        rc = g;
        break;
      }
      match = g == 0;
    }
    if (match) store_rows_add(&src->found, "", 0, sfx, sn);
    if (++examined >= c->examine) {
      src->capped = 1;
      sbuf_add(&src->stop, sfx, sn);
      break;
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
  }
  sbuf_free(&sk);
  mdb_cursor_close(cur);
  if (rc && rc != MDB_NOTFOUND) return db_error(s, db, rc, err, errsz);
  return 0;
}

typedef struct {
  const char *p;
  size_t n;
} slice;

static int slice_desc(const void *a, const void *b) {
  const slice *x = a, *y = b;
  return -sfx_cmp(x->p, x->n, y->p, y->n);
}

/* The namespaces that have runs (from runs_by_ns), into names. */
static int namespaces(store *s, MDB_txn *txn, store_rows *names, char *err, size_t errsz) {
  MDB_dbi dbi = store_dbi(s, DB_RUNS_BY_NS);
  if (!dbi) return 0;
  MDB_cursor *cur;
  int rc = mdb_cursor_open(txn, dbi, &cur);
  if (rc) return db_error(s, DB_RUNS_BY_NS, rc, err, errsz);
  MDB_val k, v;
  sbuf next = SBUF_INIT;
  rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
  while (rc == 0) {
    const char *z = memchr(k.mv_data, '\0', k.mv_size);
    size_t n = z ? (size_t)(z - (const char *)k.mv_data) : k.mv_size;
    store_rows_add(names, "", 0, k.mv_data, n);
    sbuf_reset(&next); /* ns \1: after every key of ns */
    sbuf_add(&next, k.mv_data, n);
    sbuf_addc(&next, '\1');
    k.mv_size = next.len, k.mv_data = next.data;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
  }
  sbuf_free(&next);
  mdb_cursor_close(cur);
  if (rc != MDB_NOTFOUND) return db_error(s, DB_RUNS_BY_NS, rc, err, errsz);
  return 0;
}

int store_list_runs(store *s, const store_run_filter *f, store_rows *rows, sbuf *next, char *err,
                    size_t errsz) {
  sbuf_reset(next);
  size_t limit = f->limit ? f->limit : 1;
  sbuf cursor = SBUF_INIT;
  if (f->before && (strlen(f->before) < 18 || sbuf_add_unhex(&cursor, f->before, strlen(f->before)) != 0)) {
    sbuf_free(&cursor);
    return seterr(err, errsz, "before must be a cursor returned as next by an earlier page");
  }
  MDB_txn *txn;
  int rc = store_read_begin(s, &txn, err, errsz);
  if (rc) {
    sbuf_free(&cursor);
    return rc;
  }
  list_ctx c = {txn, 0, NULL, f->status, f->since_us, limit + 1, limit * 20 > 1000 ? limit * 20 : 1000};
  store_rows names = STORE_ROWS_INIT;
  int global = !f->ns && !f->pipeline && !f->status;
  if (global) {
    store_rows_add(&names, "", 0, "", 0);
  } else if (f->ns) {
    store_rows_add(&names, "", 0, f->ns, strlen(f->ns));
  } else if ((rc = namespaces(s, txn, &names, err, errsz)) != 0) {
    goto out;
  }
  source *src = calloc(names.n ? names.n : 1, sizeof *src);
  if (!src) abort();
  sbuf prefix = SBUF_INIT, from = SBUF_INIT, ns = SBUF_INIT;
  size_t total = 0;
  for (size_t i = 0; i < names.n && rc == 0; i++) {
    sbuf_reset(&ns);
    sbuf_add(&ns, names.buf.data + names.off[i], names.len[i]);
    sbuf_addc(&ns, '\0');
    sbuf_reset(&prefix);
    int db = DB_RUNS_BY_TIME;
    if (!global) {
      sbuf_add(&prefix, ns.data, ns.len);
      db = f->pipeline ? DB_RUNS_BY_PIPELINE : f->status ? DB_RUNS_BY_STATUS : DB_RUNS_BY_NS;
      const char *mid = f->pipeline ? f->pipeline : f->status;
      if (mid) {
        sbuf_adds(&prefix, mid);
        sbuf_addc(&prefix, '\0');
      }
    }
    c.ns = ns.data;
    c.status_dbi = f->pipeline && f->status ? store_dbi(s, DB_RUNS_BY_STATUS) : 0;
    if (f->pipeline && f->status && !c.status_dbi) continue;
    sbuf_reset(&from);
    if (cursor.len) {
      sbuf_add(&from, prefix.data, prefix.len);
      sbuf_add(&from, cursor.data, cursor.len);
    }
    rc = read_source(s, &c, db, &prefix, &from, &src[i], err, errsz);
    total += src[i].found.n;
  }
  sbuf_free(&prefix);
  sbuf_free(&from);
  sbuf_free(&ns);
  if (rc == 0) {
    /* merge: newest first, never below the highest place a capped source
     * stopped at (its entries below that are unread) */
    slice *all = malloc((total ? total : 1) * sizeof *all);
    if (!all) abort();
    size_t n = 0;
    const sbuf *bound = NULL;
    for (size_t i = 0; i < names.n; i++) {
      for (size_t j = 0; j < src[i].found.n; j++)
        all[n++] = (slice){src[i].found.buf.data + src[i].found.off[j], src[i].found.len[j]};
      if (src[i].capped && (!bound || sfx_cmp(src[i].stop.data, src[i].stop.len, bound->data, bound->len) > 0))
        bound = &src[i].stop;
    }
    qsort(all, n, sizeof *all, slice_desc);
    size_t out = 0;
    while (out < n && out < limit && (!bound || sfx_cmp(all[out].p, all[out].n, bound->data, bound->len) >= 0))
      out++;
    MDB_dbi runs = store_dbi(s, DB_RUNS);
    for (size_t i = 0; i < out && rc == 0; i++) {
      const char *id = all[i].p + 8;
      size_t idn = all[i].n - 8;
      MDB_val k = {idn, (void *)id}, v;
      int g = runs ? mdb_get(txn, runs, &k, &v) : MDB_NOTFOUND;
      if (g == MDB_NOTFOUND) {
        snprintf(err, errsz, "store %s: run %.*s is in the run listings but has no record",
                 store_dir(s), (int)idn, id);
        rc = STORE_EBADSTORE;
      } else if (g) {
        rc = db_error(s, DB_RUNS, g, err, errsz);
      } else {
        store_rows_add(rows, id, idn, v.mv_data, v.mv_size);
      }
    }
    if (rc == 0) {
      if (out < n && out == limit) {
        sbuf_add_hex(next, all[out - 1].p, all[out - 1].n);
      } else if (bound) {
        sbuf_add_hex(next, bound->data, bound->len);
      }
    }
    free(all);
  }
  for (size_t i = 0; i < names.n; i++) {
    store_rows_free(&src[i].found);
    sbuf_free(&src[i].stop);
  }
  free(src);
out:
  store_read_end(s, txn);
  store_rows_free(&names);
  sbuf_free(&cursor);
  return rc;
}

int store_active_runs(store *s, store_rows *rows, char *err, size_t errsz) {
  MDB_dbi active = store_dbi(s, DB_ACTIVE), runs = store_dbi(s, DB_RUNS);
  if (!active) return 0;
  MDB_txn *txn;
  int rc = store_read_begin(s, &txn, err, errsz);
  if (rc) return rc;
  MDB_cursor *cur;
  int g = mdb_cursor_open(txn, active, &cur);
  if (g) {
    store_read_end(s, txn);
    return db_error(s, DB_ACTIVE, g, err, errsz);
  }
  MDB_val k, v;
  g = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
  while (g == 0) {
    MDB_val rv;
    int r = runs ? mdb_get(txn, runs, &k, &rv) : MDB_NOTFOUND;
    if (r == MDB_NOTFOUND) {
      snprintf(err, errsz, "store %s: run %.*s is an active run but has no record", store_dir(s),
               (int)k.mv_size, (const char *)k.mv_data);
      rc = STORE_EBADSTORE;
      break;
    }
    if (r) {
      g = r;
      break;
    }
    store_rows_add(rows, k.mv_data, k.mv_size, rv.mv_data, rv.mv_size);
    g = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  store_read_end(s, txn);
  if (rc == 0 && g != MDB_NOTFOUND) rc = db_error(s, g == 0 ? DB_ACTIVE : DB_RUNS, g, err, errsz);
  return rc;
}

/* ---- the listings of an older store ------------------------------------ */

#define INDEXED_KEY "runs_indexed"

int store_runs_indexed(store *s) {
  sbuf v = SBUF_INIT;
  int found = 0;
  char err[256];
  int rc = store_get(s, DB_META, INDEXED_KEY, strlen(INDEXED_KEY), &v, &found, err, sizeof err);
  sbuf_free(&v);
  return rc == 0 && found;
}

typedef struct {
  store_rows *rows;
  size_t max;
  const char *after;
} read_ctx;

static int read_cb(void *ud, const void *k, size_t kn, const void *v, size_t vn) {
  read_ctx *c = ud;
  if (c->after && strlen(c->after) == kn && memcmp(c->after, k, kn) == 0) return 0;
  store_rows_add(c->rows, k, kn, v, vn);
  return c->rows->n >= c->max ? 1 : 0;
}

int store_read_runs(store *s, const char *after, size_t max, store_rows *rows, char *err,
                    size_t errsz) {
  read_ctx c = {rows, max ? max : 1000, after};
  int rc = store_scan_from(s, DB_RUNS, "", 0, after, after ? strlen(after) : 0, 0, read_cb, &c,
                           err, errsz);
  return rc < 0 ? rc : 0;
}

int store_put_run_listings(store_batch *b, const store_run *r, char *err, size_t errsz) {
  int rc;
  if ((rc = check_field("id", r->id, err, errsz)) || (rc = check_field("pipeline", r->pipeline, err, errsz)) ||
      (r->ns && (rc = check_field("namespace", r->ns, err, errsz))) ||
      (r->status && (rc = check_field("status", r->status, err, errsz))))
    return rc;
  sbuf k = SBUF_INIT;
  put_listings(b, r, &k);
  sbuf_free(&k);
  return 0;
}

void store_mark_runs_indexed(store_batch *b) {
  wbatch_put(b, DB_META, INDEXED_KEY, strlen(INDEXED_KEY), "1", 1);
}

/* ---- idempotency keys -------------------------------------------------- */

static int idem_key(sbuf *k, const char *ns, const char *pipeline, const char *key, size_t klen,
                    char *err, size_t errsz) {
  int rc;
  if ((rc = check_field("namespace", ns, err, errsz)) || (rc = check_field("pipeline", pipeline, err, errsz)))
    return rc;
  if (klen == 0 || klen > FIELD_MAX)
    return seterr(err, errsz, "an idempotency key is 1 to %d bytes, got %zu", FIELD_MAX, klen);
  sbuf_adds(k, ns);
  sbuf_addc(k, '\0');
  sbuf_adds(k, pipeline);
  sbuf_addc(k, '\0');
  sbuf_add(k, key, klen);
  return 0;
}

int store_put_idempotency(store_batch *b, const char *ns, const char *pipeline, const char *key,
                          size_t klen, const char *run_id, char *err, size_t errsz) {
  sbuf k = SBUF_INIT;
  int rc = idem_key(&k, ns, pipeline, key, klen, err, errsz);
  if (rc == 0) rc = check_field("id", run_id, err, errsz);
  if (rc == 0) wbatch_put(b, DB_IDEMPOTENCY, k.data, k.len, run_id, strlen(run_id));
  sbuf_free(&k);
  return rc;
}

int store_get_idempotency(store *s, const char *ns, const char *pipeline, const char *key,
                          size_t klen, sbuf *run_id, int *found, char *err, size_t errsz) {
  sbuf k = SBUF_INIT;
  *found = 0;
  int rc = idem_key(&k, ns, pipeline, key, klen, err, errsz);
  if (rc == 0) rc = store_get(s, DB_IDEMPOTENCY, k.data, k.len, run_id, found, err, errsz);
  sbuf_free(&k);
  return rc;
}

/* ---- for store copy and store check ------------------------------------ */

const char *const store_listing_names[STORE_LISTINGS] = {"runs_by_time", "runs_by_ns",
                                                          "runs_by_pipeline", "runs_by_status",
                                                          "active_runs"};
static const int LISTING_DB[STORE_LISTINGS] = {DB_RUNS_BY_TIME, DB_RUNS_BY_NS, DB_RUNS_BY_PIPELINE,
                                               DB_RUNS_BY_STATUS, DB_ACTIVE};

int store_list_idempotency(store *s, const char *after, size_t alen, size_t limit,
                           store_named_rows *out, char *err, size_t errsz) {
  return store_page(s, DB_IDEMPOTENCY, "", 0, after, alen, limit, out, err, errsz);
}

int store_run_listing_page(store *s, int listing, const char *after, size_t alen, size_t limit,
                           store_named_rows *out, char *err, size_t errsz) {
  if (listing < 0 || listing >= STORE_LISTINGS) return seterr(err, errsz, "no listing %d", listing);
  return store_page(s, LISTING_DB[listing], "", 0, after, alen, limit, out, err, errsz);
}

/* the part of p (n bytes) before its first NUL into dst: its length, or -1 */
static long field_at(const char *p, size_t n, char *dst) {
  const char *z = memchr(p, '\0', n);
  size_t len = z ? (size_t)(z - p) : n;
  if (!z || len == 0 || len > FIELD_MAX) return -1;
  memcpy(dst, p, len);
  dst[len] = '\0';
  return (long)len;
}

int store_run_entry_parse(int listing, const char *key, size_t klen, store_run_fields *out) {
  memset(out, 0, sizeof *out);
  size_t at = 0;
  if (listing == STORE_LISTING_ACTIVE) {
    if (klen == 0 || klen > FIELD_MAX || memchr(key, '\0', klen)) return -1;
    memcpy(out->id, key, klen);
    return 0;
  }
  if (listing != STORE_LISTING_TIME) {
    long n = field_at(key, klen, out->ns);
    if (n < 0) return -1;
    at = (size_t)n + 1;
  }
  if (listing == STORE_LISTING_PIPELINE || listing == STORE_LISTING_STATUS) {
    char *mid = listing == STORE_LISTING_PIPELINE ? out->pipeline : out->status;
    long n = field_at(key + at, klen - at, mid);
    if (n < 0) return -1;
    at += (size_t)n + 1;
  }
  if (klen < at + 9) return -1;
  size_t idn = klen - at - 8;
  if (idn > FIELD_MAX || memchr(key + at + 8, '\0', idn)) return -1;
  out->created_us = (int64_t)sbuf_read_be64(key + at);
  memcpy(out->id, key + at + 8, idn);
  out->id[idn] = '\0';
  return 0;
}

/* does db hold key k (within txn)? 1, 0, or a negative status with err */
static int holds(store *s, MDB_txn *txn, int db, const void *k, size_t kn, char *err,
                 size_t errsz) {
  MDB_dbi dbi = store_dbi(s, db);
  if (!dbi) return 0;
  MDB_val key = {kn, (void *)k}, v;
  int rc = mdb_get(txn, dbi, &key, &v);
  if (rc == MDB_NOTFOUND) return 0;
  return rc ? db_error(s, db, rc, err, errsz) : 1;
}

int store_probe_run(store *s, const char *id, int listing, const char *entry, size_t elen,
                    store_run_fields_fn fields, void *ud, store_run_probe *out, char *err,
                    size_t errsz) {
  memset(out, 0, sizeof *out);
  MDB_txn *txn;
  int rc = store_read_begin(s, &txn, err, errsz);
  if (rc) return rc;
  size_t idn = strlen(id);
  MDB_dbi runs = store_dbi(s, DB_RUNS);
  MDB_val key = {idn, (void *)id}, v;
  int g = runs ? mdb_get(txn, runs, &key, &v) : MDB_NOTFOUND;
  if (g && g != MDB_NOTFOUND) rc = db_error(s, DB_RUNS, g, err, errsz);
  out->found = g == 0;
  if (out->found) {
    out->decoded = fields(ud, v.mv_data, v.mv_size, &out->f, out->why, sizeof out->why) == 0;
  }
  if (rc == 0 && out->decoded) {
    store_run r = {out->f.id, out->f.pipeline, out->f.ns, out->f.status, out->f.created_us};
    sbuf k = SBUF_INIT;
    for (int l = 0; l < STORE_LISTINGS && rc == 0; l++) {
      if (l == STORE_LISTING_TIME) {
        sbuf_reset(&k);
        put_suffix(&k, &r);
      } else if (l == STORE_LISTING_ACTIVE) {
        sbuf_reset(&k);
        sbuf_add(&k, id, idn);
      } else {
        listing_key(&k, &r, l == STORE_LISTING_NS ? NULL : l == STORE_LISTING_PIPELINE ? r.pipeline : r.status);
      }
      int h = holds(s, txn, LISTING_DB[l], k.data, k.len, err, errsz);
      if (h < 0) rc = h;
      out->listed[l] = h == 1;
    }
    sbuf_free(&k);
  }
  if (rc == 0 && listing >= 0 && listing < STORE_LISTINGS) {
    int h = holds(s, txn, LISTING_DB[listing], entry, elen, err, errsz);
    if (h < 0) rc = h;
    out->entry = h == 1;
  }
  store_read_end(s, txn);
  return rc;
}
