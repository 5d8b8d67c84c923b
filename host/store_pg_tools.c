/* store_pg_tools.c: store_pg.h's section for store copy and store check
 * (store.h's tools section on PostgreSQL): the census in one statement,
 * the listings of quota counters, trim marks, idempotency keys and run
 * records, the writes of a copy into an empty store (events and sends at
 * their positions, the counters past them, a quota's count, a trim mark),
 * and the SQL checks of what can disagree in these tables. A quota's count
 * and a trim mark are put in store_pg.c, beside the statements they
 * share. */
#include "store_pg_int.h"


static int parse_census(rd *r, const PGresult *res, char *err, size_t errsz) {
  store_census *o = r->out;
  memset(o, 0, sizeof *o);
  if (PQntuples(res) != 1 || PQnfields(res) != STORE_KINDS + 4) {
    snprintf(err, errsz, "PostgreSQL store %s: the census returned no row", r->s->name);
    return STORE_EIO;
  }
  for (int k = 0; k < STORE_KINDS; k++) o->n[k] = i64(res, 0, k);
  o->events_last = u64(res, 0, STORE_KINDS);
  o->events_ts = i64(res, 0, STORE_KINDS + 1);
  o->sends_last = u64(res, 0, STORE_KINDS + 2);
  o->dispatched = u64(res, 0, STORE_KINDS + 3);
  return 0;
}

void pgstore_census(pgstore *s, store_census *out, pgstore_done_fn done, void *cookie) {
  rd *r = pgs_new_rd(s, parse_census, done, cookie);
  r->out = out;
  /* the columns in store.h's STORE_K_* order, then the positions */
  pgs_send_read(r, "SELECT (SELECT count(*) FROM sluice.runs), (SELECT count(*) FROM sluice.steps), "
               "(SELECT count(*) FROM sluice.logs), (SELECT count(*) FROM sluice.idempotency), "
               "(SELECT count(*) FROM sluice.events), (SELECT count(*) FROM sluice.stream_trims), "
               "(SELECT count(*) FROM sluice.sends), (SELECT count(*) FROM sluice.consumers), "
               "(SELECT count(*) FROM sluice.schedules), (SELECT count(*) FROM sluice.api_keys), "
               "(SELECT count(*) FROM sluice.api_keys WHERE last_used IS NOT NULL), "
               "(SELECT count(*) FROM sluice.namespaces), (SELECT count(*) FROM sluice.quotas), "
               "(SELECT value FROM sluice.counters WHERE name = 'events'), "
               "(SELECT ts_us FROM sluice.events ORDER BY seq DESC LIMIT 1), "
               "(SELECT value FROM sluice.counters WHERE name = 'sends'), "
               "(SELECT after FROM sluice.cursors WHERE name = 'dispatch')", NULL);
}

/* rows: the name's parts (joined with NUL bytes, as store.h names these
 * rows), then the record */
static int parse_joined(rd *r, const PGresult *res, char *err, size_t errsz) {
  (void)err;
  (void)errsz;
  store_named_rows *o = r->out;
  int n = PQntuples(res), cols = PQnfields(res);
  o->n = 0;
  sbuf_reset(&o->buf);
  sbuf name = SBUF_INIT;
  for (int i = 0; i < n; i++) {
    sbuf_reset(&name);
    for (int c = 0; c + 1 < cols; c++) {
      size_t len;
      const char *v = val(res, i, c, &len);
      if (c) sbuf_addc(&name, '\0');
      sbuf_add(&name, v, len);
    }
    size_t rn;
    const char *rec = val(res, i, cols - 1, &rn);
    o->rows = sbuf_grow_array(o->rows, &o->cap, o->n + 1, sizeof *o->rows);
    store_named_row *row = &o->rows[o->n++];
    row->name = (const char *)(uintptr_t)keep(&o->buf.data, &o->buf.len, &o->buf.cap, name.data,
                                              name.len);
    o->buf.len++;
    row->name_len = name.len;
    row->rec = (const char *)(uintptr_t)keep(&o->buf.data, &o->buf.len, &o->buf.cap, rec, rn);
    o->buf.len++;
    row->rec_len = rn;
    row->extra = NULL;
    row->extra_len = 0;
  }
  sbuf_free(&name);
  for (size_t i = 0; i < o->n; i++) {
    o->rows[i].name = o->buf.data + (uintptr_t)o->rows[i].name;
    o->rows[i].rec = o->buf.data + (uintptr_t)o->rows[i].rec;
  }
  return 0;
}

/* splits the name of a row of parse_joined into its parts (at most max):
 * their number */
static int split_name(const char *name, size_t n, const char **part, size_t *len, int max) {
  int k = 0;
  while (k < max) {
    const char *z = k + 1 < max ? memchr(name, '\0', n) : NULL;
    part[k] = name;
    len[k] = z ? (size_t)(z - name) : n;
    k++;
    if (!z) break;
    n -= len[k - 1] + 1;
    name = z + 1;
  }
  return k;
}

static void list_joined(pgstore *s, const char *first, const char *paged, int parts,
                        const char *after, size_t alen, size_t limit, store_named_rows *out,
                        pgstore_done_fn done, void *cookie) {
  out->n = 0;
  if (limit == 0) return refuse(done, cookie, "a listing's limit must be positive");
  params p = {.n = 0};
  if (alen) {
    const char *part[3];
    size_t len[3];
    if (split_name(after, alen, part, len, parts) != parts) {
      return refuse(done, cookie, "a listing's after is not the name of one of its rows");
    }
    for (int i = 0; i < parts; i++) {
      if (has_nul(part[i], len[i])) return refuse(done, cookie, "a name holds no NUL byte");
      p_str(&p, part[i], len[i]);
    }
  }
  p_i64(&p, (int64_t)limit);
  rd *r = pgs_new_rd(s, parse_joined, done, cookie);
  r->out = out;
  pgs_send_read(r, alen ? paged : first, &p);
}

void pgstore_list_quotas(pgstore *s, const char *after, size_t alen, size_t limit,
                         store_named_rows *out, pgstore_done_fn done, void *cookie) {
  list_joined(s, "SELECT namespace, to_char(day, 'YYYY-MM-DD'), runs FROM sluice.quotas "
                 "ORDER BY namespace, day LIMIT $1::bigint",
              "SELECT namespace, to_char(day, 'YYYY-MM-DD'), runs FROM sluice.quotas "
              "WHERE (namespace, day) > ($1::text, $2::text::date) ORDER BY namespace, day "
              "LIMIT $3::bigint",
              2, after, alen, limit, out, done, cookie);
}

void pgstore_list_trim_marks(pgstore *s, const char *after, size_t alen, size_t limit,
                             store_named_rows *out, pgstore_done_fn done, void *cookie) {
  list_joined(s, "SELECT stream, horizon FROM sluice.stream_trims ORDER BY stream LIMIT $1::bigint",
              "SELECT stream, horizon FROM sluice.stream_trims WHERE stream > $1::text "
              "ORDER BY stream LIMIT $2::bigint",
              1, after, alen, limit, out, done, cookie);
}

void pgstore_list_idempotency(pgstore *s, const char *after, size_t alen, size_t limit,
                              store_named_rows *out, pgstore_done_fn done, void *cookie) {
  list_joined(s, "SELECT namespace, pipeline, key, run_id FROM sluice.idempotency "
                 "ORDER BY namespace, pipeline, key LIMIT $1::bigint",
              "SELECT namespace, pipeline, key, run_id FROM sluice.idempotency "
              "WHERE (namespace, pipeline, key) > ($1::text, $2::text, $3::text) "
              "ORDER BY namespace, pipeline, key LIMIT $4::bigint",
              3, after, alen, limit, out, done, cookie);
}

/* Array parameters in text form ({"a","b\\"c"} and {1,2}): a page of rows
 * in one INSERT ... SELECT FROM unnest(...), which PostgreSQL parses once
 * (a statement per row spends most of a copy parsing). */
static void arr_text(sbuf *a, const char *s, size_t n) {
  sbuf_addc(a, a->len ? ',' : '{');
  sbuf_addc(a, '"');
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '"' || s[i] == '\\') sbuf_addc(a, '\\');
    sbuf_addc(a, s[i]);
  }
  sbuf_addc(a, '"');
}
static void arr_i64(sbuf *a, int64_t v) {
  sbuf_addc(a, a->len ? ',' : '{');
  sbuf_printf(a, "%" PRId64, v);
}
static void arr_end(sbuf *a) {
  if (!a->len) sbuf_addc(a, '{');
  sbuf_addc(a, '}');
}
static void p_arrays(params *p, sbuf *arrs, int n) {
  for (int i = 0; i < n; i++) {
    arr_end(&arrs[i]);
    p->v[p->n] = arrs[i].data;
    p->len[p->n] = 0;
    p->fmt[p->n++] = 0;
  }
}

int pgstore_put_events_at(pgstore_batch *b, const store_event *ev, size_t n, char *err,
                          size_t errsz) {
  for (size_t i = 0; i < n; i++) {
    int st = store_event_check(ev[i].type, ev[i].typen, ev[i].stream, ev[i].streamn, err, errsz);
    if (st) return st;
  }
  if (n == 0) return 0;
  sbuf a[5] = {SBUF_INIT, SBUF_INIT, SBUF_INIT, SBUF_INIT, SBUF_INIT};
  for (size_t i = 0; i < n; i++) {
    arr_i64(&a[0], (int64_t)ev[i].seq);
    arr_text(&a[1], ev[i].stream, ev[i].streamn);
    arr_text(&a[2], ev[i].type, ev[i].typen);
    arr_i64(&a[3], ev[i].ts_us);
    arr_text(&a[4], ev[i].data, ev[i].datan);
  }
  params p = {.n = 0};
  p_arrays(&p, a, 5);
  add(b->pb, "INSERT INTO sluice.events (seq, stream, type, ts_us, data) SELECT s, st, t, ts, "
             "d::json FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], "
             "$5::text[]) AS u(s, st, t, ts, d)", &p);
  for (int i = 0; i < 5; i++) sbuf_free(&a[i]);
  b->ops++;
  return 0;
}

int pgstore_put_sends_at(pgstore_batch *b, const store_row *rows, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (rows[i].seq == 0) return STORE_EINVAL;
  if (n == 0) return 0;
  sbuf a[2] = {SBUF_INIT, SBUF_INIT};
  for (size_t i = 0; i < n; i++) {
    arr_i64(&a[0], (int64_t)rows[i].seq);
    arr_text(&a[1], rows[i].json, rows[i].jsonn);
  }
  params p = {.n = 0};
  p_arrays(&p, a, 2);
  add(b->pb, "INSERT INTO sluice.sends (seq, record) SELECT s, r::json FROM "
             "unnest($1::bigint[], $2::text[]) AS u(s, r)", &p);
  for (int i = 0; i < 2; i++) sbuf_free(&a[i]);
  b->ops++;
  return 0;
}

void pgstore_set_counters(pgstore_batch *b, uint64_t events, int64_t events_ts, uint64_t sends) {
  params p = {.n = 0};
  p_i64(&p, (int64_t)events);
  p_i64(&p, events_ts);
  p_i64(&p, (int64_t)sends);
  add(b->pb, "UPDATE sluice.counters SET value = GREATEST(value, CASE name WHEN 'events' THEN "
             "$1::bigint WHEN 'events_ts' THEN $2::bigint ELSE $3::bigint END) "
             "WHERE name IN ('events', 'events_ts', 'sends')", &p);
  b->ops++;
}

/* One statement: each kind of problem a SELECT of (what, message), at most
 * 100 rows each. What the caller checks on both backends is not here: the
 * positions stored against the counters (the census), and run columns
 * against their records (pgstore_run_columns: PostgreSQL's JSON operators
 * refuse a whole record holding "\u0000", which the codec writes for a NUL
 * byte, so the codec reads the records). */
static const char CHECK_SQL[] =
    "(SELECT 'counter ' || n.name, 'missing (sluice store migrate creates it)' "
    "FROM (VALUES ('events'), ('events_ts'), ('sends')) n(name) "
    "WHERE NOT EXISTS (SELECT 1 FROM sluice.counters c WHERE c.name = n.name)) "
    "UNION ALL (SELECT 'counter events_ts', 'is ' || c.value || ', before the newest event time "
    "stored, ' || m.ts FROM sluice.counters c, (SELECT max(ts_us) ts FROM sluice.events) m "
    "WHERE c.name = 'events_ts' AND c.value < m.ts) "
    "UNION ALL (SELECT 'steps of run ' || s.run_id, 'the run has no record' FROM "
    "(SELECT DISTINCT run_id FROM sluice.steps x WHERE NOT EXISTS "
    "(SELECT 1 FROM sluice.runs r WHERE r.id = x.run_id)) s ORDER BY 1 LIMIT 100) "
    "UNION ALL (SELECT 'logs of run ' || s.run_id, 'the run has no record' FROM "
    "(SELECT DISTINCT run_id FROM sluice.logs x WHERE NOT EXISTS "
    "(SELECT 1 FROM sluice.runs r WHERE r.id = x.run_id)) s ORDER BY 1 LIMIT 100) "
    "UNION ALL (SELECT 'idempotency key ' || i.namespace || '/' || i.pipeline || '/' || i.key, "
    "'names run ' || i.run_id || ', which has no record' FROM sluice.idempotency i WHERE NOT "
    "EXISTS (SELECT 1 FROM sluice.runs r WHERE r.id = i.run_id) ORDER BY 1 LIMIT 100)";

void pgstore_check(pgstore *s, store_named_rows *out, pgstore_done_fn done, void *cookie) {
  rd *r = pgs_new_rd(s, parse_joined, done, cookie);
  r->out = out;
  pgs_send_read(r, CHECK_SQL, NULL);
}

/* rows: id, record */
static int parse_run_records(rd *r, const PGresult *res, char *err, size_t errsz) {
  (void)err;
  (void)errsz;
  int n = PQntuples(res);
  for (int i = 0; i < n; i++) {
    size_t idn, jn;
    const char *id = val(res, i, 0, &idn), *json = val(res, i, 1, &jn);
    store_rows_add(r->out, id, idn, json, jn);
  }
  return 0;
}

void pgstore_run_records(pgstore *s, const char *after, size_t max, store_rows *rows,
                         pgstore_done_fn done, void *cookie) {
  if (max == 0) return refuse(done, cookie, "reading runs: the limit must be positive");
  if (after && has_nul(after, strlen(after))) return refuse(done, cookie, "a run id holds no NUL");
  rd *r = pgs_new_rd(s, parse_run_records, done, cookie);
  r->out = rows;
  params p = {.n = 0};
  p_str(&p, after ? after : "", after ? strlen(after) : 0);
  p_i64(&p, (int64_t)max);
  pgs_send_read(r, "SELECT id, record FROM sluice.runs WHERE id > $1::text ORDER BY id "
                   "LIMIT $2::bigint", &p);
}

/* rows: id, record, namespace, pipeline, status, active, created_at_us */
static int parse_run_columns(rd *r, const PGresult *res, char *err, size_t errsz) {
  (void)err;
  (void)errsz;
  store_named_rows *o = r->out;
  int n = PQntuples(res);
  o->n = 0;
  sbuf_reset(&o->buf);
  sbuf cols = SBUF_INIT;
  for (int i = 0; i < n; i++) {
    sbuf_reset(&cols);
    for (int c = 2; c < 7; c++) {
      size_t len;
      const char *v = val(res, i, c, &len);
      if (c > 2) sbuf_addc(&cols, '\0');
      sbuf_add(&cols, v, len);
    }
    size_t idn, jn;
    const char *id = val(res, i, 0, &idn), *json = val(res, i, 1, &jn);
    o->rows = sbuf_grow_array(o->rows, &o->cap, o->n + 1, sizeof *o->rows);
    store_named_row *row = &o->rows[o->n++];
    row->name = (const char *)(uintptr_t)keep(&o->buf.data, &o->buf.len, &o->buf.cap, id, idn);
    o->buf.len++;
    row->name_len = idn;
    row->rec = (const char *)(uintptr_t)keep(&o->buf.data, &o->buf.len, &o->buf.cap, json, jn);
    o->buf.len++;
    row->rec_len = jn;
    row->extra = (const char *)(uintptr_t)keep(&o->buf.data, &o->buf.len, &o->buf.cap, cols.data,
                                               cols.len);
    o->buf.len++;
    row->extra_len = cols.len;
  }
  sbuf_free(&cols);
  for (size_t i = 0; i < o->n; i++) {
    o->rows[i].name = o->buf.data + (uintptr_t)o->rows[i].name;
    o->rows[i].rec = o->buf.data + (uintptr_t)o->rows[i].rec;
    o->rows[i].extra = o->buf.data + (uintptr_t)o->rows[i].extra;
  }
  return 0;
}

void pgstore_run_columns(pgstore *s, const char *after, size_t max, store_named_rows *out,
                         pgstore_done_fn done, void *cookie) {
  out->n = 0;
  if (max == 0) return refuse(done, cookie, "reading runs: the limit must be positive");
  if (after && has_nul(after, strlen(after))) return refuse(done, cookie, "a run id holds no NUL");
  rd *r = pgs_new_rd(s, parse_run_columns, done, cookie);
  r->out = out;
  params p = {.n = 0};
  p_str(&p, after ? after : "", after ? strlen(after) : 0);
  p_i64(&p, (int64_t)max);
  pgs_send_read(r, "SELECT id, record, namespace, pipeline, status, "
                   "CASE WHEN active THEN 't' ELSE 'f' END, created_at_us FROM sluice.runs "
                   "WHERE id > $1::text ORDER BY id LIMIT $2::bigint", &p);
}
