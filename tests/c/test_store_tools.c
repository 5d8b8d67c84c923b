/* test_store_tools.c: unit tests of store.h's tools section on a real LMDB
 * store (what store copy and store check read and write): the census, the
 * pages of quota counters, trim marks and idempotency keys (paged by the
 * name of the last row), a quota's count and a trim mark put as they were,
 * the positions taken past the newest event, and the probes of a run's
 * listings and of an event's index entry, which find an entry removed or
 * planted. */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "store.h"
#include "store_lmdb.h"
#include "unit.h"
#include "unit_writer.h"
#include "writer.h"


static int fill_str(void *ud, sbuf *out, char *err, size_t errsz) {
  (void)err, (void)errsz;
  sbuf_adds(out, ud);
  return 0;
}

/* the fields of the records below: "id pipeline ns status created" */
static int fields(void *ud, const char *json, size_t n, store_run_fields *f, char *err,
                  size_t errsz) {
  (void)ud;
  char buf[512];
  snprintf(buf, sizeof buf, "%.*s", (int)n, json);
  long long created;
  memset(f, 0, sizeof *f);
  if (sscanf(buf, "%200s %200s %200s %200s %lld", f->id, f->pipeline, f->ns, f->status, &created) != 5) {
    snprintf(err, errsz, "not a test record");
    return -1;
  }
  f->created_us = created;
  return 0;
}

static store *open_rw(const char *dir) {
  store *s;
  char err[512];
  if (store_open(&s, dir, 0, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return NULL;
  }
  if (start(s)) return NULL;
  return s;
}

static void close_rw(store *s) {
  stop();
  store_close(s);
}

/* the names of a page, joined by spaces (NUL bytes shown as '/') */
static const char *names(const store_named_rows *r) {
  static char out[512];
  size_t at = 0;
  out[0] = '\0';
  for (size_t i = 0; i < r->n && at < sizeof out - 1; i++) {
    if (i) out[at++] = ' ';
    for (size_t j = 0; j < r->rows[i].name_len && at < sizeof out - 1; j++)
      out[at++] = r->rows[i].name[j] ? r->rows[i].name[j] : '/';
    out[at] = '\0';
  }
  return out;
}

static void test_pages_and_census(void) {
  store *s = open_rw(path("pages"));
  CHECK(s != NULL);
  char err[512];
  store_batch *b = store_batch_new();
  CHECK(store_put_quota(b, "acme", 4, "2026-12-01", 10, 7) == 0);
  CHECK(store_put_quota(b, "acme", 4, "2026-12-02", 10, 1) == 0);
  CHECK(store_put_quota(b, "beta", 4, "2026-12-01", 10, 3) == 0);
  CHECK(store_put_quota(b, "acme", 4, "12/01/2026", 10, 1) == STORE_EINVAL);
  CHECK(store_put_trim_mark(b, "k:1", 3, 5) == 0);
  CHECK(store_put_trim_mark(b, "k:2", 3, 9) == 0);
  CHECK(store_put_idempotency(b, "default", "etl", "a", 1, "r1", err, sizeof err) == 0);
  CHECK(store_put_idempotency(b, "default", "etl", "b\0c", 3, "r2", err, sizeof err) == 0);
  CHECK(store_append_event(b, 3, 100, "t", 1, "k:3", 3, "1", 1, err, sizeof err) == 0);
  store_set_events_taken(b, 12);
  CHECK(store_add_key(b, "key1", 4, "{}", 2) == 0);
  CHECK(store_touch_key(b, "key1", 4, "now", 3) == 0);
  CHECK(commit(b) == 0);

  store_named_rows r = STORE_NAMED_ROWS_INIT;
  CHECK(store_list_quotas(s, NULL, 0, 2, &r, err, sizeof err) == 0);
  CHECK_STR(names(&r), "acme/2026-12-01 acme/2026-12-02");
  CHECK(r.n == 2 && r.rows[0].rec_len == 1 && r.rows[0].rec[0] == '7');
  CHECK(store_list_quotas(s, r.rows[1].name, r.rows[1].name_len, 2, &r, err, sizeof err) == 0);
  CHECK_STR(names(&r), "beta/2026-12-01");
  int64_t used = 0;
  CHECK(store_quota_used(s, "acme", 4, "2026-12-01", 10, &used, err, sizeof err) == 0 && used == 7);
  CHECK(store_list_trim_marks(s, "k:1", 3, 10, &r, err, sizeof err) == 0);
  CHECK_STR(names(&r), "k:2");
  int trimmed = 0;
  CHECK(store_events_trimmed(s, "k:2", 3, 1, 8, &trimmed, err, sizeof err) == 0 && trimmed);
  CHECK(store_list_idempotency(s, NULL, 0, 10, &r, err, sizeof err) == 0);
  CHECK_STR(names(&r), "default/etl/a default/etl/b/c");
  CHECK(r.n == 2 && strcmp(r.rows[1].rec, "r2") == 0);

  /* positions taken past the newest event stay taken */
  uint64_t last;
  int64_t ts;
  CHECK(store_events_last(s, &last, &ts, err, sizeof err) == 0 && last == 12 && ts == 100);
  store_census c;
  CHECK(store_census_of(s, &c, err, sizeof err) == 0);
  CHECK(c.n[STORE_K_QUOTAS] == 3 && c.n[STORE_K_TRIMS] == 2 && c.n[STORE_K_IDEMPOTENCY] == 2);
  CHECK(c.n[STORE_K_EVENTS] == 1 && c.n[STORE_K_KEYS] == 1 && c.n[STORE_K_KEY_USES] == 1);
  CHECK(c.n[STORE_K_RUNS] == 0 && c.events_last == 12 && c.events_ts == 100);
  store_named_rows_free(&r);
  close_rw(s);
}

static void test_probes(void) {
  store *s = open_rw(path("probes"));
  CHECK(s != NULL);
  char err[512];
  store_batch *b = store_batch_new();
  store_run r1 = {"r1", "etl", NULL, "completed", 10};
  CHECK(store_put_run(b, &r1, 1, NULL, fill_str, "r1 etl default completed 10", err, sizeof err) == 0);
  store_run r2 = {"r2", "etl", "acme", "running", 20};
  CHECK(store_put_run(b, &r2, 1, NULL, fill_str, "r2 etl acme running 20", err, sizeof err) == 0);
  CHECK(store_append_event(b, 1, 100, "t", 1, "k:1", 3, "{}", 2, err, sizeof err) == 0);
  CHECK(commit(b) == 0);

  store_run_probe p;
  CHECK(store_probe_run(s, "r2", -1, NULL, 0, fields, NULL, &p, err, sizeof err) == 0);
  CHECK(p.found && p.decoded && strcmp(p.f.ns, "acme") == 0);
  for (int l = 0; l < STORE_LISTINGS; l++) CHECK(p.listed[l]);

  /* every listing's entries read back as the fields they hold */
  store_named_rows page = STORE_NAMED_ROWS_INIT;
  CHECK(store_run_listing_page(s, STORE_LISTING_STATUS, NULL, 0, 10, &page, err, sizeof err) == 0);
  CHECK(page.n == 2);
  store_run_fields e;
  CHECK(page.n == 2 && store_run_entry_parse(STORE_LISTING_STATUS, page.rows[0].name,
                                             page.rows[0].name_len, &e) == 0);
  CHECK_STR(e.ns, "acme");
  CHECK_STR(e.status, "running");
  CHECK_STR(e.id, "r2");
  CHECK(e.created_us == 20 && e.pipeline[0] == '\0');
  CHECK(store_run_entry_parse(STORE_LISTING_STATUS, "acme", 4, &e) == -1);
  CHECK(store_run_listing_page(s, STORE_LISTING_ACTIVE, NULL, 0, 10, &page, err, sizeof err) == 0);
  CHECK_STR(names(&page), "r2");

  /* r1 loses its status entry; a stray active entry names a run that is gone */
  b = store_batch_new();
  sbuf k = SBUF_INIT;
  sbuf_add(&k, "default\0completed\0", 18);
  sbuf_add_be64(&k, 10);
  sbuf_adds(&k, "r1");
  wbatch_del(b, DB_RUNS_BY_STATUS, k.data, k.len);
  wbatch_put(b, DB_ACTIVE, "ghost", 5, "", 0);
  sbuf_reset(&k);
  sbuf_add(&k, "k:1\0", 4);
  sbuf_add_be64(&k, 1);
  wbatch_del(b, DB_STREAMS, k.data, k.len);
  CHECK(commit(b) == 0);
  CHECK(store_probe_run(s, "r1", -1, NULL, 0, fields, NULL, &p, err, sizeof err) == 0);
  CHECK(p.found && p.decoded && !p.listed[STORE_LISTING_STATUS] && p.listed[STORE_LISTING_NS]);
  CHECK(!p.listed[STORE_LISTING_ACTIVE]); /* completed */
  CHECK(store_probe_run(s, "ghost", STORE_LISTING_ACTIVE, "ghost", 5, fields, NULL, &p, err,
                        sizeof err) == 0);
  CHECK(!p.found && p.entry);

  store_event_probe ep;
  CHECK(store_probe_event(s, 1, "k:1", 3, &ep, err, sizeof err) == 0);
  CHECK(ep.found && ep.same_stream && !ep.indexed);
  CHECK(store_probe_event(s, 1, "k:2", 3, &ep, err, sizeof err) == 0);
  CHECK(ep.found && !ep.same_stream);
  const char *stream;
  size_t sn;
  uint64_t seq;
  sbuf_reset(&k);
  sbuf_add(&k, "a\0b", 3); /* a NUL inside the key: malformed */
  sbuf_add_be64(&k, 1);
  CHECK(store_stream_entry_parse(k.data, k.len, &stream, &sn, &seq) == -1);
  sbuf_reset(&k);
  sbuf_add(&k, "k:9\0", 4);
  sbuf_add_be64(&k, 77);
  CHECK(store_stream_entry_parse(k.data, k.len, &stream, &sn, &seq) == 0 && sn == 3 && seq == 77);
  sbuf_free(&k);
  store_named_rows_free(&page);
  close_rw(s);
}

int main(void) {
  if (unit_tmpdir("store-tools")) return 1;
  RUN(test_pages_and_census);
  RUN(test_probes);
  unit_rmtree();
  return UNIT_DONE();
}
