/* store_pg_runs.c: store.h's runs, steps, run logs and idempotency keys on
 * PostgreSQL (store_pg.h "runs"), in the tables runs, steps, logs and
 * idempotency of lua/pg_schema.lua.
 *
 * A run is one row whose listings (by time, namespace, pipeline, status,
 * pipeline and status, active) are btree indexes on its columns: a put is
 * one upsert, and every listing moves with the row in the same commit. A
 * cancelled record is overwritten only by another cancelled one or by the
 * run's end: a cancel made through one host holds against the writes of
 * the host executing the run until that host stops it (lua/hosts.lua), and
 * a run that completes or fails before then keeps that end. A cancel never
 * overwrites an end, so a cancel racing a run's last commit cannot leave
 * the run cancelled while its caller was told it completed. A
 * page of runs is one statement reading one index backwards from the
 * cursor; without a namespace but with a pipeline or a status it reads
 * each namespace's index and merges them (as LMDB does), the namespaces
 * found by a loose scan of runs_by_ns (one index probe each).
 *
 * A step is one row (the columns of store_step, the payload as json); the
 * steps of a run are one statement on the primary key. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "store_pg_int.h"

#define FIELD_MAX 200

static int einval(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int einval(char *err, size_t errsz, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errsz, fmt, ap);
  va_end(ap);
  return STORE_EINVAL;
}

/* the checks of records_runs.c (C strings cannot hold NUL) */
static int check_field(const char *what, const char *v, char *err, size_t errsz) {
  if (!v || !*v) return einval(err, errsz, "a run record has no %s", what);
  if (strlen(v) > FIELD_MAX)
    return einval(err, errsz, "a run's %s is longer than %d bytes", what, FIELD_MAX);
  return 0;
}

static void p_null(params *p) {
  p->v[p->n] = NULL;
  p->len[p->n] = 0;
  p->fmt[p->n++] = 0;
}

/* a NUL-terminated value in text format (an array literal), not copied here */
static void p_cstr(params *p, const char *s) {
  p->v[p->n] = s;
  p->len[p->n] = 0;
  p->fmt[p->n++] = 0;
}

/* ---- runs --------------------------------------------------------------- */

int pgstore_put_run(pgstore_batch *b, const store_run *r, int is_new, const char *prev_status,
                    store_fill_fn fill, void *ud, char *err, size_t errsz) {
  const char *status = r->status ? r->status : "pending";
  int rc;
  if ((rc = check_field("id", r->id, err, errsz)) ||
      (rc = check_field("pipeline", r->pipeline, err, errsz)) ||
      (r->ns && (rc = check_field("namespace", r->ns, err, errsz))) ||
      (rc = check_field("status", status, err, errsz)))
    return rc;
  if (prev_status && (rc = check_field("previous status", prev_status, err, errsz))) return rc;
  if (r->created_us < 0) return einval(err, errsz, "run %s: created_us is negative", r->id);
  /* is_new and prev_status say which LMDB entries to write; here the
   * indexes follow the row whatever they say */
  (void)is_new;
  sbuf rec = SBUF_INIT;
  if (fill(ud, &rec, err, errsz) != 0) {
    sbuf_free(&rec);
    return STORE_EINVAL;
  }
  params p = {.n = 0};
  p_str(&p, r->id, strlen(r->id));
  const char *ns = r->ns ? r->ns : STORE_DEFAULT_NS;
  p_str(&p, ns, strlen(ns));
  p_str(&p, r->pipeline, strlen(r->pipeline));
  p_str(&p, status, strlen(status));
  p_text(&p, store_run_status_final(status) ? "f" : "t", 1);
  p_i64(&p, r->created_us);
  p_str(&p, rec.data, rec.len);
  add(b->pb, "INSERT INTO sluice.runs (id, namespace, pipeline, status, active, created_at_us, "
             "record) VALUES ($1::text, $2::text, $3::text, $4::text, $5::boolean, $6::bigint, "
             "$7::text::json) ON CONFLICT (id) DO UPDATE SET namespace = EXCLUDED.namespace, "
             "pipeline = EXCLUDED.pipeline, status = EXCLUDED.status, active = EXCLUDED.active, "
             "created_at_us = EXCLUDED.created_at_us, record = EXCLUDED.record "
             /* a cancel stays against the executing host's writes until
              * that host stops the run (hosts.lua learns of it within a
              * poll); but an end stays against a cancel: a run that ended
              * before the cancel took effect ended as its host reported */
             "WHERE CASE WHEN EXCLUDED.status = 'cancelled' "
             "THEN sluice.runs.status NOT IN ('completed', 'failed') "
             "WHEN EXCLUDED.status IN ('completed', 'failed') THEN true "
             "ELSE sluice.runs.status <> 'cancelled' END", &p);
  b->ops++;
  sbuf_free(&rec);
  return 0;
}

void pgstore_get_run(pgstore *s, const char *id, sbuf *out, int *found, pgstore_done_fn done,
                     void *cookie) {
  *found = 0;
  sbuf_reset(out);
  rd *r = pgs_new_rd(s, pgs_parse_record, done, cookie);
  r->out = out;
  r->found = found;
  params p = {.n = 0};
  p_str(&p, id, strlen(id));
  pgs_send_read(r, "SELECT record FROM sluice.runs WHERE id = $1::text", &p);
}

/* rows: id, record[, created_at_us]; with r->out2 (a page) the row past
 * the limit gives the cursor of the next page: be64(created_us) id in hex,
 * the text records_runs.c gives, so a cursor means one place on both */
static int parse_runs(rd *r, const PGresult *res, char *err, size_t errsz) {
  (void)err;
  (void)errsz;
  store_rows *o = r->out;
  sbuf *next = r->out2;
  size_t n = (size_t)PQntuples(res);
  size_t take = next && n > r->limit ? r->limit : n;
  for (size_t i = 0; i < take; i++) {
    size_t idn, recn;
    const char *id = val(res, (int)i, 0, &idn), *rec = val(res, (int)i, 1, &recn);
    store_rows_add(o, id, idn, rec, recn);
  }
  if (next && take < n) {
    size_t idn;
    const char *id = val(res, (int)take - 1, 0, &idn);
    sbuf place = SBUF_INIT;
    sbuf_add_be64(&place, (uint64_t)i64(res, (int)take - 1, 2));
    sbuf_add(&place, id, idn);
    sbuf_add_hex(next, place.data, place.len);
    sbuf_free(&place);
  }
  return 0;
}

void pgstore_list_runs(pgstore *s, const store_run_filter *f, store_rows *rows, sbuf *next,
                       pgstore_done_fn done, void *cookie) {
  sbuf_reset(next);
  size_t limit = f->limit ? f->limit : 1;
  /* the cursor: be64(created_us) then the id, in hex (at least one id byte) */
  sbuf place = SBUF_INIT;
  if (f->before && (strlen(f->before) < 18 ||
                    sbuf_add_unhex(&place, f->before, strlen(f->before)) != 0 ||
                    has_nul(place.data + 8, place.len - 8))) {
    sbuf_free(&place);
    return refuse(done, cookie, "before must be a cursor returned as next by an earlier page");
  }
  params p = {.n = 0};
  sbuf where = SBUF_INIT, sql = SBUF_INIT;
  /* a namespace is a condition of the inner read; without one, a pipeline
   * or a status reads each namespace (ns.n) */
  int per_ns = !f->ns && (f->pipeline || f->status);
  if (f->ns) {
    p_str(&p, f->ns, strlen(f->ns));
    sbuf_printf(&where, " AND namespace = $%d::text", p.n);
  } else if (per_ns) {
    sbuf_adds(&where, " AND namespace = ns.n");
  }
  if (f->pipeline) {
    p_str(&p, f->pipeline, strlen(f->pipeline));
    sbuf_printf(&where, " AND pipeline = $%d::text", p.n);
  }
  if (f->status) {
    /* no index on status (pg_schema.lua, migration 3): a final one is
     * final_status, an active one a filter over the active runs' index */
    p_str(&p, f->status, strlen(f->status));
    if (store_run_status_final(f->status)) {
      sbuf_printf(&where, " AND NOT active AND final_status = $%d::text", p.n);
    } else {
      sbuf_printf(&where, " AND active AND status = $%d::text", p.n);
    }
  }
  /* a cursor past every bigint (LMDB compares its bytes) bounds nothing */
  if (f->before && sbuf_read_be64(place.data) <= (uint64_t)INT64_MAX) {
    p_i64(&p, (int64_t)sbuf_read_be64(place.data));
    p_str(&p, place.data + 8, place.len - 8);
    sbuf_printf(&where, " AND (created_at_us, id) < ($%d::bigint, $%d::text)", p.n - 1, p.n);
  }
  if (f->since_us > 0) {
    p_i64(&p, f->since_us);
    sbuf_printf(&where, " AND created_at_us >= $%d::bigint", p.n);
  }
  p_i64(&p, (int64_t)limit + 1); /* one more: whether a next page exists */
  const char *w = where.len ? where.data + 5 : "true"; /* without the first " AND " */
  if (per_ns) {
    sbuf_printf(&sql,
                "WITH RECURSIVE ns(n) AS (SELECT min(namespace) FROM sluice.runs UNION ALL "
                "SELECT (SELECT min(namespace) FROM sluice.runs WHERE namespace > ns.n) FROM ns "
                "WHERE ns.n IS NOT NULL) "
                "SELECT r.id, r.record, r.created_at_us FROM ns CROSS JOIN LATERAL "
                "(SELECT id, record, created_at_us FROM sluice.runs WHERE %s "
                "ORDER BY created_at_us DESC, id DESC LIMIT $%d::bigint) r "
                "ORDER BY r.created_at_us DESC, r.id DESC LIMIT $%d::bigint",
                w, p.n, p.n);
  } else {
    sbuf_printf(&sql,
                "SELECT id, record, created_at_us FROM sluice.runs WHERE %s "
                "ORDER BY created_at_us DESC, id DESC LIMIT $%d::bigint",
                w, p.n);
  }
  rd *r = pgs_new_rd(s, parse_runs, done, cookie);
  r->out = rows;
  r->out2 = next;
  r->limit = limit;
  pgs_send_read(r, sql.data, &p); /* the parameters are copied */
  sbuf_free(&place);
  sbuf_free(&where);
  sbuf_free(&sql);
}

void pgstore_active_runs(pgstore *s, store_rows *rows, pgstore_done_fn done, void *cookie) {
  rd *r = pgs_new_rd(s, parse_runs, done, cookie);
  r->out = rows;
  pgs_send_read(r, "SELECT id, record FROM sluice.runs WHERE active ORDER BY id", NULL);
}

/* ---- idempotency keys --------------------------------------------------- */

static int idem_check(const char *ns, const char *pipeline, const char *key, size_t klen,
                      char *err, size_t errsz) {
  int rc;
  if ((rc = check_field("namespace", ns, err, errsz)) ||
      (rc = check_field("pipeline", pipeline, err, errsz)))
    return rc;
  if (klen == 0 || klen > FIELD_MAX)
    return einval(err, errsz, "an idempotency key is 1 to %d bytes, got %zu", FIELD_MAX, klen);
  if (has_nul(key, klen)) return einval(err, errsz, "an idempotency key holds no NUL byte");
  return 0;
}

static void idem_params(params *p, const char *ns, const char *pipeline, const char *key,
                        size_t klen) {
  p_str(p, ns, strlen(ns));
  p_str(p, pipeline, strlen(pipeline));
  p_str(p, key, klen);
}

int pgstore_put_idempotency(pgstore_batch *b, const char *ns, const char *pipeline,
                            const char *key, size_t klen, const char *run_id, char *err,
                            size_t errsz) {
  int rc = idem_check(ns, pipeline, key, klen, err, errsz);
  if (rc == 0) rc = check_field("id", run_id, err, errsz);
  if (rc) return rc;
  params p = {.n = 0};
  idem_params(&p, ns, pipeline, key, klen);
  p_str(&p, run_id, strlen(run_id));
  /* no upsert: a key another host took meanwhile fails this batch (and the
   * run it creates) instead of naming a second run */
  add(b->pb, "INSERT INTO sluice.idempotency (namespace, pipeline, key, run_id) "
             "VALUES ($1::text, $2::text, $3::text, $4::text)", &p);
  b->ops++;
  return 0;
}

void pgstore_get_idempotency(pgstore *s, const char *ns, const char *pipeline, const char *key,
                             size_t klen, sbuf *run_id, int *found, pgstore_done_fn done,
                             void *cookie) {
  char err[256];
  *found = 0;
  sbuf_reset(run_id);
  if (idem_check(ns, pipeline, key, klen, err, sizeof err) != 0) return refuse(done, cookie, err);
  rd *r = pgs_new_rd(s, pgs_parse_record, done, cookie);
  r->out = run_id;
  r->found = found;
  params p = {.n = 0};
  idem_params(&p, ns, pipeline, key, klen);
  pgs_send_read(r, "SELECT run_id FROM sluice.idempotency WHERE namespace = $1::text AND "
                   "pipeline = $2::text AND key = $3::text", &p);
}

/* ---- steps -------------------------------------------------------------- */

static int bad_run(const char *run, size_t run_len) {
  return run_len == 0 || has_nul(run, run_len);
}

/* a first attempt shorter than this had no "running" record (half of the
 * engine's 500 ms: its sweep runs every 250 ms) */
#define FIRST_RECORD_US 250000
#define STEP_INSERT                                                                            \
  "run_id, step_id, status, attempts, position, branch, started_at_us, duration_us, payload) "  \
  "SELECT u.r, u.s, u.st::smallint, u.a::bigint, u.pos::bigint, u.br, u.sa::bigint, "           \
  "u.d::bigint, u.pl::json FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "         \
  "$5::text[], $6::text[], $7::text[], $8::text[], $9::text[]) AS u(r, s, st, a, pos, br, sa, d, " \
  "pl)"

int pgstore_put_step(pgstore_batch *b, const char *run, size_t run_len, const store_step *st,
                     store_fill_fn fill, void *ud, char *err, size_t errsz) {
  if (bad_run(run, run_len)) return einval(err, errsz, "a step needs a run id without NUL");
  if (st->id_len == 0 || st->id_len > 0xffff || has_nul(st->id, st->id_len))
    return einval(err, errsz, "a step id is 1 to 65535 bytes without NUL");
  if (st->branch_len > 0xffff || has_nul(st->branch, st->branch_len))
    return einval(err, errsz, "step '%.*s': a branch name is at most 65535 bytes without NUL",
                  (int)st->id_len, st->id);
  if (st->status < 1 || st->status > 3)
    return einval(err, errsz, "step '%.*s': no step status %d", (int)st->id_len, st->id,
                  st->status);
  sbuf payload = SBUF_INIT;
  if (fill && fill(ud, &payload, err, errsz) != 0) {
    sbuf_free(&payload);
    return STORE_EINVAL;
  }
  params p = {.n = 0};
  p_str(&p, run, run_len);
  p_str(&p, st->id, st->id_len);
  p_i64(&p, st->status);
  p_i64(&p, st->attempts);
  p_i64(&p, st->pos);
  p_str(&p, st->branch, st->branch_len);
  p_i64(&p, st->started_us);
  p_i64(&p, st->duration_us);
  if (fill) {
    p_str(&p, payload.data ? payload.data : "", payload.len);
  } else {
    p_null(&p);
  }
  /* a row (pg.h): the steps of a whole group go in one statement; the
   * event-id UPDATE of an emitting step (store_pg.c) comes after it, and a
   * step's record written twice in one group is its later state. A plain
   * insert when this record is likely the step's first, else the upsert:
   * a first attempt's "running" record, or its result after a short run
   * (lua/engine_steps.lua publishes a "running" record of a step that ran
   * 500 ms). A wrong guess (a replay) costs a transaction sent again. */
  const char *upsert = "INSERT INTO sluice.steps (" STEP_INSERT
                       " ON CONFLICT (run_id, step_id) DO UPDATE SET status = EXCLUDED.status, "
                       "attempts = EXCLUDED.attempts, position = EXCLUDED.position, "
                       "branch = EXCLUDED.branch, started_at_us = EXCLUDED.started_at_us, "
                       "duration_us = EXCLUDED.duration_us, payload = EXCLUDED.payload";
  if (st->attempts <= 1 && (st->status == STORE_STEP_RUNNING || st->duration_us < FIRST_RECORD_US)) {
    pg_batch_add_row_new(b->pb, "INSERT INTO sluice.steps (" STEP_INSERT, upsert, p.n, 2, p.v,
                         p.len, p.fmt);
  } else {
    pg_batch_add_row(b->pb, upsert, p.n, 2, p.v, p.len, p.fmt);
  }
  b->ops++;
  sbuf_free(&payload);
  return 0;
}

/* rows: step_id, status, attempts, position, branch, started_at_us,
 * duration_us, payload. The strings are copied into out->buf; their
 * pointers hold offsets until the end (the buffer moves as it grows). */
static int parse_steps(rd *r, const PGresult *res, char *err, size_t errsz) {
  store_steps *o = r->out;
  int n = PQntuples(res);
  size_t first = o->n;
  int rc = 0;
  for (int i = 0; i < n; i++) {
    int status = (int)i64(res, i, 1);
    if (status < 1 || status > 3) {
      snprintf(err, errsz, "PostgreSQL store: run %s has a step record with status %d",
               r->stream, status);
      rc = STORE_EBADSTORE;
      break;
    }
    o->v = sbuf_grow_array(o->v, &o->cap, o->n + 1, sizeof *o->v);
    store_step *st = &o->v[o->n++];
    memset(st, 0, sizeof *st);
    st->status = status;
    st->attempts = (uint32_t)i64(res, i, 2);
    st->pos = (uint32_t)i64(res, i, 3);
    st->started_us = i64(res, i, 5);
    st->duration_us = i64(res, i, 6);
    size_t len;
    const char *v = val(res, i, 0, &len);
    st->id = (const char *)(uintptr_t)o->buf.len;
    st->id_len = len;
    sbuf_add(&o->buf, v, len);
    v = val(res, i, 4, &len);
    st->branch = (const char *)(uintptr_t)o->buf.len;
    st->branch_len = len;
    sbuf_add(&o->buf, v, len);
    st->has_payload = !PQgetisnull(res, i, 7);
    v = val(res, i, 7, &len);
    st->payload = (const char *)(uintptr_t)o->buf.len;
    st->payload_len = st->has_payload ? len : 0;
    sbuf_add(&o->buf, v, st->payload_len);
  }
  for (size_t i = first; i < o->n; i++) {
    store_step *st = &o->v[i];
    st->id = o->buf.data + (uintptr_t)st->id;
    st->branch = o->buf.data + (uintptr_t)st->branch;
    st->payload = o->buf.data + (uintptr_t)st->payload;
  }
  return rc;
}

#define STEP_COLS "step_id, status, attempts, position, branch, started_at_us, duration_us, payload"

static rd *steps_read(pgstore *s, const char *run, size_t run_len, store_steps *out,
                      pgstore_done_fn done, void *cookie) {
  rd *r = pgs_new_rd(s, parse_steps, done, cookie);
  r->out = out;
  /* the run id, for a message */
  r->stream = xalloc(run_len + 1);
  memcpy(r->stream, run, run_len);
  r->streamn = run_len;
  return r;
}

void pgstore_load_steps(pgstore *s, const char *run, size_t run_len, store_steps *out,
                        pgstore_done_fn done, void *cookie) {
  if (has_nul(run, run_len)) return refuse(done, cookie, "a run id holds no NUL byte");
  rd *r = steps_read(s, run, run_len, out, done, cookie);
  params p = {.n = 0};
  p_str(&p, run, run_len);
  pgs_send_read(r, "SELECT " STEP_COLS " FROM sluice.steps WHERE run_id = $1::text "
                   "ORDER BY step_id", &p);
}

void pgstore_get_steps(pgstore *s, const char *run, size_t run_len, const char *const *ids,
                       const size_t *id_lens, size_t n, store_steps *out, pgstore_done_fn done,
                       void *cookie) {
  if (has_nul(run, run_len)) return refuse(done, cookie, "a run id holds no NUL byte");
  for (size_t i = 0; i < n; i++) {
    if (has_nul(ids[i], id_lens[i])) return refuse(done, cookie, "a step id holds no NUL byte");
  }
  /* the ids as an array literal: each one quoted, " and \ escaped */
  sbuf lit = SBUF_INIT;
  sbuf_addc(&lit, '{');
  for (size_t i = 0; i < n; i++) {
    if (i) sbuf_addc(&lit, ',');
    sbuf_addc(&lit, '"');
    for (size_t j = 0; j < id_lens[i]; j++) {
      if (ids[i][j] == '"' || ids[i][j] == '\\') sbuf_addc(&lit, '\\');
      sbuf_addc(&lit, ids[i][j]);
    }
    sbuf_addc(&lit, '"');
  }
  sbuf_addc(&lit, '}');
  rd *r = steps_read(s, run, run_len, out, done, cookie);
  params p = {.n = 0};
  p_str(&p, run, run_len);
  p_cstr(&p, lit.data);
  pgs_send_read(r, "SELECT " STEP_COLS " FROM sluice.steps WHERE run_id = $1::text "
                   "AND step_id = ANY ($2::text[]) ORDER BY step_id", &p);
  sbuf_free(&lit);
}

/* ---- run logs ----------------------------------------------------------- */

int pgstore_put_log(pgstore_batch *b, const char *run, size_t run_len, int64_t us, uint32_t seq,
                    const void *json, size_t len, char *err, size_t errsz) {
  if (bad_run(run, run_len)) return einval(err, errsz, "a log line needs a run id without NUL");
  if (len == 0 || has_nul(json, len))
    return einval(err, errsz, "a log line is JSON text without NUL bytes");
  params p = {.n = 0};
  p_str(&p, run, run_len);
  p_i64(&p, us);
  p_i64(&p, seq);
  p_str(&p, json, len);
  add(b->pb, "INSERT INTO sluice.logs (run_id, at_us, seq, line) VALUES ($1::text, $2::bigint, "
             "$3::bigint, $4::text::json) ON CONFLICT (run_id, at_us, seq) DO UPDATE SET "
             "line = EXCLUDED.line", &p);
  b->ops++;
  return 0;
}

void pgstore_del_log(pgstore_batch *b, const char *run, size_t run_len, int64_t us, uint32_t seq) {
  if (bad_run(run, run_len)) return; /* no such line can exist */
  params p = {.n = 0};
  p_str(&p, run, run_len);
  p_i64(&p, us);
  p_i64(&p, seq);
  add(b->pb, "DELETE FROM sluice.logs WHERE run_id = $1::text AND at_us = $2::bigint AND "
             "seq = $3::bigint", &p);
  b->ops++;
}

/* rows: at_us, seq, line */
static int parse_logs(rd *r, const PGresult *res, char *err, size_t errsz) {
  (void)err;
  (void)errsz;
  store_rows *o = r->out;
  int64_t **ids = r->out2;
  size_t n = (size_t)PQntuples(res);
  if (ids) *ids = xalloc((n ? n : 1) * 2 * sizeof **ids);
  for (size_t i = 0; i < n; i++) {
    size_t len;
    const char *line = val(res, (int)i, 2, &len);
    store_rows_add(o, "", 0, line, len);
    if (ids) {
      (*ids)[2 * i] = i64(res, (int)i, 0);
      (*ids)[2 * i + 1] = i64(res, (int)i, 1);
    }
  }
  return 0;
}

void pgstore_read_logs(pgstore *s, const char *run, size_t run_len, store_rows *rows,
                       int64_t **ids, pgstore_done_fn done, void *cookie) {
  if (ids) *ids = NULL;
  if (has_nul(run, run_len)) return refuse(done, cookie, "a run id holds no NUL byte");
  rd *r = pgs_new_rd(s, parse_logs, done, cookie);
  r->out = rows;
  r->out2 = ids;
  params p = {.n = 0};
  p_str(&p, run, run_len);
  pgs_send_read(r, "SELECT at_us, seq, line FROM sluice.logs WHERE run_id = $1::text "
                   "ORDER BY at_us, seq", &p);
}
