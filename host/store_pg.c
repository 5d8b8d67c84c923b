/* store_pg.c: store.h's record operations on PostgreSQL (store_pg.h), as
 * SQL over pg.h in the tables of lua/pg_schema.lua. A batch is a list of
 * statements (pg_batch) plus the events and sends whose positions the
 * commit allocates: those statements are added at commit, last. A read is
 * one statement whose rows are copied into the caller's store.h structs in
 * pg.h's done callback, then the caller's done runs.
 *
 * Parameters go in binary format for text and JSON (their binary form is
 * their bytes, so no copy to NUL-terminate) and as decimal text for numbers
 * and days. Results come back as text. The structs and helpers the
 * backend's files share are in store_pg_int.h; runs, steps, run logs and
 * idempotency keys are in store_pg_runs.c; what store copy and store check
 * need beyond store.h in store_pg_tools.c. */
#include "store_pg.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"
#include "sbuf.h"
#include "store_pg_int.h"

#define SCHEMA_VERSION 3 /* lua/pg_schema.lua's M.latest */
#define SCHEMA_STR_(v) #v
#define SCHEMA_STR(v) SCHEMA_STR_(v)
#define SCHEMA_TEXT SCHEMA_STR(SCHEMA_VERSION) /* one place to change */

/* ---- the store ---------------------------------------------------------- */

static void check_done(void *cookie, int status, const char *errmsg, const pg_batch *b) {
  pgstore *s = cookie;
  s->checked = 1;
  char msg[600];
  const PGresult *r = status == 0 ? pg_batch_result(b, 0) : NULL;
  /* 42P01: no table schema_version, i.e. no schema (version 0); any other
   * failure is the connection's, which each operation reports itself */
  if (status != 0 && strcmp(pg_batch_sqlstate(b), "42P01") != 0) return;
  int v = r && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) ? atoi(PQgetvalue(r, 0, 0)) : 0;
  if (v == SCHEMA_VERSION) return;
  if (v > SCHEMA_VERSION) {
    snprintf(msg, sizeof msg, "the PostgreSQL store %s has schema version %d, newer than this "
             "sluice knows (%d): upgrade sluice", s->name, v, SCHEMA_VERSION);
  } else {
    snprintf(msg, sizeof msg, "the PostgreSQL store %s has %s (this sluice needs version %d): "
             "run sluice store migrate --store URL", s->name,
             v ? "an older schema" : "no schema sluice", SCHEMA_VERSION);
  }
  (void)errmsg;
  free(s->bad);
  s->bad = strdup(msg);
}

/* the URL without a password: postgres://user:secret@host -> postgres://user@host */
static void name_of(char *out, size_t n, const char *url) {
  const char *at = strchr(url, '@'), *scheme = strstr(url, "://");
  const char *colon = scheme ? strchr(scheme + 3, ':') : NULL;
  if (at && colon && colon < at) {
    snprintf(out, n, "%.*s%s", (int)(colon - url), url, at);
  } else {
    snprintf(out, n, "%s", url);
  }
}

int pgstore_open(pgstore **out, uv_loop_t *loop, const char *url, char *err, size_t errsz) {
  pgstore *s = xalloc(sizeof *s);
  name_of(s->name, sizeof s->name, url);
  int rc = pg_open(&s->conn, loop, url, NULL, err, errsz);
  if (rc) {
    free(s);
    return rc;
  }
  /* first in the pipeline: its answer comes before any other's */
  pg_batch *b = pg_batch_new();
  add(b, "SELECT version FROM sluice.schema_version", NULL);
  pg_read(s->conn, b, check_done, s);
  pgs_set_prelude(s, NULL);
  *out = s;
  return 0;
}

void pgs_set_prelude(pgstore *s, const char *fence) {
  pg_batch *b = pg_batch_new();
  if (fence) {
    params p = {.n = 0};
    p_str(&p, fence, strlen(fence));
    /* sluice.fence's check and lock in plain SQL, the function (which
     * raises SLU02) only when the host is not live: plpgsql's call cost
     * more than the check, once per transaction */
    add(b, "SELECT sluice.fence($1::text) WHERE NOT EXISTS (SELECT 1 FROM sluice.hosts WHERE "
           "id = $1::text AND expires_at > now() FOR KEY SHARE)", &p);
  }
  add(b, "SELECT 1 / (CASE WHEN version = " SCHEMA_TEXT " THEN 1 ELSE 0 END) "
         "FROM sluice.schema_version", NULL);
  pg_set_prelude(s->conn, b);
}

void pgstore_close(pgstore *s) {
  if (!s) return;
  pg_close(s->conn);
  free(s->bad);
  free(s);
}

const char *pgstore_name(const pgstore *s) { return s->name; }

void pgstore_get_stats(const pgstore *s, pgstore_stats *out) {
  pg_stats ps;
  pg_get_stats(s->conn, &ps);
  *out = (pgstore_stats){ps.commits, ps.batches, ps.reads, ps.lost, ps.unknown, {0}, {0},
                         ps.commit_us_sum};
  _Static_assert(PGSTORE_HIST == PG_HIST, "the histograms of pg.h");
  memcpy(out->batch_hist, ps.batch_hist, sizeof out->batch_hist);
  memcpy(out->commit_hist, ps.commit_hist, sizeof out->commit_hist);
}

/* the failure of a finished pg.h batch, in store.h's terms */
static int failed(pgstore *s, int status, const char *errmsg, char *err, size_t errsz) {
  if (s->bad) {
    snprintf(err, errsz, "%s", s->bad);
    return STORE_EBADSTORE;
  }
  if (status) snprintf(err, errsz, "%s", errmsg ? errmsg : "PostgreSQL failed");
  return status;
}

int pgs_failed(pgstore *s, int status, const char *errmsg, char *err, size_t errsz) {
  return failed(s, status, errmsg, err, errsz);
}

/* ---- batches ------------------------------------------------------------ */

pgstore_batch *pgstore_batch_new(void) {
  pgstore_batch *b = xalloc(sizeof *b);
  b->pb = pg_batch_new();
  b->appends = (sbuf)SBUF_INIT;
  b->sends = (sbuf)SBUF_INIT;
  b->steps = (sbuf)SBUF_INIT;
  return b;
}

void pgstore_batch_free(pgstore_batch *b) {
  if (!b) return;
  if (b->pb) pg_batch_free(b->pb);
  sbuf_free(&b->appends);
  sbuf_free(&b->sends);
  sbuf_free(&b->steps);
  free(b);
}

size_t pgstore_batch_count(const pgstore_batch *b) { return b->ops + b->events + b->nsends; }

static void put_part(sbuf *o, const char *p, size_t n) {
  uint32_t len = (uint32_t)n;
  sbuf_add(o, &len, sizeof len);
  sbuf_add(o, p, n);
}
static const char *get_part(const char *p, const char **s, size_t *n) {
  uint32_t len;
  memcpy(&len, p, sizeof len);
  *s = p + sizeof len;
  *n = len;
  return p + sizeof len + len;
}

typedef struct {
  pgstore *s;
  pgstore_commit_fn done;
  void *cookie;
  size_t ev_stmt, send_stmt; /* the statements allocating positions (SIZE_MAX: none) */
  pgstore_commit_info info;
} commit_ctx;

static uint64_t returned(const pg_batch *b, size_t i) {
  const PGresult *r = pg_batch_result(b, i);
  if (!r || PQntuples(r) < 1 || PQgetisnull(r, 0, 0)) return 0;
  return strtoull(PQgetvalue(r, 0, 0), NULL, 10);
}

static void commit_done(void *cookie, int status, const char *errmsg, const pg_batch *b) {
  commit_ctx *c = cookie;
  char err[600];
  status = failed(c->s, status, errmsg, err, sizeof err);
  if (status == 0) {
    if (c->info.events) c->info.first_event = returned(b, c->ev_stmt) - c->info.events + 1;
    if (c->info.sends) c->info.first_send = returned(b, c->send_stmt) - c->info.sends + 1;
  }
  c->done(c->cookie, status, status ? err : NULL, &c->info);
  free(c);
}

int pgstore_commit(pgstore *s, pgstore_batch *b, pgstore_commit_fn done, void *cookie) {
  commit_ctx *c = xalloc(sizeof *c);
  c->s = s;
  c->done = done;
  c->cookie = cookie;
  c->info.events = b->events;
  c->info.sends = b->nsends;
  pg_batch *pb = b->pb;
  params p;
  if (b->nsends) {
    p.n = 0;
    p_i64(&p, (int64_t)b->nsends);
    c->send_stmt = pg_batch_count(pb);
    add(pb, "UPDATE sluice.counters SET value = value + $1::bigint WHERE name = 'sends' "
            "RETURNING value", &p);
    const char *q = b->sends.data;
    for (size_t i = 0; i < b->nsends; i++) {
      const char *json;
      size_t jn;
      q = get_part(q, &json, &jn);
      p.n = 0;
      p_i64(&p, (int64_t)(b->nsends - 1 - i));
      p_str(&p, json, jn);
      add(pb, "INSERT INTO sluice.sends (seq, record) SELECT value - $1::bigint, $2::text::json "
              "FROM sluice.counters WHERE name = 'sends'", &p);
    }
  }
  if (b->events) {
    /* positions, then times: both under the events counter's row lock */
    p.n = 0;
    p_i64(&p, (int64_t)b->events);
    c->ev_stmt = pg_batch_count(pb);
    add(pb, "UPDATE sluice.counters SET value = value + $1::bigint WHERE name = 'events' "
            "RETURNING value", &p);
    p_i64(&p, b->first_ts);
    add(pb, "UPDATE sluice.counters SET value = GREATEST(value + $1::bigint, "
            "$2::bigint + $1::bigint - 1) WHERE name = 'events_ts'", &p);
    const char *q = b->appends.data;
    for (size_t i = 0; i < b->events; i++) {
      const char *type, *stream, *data;
      size_t tn, sn, dn;
      q += 8;
      q = get_part(q, &type, &tn);
      q = get_part(q, &stream, &sn);
      q = get_part(q, &data, &dn);
      p.n = 0;
      p_i64(&p, (int64_t)(b->events - 1 - i));
      p_str(&p, stream, sn);
      p_str(&p, type, tn);
      p_str(&p, data, dn);
      add(pb, "INSERT INTO sluice.events (seq, stream, type, ts_us, data) "
              "SELECT e.value - $1::bigint, $2::text, $3::text, t.value - $1::bigint, "
              "$4::text::json FROM sluice.counters e, sluice.counters t "
              "WHERE e.name = 'events' AND t.name = 'events_ts'", &p);
    }
  }
  /* after the appends: the counters hold this batch's last positions now
   * (its statements run together, and the counter rows are locked by it) */
  const char *q = b->steps.data;
  for (size_t i = 0; i < b->nsteps; i++) {
    int kind = (unsigned char)*q++;
    const char *run, *step;
    size_t rn, sn;
    q = get_part(q, &run, &rn);
    q = get_part(q, &step, &sn);
    p.n = 0;
    p_str(&p, run, rn);
    p_str(&p, step, sn);
    p_i64(&p, (int64_t)(kind == PGSTORE_EVENT_IDS ? b->events : b->nsends));
    /* 1 / 0 (22012) when the step's row is missing: the batch fails */
    add(pb, kind == PGSTORE_EVENT_IDS
                ? "WITH u AS (UPDATE sluice.steps SET payload = (SELECT json_agg(lpad(to_hex(x), 16, "
                  "'0') ORDER BY x) FROM generate_series(c.value - $3::bigint + 1, c.value) x) "
                  "FROM sluice.counters c WHERE c.name = 'events' AND run_id = $1::text AND "
                  "step_id = $2::text RETURNING 1) SELECT 1 / count(*) FROM u"
                : "WITH u AS (UPDATE sluice.steps SET payload = json_build_object('seq', c.value - "
                  "$3::bigint + 1) FROM sluice.counters c WHERE c.name = 'sends' AND run_id = "
                  "$1::text AND step_id = $2::text RETURNING 1) SELECT 1 / count(*) FROM u",
        &p);
  }
  b->pb = NULL;
  pgstore_batch_free(b);
  if (pg_submit(s->conn, pb, commit_done, c) != 0) {
    free(c);
    return -1;
  }
  return 0;
}

/* ---- reads -------------------------------------------------------------- */

static void read_done(void *cookie, int status, const char *errmsg, const pg_batch *b) {
  rd *r = cookie;
  char err[600] = "";
  status = failed(r->s, status, errmsg, err, sizeof err);
  if (status == 0) {
    const PGresult *res = pg_batch_result(b, 0);
    if (!res) {
      snprintf(err, sizeof err, "PostgreSQL store %s: a read returned no result", r->s->name);
      status = STORE_EIO;
    } else {
      status = r->parse(r, res, err, sizeof err);
    }
  }
  r->done(r->cookie, status, status ? err : NULL);
  free(r->stream);
  free(r);
}

rd *pgs_new_rd(pgstore *s, parse_fn parse, pgstore_done_fn done, void *cookie) {
  rd *r = xalloc(sizeof *r);
  r->s = s;
  r->parse = parse;
  r->done = done;
  r->cookie = cookie;
  return r;
}

void pgs_send_read(rd *r, const char *sql, params *p) {
  pg_batch *b = pg_batch_new();
  add(b, sql, p);
  if (pg_read_prepared(r->s->conn, b, read_done, r) != 0) {
    /* closing: report it from the loop like any failure would be */
    r->done(r->cookie, STORE_EIO, "the PostgreSQL store is closing");
    free(r->stream);
    free(r);
  }
}

/* ---- events ------------------------------------------------------------- */

int pgstore_append_event(pgstore_batch *b, int64_t ts_us, const char *type, size_t typen,
                         const char *stream, size_t streamn, const char *data, size_t datan,
                         char *err, size_t errsz) {
  int st = store_event_check(type, typen, stream, streamn, err, errsz);
  if (st) return st;
  if (b->events == 0) b->first_ts = ts_us;
  sbuf_add(&b->appends, &ts_us, 8);
  put_part(&b->appends, type, typen);
  put_part(&b->appends, stream, streamn);
  put_part(&b->appends, data, datan);
  b->events++;
  return 0;
}

/* rows: seq, type, stream, ts_us, data; the last row (marker 1) holds the
 * log's newest position in seq */
static int parse_events(rd *r, const PGresult *res, char *err, size_t errsz) {
  (void)err;
  (void)errsz;
  store_events *o = r->out;
  int n = PQntuples(res);
  uint64_t top = 0;
  for (int i = 0; i < n; i++) {
    if (PQgetvalue(res, i, 0)[0] == '1') {
      top = u64(res, i, 1);
      continue;
    }
    o->rows = sbuf_grow_array(o->rows, &o->cap, o->n + 1, sizeof *o->rows);
    store_event *e = &o->rows[o->n++];
    e->seq = u64(res, i, 1);
    e->ts_us = i64(res, i, 4);
    const char *p;
    size_t len;
    p = val(res, i, 2, &len);
    e->type = (const char *)(uintptr_t)keep(&o->bytes, &o->blen, &o->bcap, p, len);
    e->typen = len;
    p = val(res, i, 3, &len);
    e->stream = (const char *)(uintptr_t)keep(&o->bytes, &o->blen, &o->bcap, p, len);
    e->streamn = len;
    p = val(res, i, 5, &len);
    e->data = (const char *)(uintptr_t)keep(&o->bytes, &o->blen, &o->bcap, p, len);
    e->datan = len;
    if (e->seq > o->last) o->last = e->seq;
  }
  /* a short page of the log examined it to its newest event */
  if (o->n < r->limit && top > o->last) o->last = top;
  for (size_t i = 0; i < o->n; i++) {
    store_event *e = &o->rows[i];
    e->type = o->bytes + (uintptr_t)e->type;
    e->stream = o->bytes + (uintptr_t)e->stream;
    e->data = o->bytes + (uintptr_t)e->data;
  }
  return 0;
}

void pgstore_read_events(pgstore *s, const store_event_query *q, store_events *out,
                         pgstore_done_fn done, void *cookie) {
  out->n = 0;
  out->blen = 0;
  out->last = q->after;
  if (q->limit == 0) return refuse(done, cookie, "reading events: the limit must be positive");
  if (has_nul(q->stream, q->streamn)) return refuse(done, cookie, "a stream key holds no NUL");
  rd *r = pgs_new_rd(s, parse_events, done, cookie);
  r->out = out;
  r->limit = q->limit;
  params p = {.n = 0};
  p_i64(&p, (int64_t)q->after);
  p_str(&p, q->stream, q->streamn);
  p_i64(&p, (int64_t)q->limit);
  if (q->exact) {
    /* one key through its index; the last position examined is its last event */
    pgs_send_read(r, "SELECT 0, seq, type, stream, ts_us, data FROM sluice.events "
                 "WHERE stream = $2::text AND seq > $1::bigint ORDER BY seq LIMIT $3::bigint", &p);
  } else {
    /* the log in order; a short page examined the log to its end, in the
     * same snapshot (one statement) */
    pgs_send_read(r, "SELECT * FROM (SELECT 0 AS k, seq, type, stream, ts_us, data::text "
                 "FROM sluice.events WHERE seq > $1::bigint AND starts_with(stream, $2::text) "
                 "ORDER BY seq LIMIT $3::bigint) e UNION ALL "
                 "SELECT 1, max(seq), NULL, NULL, NULL, NULL FROM sluice.events", &p);
  }
}

static int parse_last(rd *r, const PGresult *res, char *err, size_t errsz) {
  (void)err;
  (void)errsz;
  *(uint64_t *)r->out = PQntuples(res) ? u64(res, 0, 0) : 0;
  if (r->out2) *(int64_t *)r->out2 = PQntuples(res) ? i64(res, 0, 1) : 0;
  return 0;
}

void pgstore_events_last(pgstore *s, uint64_t *seq, int64_t *ts_us, pgstore_done_fn done,
                         void *cookie) {
  rd *r = pgs_new_rd(s, parse_last, done, cookie);
  r->out = seq;
  r->out2 = ts_us;
  pgs_send_read(r, "SELECT (SELECT value FROM sluice.counters WHERE name = 'events'), "
               "(SELECT ts_us FROM sluice.events ORDER BY seq DESC LIMIT 1)", NULL);
}

void pgstore_events_after_time(pgstore *s, int64_t ts_us, uint64_t *after, pgstore_done_fn done,
                               void *cookie) {
  rd *r = pgs_new_rd(s, parse_last, done, cookie);
  r->out = after;
  params p = {.n = 0};
  p_i64(&p, ts_us);
  /* times do not decrease with positions: the first event at or after the
   * time, else the end of the log */
  pgs_send_read(r, "SELECT coalesce((SELECT seq FROM sluice.events WHERE ts_us >= $1::bigint "
               "ORDER BY ts_us, seq LIMIT 1) - 1, (SELECT max(seq) FROM sluice.events), 0)", &p);
}

static int parse_bool(rd *r, const PGresult *res, char *err, size_t errsz) {
  (void)err;
  (void)errsz;
  *(int *)r->out = PQntuples(res) && PQgetvalue(res, 0, 0)[0] == 't';
  return 0;
}

void pgstore_events_trimmed(pgstore *s, const char *stream, size_t streamn, int exact,
                            uint64_t after, int *trimmed, pgstore_done_fn done, void *cookie) {
  *trimmed = 0;
  if (has_nul(stream, streamn)) return refuse(done, cookie, "a stream key holds no NUL");
  rd *r = pgs_new_rd(s, parse_bool, done, cookie);
  r->out = trimmed;
  params p = {.n = 0};
  p_str(&p, stream, streamn);
  p_i64(&p, (int64_t)after);
  pgs_send_read(r, exact ? "SELECT EXISTS (SELECT 1 FROM sluice.stream_trims WHERE stream = $1::text "
                       "AND horizon > $2::bigint)"
                     : "SELECT EXISTS (SELECT 1 FROM sluice.stream_trims WHERE "
                       "starts_with(stream, $1::text) AND horizon > $2::bigint)",
            &p);
}

static int parse_keys(rd *r, const PGresult *res, char *err, size_t errsz) {
  (void)err;
  (void)errsz;
  store_keys *o = r->out;
  int n = PQntuples(res);
  for (int i = 0; i < n; i++) {
    size_t len;
    const char *k = val(res, i, 0, &len);
    o->keys = sbuf_grow_array(o->keys, &o->cap, o->n + 1, sizeof *o->keys);
    o->keys[o->n].key = (const char *)(uintptr_t)keep(&o->bytes, &o->blen, &o->bcap, k, len);
    o->keys[o->n++].len = len;
  }
  for (size_t i = 0; i < o->n; i++) o->keys[i].key = o->bytes + (uintptr_t)o->keys[i].key;
  return 0;
}

void pgstore_stream_keys(pgstore *s, const char *prefix, size_t plen, const char *after,
                         size_t alen, size_t limit, store_keys *out, pgstore_done_fn done,
                         void *cookie) {
  out->n = 0;
  out->blen = 0;
  if (has_nul(prefix, plen) || has_nul(after, alen)) {
    return refuse(done, cookie, "a stream key holds no NUL");
  }
  rd *r = pgs_new_rd(s, parse_keys, done, cookie);
  r->out = out;
  params p = {.n = 0};
  p_str(&p, prefix, plen);
  p_str(&p, after, alen);
  p_i64(&p, (int64_t)limit);
  pgs_send_read(r, "SELECT DISTINCT stream FROM sluice.events WHERE starts_with(stream, $1::text) "
               "AND stream > $2::text ORDER BY stream LIMIT $3::bigint", &p);
}

/* ---- trimming ----------------------------------------------------------- */

static void add_removal(pgstore_batch *b, uint64_t seq) {
  params p = {.n = 0};
  p_i64(&p, (int64_t)seq);
  add(b->pb, "DELETE FROM sluice.events WHERE seq = $1::bigint", &p);
  b->ops++;
}
static void add_mark(pgstore_batch *b, const char *stream, size_t n, uint64_t seq) {
  params p = {.n = 0};
  p_str(&p, stream, n);
  p_i64(&p, (int64_t)seq);
  add(b->pb, "INSERT INTO sluice.stream_trims (stream, horizon) VALUES ($1::text, $2::bigint) "
             "ON CONFLICT (stream) DO UPDATE SET horizon = "
             "GREATEST(sluice.stream_trims.horizon, EXCLUDED.horizon)", &p);
  b->ops++;
}

/* for store copy (store_pg_tools.c): a key's mark as it was */
int pgstore_put_trim_mark(pgstore_batch *b, const char *stream, size_t streamn, uint64_t seq) {
  if (streamn == 0 || has_nul(stream, streamn)) return STORE_EINVAL;
  add_mark(b, stream, streamn, seq);
  return 0;
}

/* by time: rows seq, stream, ts_us of the log after `after` (as LMDB's
 * scan: stop at the first at or after before_us, examine at most limit) */
static int parse_trim_time(rd *r, const PGresult *res, char *err, size_t errsz) {
  (void)err;
  (void)errsz;
  const store_trim_query *q = r->tq;
  pgstore_trim_result *o = r->out;
  int n = PQntuples(res), reached = 0;
  size_t examined = 0;
  for (int i = 0; i < n; i++) {
    if (i64(res, i, 2) >= q->before_us) {
      reached = 1;
      break;
    }
    uint64_t seq = u64(res, i, 0);
    o->last = seq;
    examined++;
    size_t sn;
    const char *st = val(res, i, 1, &sn);
    if (sn >= r->streamn && memcmp(st, r->stream, r->streamn) == 0 &&
        (!q->exact || sn == r->streamn)) {
      add_removal(r->tb, seq);
      add_mark(r->tb, st, sn, seq); /* GREATEST: the newest stays */
      o->n++;
    }
  }
  o->more = !reached && examined >= q->limit;
  return 0;
}

/* by count: the oldest seqs of the key beyond its newest keep, limit + 1 */
static int parse_trim_keep(rd *r, const PGresult *res, char *err, size_t errsz) {
  (void)err;
  (void)errsz;
  pgstore_trim_result *o = r->out;
  size_t n = (size_t)PQntuples(res);
  size_t take = n < r->tq->limit ? n : r->tq->limit;
  for (size_t i = 0; i < take; i++) add_removal(r->tb, u64(res, (int)i, 0));
  if (take) {
    o->last = u64(res, (int)take - 1, 0);
    add_mark(r->tb, r->stream, r->streamn, o->last);
  }
  o->n = take;
  o->more = n > take;
  return 0;
}

void pgstore_trim_events(pgstore *s, pgstore_batch *b, const store_trim_query *q,
                         pgstore_trim_result *out, pgstore_done_fn done, void *cookie) {
  out->n = 0;
  out->last = q->after;
  out->more = 0;
  if (q->limit == 0 || (q->before_us <= 0 && (q->keep < 0 || !q->exact))) {
    return refuse(done, cookie,
                  "trimming events: give a positive limit and a time, or a count of one key");
  }
  if (has_nul(q->stream, q->streamn)) return refuse(done, cookie, "a stream key holds no NUL");
  rd *r = pgs_new_rd(s, q->before_us > 0 ? parse_trim_time : parse_trim_keep, done, cookie);
  r->out = out;
  r->tb = b;
  r->tq = q;
  r->stream = malloc(q->streamn + 1);
  if (!r->stream) abort();
  memcpy(r->stream, q->stream, q->streamn);
  r->streamn = q->streamn;
  params p = {.n = 0};
  if (q->before_us > 0) {
    p_i64(&p, (int64_t)q->after);
    p_i64(&p, (int64_t)q->limit);
    pgs_send_read(r, "SELECT seq, stream, ts_us FROM sluice.events WHERE seq > $1::bigint "
                 "ORDER BY seq LIMIT $2::bigint", &p);
  } else {
    p_str(&p, q->stream, q->streamn);
    p_i64(&p, q->keep);
    p_i64(&p, (int64_t)q->limit + 1);
    pgs_send_read(r, "SELECT seq FROM (SELECT seq FROM sluice.events WHERE stream = $1::text "
                 "ORDER BY seq DESC OFFSET $2::bigint) x ORDER BY seq LIMIT $3::bigint", &p);
  }
}

/* ---- sends -------------------------------------------------------------- */

void pgstore_put_send(pgstore_batch *b, const char *json, size_t jsonn) {
  put_part(&b->sends, json, jsonn);
  b->nsends++;
}

/* rows: (seq or name), JSON */
static int parse_rows(rd *r, const PGresult *res, char *err, size_t errsz) {
  (void)err;
  (void)errsz;
  store_blob_rows *o = r->out;
  int n = PQntuples(res), by_seq = r->after == 1;
  for (int i = 0; i < n; i++) {
    o->rows = sbuf_grow_array(o->rows, &o->cap, o->n + 1, sizeof *o->rows);
    store_row *row = &o->rows[o->n++];
    size_t nn, jn;
    const char *name = val(res, i, 0, &nn);
    const char *json = val(res, i, 1, &jn);
    row->seq = by_seq ? strtoull(name, NULL, 10) : 0;
    row->namen = by_seq ? 0 : nn;
    row->name = (const char *)(uintptr_t)keep(&o->bytes, &o->blen, &o->bcap, name, row->namen);
    row->jsonn = jn;
    row->json = (const char *)(uintptr_t)keep(&o->bytes, &o->blen, &o->bcap, json, jn);
  }
  for (size_t i = 0; i < o->n; i++) {
    o->rows[i].name = o->bytes + (uintptr_t)o->rows[i].name;
    o->rows[i].json = o->bytes + (uintptr_t)o->rows[i].json;
  }
  if (r->found) *r->found = o->n > 0;
  return 0;
}

void pgstore_sends(pgstore *s, uint64_t after, size_t limit, store_blob_rows *out,
                   pgstore_done_fn done, void *cookie) {
  out->n = 0;
  out->blen = 0;
  if (limit == 0) return refuse(done, cookie, "reading sends: the limit must be positive");
  rd *r = pgs_new_rd(s, parse_rows, done, cookie);
  r->out = out;
  r->after = 1; /* by position */
  params p = {.n = 0};
  p_i64(&p, (int64_t)after);
  p_i64(&p, (int64_t)limit);
  pgs_send_read(r, "SELECT seq, record FROM sluice.sends WHERE seq > $1::bigint ORDER BY seq "
               "LIMIT $2::bigint", &p);
}

void pgstore_sends_last(pgstore *s, uint64_t *seq, pgstore_done_fn done, void *cookie) {
  rd *r = pgs_new_rd(s, parse_last, done, cookie);
  r->out = seq;
  pgs_send_read(r, "SELECT value FROM sluice.counters WHERE name = 'sends'", NULL);
}

void pgstore_set_dispatch_cursor(pgstore_batch *b, uint64_t seq) {
  params p = {.n = 0};
  p_i64(&p, (int64_t)seq);
  add(b->pb, "INSERT INTO sluice.cursors (name, after) VALUES ('dispatch', $1::bigint) "
             "ON CONFLICT (name) DO UPDATE SET after = EXCLUDED.after", &p);
  b->ops++;
}

void pgstore_dispatch_cursor(pgstore *s, uint64_t *seq, pgstore_done_fn done, void *cookie) {
  rd *r = pgs_new_rd(s, parse_last, done, cookie);
  r->out = seq;
  pgs_send_read(r, "SELECT after FROM sluice.cursors WHERE name = 'dispatch'", NULL);
}

/* ---- the record of a step that appended or sent ------------------------- */

int pgstore_step_positions(pgstore_batch *b, const char *run_id, size_t rn, const char *step_id,
                           size_t sn, int kind) {
  if (has_nul(run_id, rn) || has_nul(step_id, sn) ||
      (kind != PGSTORE_EVENT_IDS && kind != PGSTORE_FIRST_SEND)) {
    return STORE_EINVAL;
  }
  unsigned char k = (unsigned char)kind;
  sbuf_add(&b->steps, &k, 1);
  put_part(&b->steps, run_id, rn);
  put_part(&b->steps, step_id, sn);
  b->nsteps++;
  return 0;
}

/* ---- records by name: consumers, schedules, keys, namespaces ------------ */

static int put_named(pgstore_batch *b, const char *sql, const char *name, size_t n,
                     const char *rec, size_t rlen) {
  if (bad_name(name, n) || rlen == 0) return STORE_EINVAL;
  params p = {.n = 0};
  p_str(&p, name, n);
  p_str(&p, rec, rlen);
  add(b->pb, sql, &p);
  b->ops++;
  return 0;
}

static int del_named(pgstore_batch *b, const char *sql, const char *name, size_t n) {
  if (bad_name(name, n)) return STORE_EINVAL;
  params p = {.n = 0};
  p_str(&p, name, n);
  add(b->pb, sql, &p);
  b->ops++;
  return 0;
}

int pgs_parse_record(rd *r, const PGresult *res, char *err, size_t errsz) {
  (void)err;
  (void)errsz;
  sbuf *o = r->out;
  sbuf_reset(o);
  *r->found = PQntuples(res) > 0;
  if (*r->found) {
    size_t n;
    const char *v = val(res, 0, 0, &n);
    sbuf_add(o, v, n);
  }
  return 0;
}

static void get_named(pgstore *s, const char *sql, const char *name, size_t n, sbuf *rec,
                      int *found, pgstore_done_fn done, void *cookie) {
  *found = 0;
  if (has_nul(name, n)) { /* no such record can exist */
    sbuf_reset(rec);
    return refuse(done, cookie, "a name holds no NUL byte on PostgreSQL");
  }
  rd *r = pgs_new_rd(s, pgs_parse_record, done, cookie);
  r->out = rec;
  r->found = found;
  params p = {.n = 0};
  p_str(&p, name, n);
  pgs_send_read(r, sql, &p);
}

/* rows: name, record [, extra] */
static int parse_named(rd *r, const PGresult *res, char *err, size_t errsz) {
  (void)err;
  (void)errsz;
  store_named_rows *o = r->out;
  int n = PQntuples(res), cols = PQnfields(res);
  o->n = 0;
  sbuf_reset(&o->buf);
  for (int i = 0; i < n; i++) {
    o->rows = sbuf_grow_array(o->rows, &o->cap, o->n + 1, sizeof *o->rows);
    store_named_row *row = &o->rows[o->n++];
    size_t nn, rn, en = 0;
    const char *name = val(res, i, 0, &nn), *rec = val(res, i, 1, &rn);
    int extra = cols > 2 && !PQgetisnull(res, i, 2);
    row->name = (const char *)(uintptr_t)keep(&o->buf.data, &o->buf.len, &o->buf.cap, name, nn);
    o->buf.len++; /* keep's NUL stays */
    row->name_len = nn;
    row->rec = (const char *)(uintptr_t)keep(&o->buf.data, &o->buf.len, &o->buf.cap, rec, rn);
    o->buf.len++;
    row->rec_len = rn;
    row->extra = NULL;
    row->extra_len = 0;
    if (extra) {
      const char *e = val(res, i, 2, &en);
      row->extra = (const char *)(uintptr_t)keep(&o->buf.data, &o->buf.len, &o->buf.cap, e, en);
      o->buf.len++;
      row->extra_len = en;
    }
  }
  for (size_t i = 0; i < o->n; i++) {
    store_named_row *row = &o->rows[i];
    row->name = o->buf.data + (uintptr_t)row->name;
    row->rec = o->buf.data + (uintptr_t)row->rec;
    /* an extra's offset is never 0 (its name comes first): 0 is none */
    if (row->extra) row->extra = o->buf.data + (uintptr_t)row->extra;
  }
  return 0;
}

static void list_named(pgstore *s, const char *sql, params *p, store_named_rows *out,
                       pgstore_done_fn done, void *cookie) {
  out->n = 0;
  rd *r = pgs_new_rd(s, parse_named, done, cookie);
  r->out = out;
  pgs_send_read(r, sql, p);
}

/* consumers: their rows are store_blob_rows */
int pgstore_put_consumer(pgstore_batch *b, const char *name, size_t namen, const char *json,
                         size_t jsonn) {
  if (namen == 0 || has_nul(name, namen)) return STORE_EINVAL;
  params p = {.n = 0};
  p_str(&p, name, namen);
  p_str(&p, json, jsonn);
  add(b->pb, "INSERT INTO sluice.consumers (name, record) VALUES ($1::text, $2::text::json) "
             "ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record", &p);
  b->ops++;
  return 0;
}

void pgstore_get_consumer(pgstore *s, const char *name, size_t namen, store_blob_rows *out,
                          int *found, pgstore_done_fn done, void *cookie) {
  out->n = 0;
  out->blen = 0;
  *found = 0;
  if (has_nul(name, namen)) return refuse(done, cookie, "a consumer name holds no NUL");
  rd *r = pgs_new_rd(s, parse_rows, done, cookie);
  r->out = out;
  r->found = found;
  params p = {.n = 0};
  p_str(&p, name, namen);
  pgs_send_read(r, "SELECT name, record FROM sluice.consumers WHERE name = $1::text", &p);
}

void pgstore_consumers(pgstore *s, store_blob_rows *out, pgstore_done_fn done, void *cookie) {
  out->n = 0;
  out->blen = 0;
  rd *r = pgs_new_rd(s, parse_rows, done, cookie);
  r->out = out;
  pgs_send_read(r, "SELECT name, record FROM sluice.consumers ORDER BY name", NULL);
}

/* schedules */
int pgstore_put_schedule(pgstore_batch *b, const char *name, size_t nlen, const char *rec,
                         size_t rlen) {
  /* api: created over the HTTP API (lua/pg_schema.lua, migration 2), from
   * the text the codec wrote: no JSON operator, which \u0000 would fail */
  return put_named(b, "INSERT INTO sluice.schedules (name, record, api) VALUES ($1::text, "
                      "$2::text::json, strpos($2::text, '\"source\":\"api\"') > 0) "
                      "ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record, "
                      "api = EXCLUDED.api",
                   name, nlen, rec, rlen);
}

int pgstore_delete_schedule(pgstore_batch *b, const char *name, size_t nlen) {
  return del_named(b, "DELETE FROM sluice.schedules WHERE name = $1::text", name, nlen);
}

void pgstore_get_schedule(pgstore *s, const char *name, size_t nlen, sbuf *rec, int *found,
                          pgstore_done_fn done, void *cookie) {
  get_named(s, "SELECT record FROM sluice.schedules WHERE name = $1::text", name, nlen, rec,
            found, done, cookie);
}

/* The fire's compare-and-set (lua/scheduler.lua): the row version is the
 * row's xmin, the transaction that last wrote it (every write, a no-op
 * update too, makes a new row version; freezing keeps xmin readable), so
 * no column or migration is needed. A write of the fire commits only over
 * the version read before the fire: a change or a delete another host
 * committed meanwhile stays (an UPDATE: a deleted record is not made
 * again), and the run of the fire is created in the same commit either
 * way. */
static int parse_record_version(rd *r, const PGresult *res, char *err, size_t errsz) {
  int rc = pgs_parse_record(r, res, err, errsz);
  if (rc == 0 && *r->found) *(int64_t *)r->out2 = i64(res, 0, 1);
  return rc;
}

void pgstore_get_schedule_version(pgstore *s, const char *name, size_t nlen, sbuf *rec,
                                  int64_t *version, int *found, pgstore_done_fn done,
                                  void *cookie) {
  *found = 0;
  *version = 0;
  sbuf_reset(rec);
  if (has_nul(name, nlen)) return refuse(done, cookie, "a name holds no NUL byte on PostgreSQL");
  rd *r = pgs_new_rd(s, parse_record_version, done, cookie);
  r->out = rec;
  r->out2 = version;
  r->found = found;
  params p = {.n = 0};
  p_str(&p, name, nlen);
  pgs_send_read(r, "SELECT record, xmin::text::bigint FROM sluice.schedules WHERE name = $1::text",
                &p);
}

int pgstore_put_schedule_if(pgstore_batch *b, const char *name, size_t nlen, const char *rec,
                            size_t rlen, int64_t version) {
  if (bad_name(name, nlen) || rlen == 0) return STORE_EINVAL;
  params p = {.n = 0};
  p_str(&p, name, nlen);
  p_str(&p, rec, rlen);
  p_i64(&p, version);
  add(b->pb, "UPDATE sluice.schedules SET record = $2::text::json, "
             "api = strpos($2::text, '\"source\":\"api\"') > 0 "
             "WHERE name = $1::text AND xmin::text::bigint = $3::bigint", &p);
  b->ops++;
  return 0;
}

void pgstore_list_schedules(pgstore *s, const char *after, size_t alen, size_t limit,
                            store_named_rows *out, pgstore_done_fn done, void *cookie) {
  if (has_nul(after, alen)) return refuse(done, cookie, "a schedule name holds no NUL");
  params p = {.n = 0};
  p_str(&p, after, alen);
  p_i64(&p, limit ? (int64_t)limit : INT64_MAX);
  list_named(s, "SELECT name, record FROM sluice.schedules WHERE name > $1::text "
                "ORDER BY name LIMIT $2::bigint", &p, out, done, cookie);
}

/* API keys */
int pgstore_add_key(pgstore_batch *b, const char *id, size_t idlen, const char *rec, size_t rlen) {
  return put_named(b, "INSERT INTO sluice.api_keys (id, record) VALUES ($1::text, $2::text::json)",
                   id, idlen, rec, rlen);
}

int pgstore_revoke_key(pgstore_batch *b, const char *id, size_t idlen) {
  return del_named(b, "DELETE FROM sluice.api_keys WHERE id = $1::text", id, idlen);
}

int pgstore_touch_key(pgstore_batch *b, const char *id, size_t idlen, const char *when,
                      size_t wlen) {
  if (wlen == 0 || has_nul(when, wlen)) return STORE_EINVAL;
  return put_named(b, "UPDATE sluice.api_keys SET last_used = $2::text WHERE id = $1::text", id,
                   idlen, when, wlen);
}

void pgstore_get_key(pgstore *s, const char *id, size_t idlen, sbuf *rec, int *found,
                     pgstore_done_fn done, void *cookie) {
  get_named(s, "SELECT record FROM sluice.api_keys WHERE id = $1::text", id, idlen, rec, found,
            done, cookie);
}

static int parse_count(rd *r, const PGresult *res, char *err, size_t errsz) {
  (void)err;
  (void)errsz;
  *(int64_t *)r->out = PQntuples(res) ? i64(res, 0, 0) : 0;
  return 0;
}

void pgstore_key_count(pgstore *s, int64_t *n, pgstore_done_fn done, void *cookie) {
  rd *r = pgs_new_rd(s, parse_count, done, cookie);
  r->out = n;
  pgs_send_read(r, "SELECT count(*) FROM sluice.api_keys", NULL);
}

void pgstore_list_keys(pgstore *s, store_named_rows *out, pgstore_done_fn done, void *cookie) {
  list_named(s, "SELECT id, record, last_used FROM sluice.api_keys ORDER BY id", NULL, out, done,
             cookie);
}

/* namespaces */
int pgstore_put_namespace(pgstore_batch *b, const char *ns, size_t nslen, const char *rec,
                          size_t rlen) {
  return put_named(b, "INSERT INTO sluice.namespaces (name, record) VALUES ($1::text, "
                      "$2::text::json) ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record",
                   ns, nslen, rec, rlen);
}

void pgstore_get_namespace(pgstore *s, const char *ns, size_t nslen, sbuf *rec, int *found,
                           pgstore_done_fn done, void *cookie) {
  get_named(s, "SELECT record FROM sluice.namespaces WHERE name = $1::text", ns, nslen, rec,
            found, done, cookie);
}

void pgstore_list_namespaces(pgstore *s, store_named_rows *out, pgstore_done_fn done,
                             void *cookie) {
  list_named(s, "SELECT name, record FROM sluice.namespaces ORDER BY name", NULL, out, done,
             cookie);
}

/* quota counters: the increment is applied by the server inside the commit */
static int bad_day(const char *day, size_t dlen) {
  if (dlen != 10) return 1;
  for (size_t i = 0; i < dlen; i++) {
    int dash = i == 4 || i == 7;
    if (dash ? day[i] != '-' : (day[i] < '0' || day[i] > '9')) return 1;
  }
  return 0;
}

int pgstore_count_run(pgstore_batch *b, const char *ns, size_t nslen, const char *day,
                      size_t dlen) {
  if (bad_name(ns, nslen) || bad_day(day, dlen)) return STORE_EINVAL;
  params p = {.n = 0};
  p_str(&p, ns, nslen);
  p_text(&p, day, dlen);
  add(b->pb, "INSERT INTO sluice.quotas (namespace, day, runs) VALUES ($1::text, $2::date, 1) "
             "ON CONFLICT (namespace, day) DO UPDATE SET runs = sluice.quotas.runs + 1", &p);
  b->ops++;
  return 0;
}

/* for store copy (store_pg_tools.c): the day's count as it was */
int pgstore_put_quota(pgstore_batch *b, const char *ns, size_t nslen, const char *day,
                      size_t dlen, int64_t n) {
  if (bad_name(ns, nslen) || bad_day(day, dlen) || n < 0) return STORE_EINVAL;
  params p = {.n = 0};
  p_str(&p, ns, nslen);
  p_text(&p, day, dlen);
  p_i64(&p, n);
  add(b->pb, "INSERT INTO sluice.quotas (namespace, day, runs) VALUES ($1::text, $2::date, "
             "$3::bigint) ON CONFLICT (namespace, day) DO UPDATE SET runs = EXCLUDED.runs", &p);
  b->ops++;
  return 0;
}

void pgstore_quota_used(pgstore *s, const char *ns, size_t nslen, const char *day, size_t dlen,
                        int64_t *n, pgstore_done_fn done, void *cookie) {
  *n = 0;
  if (bad_name(ns, nslen) || bad_day(day, dlen)) {
    return done(cookie, STORE_EINVAL, "a day is YYYY-MM-DD (UTC)");
  }
  rd *r = pgs_new_rd(s, parse_count, done, cookie);
  r->out = n;
  params p = {.n = 0};
  p_str(&p, ns, nslen);
  p_text(&p, day, dlen);
  pgs_send_read(r, "SELECT runs FROM sluice.quotas WHERE namespace = $1::text AND day = $2::date", &p);
}
