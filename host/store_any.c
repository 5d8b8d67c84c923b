/* store_any.c: the store tools' view of either backend (store_any.h): each
 * read calls store.h's operation and its done at once, or the pgstore_
 * operation with done as its callback. */
#include "store_any.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "writer.h"

int store_any_is_url(const char *where) {
  return strncmp(where, "postgres://", 11) == 0 || strncmp(where, "postgresql://", 13) == 0;
}

int store_any_open(store_any *a, uv_loop_t *loop, const char *where, int writable, char *err,
                   size_t errsz) {
  memset(a, 0, sizeof *a);
  if (store_any_is_url(where)) {
    int rc = pgstore_open(&a->pg, loop, where, err, errsz);
    if (rc) return rc;
    snprintf(a->name, sizeof a->name, "%s", pgstore_name(a->pg));
    return 0;
  }
  snprintf(a->name, sizeof a->name, "%s", where);
  int rc = store_open(&a->st, where, writable ? 0 : STORE_READONLY, err, errsz);
  if (rc) return rc;
  if (writable && writer_start(&a->w, a->st, loop, err, errsz) != 0) {
    store_close(a->st);
    a->st = NULL;
    return STORE_EIO;
  }
  return 0;
}

void store_any_close(store_any *a) {
  if (a->pg) pgstore_close(a->pg);
  if (a->w) writer_stop(a->w);
  if (a->st) store_close(a->st);
  a->pg = NULL;
  a->w = NULL;
  a->st = NULL;
}

/* ---- reads -------------------------------------------------------------- */

/* an LMDB read finished: its done, at once */
static void now(int rc, const char *err, store_any_fn done, void *cookie) {
  done(cookie, rc, rc ? err : NULL);
}

void store_any_census(store_any *a, store_census *out, store_any_fn done, void *cookie) {
  if (a->pg) return pgstore_census(a->pg, out, done, cookie);
  char err[512];
  now(store_census_of(a->st, out, err, sizeof err), err, done, cookie);
}

void store_any_named(store_any *a, int kind, const char *after, size_t alen, size_t limit,
                     store_named_rows *out, store_any_fn done, void *cookie) {
  char err[512];
  int rc;
  switch (kind) {
  case STORE_K_NAMESPACES:
    if (a->pg) return pgstore_list_namespaces(a->pg, out, done, cookie);
    rc = store_list_namespaces(a->st, out, err, sizeof err);
    break;
  case STORE_K_KEYS:
    if (a->pg) return pgstore_list_keys(a->pg, out, done, cookie);
    rc = store_list_keys(a->st, out, err, sizeof err);
    break;
  case STORE_K_SCHEDULES:
    if (a->pg) return pgstore_list_schedules(a->pg, after, alen, limit, out, done, cookie);
    rc = store_list_schedules(a->st, after, alen, limit, out, err, sizeof err);
    break;
  case STORE_K_QUOTAS:
    if (a->pg) return pgstore_list_quotas(a->pg, after, alen, limit, out, done, cookie);
    rc = store_list_quotas(a->st, after, alen, limit, out, err, sizeof err);
    break;
  case STORE_K_TRIMS:
    if (a->pg) return pgstore_list_trim_marks(a->pg, after, alen, limit, out, done, cookie);
    rc = store_list_trim_marks(a->st, after, alen, limit, out, err, sizeof err);
    break;
  case STORE_K_IDEMPOTENCY:
    if (a->pg) return pgstore_list_idempotency(a->pg, after, alen, limit, out, done, cookie);
    rc = store_list_idempotency(a->st, after, alen, limit, out, err, sizeof err);
    break;
  default:
    snprintf(err, sizeof err, "store_any_named: no named records of kind %d", kind);
    rc = STORE_EINVAL;
  }
  now(rc, err, done, cookie);
}

void store_any_consumers(store_any *a, store_blob_rows *out, store_any_fn done, void *cookie) {
  if (a->pg) return pgstore_consumers(a->pg, out, done, cookie);
  char err[512];
  now(store_consumers(a->st, out, err, sizeof err), err, done, cookie);
}

void store_any_sends(store_any *a, uint64_t after, size_t limit, store_blob_rows *out,
                     store_any_fn done, void *cookie) {
  if (a->pg) return pgstore_sends(a->pg, after, limit, out, done, cookie);
  char err[512];
  now(store_sends(a->st, after, limit, out, err, sizeof err), err, done, cookie);
}

void store_any_events(store_any *a, uint64_t after, size_t limit, store_events *out,
                      store_any_fn done, void *cookie) {
  store_event_query q = {"", 0, 0, after, limit};
  if (a->pg) return pgstore_read_events(a->pg, &q, out, done, cookie);
  char err[512];
  now(store_read_events(a->st, &q, out, err, sizeof err), err, done, cookie);
}

void store_any_runs(store_any *a, const char *after, size_t limit, store_rows *out,
                    store_any_fn done, void *cookie) {
  if (a->pg) return pgstore_run_records(a->pg, after, limit, out, done, cookie);
  char err[512];
  now(store_read_runs(a->st, after, limit, out, err, sizeof err), err, done, cookie);
}

void store_any_steps(store_any *a, const char *run, size_t run_len, store_steps *out,
                     store_any_fn done, void *cookie) {
  if (a->pg) return pgstore_load_steps(a->pg, run, run_len, out, done, cookie);
  char err[512];
  now(store_load_steps(a->st, run, run_len, out, err, sizeof err), err, done, cookie);
}

void store_any_logs(store_any *a, const char *run, size_t run_len, store_rows *rows, int64_t **ids,
                    store_any_fn done, void *cookie) {
  if (a->pg) return pgstore_read_logs(a->pg, run, run_len, rows, ids, done, cookie);
  char err[512];
  now(store_read_logs(a->st, run, run_len, rows, ids, err, sizeof err), err, done, cookie);
}

/* ---- writes ------------------------------------------------------------- */

store_any_batch store_any_batch_new(const store_any *a) {
  store_any_batch b = {NULL, NULL};
  if (a->pg) {
    b.pb = pgstore_batch_new();
  } else {
    b.b = store_batch_new();
  }
  return b;
}

void store_any_batch_free(store_any_batch *b) {
  if (b->b) store_batch_free(b->b);
  if (b->pb) pgstore_batch_free(b->pb);
  b->b = NULL;
  b->pb = NULL;
}

size_t store_any_batch_count(const store_any_batch *b) {
  return b->pb ? pgstore_batch_count(b->pb) : b->b ? store_batch_count(b->b) : 0;
}

typedef struct {
  store_any_fn done;
  void *cookie;
} pg_commit;

static void pg_committed(void *cookie, int status, const char *err,
                         const pgstore_commit_info *info) {
  (void)info;
  pg_commit c = *(pg_commit *)cookie;
  free(cookie);
  c.done(c.cookie, status, err);
}

int store_any_commit(store_any *a, store_any_batch *b, store_any_fn done, void *cookie) {
  store_any_batch take = *b;
  b->b = NULL;
  b->pb = NULL;
  if (take.pb) {
    pg_commit *c = malloc(sizeof *c);
    if (!c) abort();
    c->done = done;
    c->cookie = cookie;
    if (pgstore_commit(a->pg, take.pb, pg_committed, c) != 0) {
      free(c);
      return -1;
    }
    return 0;
  }
  return writer_submit(a->w, take.b, done, cookie);
}

/* ---- a walk through one kind's records ------------------------------------ */

void store_any_pages_init(store_any_pages *p) {
  memset(p, 0, sizeof *p);
  p->after = (sbuf)SBUF_INIT;
  p->named = (store_named_rows)STORE_NAMED_ROWS_INIT;
  p->blobs = (store_blob_rows)STORE_BLOB_ROWS_INIT;
  p->ev = (store_events)STORE_EVENTS_INIT;
  p->runs = (store_rows)STORE_ROWS_INIT;
}

void store_any_pages_free(store_any_pages *p) {
  sbuf_free(&p->after);
  store_named_rows_free(&p->named);
  store_blob_rows_free(&p->blobs);
  store_events_free(&p->ev);
  store_rows_free(&p->runs);
}

void store_any_pages_start(store_any_pages *p, int kind) {
  p->kind = kind;
  sbuf_reset(&p->after);
  p->after_seq = 0;
}

void store_any_pages_read(store_any *a, store_any_pages *p, size_t limit, store_any_fn done,
                          void *cookie) {
  const char *after = p->after.len ? p->after.data : NULL;
  switch (p->kind) {
  case STORE_K_CONSUMERS:
    return store_any_consumers(a, &p->blobs, done, cookie);
  case STORE_K_SENDS:
    return store_any_sends(a, p->after_seq, limit, &p->blobs, done, cookie);
  case STORE_K_EVENTS:
    return store_any_events(a, p->after_seq, limit, &p->ev, done, cookie);
  case STORE_K_RUNS:
    if (p->run_columns) return pgstore_run_columns(a->pg, after, limit, &p->named, done, cookie);
    store_rows_free(&p->runs);
    return store_any_runs(a, after, limit, &p->runs, done, cookie);
  default:
    return store_any_named(a, p->kind, p->after.data, p->after.len, limit, &p->named, done,
                           cookie);
  }
}

size_t store_any_pages_rows(const store_any_pages *p) {
  switch (p->kind) {
  case STORE_K_CONSUMERS:
  case STORE_K_SENDS:
    return p->blobs.n;
  case STORE_K_EVENTS:
    return p->ev.n;
  case STORE_K_RUNS:
    return p->run_columns ? p->named.n : p->runs.n;
  default:
    return p->named.n;
  }
}

int store_any_pages_next(store_any_pages *p, size_t limit) {
  size_t n = store_any_pages_rows(p);
  /* consumers, namespaces and keys come in one read */
  if (p->kind == STORE_K_CONSUMERS || p->kind == STORE_K_NAMESPACES || p->kind == STORE_K_KEYS)
    return 0;
  if (n < limit) return 0;
  sbuf_reset(&p->after);
  if (p->kind == STORE_K_SENDS) {
    p->after_seq = p->blobs.rows[n - 1].seq;
  } else if (p->kind == STORE_K_EVENTS) {
    p->after_seq = p->ev.last;
  } else if (p->kind == STORE_K_RUNS && !p->run_columns) {
    sbuf_add(&p->after, p->runs.buf.data + p->runs.name_off[n - 1], p->runs.name_len[n - 1]);
  } else {
    sbuf_add(&p->after, p->named.rows[n - 1].name, p->named.rows[n - 1].name_len);
  }
  return 1;
}
