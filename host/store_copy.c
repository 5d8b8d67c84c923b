/* store_copy.c: `sluice store copy` (store_copy.h). A state machine on the
 * loop: each state issues one read or commit of store_any.h and goes on
 * when it completes. LMDB reads complete before the call returns, so pump()
 * runs states in a loop until one is waiting, instead of recursing from
 * each completion (a page of LMDB reads would otherwise nest that deep). */
#include "store_copy.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "store_any.h"

/* the order of the copy (nobody reads the destination before the end, so
 * any order would do: this one puts idempotency keys after their runs) */
static const int KINDS[] = {STORE_K_NAMESPACES, STORE_K_KEYS,   STORE_K_QUOTAS,
                            STORE_K_SCHEDULES,  STORE_K_CONSUMERS, STORE_K_SENDS,
                            STORE_K_EVENTS,     STORE_K_TRIMS,  STORE_K_RUNS,
                            STORE_K_IDEMPOTENCY};
#define NKINDS (sizeof KINDS / sizeof *KINDS)

#define BATCH_BYTES (8u << 20) /* a commit at most about this big, whatever its count */

enum { S_CENSUS_SRC, S_CENSUS_DST, S_EMPTY, S_KINDS, S_POSITIONS, S_FLUSH, S_VERIFY, S_COMPARE, S_END };

typedef struct {
  store_any src, dst;
  store_copy_opts o;
  store_copy_done_fn done;
  void *cookie;
  store_copy_result r;
  int state, waiting, pumping;
  /* the kind being copied, its page and where the next page starts */
  size_t ki, row;
  int have_page, sub;
  store_any_pages pages; /* the kind being walked: its page */
  /* the run being copied: its steps and logs */
  store_steps steps;
  store_rows logs;
  int64_t *log_ids;
  /* the batch being built */
  store_any_batch b;
  size_t bytes;
  int committed; /* a batch of the copy committed: the destination holds part of it */
  uint64_t max_seq, max_trim; /* the highest event position and trim mark copied */
  int64_t max_ts;
  uint64_t t0, shown;
} copy;

static void pump(copy *c);

static void fail(copy *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(copy *c, int status, const char *fmt, ...) {
  if (c->r.status) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->r.err, sizeof c->r.err, fmt, ap);
  va_end(ap);
  c->r.status = status ? status : STORE_EIO;
  c->state = S_END;
}

static const char *kind_name(int kind) { return store_kind_names[kind]; }

/* a read or commit finished */
static void op_done(void *cookie, int status, const char *err) {
  copy *c = cookie;
  c->waiting = 0;
  if (status) {
    int k = c->state == S_KINDS && c->ki < NKINDS ? KINDS[c->ki] : -1;
    fail(c, status, "%s%s%s", k >= 0 ? "copying " : "", k >= 0 ? kind_name(k) : "",
         k >= 0 ? ": " : "");
    size_t n = strlen(c->r.err);
    snprintf(c->r.err + n, sizeof c->r.err - n, "%s", err ? err : "failed");
  }
  pump(c);
}

/* ---- the writes of each record type, on either backend ------------------- */

typedef struct {
  const char *p;
  size_t n;
} slice;

static int fill_slice(void *ud, sbuf *out, char *err, size_t errsz) {
  (void)err;
  (void)errsz;
  const slice *s = ud;
  sbuf_add(out, s->p, s->n);
  return 0;
}

static int put_named(copy *c, int kind, const store_named_row *row, char *err, size_t errsz) {
  store_batch *b = c->b.b;
  pgstore_batch *pb = c->b.pb;
  int rc = 0;
  switch (kind) {
  case STORE_K_NAMESPACES:
    rc = pb ? pgstore_put_namespace(pb, row->name, row->name_len, row->rec, row->rec_len)
            : store_put_namespace(b, row->name, row->name_len, row->rec, row->rec_len);
    break;
  case STORE_K_KEYS:
    rc = pb ? pgstore_add_key(pb, row->name, row->name_len, row->rec, row->rec_len)
            : store_add_key(b, row->name, row->name_len, row->rec, row->rec_len);
    if (rc == 0 && row->extra) {
      rc = pb ? pgstore_touch_key(pb, row->name, row->name_len, row->extra, row->extra_len)
              : store_touch_key(b, row->name, row->name_len, row->extra, row->extra_len);
      if (rc == 0) c->r.copied[STORE_K_KEY_USES]++;
    }
    break;
  case STORE_K_SCHEDULES:
    rc = pb ? pgstore_put_schedule(pb, row->name, row->name_len, row->rec, row->rec_len)
            : store_put_schedule(b, row->name, row->name_len, row->rec, row->rec_len);
    break;
  case STORE_K_QUOTAS: {
    const char *z = memchr(row->name, '\0', row->name_len);
    char num[32], *end;
    snprintf(num, sizeof num, "%.*s", (int)(row->rec_len < 31 ? row->rec_len : 31), row->rec);
    long long n = strtoll(num, &end, 10);
    if (!z || *end || end == num || n < 0) {
      snprintf(err, errsz, "a quota counter that is not a namespace, a day and a count");
      return STORE_EBADSTORE;
    }
    size_t nslen = (size_t)(z - row->name);
    rc = pb ? pgstore_put_quota(pb, row->name, nslen, z + 1, row->name_len - nslen - 1, n)
            : store_put_quota(b, row->name, nslen, z + 1, row->name_len - nslen - 1, n);
    break;
  }
  case STORE_K_TRIMS: {
    char num[32], *end;
    snprintf(num, sizeof num, "%.*s", (int)(row->rec_len < 31 ? row->rec_len : 31), row->rec);
    unsigned long long seq = strtoull(num, &end, 10);
    if (*end || end == num) {
      snprintf(err, errsz, "a trim mark that is not a position");
      return STORE_EBADSTORE;
    }
    rc = pb ? pgstore_put_trim_mark(pb, row->name, row->name_len, seq)
            : store_put_trim_mark(b, row->name, row->name_len, seq);
    if (seq > c->max_trim) c->max_trim = seq;
    break;
  }
  case STORE_K_IDEMPOTENCY: {
    const char *z1 = memchr(row->name, '\0', row->name_len);
    const char *z2 = z1 ? memchr(z1 + 1, '\0', row->name_len - (size_t)(z1 + 1 - row->name)) : NULL;
    if (!z2) {
      snprintf(err, errsz, "an idempotency key that is not a namespace, a pipeline and a key");
      return STORE_EBADSTORE;
    }
    /* rows' parts are C strings (store_named_rows): name, then after each NUL */
    const char *key = z2 + 1;
    size_t klen = row->name_len - (size_t)(key - row->name);
    return pb ? pgstore_put_idempotency(pb, row->name, z1 + 1, key, klen, row->rec, err, errsz)
              : store_put_idempotency(b, row->name, z1 + 1, key, klen, row->rec, err, errsz);
  }
  default:
    rc = STORE_EINVAL;
  }
  if (rc) snprintf(err, errsz, "the destination refuses it (a name or value it cannot hold)");
  return rc;
}

static void saw_event(copy *c, const store_event *e) {
  if (e->seq > c->max_seq) c->max_seq = e->seq;
  if (e->ts_us > c->max_ts) c->max_ts = e->ts_us;
  c->bytes += e->datan;
}

static int put_event(copy *c, const store_event *e, char *err, size_t errsz) {
  saw_event(c, e);
  return store_append_event(c->b.b, e->seq, e->ts_us, e->type, e->typen, e->stream, e->streamn,
                            e->data, e->datan, err, errsz);
}

/* PostgreSQL: the rest of a page of events or sends in one statement */
static void put_page_pg(copy *c, int kind) {
  size_t n = store_any_pages_rows(&c->pages) - c->row;
  char err[512] = "";
  int rc;
  if (kind == STORE_K_EVENTS) {
    for (size_t i = c->row; i < c->row + n; i++) saw_event(c, &c->pages.ev.rows[i]);
    rc = pgstore_put_events_at(c->b.pb, c->pages.ev.rows + c->row, n, err, sizeof err);
  } else {
    for (size_t i = c->row; i < c->row + n; i++) c->bytes += c->pages.blobs.rows[i].jsonn;
    rc = pgstore_put_sends_at(c->b.pb, c->pages.blobs.rows + c->row, n);
    if (rc) snprintf(err, sizeof err, "a send without a position");
  }
  if (rc) return fail(c, rc, "copying %s: %s", kind_name(kind), err);
  c->r.copied[kind] += (int64_t)n;
  c->row += n;
}

static int put_blob(copy *c, int kind, const store_row *row, char *err, size_t errsz) {
  int rc = 0;
  if (kind == STORE_K_CONSUMERS) {
    if (c->b.pb) {
      rc = pgstore_put_consumer(c->b.pb, row->name, row->namen, row->json, row->jsonn);
    } else {
      store_put_consumer(c->b.b, row->name, row->namen, row->json, row->jsonn);
    }
  } else {
    store_put_send(c->b.b, row->seq, row->json, row->jsonn);
  }
  if (rc) snprintf(err, errsz, "the destination refuses it (a name it cannot hold)");
  return rc;
}

/* the run at c->pages.runs row c->row with the steps and logs read for it */
static int put_run(copy *c, char *err, size_t errsz) {
  const store_rows *rr = &c->pages.runs;
  const char *json = rr->buf.data + rr->off[c->row];
  size_t jn = rr->len[c->row];
  const char *id = rr->buf.data + rr->name_off[c->row];
  size_t idn = rr->name_len[c->row];
  store_run_fields f;
  char why[256];
  if (c->o.run_fields(c->o.ud, json, jn, &f, why, sizeof why) != 0) {
    snprintf(err, errsz, "run %.*s: its record does not decode (%s)", (int)idn, id, why);
    return STORE_EBADSTORE;
  }
  store_run r = {f.id, f.pipeline, f.ns, f.status, f.created_us};
  slice s = {json, jn};
  store_batch *b = c->b.b;
  pgstore_batch *pb = c->b.pb;
  int rc = pb ? pgstore_put_run(pb, &r, 1, NULL, fill_slice, &s, err, errsz)
              : store_put_run(b, &r, 1, NULL, fill_slice, &s, err, errsz);
  for (size_t i = 0; rc == 0 && i < c->steps.n; i++) {
    const store_step *st = &c->steps.v[i];
    slice p = {st->payload, st->payload_len};
    store_fill_fn fill = st->has_payload ? fill_slice : NULL;
    rc = pb ? pgstore_put_step(pb, id, idn, st, fill, &p, err, errsz)
            : store_put_step(b, id, idn, st, fill, &p, err, errsz);
  }
  for (size_t i = 0; rc == 0 && i < c->logs.n; i++) {
    int64_t us = c->log_ids[2 * i];
    uint32_t seq = (uint32_t)c->log_ids[2 * i + 1];
    const char *line = c->logs.buf.data + c->logs.off[i];
    rc = pb ? pgstore_put_log(pb, id, idn, us, seq, line, c->logs.len[i], err, errsz)
            : store_put_log(b, id, idn, us, seq, line, c->logs.len[i], err, errsz);
  }
  if (rc == 0) {
    c->r.copied[STORE_K_STEPS] += (int64_t)c->steps.n;
    c->r.copied[STORE_K_LOGS] += (int64_t)c->logs.n;
    c->bytes += jn + c->steps.buf.len + c->logs.buf.len;
  }
  return rc;
}

/* ---- pages --------------------------------------------------------------- */

static size_t page_size(const copy *c) { return c->o.page ? c->o.page : 1000; }

/* a row's name for messages */
static void row_name(const copy *c, int kind, char *out, size_t n) {
  const char *p = "";
  size_t len = 0;
  switch (kind) {
  case STORE_K_CONSUMERS:
    p = c->pages.blobs.rows[c->row].name, len = c->pages.blobs.rows[c->row].namen;
    break;
  case STORE_K_SENDS:
    snprintf(out, n, " at %016" PRIx64, c->pages.blobs.rows[c->row].seq);
    return;
  case STORE_K_EVENTS:
    snprintf(out, n, " at %016" PRIx64, c->pages.ev.rows[c->row].seq);
    return;
  case STORE_K_RUNS:
    p = c->pages.runs.buf.data + c->pages.runs.name_off[c->row];
    len = c->pages.runs.name_len[c->row];
    break;
  default:
    p = c->pages.named.rows[c->row].name, len = c->pages.named.rows[c->row].name_len;
  }
  char shown[128];
  size_t k = 0;
  for (size_t i = 0; i < len && k + 4 < sizeof shown; i++) {
    unsigned char ch = (unsigned char)p[i];
    k += (size_t)snprintf(shown + k, sizeof shown - k, ch == 0 ? "\\0" : ch < 32 ? "?" : "%c", ch);
  }
  shown[k] = '\0';
  snprintf(out, n, " '%s'", shown);
}

/* copies the row at c->row of the page (runs: reads its steps, then its
 * logs, first); moves c->row on once it is in the batch */
static void copy_row(copy *c, int kind) {
  char err[1024] = "";
  int rc = 0;
  if (c->b.pb && (kind == STORE_K_EVENTS || kind == STORE_K_SENDS)) return put_page_pg(c, kind);
  if (kind == STORE_K_RUNS && c->sub < 2) {
    const char *id = c->pages.runs.buf.data + c->pages.runs.name_off[c->row];
    size_t idn = c->pages.runs.name_len[c->row];
    c->waiting = 1;
    if (c->sub++ == 0) {
      store_steps_free(&c->steps);
      store_any_steps(&c->src, id, idn, &c->steps, op_done, c);
    } else {
      store_rows_free(&c->logs);
      free(c->log_ids);
      c->log_ids = NULL;
      store_any_logs(&c->src, id, idn, &c->logs, &c->log_ids, op_done, c);
    }
    return;
  }
  switch (kind) {
  case STORE_K_CONSUMERS:
  case STORE_K_SENDS:
    rc = put_blob(c, kind, &c->pages.blobs.rows[c->row], err, sizeof err);
    c->bytes += c->pages.blobs.rows[c->row].jsonn;
    break;
  case STORE_K_EVENTS:
    rc = put_event(c, &c->pages.ev.rows[c->row], err, sizeof err);
    break;
  case STORE_K_RUNS:
    rc = put_run(c, err, sizeof err);
    c->sub = 0;
    break;
  default:
    rc = put_named(c, kind, &c->pages.named.rows[c->row], err, sizeof err);
    c->bytes += c->pages.named.rows[c->row].rec_len;
  }
  if (rc) {
    char name[160];
    row_name(c, kind, name, sizeof name);
    fail(c, rc, "copying %s%s: %s", kind_name(kind), name, err);
    return;
  }
  c->r.copied[kind]++;
  c->row++;
}

static void committed(void *cookie, int status, const char *err) {
  copy *c = cookie;
  /* a commit that failed with EIO may have committed (a lost connection) */
  if (status == 0 || status == STORE_EIO) c->committed = 1;
  op_done(cookie, status, err);
}

static void commit(copy *c) {
  c->waiting = 1;
  c->bytes = 0;
  if (store_any_commit(&c->dst, &c->b, committed, c) != 0) {
    c->waiting = 0;
    fail(c, STORE_EIO, "the destination %s is closing", c->dst.name);
  }
  c->b = store_any_batch_new(&c->dst);
}

static int batch_full(const copy *c) {
  return store_any_batch_count(&c->b) >= (c->o.batch ? c->o.batch : 2000) || c->bytes >= BATCH_BYTES;
}

static void kinds_step(copy *c) {
  if (c->ki >= NKINDS) {
    c->state = S_POSITIONS;
    return;
  }
  int kind = KINDS[c->ki];
  if (!c->have_page) {
    c->have_page = 1;
    c->row = 0;
    c->sub = 0;
    c->waiting = 1;
    store_any_pages_read(&c->src, &c->pages, page_size(c), op_done, c);
    return;
  }
  if (batch_full(c)) return commit(c);
  if (c->row < store_any_pages_rows(&c->pages)) return copy_row(c, kind);
  c->have_page = 0;
  if (!store_any_pages_next(&c->pages, page_size(c))) {
    c->ki++;
    store_any_pages_start(&c->pages, c->ki < NKINDS ? KINDS[c->ki] : -1);
  }
}

/* ---- the census before and after ----------------------------------------- */

static int census_empty(const store_census *s) {
  for (int k = 0; k < STORE_KINDS; k++)
    if (s->n[k]) return 0;
  return s->events_last == 0 && s->sends_last == 0 && s->dispatched == 0;
}

/* "3 runs, 10 events" of the kinds that hold records */
static void describe(const store_census *s, char *out, size_t n) {
  size_t at = 0;
  out[0] = '\0';
  for (int k = 0; k < STORE_KINDS && at < n; k++) {
    if (!s->n[k]) continue;
    at += (size_t)snprintf(out + at, n - at, "%s%" PRId64 " %s", at ? ", " : "", s->n[k],
                           kind_name(k));
  }
  if (at == 0 && at < n) {
    snprintf(out, n, "no records, but positions taken (events up to %" PRIu64 ", sends up to %" PRIu64 ")",
             s->events_last, s->sends_last);
  }
}

static void check_empty(copy *c) {
  char what[512];
  if (!census_empty(&c->r.dst)) {
    describe(&c->r.dst, what, sizeof what);
    fail(c, STORE_EINVAL,
         "the destination %s is not empty (%s): copy into an empty store (a new directory, or "
         "a database with nothing but the schema of sluice store migrate)",
         c->dst.name, what);
  }
  if (c->r.status) c->r.refused = 1;
}

/* what a copy into an empty store sets beyond the records */
static void positions(copy *c) {
  const store_census *s = &c->r.src;
  if (c->b.pb) {
    if (s->dispatched) pgstore_set_dispatch_cursor(c->b.pb, s->dispatched);
    int64_t ts = s->events_ts > c->max_ts ? s->events_ts : c->max_ts;
    pgstore_set_counters(c->b.pb, s->events_last, ts, s->sends_last);
  } else {
    if (s->dispatched) store_set_dispatch_cursor(c->b.b, s->dispatched);
    /* LMDB keeps the highest position trimmed, which is the highest mark
     * (and past the newest event when the newest were trimmed) */
    uint64_t taken = s->events_last > c->max_seq ? s->events_last : 0;
    if (c->max_trim > taken) taken = c->max_trim;
    if (taken) store_set_events_taken(c->b.b, taken);
    store_mark_runs_indexed(c->b.b); /* every run came with its listings */
  }
}

static void compare(copy *c) {
  const store_census *s = &c->r.src, *d = &c->r.dst;
  size_t at = 0;
  char *out = c->r.err;
  size_t n = sizeof c->r.err;
  for (int k = 0; k < STORE_KINDS && at < n; k++) {
    if (s->n[k] == d->n[k] && s->n[k] == c->r.copied[k]) continue;
    at += (size_t)snprintf(out + at, n - at,
                           "%s%s: %" PRId64 " in the source, %" PRId64 " copied, %" PRId64
                           " in the destination",
                           at ? "; " : "", kind_name(k), s->n[k], c->r.copied[k], d->n[k]);
  }
#define POS(field, what)                                                                     \
  if (s->field != d->field && at < n)                                                        \
    at += (size_t)snprintf(out + at, n - at, "%s" what ": %" PRIu64 " in the source, %" PRIu64 \
                           " in the destination", at ? "; " : "", (uint64_t)s->field,         \
                           (uint64_t)d->field);
  POS(events_last, "the last event position taken")
  POS(events_ts, "the newest event's time")
  POS(sends_last, "the last send position")
  POS(dispatched, "the dispatch cursor")
#undef POS
  c->r.verified = at == 0;
}

/* ---- the machine ----------------------------------------------------------- */

static void show_progress(copy *c) {
  if (!c->o.progress) return;
  uint64_t now = uv_hrtime();
  if (now - c->t0 < 1000000000ull || now - c->shown < 1000000000ull) return;
  c->shown = now;
  int64_t total = 0, done = 0;
  for (int k = 0; k < STORE_KINDS; k++) {
    total += c->r.src.n[k];
    done += c->r.copied[k];
  }
  int kind = c->ki < NKINDS ? KINDS[c->ki] : STORE_K_IDEMPOTENCY;
  fprintf(c->o.progress,
          "sluice: store copy: %" PRId64 " of %" PRId64 " records (%s: %" PRId64 " of %" PRId64
          "), %.0f s\n",
          done, total, kind_name(kind), c->r.copied[kind], c->r.src.n[kind],
          (double)(now - c->t0) / 1e9);
  fflush(c->o.progress);
}

static void step(copy *c) {
  switch (c->state) {
  case S_CENSUS_SRC:
    c->state = S_CENSUS_DST;
    c->waiting = 1;
    return store_any_census(&c->src, &c->r.src, op_done, c);
  case S_CENSUS_DST:
    c->state = S_EMPTY;
    c->waiting = 1;
    return store_any_census(&c->dst, &c->r.dst, op_done, c);
  case S_EMPTY:
    c->state = S_KINDS;
    return check_empty(c);
  case S_KINDS:
    show_progress(c);
    return kinds_step(c);
  case S_POSITIONS:
    c->state = S_FLUSH;
    return positions(c);
  case S_FLUSH:
    c->state = S_VERIFY;
    if (store_any_batch_count(&c->b)) commit(c);
    return;
  case S_VERIFY:
    c->state = S_COMPARE;
    c->waiting = 1;
    return store_any_census(&c->dst, &c->r.dst, op_done, c);
  case S_COMPARE:
    c->state = S_END;
    return compare(c);
  }
}

static void finish(copy *c) {
  /* a census that did not read (a PostgreSQL store without the schema, say):
   * nothing was written either */
  if (c->r.status && c->ki == 0 && !c->have_page && !c->committed) c->r.refused = 1;
  store_any_batch_free(&c->b);
  store_any_close(&c->src);
  store_any_close(&c->dst);
  if (c->r.status && !c->r.refused && c->committed) {
    size_t n = strlen(c->r.err);
    snprintf(c->r.err + n, sizeof c->r.err - n,
             "; the destination holds part of the source now: empty it before copying again");
  }
  c->done(c->cookie, &c->r);
  store_any_pages_free(&c->pages);
  store_steps_free(&c->steps);
  store_rows_free(&c->logs);
  free(c->log_ids);
  free(c);
}

static void pump(copy *c) {
  if (c->pumping) return; /* the loop below goes on once the caller returns */
  c->pumping = 1;
  while (!c->waiting && c->state != S_END) step(c);
  c->pumping = 0;
  if (c->state == S_END && !c->waiting) finish(c);
}

int store_copy(uv_loop_t *loop, const char *from, const char *to, const store_copy_opts *o,
               store_copy_done_fn done, void *cookie, char *err, size_t errsz) {
  if (strcmp(from, to) == 0) {
    snprintf(err, errsz, "--from and --to name the same store (%s)", from);
    return STORE_EINVAL;
  }
  copy *c = calloc(1, sizeof *c);
  if (!c) abort();
  int rc = store_any_open(&c->src, loop, from, 0, err, errsz);
  if (rc == 0) {
    rc = store_any_open(&c->dst, loop, to, 1, err, errsz);
    if (rc) store_any_close(&c->src);
  }
  if (rc) {
    free(c);
    return rc;
  }
  c->o = *o;
  c->done = done;
  c->cookie = cookie;
  store_any_pages_init(&c->pages);
  store_any_pages_start(&c->pages, KINDS[0]);
  c->steps = (store_steps)STORE_STEPS_INIT;
  c->logs = (store_rows)STORE_ROWS_INIT;
  c->b = store_any_batch_new(&c->dst);
  c->t0 = uv_hrtime();
  c->state = S_CENSUS_SRC;
  pump(c);
  return 0;
}
