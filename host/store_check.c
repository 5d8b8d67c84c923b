/* store_check.c: `sluice store check` (store_check.h). A state machine on
 * the loop like store_copy.c's: each state issues one read of store_any.h
 * (or, on LMDB, runs one probe of store.h's tools section) and goes on when
 * it completes; pump() loops over states that complete at once. */
#include "store_check.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "store_any.h"

static const int KINDS[] = {STORE_K_NAMESPACES, STORE_K_KEYS,      STORE_K_QUOTAS,
                            STORE_K_SCHEDULES,  STORE_K_CONSUMERS, STORE_K_SENDS,
                            STORE_K_EVENTS,     STORE_K_TRIMS,     STORE_K_RUNS,
                            STORE_K_IDEMPOTENCY};
#define NKINDS (sizeof KINDS / sizeof *KINDS)

/* after the records: LMDB's stream index and run listings, PostgreSQL's
 * SQL checks, then the positions */
enum { S_CENSUS, S_KINDS, S_STREAM_INDEX, S_LISTINGS, S_PG, S_CENSUS_END, S_POSITIONS, S_END };

typedef struct {
  store_any a;
  store_check_opts o;
  store_check_done_fn done;
  void *cookie;
  store_check_result r;
  int state, waiting, pumping;
  size_t ki, row, listing;
  int have_page, sub, stop_kind;
  int indexed; /* LMDB: the runs' listings by field exist (listings_exist) */
  store_any_pages pages; /* the kind being walked: its page */
  store_steps steps;
  store_rows logs;
  int64_t *log_ids;
  int read_status; /* the status of the last read (a page, a run's steps or logs) */
  char read_err[1024];
  store_census end;
  uint64_t max_event, max_send, max_trim;
  int64_t last_ts;
  uint64_t last_ts_seq;
  uint64_t t0, shown;
} check;

static void pump(check *c);

static void fail(check *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(check *c, int status, const char *fmt, ...) {
  if (c->r.status) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->r.err, sizeof c->r.err, fmt, ap);
  va_end(ap);
  c->r.status = status ? status : STORE_EIO;
  c->state = S_END;
}

static void problem(check *c, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(check *c, const char *what, const char *fmt, ...) {
  if (c->r.problems++ >= STORE_CHECK_SHOWN) return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  sbuf_add(&c->r.found, what, strlen(what) + 1);
  sbuf_add(&c->r.found, msg, strlen(msg) + 1);
}

/* a name for messages: its bytes, NUL and control bytes shown escaped */
static const char *shown(const char *p, size_t n, char *out, size_t outsz) {
  size_t k = 0;
  for (size_t i = 0; i < n && k + 5 < outsz; i++) {
    unsigned char ch = (unsigned char)p[i];
    if (ch >= 32 && ch != 127) {
      out[k++] = (char)ch;
    } else {
      k += (size_t)snprintf(out + k, outsz - k, "\\x%02x", ch);
    }
  }
  out[k] = '\0';
  return out;
}

/* a read finished: a failure that a store of damaged records gives
 * (EBADSTORE) is the check's finding, any other ends the check */
static void read_done(void *cookie, int status, const char *err) {
  check *c = cookie;
  c->waiting = 0;
  c->read_status = status;
  snprintf(c->read_err, sizeof c->read_err, "%s", status ? (err ? err : "failed") : "");
  if (status && status != STORE_EBADSTORE) fail(c, status, "%s", c->read_err);
  pump(c);
}

static int decodes(check *c, const char *json, size_t n, const char *what, const char *name) {
  char why[256];
  if (c->o.decode(c->o.ud, json, n, why, sizeof why) == 0) return 1;
  char label[320];
  snprintf(label, sizeof label, "%s %s", what, name);
  problem(c, label, "its record does not decode: %s", why);
  return 0;
}

static int number(const char *p, size_t n, uint64_t *v) {
  char num[32], *end;
  if (n == 0 || n > 20) return 0;
  memcpy(num, p, n);
  num[n] = '\0';
  if (num[0] == '-') return 0;
  *v = strtoull(num, &end, 10);
  return *end == '\0';
}

/* ---- records ---------------------------------------------------------------- */

static size_t page_size(const check *c) { return c->o.page ? c->o.page : 1000; }

static void check_named(check *c, int kind, const store_named_row *row) {
  char name[300];
  shown(row->name, row->name_len, name, sizeof name);
  /* the parts of a quota's or an idempotency key's name, with '/' between */
  for (char *z = strstr(name, "\\x00"); z && kind != STORE_K_TRIMS; z = strstr(z + 1, "\\x00")) {
    *z = '/';
    memmove(z + 1, z + 4, strlen(z + 4) + 1);
  }
  uint64_t v;
  switch (kind) {
  case STORE_K_QUOTAS:
    if (!memchr(row->name, '\0', row->name_len) || !number(row->rec, row->rec_len, &v)) {
      problem(c, "quota counter", "%s is not a namespace and a day with a count", name);
    }
    return;
  case STORE_K_TRIMS:
    if (!number(row->rec, row->rec_len, &v)) {
      problem(c, "trim mark", "the mark of stream key '%s' is not a position", name);
    } else if (v > c->max_trim) {
      c->max_trim = v;
    }
    return;
  case STORE_K_IDEMPOTENCY:
    if (c->a.st) {
      sbuf rec = SBUF_INIT;
      int found = 0;
      char err[512];
      int rc = store_get_run(c->a.st, row->rec, &rec, &found, err, sizeof err);
      sbuf_free(&rec);
      if (rc) return fail(c, rc, "%s", err);
      if (!found) {
        char what[320];
        snprintf(what, sizeof what, "idempotency key %s", name);
        problem(c, what, "names run %s, which has no record", row->rec);
      }
    }
    return;
  case STORE_K_NAMESPACES:
    decodes(c, row->rec, row->rec_len, "namespace", name);
    return;
  case STORE_K_KEYS:
    decodes(c, row->rec, row->rec_len, "API key", name);
    return;
  case STORE_K_SCHEDULES:
    decodes(c, row->rec, row->rec_len, "schedule", name);
    return;
  }
}

static void check_event(check *c, const store_event *e) {
  char id[STORE_EVENT_ID_LEN + 1], what[64];
  store_event_id(e->seq, id);
  snprintf(what, sizeof what, "event %s", id);
  char why[256];
  if (c->o.decode(c->o.ud, e->data, e->datan, why, sizeof why) != 0) {
    problem(c, what, "its data does not decode: %s", why);
  }
  if (e->ts_us < c->last_ts) {
    char prev[STORE_EVENT_ID_LEN + 1];
    store_event_id(c->last_ts_seq, prev);
    problem(c, what, "its time (%" PRId64 " us) is before the time of event %s (%" PRId64 " us)",
            e->ts_us, prev, c->last_ts);
  }
  c->last_ts = e->ts_us;
  c->last_ts_seq = e->seq;
  if (e->seq > c->max_event) c->max_event = e->seq;
  if (!c->a.st) return;
  store_event_probe p;
  char err[512];
  int rc = store_probe_event(c->a.st, e->seq, e->stream, e->streamn, &p, err, sizeof err);
  if (rc) return fail(c, rc, "%s", err);
  if (p.found && p.same_stream && !p.indexed) {
    char key[300];
    problem(c, what, "missing from the stream index of key '%s'",
            shown(e->stream, e->streamn, key, sizeof key));
  }
}

/* the record of run `id` in one snapshot, and its listings (LMDB) */
static void check_run_listed(check *c, const char *id) {
  store_run_probe p;
  char err[512], what[300];
  int rc = store_probe_run(c->a.st, id, -1, NULL, 0, c->o.run_fields, c->o.ud, &p, err, sizeof err);
  if (rc) return fail(c, rc, "%s", err);
  if (!p.found || !p.decoded) return; /* gone meanwhile, or reported from the page */
  snprintf(what, sizeof what, "run %s", id);
  int indexed = c->indexed;
  for (int l = 0; l < STORE_LISTINGS; l++) {
    int by_field = l == STORE_LISTING_NS || l == STORE_LISTING_PIPELINE || l == STORE_LISTING_STATUS;
    if (by_field && !indexed) continue; /* an older store: serve builds these */
    if (l == STORE_LISTING_ACTIVE) {
      /* an entry of a final run is the entry's finding (check_listing_entry) */
      if (!p.listed[l] && !store_run_status_final(p.f.status))
        problem(c, what, "missing from active_runs (status %s)", p.f.status);
    } else if (!p.listed[l]) {
      problem(c, what, "missing from %s (namespace %s, pipeline %s, status %s)",
              store_listing_names[l], p.f.ns, p.f.pipeline, p.f.status);
    }
  }
}

/* PostgreSQL: the columns of run row (pgstore_run_columns) against the
 * fields of its record */
static void check_run_columns(check *c, const char *what, const store_named_row *row,
                              const store_run_fields *f) {
  const char *col[5];
  size_t len[5];
  const char *p = row->extra;
  for (int i = 0; i < 5; i++) { /* the parts are C strings: NUL after each */
    col[i] = p;
    len[i] = strlen(p);
    p += len[i] + 1;
  }
  char diff[600] = "";
  size_t at = 0;
  const char *names[3] = {"namespace", "pipeline", "status"};
  const char *want[3] = {f->ns, f->pipeline, f->status};
  for (int i = 0; i < 3; i++) {
    if (strcmp(col[i], want[i]) == 0) continue;
    at += (size_t)snprintf(diff + at, sizeof diff - at, "%s%s %s (the record says %s)",
                           at ? ", " : "", names[i], col[i], want[i]);
  }
  int active = strcmp(col[3], "t") == 0;
  if (active == store_run_status_final(f->status) && at < sizeof diff) {
    at += (size_t)snprintf(diff + at, sizeof diff - at, "%sactive %s (the record's status is %s)",
                           at ? ", " : "", active ? "true" : "false", f->status);
  }
  if (strtoll(col[4], NULL, 10) != f->created_us && at < sizeof diff) {
    at += (size_t)snprintf(diff + at, sizeof diff - at,
                           "%screated_at_us %s (the record says %" PRId64 ")", at ? ", " : "",
                           col[4], f->created_us);
  }
  if (at) problem(c, what, "its columns, which its listings index, disagree with its record: %s", diff);
}

static void check_run(check *c) {
  const store_named_row *prow = c->a.pg ? &c->pages.named.rows[c->row] : NULL;
  const store_rows *rr = &c->pages.runs;
  const char *json = prow ? prow->rec : rr->buf.data + rr->off[c->row];
  size_t jn = prow ? prow->rec_len : rr->len[c->row];
  const char *rid = prow ? prow->name : rr->buf.data + rr->name_off[c->row];
  size_t ridn = prow ? prow->name_len : rr->name_len[c->row];
  char id[256], what[300];
  shown(rid, ridn, id, sizeof id);
  snprintf(what, sizeof what, "run %s", id);
  if (c->sub == 0) {
    store_run_fields f;
    char why[256];
    if (c->o.run_fields(c->o.ud, json, jn, &f, why, sizeof why) != 0) {
      problem(c, what, "its record does not decode: %s", why);
    } else if (strcmp(f.id, id) != 0) {
      problem(c, what, "its record says it is run %s", f.id);
    } else if (prow) {
      check_run_columns(c, what, prow, &f);
    } else {
      check_run_listed(c, id);
      if (c->r.status) return;
    }
    c->sub = 1;
    c->waiting = 1;
    store_steps_free(&c->steps);
    return store_any_steps(&c->a, rid, ridn, &c->steps, read_done, c);
  }
  int failed = c->read_status;
  c->read_status = 0;
  if (c->sub == 1) {
    if (failed) problem(c, what, "its steps do not read: %s", c->read_err);
    for (size_t i = 0; !failed && i < c->steps.n; i++) {
      const store_step *st = &c->steps.v[i];
      char why[256], sid[160];
      if (st->has_payload && c->o.decode(c->o.ud, st->payload, st->payload_len, why, sizeof why)) {
        problem(c, what, "the %s of step '%s' does not decode: %s",
                st->status == STORE_STEP_FAILED ? "error" : "result",
                shown(st->id, st->id_len, sid, sizeof sid), why);
      }
    }
    c->r.checked[STORE_K_STEPS] += (int64_t)c->steps.n;
    c->sub = 2;
    c->waiting = 1;
    store_rows_free(&c->logs);
    free(c->log_ids);
    c->log_ids = NULL;
    return store_any_logs(&c->a, rid, ridn, &c->logs, &c->log_ids, read_done, c);
  }
  if (failed) problem(c, what, "its log lines do not read: %s", c->read_err);
  for (size_t i = 0; !failed && i < c->logs.n; i++) {
    char why[256];
    if (c->o.decode(c->o.ud, c->logs.buf.data + c->logs.off[i], c->logs.len[i], why, sizeof why)) {
      problem(c, what, "log line %zu does not decode: %s", i + 1, why);
    }
  }
  c->r.checked[STORE_K_LOGS] += (int64_t)c->logs.n;
  c->sub = 0;
  c->row++;
  c->r.checked[STORE_K_RUNS]++;
}

static void check_row(check *c, int kind) {
  if (kind == STORE_K_RUNS) return check_run(c);
  char name[300];
  switch (kind) {
  case STORE_K_CONSUMERS: {
    const store_row *row = &c->pages.blobs.rows[c->row];
    decodes(c, row->json, row->jsonn, "consumer", shown(row->name, row->namen, name, sizeof name));
    break;
  }
  case STORE_K_SENDS: {
    const store_row *row = &c->pages.blobs.rows[c->row];
    store_event_id(row->seq, name);
    decodes(c, row->json, row->jsonn, "send", name);
    if (row->seq > c->max_send) c->max_send = row->seq;
    break;
  }
  case STORE_K_EVENTS:
    check_event(c, &c->pages.ev.rows[c->row]);
    break;
  default: {
    const store_named_row *row = &c->pages.named.rows[c->row];
    check_named(c, kind, row);
    if (kind == STORE_K_KEYS && row->extra) c->r.checked[STORE_K_KEY_USES]++;
  }
  }
  c->r.checked[kind]++;
  c->row++;
}

static void kinds_step(check *c) {
  if (c->ki >= NKINDS) {
    c->state = c->a.st ? S_STREAM_INDEX : S_PG;
    c->have_page = 0;
    return;
  }
  int kind = KINDS[c->ki];
  if (!c->have_page) {
    c->have_page = 1;
    c->row = 0;
    c->sub = 0;
    c->waiting = 1;
    return store_any_pages_read(&c->a, &c->pages, page_size(c), read_done, c);
  }
  if (c->read_status) {
    /* a page that does not read (a damaged record): found, and the walk of
     * this kind cannot go past it */
    problem(c, store_kind_names[kind], "%s; the check of %s stops there", c->read_err,
            store_kind_names[kind]);
    c->read_status = 0;
    c->row = store_any_pages_rows(&c->pages);
    c->stop_kind = 1;
  }
  if (c->row < store_any_pages_rows(&c->pages)) return check_row(c, kind);
  c->have_page = 0;
  if (c->stop_kind || !store_any_pages_next(&c->pages, page_size(c))) {
    c->stop_kind = 0;
    c->ki++;
    store_any_pages_start(&c->pages, c->ki < NKINDS ? KINDS[c->ki] : -1);
  }
}

/* ---- LMDB's indexes -------------------------------------------------------- */

static int read_index_page(check *c, int listing) {
  char err[512];
  const sbuf *after = &c->pages.after;
  int rc = listing < 0 ? store_stream_index_page(c->a.st, after->data, after->len, page_size(c),
                                                 &c->pages.named, err, sizeof err)
                       : store_run_listing_page(c->a.st, listing, after->data, after->len,
                                                page_size(c), &c->pages.named, err, sizeof err);
  if (rc) fail(c, rc, "%s", err);
  return rc;
}

/* an entry of the stream index names an event of its key */
static void check_stream_entry(check *c, const store_named_row *row) {
  const char *stream;
  size_t sn;
  uint64_t seq;
  char key[300], what[400], hex[600];
  if (store_stream_entry_parse(row->name, row->name_len, &stream, &sn, &seq) != 0) {
    problem(c, "stream_index entry", "malformed: %s", shown(row->name, row->name_len, hex, sizeof hex));
    return;
  }
  char id[STORE_EVENT_ID_LEN + 1];
  store_event_id(seq, id);
  snprintf(what, sizeof what, "stream_index entry %s@%s", shown(stream, sn, key, sizeof key), id);
  store_event_probe p;
  char err[512];
  int rc = store_probe_event(c->a.st, seq, stream, sn, &p, err, sizeof err);
  if (rc) return fail(c, rc, "%s", err);
  if (!p.indexed) return; /* trimmed meanwhile */
  if (!p.found) {
    problem(c, what, "names event %s, which is not in the log", id);
  } else if (!p.same_stream) {
    problem(c, what, "names event %s, which is an event of another stream key", id);
  }
}

static int same(const char *a, const char *b) { return strcmp(a, b) == 0; }

/* an entry of a run listing names a run whose record says what it says */
static void check_listing_entry(check *c, int listing, const store_named_row *row) {
  const char *lname = store_listing_names[listing];
  store_run_fields e;
  char what[900], hex[600];
  if (store_run_entry_parse(listing, row->name, row->name_len, &e) != 0) {
    snprintf(what, sizeof what, "%s entry", lname);
    problem(c, what, "malformed: %s", shown(row->name, row->name_len, hex, sizeof hex));
    return;
  }
  snprintf(what, sizeof what, "%s entry%s%s%s%s%s%s of run %s", lname, e.ns[0] ? " " : "", e.ns,
           e.pipeline[0] ? "/" : "", e.pipeline, e.status[0] ? "/" : "", e.status, e.id);
  store_run_probe p;
  char err[512];
  int rc = store_probe_run(c->a.st, e.id, listing, row->name, row->name_len, c->o.run_fields,
                           c->o.ud, &p, err, sizeof err);
  if (rc) return fail(c, rc, "%s", err);
  if (!p.entry) return; /* moved meanwhile */
  if (!p.found) return problem(c, what, "names run %s, which has no record", e.id);
  if (!p.decoded) return; /* reported with the run */
  char diff[400] = "";
  size_t at = 0;
#define DIFF(cond, fmt, ...)                                                                 \
  if (cond) at += (size_t)snprintf(diff + at, sizeof diff - at, "%s" fmt, at ? ", " : "", __VA_ARGS__)
  DIFF(listing != STORE_LISTING_ACTIVE && e.created_us != p.f.created_us,
       "created_us %" PRId64 " (the entry says %" PRId64 ")", p.f.created_us, e.created_us);
  DIFF(e.ns[0] && !same(e.ns, p.f.ns), "namespace %s", p.f.ns);
  DIFF(e.pipeline[0] && !same(e.pipeline, p.f.pipeline), "pipeline %s", p.f.pipeline);
  DIFF(e.status[0] && !same(e.status, p.f.status), "status %s", p.f.status);
  DIFF(listing == STORE_LISTING_ACTIVE && store_run_status_final(p.f.status), "status %s (final)",
       p.f.status);
#undef DIFF
  if (at) problem(c, what, "the run's record says %s", diff);
}

static void index_step(check *c) {
  int listing = c->state == S_STREAM_INDEX ? -1 : (int)c->listing;
  if (listing >= 0 && (listing == STORE_LISTING_NS || listing == STORE_LISTING_PIPELINE ||
                       listing == STORE_LISTING_STATUS) &&
      !c->indexed) {
    c->have_page = 0;
    c->pages.named.n = 0;
    c->row = 0;
  } else if (!c->have_page) {
    if (read_index_page(c, listing)) return;
    c->have_page = 1;
    c->row = 0;
  }
  if (c->row < c->pages.named.n) {
    const store_named_row *row = &c->pages.named.rows[c->row++];
    if (listing < 0) {
      check_stream_entry(c, row);
    } else {
      check_listing_entry(c, listing, row);
    }
    return;
  }
  int more = c->have_page && c->pages.named.n >= page_size(c);
  c->have_page = 0;
  if (more) {
    sbuf_reset(&c->pages.after);
    const store_named_row *last = &c->pages.named.rows[c->pages.named.n - 1];
    sbuf_add(&c->pages.after, last->name, last->name_len);
    return;
  }
  sbuf_reset(&c->pages.after);
  if (listing < 0) {
    c->state = S_LISTINGS;
    c->listing = 0;
  } else if (++c->listing >= STORE_LISTINGS) {
    c->state = S_CENSUS_END;
  }
}

/* ---- the end ------------------------------------------------------------------ */

static void pg_done(void *cookie, int status, const char *err) {
  check *c = cookie;
  c->waiting = 0;
  if (status) {
    fail(c, status, "%s", err ? err : "the checks of the PostgreSQL store failed");
  } else {
    const store_named_rows *found = &c->pages.named;
    for (size_t i = 0; i < found->n; i++) problem(c, found->rows[i].name, "%s", found->rows[i].rec);
  }
  pump(c);
}

static void positions(check *c) {
  const store_census *s = &c->end;
  if (c->max_event > s->events_last) {
    problem(c, "events", "an event is at position %" PRIu64 ", past the last position taken (%" PRIu64 ")",
            c->max_event, s->events_last);
  }
  if (c->max_trim > s->events_last) {
    problem(c, "trim marks", "a mark is at position %" PRIu64 ", past the last event position taken (%" PRIu64 ")",
            c->max_trim, s->events_last);
  }
  if (c->max_send > s->sends_last) {
    problem(c, "sends", "a send is at position %" PRIu64 ", past the last send position (%" PRIu64 ")",
            c->max_send, s->sends_last);
  }
  if (s->dispatched > s->sends_last) {
    problem(c, "dispatch cursor", "it is at %" PRIu64 ", past the last send position (%" PRIu64 ")",
            s->dispatched, s->sends_last);
  }
}

static void show_progress(check *c) {
  if (!c->o.progress) return;
  uint64_t now = uv_hrtime();
  if (now - c->t0 < 1000000000ull || now - c->shown < 1000000000ull) return;
  c->shown = now;
  int64_t total = 0, done = 0;
  for (int k = 0; k < STORE_KINDS; k++) {
    total += c->r.census.n[k];
    done += c->r.checked[k];
  }
  fprintf(c->o.progress, "sluice: store check: %" PRId64 " of %" PRId64 " records, %zu problems, %.0f s\n",
          done, total, c->r.problems, (double)(now - c->t0) / 1e9);
  fflush(c->o.progress);
}

static void step(check *c) {
  show_progress(c);
  if (c->read_status && c->state == S_KINDS && c->ki == 0 && !c->have_page && c->a.pg) {
    /* on PostgreSQL that is the schema (or the connection), not a record */
    return fail(c, c->read_status, "%s", c->read_err);
  }
  if (c->read_status && (c->state == S_KINDS || c->state == S_POSITIONS) && !c->have_page) {
    /* the census before or after: a damaged record it reads (the newest
     * event, say) is a finding; the walk goes on (and names it again) */
    problem(c, "census", "%s", c->read_err);
    c->read_status = 0;
    if (c->state == S_POSITIONS) {
      c->state = S_END;
      return;
    }
  }
  switch (c->state) {
  case S_CENSUS:
    c->state = S_KINDS;
    c->waiting = 1;
    return store_any_census(&c->a, &c->r.census, read_done, c);
  case S_KINDS:
    return kinds_step(c);
  case S_STREAM_INDEX:
  case S_LISTINGS:
    return index_step(c);
  case S_PG:
    c->state = S_CENSUS_END;
    if (!c->a.pg) return;
    c->waiting = 1;
    return pgstore_check(c->a.pg, &c->pages.named, pg_done, c);
  case S_CENSUS_END:
    c->state = S_POSITIONS;
    c->waiting = 1;
    return store_any_census(&c->a, &c->end, read_done, c);
  case S_POSITIONS:
    c->state = S_END;
    return positions(c);
  }
}

static void finish(check *c) {
  store_any_close(&c->a);
  c->done(c->cookie, &c->r);
  sbuf_free(&c->r.found);
  store_any_pages_free(&c->pages);
  store_steps_free(&c->steps);
  store_rows_free(&c->logs);
  free(c->log_ids);
  free(c);
}

static void pump(check *c) {
  if (c->pumping) return;
  c->pumping = 1;
  while (!c->waiting && c->state != S_END) step(c);
  c->pumping = 0;
  if (c->state == S_END && !c->waiting) finish(c);
}

/* Whether the runs' listings by field are there to check: a store marked
 * so, or whose runs were written with them (every binary since the
 * listings writes them with each new run; serve marks the store once it has
 * built them for the runs of an older one). */
static int listings_exist(store *s) {
  if (store_runs_indexed(s)) return 1;
  store_named_rows one = STORE_NAMED_ROWS_INIT;
  char err[256];
  int rc = store_run_listing_page(s, STORE_LISTING_NS, NULL, 0, 1, &one, err, sizeof err);
  int any = rc == 0 && one.n > 0;
  store_named_rows_free(&one);
  return any;
}

int store_check(uv_loop_t *loop, const char *where, const store_check_opts *o,
                store_check_done_fn done, void *cookie, char *err, size_t errsz) {
  check *c = calloc(1, sizeof *c);
  if (!c) abort();
  int rc = store_any_open(&c->a, loop, where, 0, err, errsz);
  if (rc) {
    free(c);
    return rc;
  }
  c->o = *o;
  c->done = done;
  c->cookie = cookie;
  c->r.found = (sbuf)SBUF_INIT;
  store_any_pages_init(&c->pages);
  store_any_pages_start(&c->pages, KINDS[0]);
  c->pages.run_columns = c->a.pg != NULL; /* with the columns its listings index */
  c->steps = (store_steps)STORE_STEPS_INIT;
  c->logs = (store_rows)STORE_ROWS_INIT;
  c->last_ts = INT64_MIN;
  if (c->a.st) c->indexed = listings_exist(c->a.st);
  c->t0 = uv_hrtime();
  c->state = S_CENSUS;
  pump(c);
  return 0;
}
