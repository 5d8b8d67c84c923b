/* test_records_runs.c: unit tests of the records of runs, steps, run logs
 * and idempotency keys (records_runs.c, records_steps.c) on a real LMDB
 * store in a fresh directory, written through the writer as in the
 * product: each operation; the listings (filters, pages, namespaces, the
 * examine cap); every index consistent with the run records after kill -9
 * of a writing child between commits; read errors (a corrupt step record,
 * an index entry without its record) returned as errors, not as no rows. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
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

static int fill_fail(void *ud, sbuf *out, char *err, size_t errsz) {
  (void)ud;
  sbuf_adds(out, "{\"half"); /* what a failing encoder may leave */
  snprintf(err, errsz, "result.fn: cannot store a function");
  return -1;
}

/* a run record as the engine writes one (the fields the indexes need) */
static char *json_of(const store_run *r) {
  static char buf[512];
  snprintf(buf, sizeof buf, "{\"created_us\":%lld,\"id\":\"%s\",\"namespace\":\"%s\",\"pipeline\":\"%s\",\"status\":\"%s\"}",
           (long long)r->created_us, r->id, r->ns ? r->ns : "default", r->pipeline, r->status);
  return buf;
}

/* the value of "key" in a record json_of wrote (strings unquoted), into a
 * static buffer; NULL if absent */
static const char *field(const char *json, size_t n, const char *key) {
  static char out[4][128];
  static int slot;
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  char *copy = strndup(json, n);
  const char *p = strstr(copy, pat);
  char *o = out[slot++ % 4];
  if (!p) {
    free(copy);
    return NULL;
  }
  p += strlen(pat);
  size_t i = 0;
  if (*p == '"') {
    for (p++; *p && *p != '"' && i < 127; p++) o[i++] = *p;
  } else {
    for (; *p && *p != ',' && *p != '}' && i < 127; p++) o[i++] = *p;
  }
  o[i] = '\0';
  free(copy);
  return o;
}

static int put_run(store_batch *b, const store_run *r, int is_new, const char *prev) {
  char err[256];
  int rc = store_put_run(b, r, is_new, prev, fill_str, json_of(r), err, sizeof err);
  if (rc) fprintf(stderr, "put_run: %s\n", err);
  return rc;
}

static store *open_rw(const char *dir) {
  store *s;
  char err[512];
  if (store_open(&s, dir, 0, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return NULL;
  }
  return s;
}

/* the ids of a listing, space-separated, and its cursor */
static char *ids(store *s, store_run_filter f, sbuf *next) {
  static char out[4096];
  store_rows rows = STORE_ROWS_INIT;
  char err[512];
  out[0] = '\0';
  int rc = store_list_runs(s, &f, &rows, next, err, sizeof err);
  if (rc) {
    snprintf(out, sizeof out, "error %s: %s", store_status_code(rc), err);
  }
  for (size_t i = 0; i < rows.n; i++) {
    const char *id = field(rows.buf.data + rows.off[i], rows.len[i], "id");
    if (i) strcat(out, " ");
    strcat(out, id ? id : "?");
  }
  store_rows_free(&rows);
  return out;
}

/* ---- runs ---------------------------------------------------------------- */

static void test_runs_put_get_list(void) {
  store *s = open_rw(path("runs"));
  CHECK(s && start(s) == 0);
  /* 6 runs: two pipelines, two namespaces, created 1..6 */
  store_run r[6] = {
      {"r1", "etl", NULL, "completed", 1}, {"r2", "etl", NULL, "failed", 2},
      {"r3", "load", NULL, "completed", 3}, {"r4", "etl", "acme", "completed", 4},
      {"r5", "etl", NULL, "running", 5},   {"r6", "load", "acme", "pending", 6},
  };
  store_batch *b = store_batch_new();
  for (int i = 0; i < 6; i++) CHECK(put_run(b, &r[i], 1, NULL) == 0);
  CHECK(commit(b) == 0);

  sbuf v = SBUF_INIT, next = SBUF_INIT;
  int found = 0;
  char err[512];
  CHECK(store_get_run(s, "r3", &v, &found, err, sizeof err) == 0 && found);
  CHECK(v.len == strlen(json_of(&r[2])) && memcmp(v.data, json_of(&r[2]), v.len) == 0);
  CHECK(store_get_run(s, "nope", &v, &found, err, sizeof err) == 0 && !found);

  CHECK_STR(ids(s, (store_run_filter){"default", NULL, NULL, NULL, 0, 10}, &next), "r5 r3 r2 r1");
  CHECK(next.len == 0);
  CHECK_STR(ids(s, (store_run_filter){"default", "etl", NULL, NULL, 0, 10}, &next), "r5 r2 r1");
  CHECK_STR(ids(s, (store_run_filter){"default", NULL, "completed", NULL, 0, 10}, &next), "r3 r1");
  CHECK_STR(ids(s, (store_run_filter){"default", "etl", "completed", NULL, 0, 10}, &next), "r1");
  CHECK_STR(ids(s, (store_run_filter){"acme", NULL, NULL, NULL, 0, 10}, &next), "r6 r4");
  /* every namespace: the history, or the filtered listings merged */
  CHECK_STR(ids(s, (store_run_filter){NULL, NULL, NULL, NULL, 0, 10}, &next), "r6 r5 r4 r3 r2 r1");
  CHECK_STR(ids(s, (store_run_filter){NULL, "etl", NULL, NULL, 0, 10}, &next), "r5 r4 r2 r1");
  CHECK_STR(ids(s, (store_run_filter){NULL, NULL, "completed", NULL, 0, 10}, &next), "r4 r3 r1");
  /* since: runs created at 3 or later */
  CHECK_STR(ids(s, (store_run_filter){"default", NULL, NULL, NULL, 3, 10}, &next), "r5 r3");

  /* pages of 2 with cursors, in one namespace and across them */
  CHECK_STR(ids(s, (store_run_filter){"default", NULL, NULL, NULL, 0, 2}, &next), "r5 r3");
  CHECK(next.len > 0);
  char cur[256];
  snprintf(cur, sizeof cur, "%.*s", (int)next.len, next.data);
  CHECK_STR(ids(s, (store_run_filter){"default", NULL, NULL, cur, 0, 2}, &next), "r2 r1");
  CHECK(next.len == 0);
  CHECK_STR(ids(s, (store_run_filter){NULL, "etl", NULL, NULL, 0, 3}, &next), "r5 r4 r2");
  snprintf(cur, sizeof cur, "%.*s", (int)next.len, next.data);
  CHECK_STR(ids(s, (store_run_filter){NULL, "etl", NULL, cur, 0, 3}, &next), "r1");
  CHECK_STR(ids(s, (store_run_filter){"default", NULL, NULL, "zz", 0, 2}, &next),
            "error EINVAL: before must be a cursor returned as next by an earlier page");

  /* a status change moves the status entry; active follows the status */
  b = store_batch_new();
  r[4].status = "completed";
  CHECK(put_run(b, &r[4], 0, "running") == 0);
  r[5].status = "running";
  CHECK(put_run(b, &r[5], 0, "pending") == 0);
  CHECK(commit(b) == 0);
  CHECK_STR(ids(s, (store_run_filter){"default", NULL, "running", NULL, 0, 10}, &next), "");
  CHECK_STR(ids(s, (store_run_filter){"default", NULL, "completed", NULL, 0, 10}, &next), "r5 r3 r1");
  CHECK_STR(ids(s, (store_run_filter){"acme", NULL, "running", NULL, 0, 10}, &next), "r6");
  store_rows rows = STORE_ROWS_INIT;
  CHECK(store_active_runs(s, &rows, err, sizeof err) == 0);
  CHECK(rows.n == 1 && strstr(rows.buf.data, "\"r6\""));
  store_rows_free(&rows);

  /* a record that cannot be written leaves the batch as it was */
  b = store_batch_new();
  store_run bad = {"r7", "etl", NULL, "pending", 7};
  CHECK(store_put_run(b, &bad, 1, NULL, fill_fail, NULL, err, sizeof err) == STORE_EINVAL);
  CHECK(strstr(err, "cannot store a function") != NULL);
  store_run noid = {"", "etl", NULL, "pending", 7};
  CHECK(store_put_run(b, &noid, 1, NULL, fill_str, "{}", err, sizeof err) == STORE_EINVAL);
  CHECK(store_batch_count(b) == 0);
  store_batch_free(b);

  /* idempotency keys */
  b = store_batch_new();
  CHECK(store_put_idempotency(b, "default", "etl", "k\0ey", 4, "r1", err, sizeof err) == 0);
  CHECK(commit(b) == 0);
  CHECK(store_get_idempotency(s, "default", "etl", "k\0ey", 4, &v, &found, err, sizeof err) == 0 && found);
  CHECK(v.len == 2 && memcmp(v.data, "r1", 2) == 0);
  CHECK(store_get_idempotency(s, "default", "load", "k\0ey", 4, &v, &found, err, sizeof err) == 0 && !found);
  b = store_batch_new();
  CHECK(store_put_idempotency(b, "default", "etl", "", 0, "r1", err, sizeof err) == STORE_EINVAL);
  store_batch_free(b);

  sbuf_free(&v);
  sbuf_free(&next);
  stop();
  store_close(s);
}

/* A rare status under a pipeline: a page examines at most 1000 entries and
 * returns what it found with a cursor, and the next pages go on from it. */
static void test_examine_cap(void) {
  store *s = open_rw(path("cap"));
  CHECK(s && start(s) == 0);
  store_batch *b = store_batch_new();
  char id[32];
  for (int i = 1; i <= 2500; i++) {
    snprintf(id, sizeof id, "c%04d", i);
    store_run r = {id, "etl", NULL, i == 100 || i == 2400 ? "failed" : "completed", i};
    CHECK(put_run(b, &r, 1, NULL) == 0);
  }
  CHECK(commit(b) == 0);
  sbuf next = SBUF_INIT;
  char cur[256];
  CHECK_STR(ids(s, (store_run_filter){"default", "etl", "failed", NULL, 0, 5}, &next), "c2400");
  CHECK(next.len > 0); /* capped: 1000 entries read */
  snprintf(cur, sizeof cur, "%.*s", (int)next.len, next.data);
  CHECK_STR(ids(s, (store_run_filter){"default", "etl", "failed", cur, 0, 5}, &next), "");
  snprintf(cur, sizeof cur, "%.*s", (int)next.len, next.data);
  CHECK(next.len > 0);
  CHECK_STR(ids(s, (store_run_filter){"default", "etl", "failed", cur, 0, 5}, &next), "c0100");
  CHECK(next.len == 0);
  sbuf_free(&next);
  stop();
  store_close(s);
}

/* An older store: run records and runs_by_time only; read in pages, their
 * listing entries put, the store marked. */
static void test_index_runs(void) {
  store *s = open_rw(path("old"));
  CHECK(s && start(s) == 0);
  store_batch *b = store_batch_new();
  char id[32];
  for (int i = 1; i <= 5; i++) {
    snprintf(id, sizeof id, "o%d", i);
    store_run r = {id, i % 2 ? "etl" : "load", NULL, "completed", i};
    wbatch_put(b, DB_RUNS, id, strlen(id), json_of(&r), strlen(json_of(&r)));
  }
  CHECK(commit(b) == 0);
  CHECK(!store_runs_indexed(s));
  char err[512], after[64] = "";
  int pages = 0;
  size_t total = 0, got;
  do {
    store_rows rows = STORE_ROWS_INIT;
    CHECK(store_read_runs(s, pages ? after : NULL, 2, &rows, err, sizeof err) == 0);
    got = rows.n;
    b = store_batch_new();
    for (size_t i = 0; i < rows.n; i++) {
      const char *rec = rows.buf.data + rows.off[i];
      char rid[32], pipe[32];
      snprintf(rid, sizeof rid, "%s", field(rec, rows.len[i], "id"));
      snprintf(pipe, sizeof pipe, "%s", field(rec, rows.len[i], "pipeline"));
      store_run r = {rid, pipe, NULL, field(rec, rows.len[i], "status"), atoll(field(rec, rows.len[i], "created_us"))};
      CHECK(store_put_run_listings(b, &r, err, sizeof err) == 0);
      snprintf(after, sizeof after, "%.*s", (int)rows.name_len[i], rows.buf.data + rows.name_off[i]);
    }
    if (got < 2) store_mark_runs_indexed(b);
    CHECK(commit(b) == 0);
    total += got;
    store_rows_free(&rows);
    pages++;
  } while (got == 2 && pages < 10);
  CHECK(total == 5 && pages == 3);
  CHECK(store_runs_indexed(s));
  sbuf next = SBUF_INIT;
  CHECK_STR(ids(s, (store_run_filter){"default", "etl", NULL, NULL, 0, 10}, &next), "o5 o3 o1");
  CHECK_STR(ids(s, (store_run_filter){"default", NULL, "completed", NULL, 0, 2}, &next), "o5 o4");
  sbuf_free(&next);
  stop();
  store_close(s);
}

/* ---- steps and logs ------------------------------------------------------ */

static void test_steps(void) {
  store *s = open_rw(path("steps"));
  CHECK(s && start(s) == 0);
  char err[512];
  store_batch *b = store_batch_new();
  store_step a = {"fetch", 5, "", 0, STORE_STEP_COMPLETED, 1, 1, 100, 7, 0, NULL, 0};
  store_step c = {"save", 4, "b\0x", 3, STORE_STEP_FAILED, 3, 2, 50, 9, 0, NULL, 0};
  store_step d = {"nil", 3, "", 0, STORE_STEP_COMPLETED, 1, 3, 200, 1, 0, NULL, 0};
  CHECK(store_put_step(b, "run1", 4, &a, fill_str, "[1,2]", err, sizeof err) == 0);
  CHECK(store_put_step(b, "run1", 4, &c, fill_str, "{\"message\":\"boom\"}", err, sizeof err) == 0);
  CHECK(store_put_step(b, "run1", 4, &d, NULL, NULL, err, sizeof err) == 0);
  CHECK(store_put_step(b, "run10", 5, &a, fill_str, "1", err, sizeof err) == 0);
  size_t n = store_batch_count(b);
  store_step bad = a;
  bad.id_len = 0;
  CHECK(store_put_step(b, "run1", 4, &bad, NULL, NULL, err, sizeof err) == STORE_EINVAL);
  CHECK(store_put_step(b, "run1", 4, &a, fill_fail, NULL, err, sizeof err) == STORE_EINVAL);
  CHECK(store_batch_count(b) == n);
  CHECK(commit(b) == 0);

  store_steps l = STORE_STEPS_INIT;
  CHECK(store_load_steps(s, "run1", 4, &l, err, sizeof err) == 0);
  CHECK(l.n == 3); /* not run10's */
  /* step id order: fetch, nil, save */
  CHECK(l.n == 3 && l.v[0].id_len == 5 && memcmp(l.v[0].id, "fetch", 5) == 0);
  CHECK(l.n == 3 && l.v[0].has_payload && l.v[0].payload_len == 5 && memcmp(l.v[0].payload, "[1,2]", 5) == 0);
  CHECK(l.n == 3 && l.v[0].attempts == 1 && l.v[0].pos == 1 && l.v[0].started_us == 100 && l.v[0].duration_us == 7);
  CHECK(l.n == 3 && !l.v[1].has_payload && l.v[1].status == STORE_STEP_COMPLETED);
  CHECK(l.n == 3 && l.v[2].status == STORE_STEP_FAILED && l.v[2].branch_len == 3 &&
        memcmp(l.v[2].branch, "b\0x", 3) == 0 && l.v[2].attempts == 3);
  store_steps_free(&l);
  CHECK(store_get_step(s, "run1", 4, "save", 4, &l, err, sizeof err) == 0 && l.n == 1);
  CHECK(l.n == 1 && l.v[0].payload_len == 18);
  store_steps_free(&l);
  CHECK(store_get_step(s, "run1", 4, "none", 4, &l, err, sizeof err) == 0 && l.n == 0);
  store_steps_free(&l);

  /* a record that does not parse is an error naming the run, not no rows */
  b = store_batch_new();
  wbatch_put(b, DB_STEPS, "run2\0x", 6, "\x01short", 6);
  CHECK(commit(b) == 0);
  CHECK(store_load_steps(s, "run2", 4, &l, err, sizeof err) == STORE_EBADSTORE);
  CHECK(strstr(err, "run2 has a corrupt step record") != NULL);
  store_steps_free(&l);
  stop();
  store_close(s);
}

static void test_logs(void) {
  store *s = open_rw(path("logs"));
  CHECK(s && start(s) == 0);
  char err[512];
  store_batch *b = store_batch_new();
  CHECK(store_put_log(b, "r1", 2, 20, 1, "{\"msg\":\"b\"}", 11, err, sizeof err) == 0);
  CHECK(store_put_log(b, "r1", 2, 10, 2, "{\"msg\":\"a\"}", 11, err, sizeof err) == 0);
  CHECK(store_put_log(b, "r1", 2, 20, 0, "{\"msg\":\"a2\"}", 12, err, sizeof err) == 0);
  CHECK(store_put_log(b, "r11", 3, 5, 0, "{}", 2, err, sizeof err) == 0);
  CHECK(commit(b) == 0);
  store_rows rows = STORE_ROWS_INIT;
  int64_t *ids_ = NULL;
  CHECK(store_read_logs(s, "r1", 2, &rows, &ids_, err, sizeof err) == 0);
  CHECK(rows.n == 3 && ids_ && ids_[0] == 10 && ids_[1] == 2 && ids_[2] == 20 && ids_[3] == 0);
  CHECK(rows.n == 3 && rows.len[2] == 11 && memcmp(rows.buf.data + rows.off[2], "{\"msg\":\"b\"}", 11) == 0);
  store_rows_free(&rows);
  free(ids_);
  b = store_batch_new();
  store_del_log(b, "r1", 2, 10, 2);
  CHECK(commit(b) == 0);
  CHECK(store_read_logs(s, "r1", 2, &rows, NULL, err, sizeof err) == 0 && rows.n == 2);
  store_rows_free(&rows);
  stop();
  store_close(s);
}

/* ---- consistency after kill -9 ------------------------------------------ */

/* Every index entry names a record, every record has its entries (by
 * time, namespace, pipeline, its status and no other), and it is active iff
 * its status is not final. Returns the number of runs checked, -1 on error. */
static int check_consistent(store *s);

static const char *const STATES[] = {"pending", "running", "sleeping", "running", "completed"};

/* the child: runs one after the other, each through the statuses above,
 * one commit each with a step; writes a byte to fd after each commit */
static void crash_child(const char *dir, int fd, int round) {
  store *s = open_rw(dir);
  if (!s || start(s)) _exit(2);
  char id[32], err[256];
  for (int i = 0;; i++) {
    snprintf(id, sizeof id, "k%d-%05d", round, i);
    store_run r = {id, i % 2 ? "etl" : "load", i % 3 ? NULL : "acme", NULL, (int64_t)round * 100000 + i};
    for (int st = 0; st < 5; st++) {
      r.status = st == 4 && i % 4 == 1 ? "failed" : STATES[st];
      store_batch *b = store_batch_new();
      if (put_run(b, &r, st == 0, st ? (st == 4 ? "running" : STATES[st - 1]) : NULL)) _exit(3);
      store_step step = {"s", 1, "", 0, STORE_STEP_COMPLETED, 1, (uint32_t)st + 1, 1, 1, 0, NULL, 0};
      if (store_put_step(b, id, strlen(id), &step, fill_str, "true", err, sizeof err)) _exit(4);
      if (commit(b)) _exit(5);
      if (write(fd, "x", 1) != 1) _exit(6);
    }
  }
}

static void test_consistent_after_kill(void) {
  const char *dir = path("crash");
  int runs_before = 0;
  for (int round = 0; round < 4; round++) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      crash_child(dir, fds[1], round);
    }
    close(fds[1]);
    /* kill it after a few commits: it is in the middle of the next one */
    int want = 7 + round * 13, got = 0;
    char c;
    while (got < want && read(fds[0], &c, 1) == 1) got++;
    kill(pid, SIGKILL);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    close(fds[0]);
    store *s;
    char err[512];
    CHECK(store_open(&s, dir, STORE_READONLY, err, sizeof err) == 0);
    int n = check_consistent(s);
    CHECK(n >= runs_before + want / 5); /* every acknowledged commit is there */
    runs_before = n;
    /* the listings read without an error, as many runs as there are */
    store_run_filter f = {NULL, NULL, NULL, NULL, 0, 100000};
    store_rows rows = STORE_ROWS_INIT;
    sbuf next = SBUF_INIT;
    CHECK(store_list_runs(s, &f, &rows, &next, err, sizeof err) == 0 && (int)rows.n == n);
    store_rows_free(&rows);
    f.pipeline = "etl";
    CHECK(store_list_runs(s, &f, &rows, &next, err, sizeof err) == 0);
    store_rows_free(&rows);
    CHECK(store_active_runs(s, &rows, err, sizeof err) == 0);
    store_rows_free(&rows);
    sbuf_free(&next);
    store_close(s);
  }
}

typedef struct {
  store *s;
  int db, bad, n;
} idx_ctx;

static int has(store *s, int db, const char *k, size_t kn) {
  sbuf v = SBUF_INIT;
  int found = 0;
  char err[256];
  int rc = store_get(s, db, k, kn, &v, &found, err, sizeof err);
  sbuf_free(&v);
  return rc == 0 && found;
}

/* each index entry: the record of its id exists, with that status */
static int idx_cb(void *ud, const void *kp, size_t kn, const void *v, size_t vn) {
  (void)v, (void)vn;
  idx_ctx *c = ud;
  const char *k = kp, *status = NULL;
  size_t skip = 0, seps = c->db == DB_RUNS_BY_TIME || c->db == DB_ACTIVE ? 0 : c->db == DB_RUNS_BY_NS ? 1 : 2;
  for (size_t i = 0; i < seps; i++) {
    const char *z = memchr(k + skip, '\0', kn - skip);
    if (!z) return c->bad++, 0;
    if (i == 1) status = k + skip;
    skip = (size_t)(z - k) + 1;
  }
  const char *id = c->db == DB_ACTIVE ? k : k + skip + 8;
  size_t idn = c->db == DB_ACTIVE ? kn : kn - skip - 8;
  char idz[64];
  snprintf(idz, sizeof idz, "%.*s", (int)idn, id);
  sbuf rec = SBUF_INIT;
  int found = 0;
  char err[256];
  store_get_run(c->s, idz, &rec, &found, err, sizeof err);
  sbuf_addc(&rec, '\0');
  if (!found) {
    fprintf(stderr, "%s: %s has no record\n", store_db_name(c->db), idz);
    c->bad++;
  } else if (c->db == DB_RUNS_BY_STATUS || c->db == DB_ACTIVE) {
    const char *st = field(rec.data, rec.len, "status");
    int ok = c->db == DB_ACTIVE ? !store_run_status_final(st) : st && strcmp(st, status) == 0;
    if (!ok) {
      fprintf(stderr, "%s: %s has status %s\n", store_db_name(c->db), idz, st ? st : "?");
      c->bad++;
    }
  }
  sbuf_free(&rec);
  c->n++;
  return 0;
}

/* each record: its entries exist */
static int rec_cb(void *ud, const void *k, size_t kn, const void *v, size_t vn) {
  idx_ctx *c = ud;
  char fid[64], fpipe[64], fns[64], fst[64];
  snprintf(fid, sizeof fid, "%s", field(v, vn, "id"));
  snprintf(fpipe, sizeof fpipe, "%s", field(v, vn, "pipeline"));
  snprintf(fns, sizeof fns, "%s", field(v, vn, "namespace"));
  snprintf(fst, sizeof fst, "%s", field(v, vn, "status"));
  store_run r = {fid, fpipe, fns, fst, atoll(field(v, vn, "created_us"))};
  sbuf key = SBUF_INIT;
  int miss = 0;
  sbuf_add_be64(&key, (uint64_t)r.created_us);
  sbuf_adds(&key, r.id);
  miss += !has(c->s, DB_RUNS_BY_TIME, key.data, key.len);
  const char *mids[3] = {NULL, r.pipeline, r.status};
  int dbs[3] = {DB_RUNS_BY_NS, DB_RUNS_BY_PIPELINE, DB_RUNS_BY_STATUS};
  for (int i = 0; i < 3; i++) {
    sbuf_reset(&key);
    sbuf_adds(&key, r.ns);
    sbuf_addc(&key, '\0');
    if (mids[i]) {
      sbuf_adds(&key, mids[i]);
      sbuf_addc(&key, '\0');
    }
    sbuf_add_be64(&key, (uint64_t)r.created_us);
    sbuf_adds(&key, r.id);
    miss += !has(c->s, dbs[i], key.data, key.len);
  }
  miss += has(c->s, DB_ACTIVE, k, kn) == store_run_status_final(r.status);
  if (miss) {
    fprintf(stderr, "run %s (%s): %d index entries wrong\n", r.id, r.status, miss);
    c->bad++;
  }
  sbuf_free(&key);
  c->n++;
  return 0;
}

static int check_consistent(store *s) {
  char err[512];
  int dbs[] = {DB_RUNS_BY_TIME, DB_RUNS_BY_NS, DB_RUNS_BY_PIPELINE, DB_RUNS_BY_STATUS, DB_ACTIVE};
  int runs = 0;
  for (size_t i = 0; i < sizeof dbs / sizeof *dbs; i++) {
    idx_ctx c = {s, dbs[i], 0, 0};
    CHECK(store_scan(s, dbs[i], "", 0, 0, idx_cb, &c, err, sizeof err) == 0);
    CHECK(c.bad == 0);
    if (dbs[i] == DB_RUNS_BY_STATUS) runs = c.n; /* one status entry per run */
  }
  idx_ctx c = {s, DB_RUNS, 0, 0};
  CHECK(store_scan(s, DB_RUNS, "", 0, 0, rec_cb, &c, err, sizeof err) == 0);
  CHECK(c.bad == 0);
  CHECK(c.n == runs);
  return c.n;
}

/* An index entry without its record (a damaged store) is an error of the
 * listing, not a shorter page. */
static void test_missing_record_is_an_error(void) {
  store *s = open_rw(path("damaged"));
  CHECK(s && start(s) == 0);
  store_batch *b = store_batch_new();
  store_run r = {"g1", "etl", NULL, "completed", 1};
  CHECK(put_run(b, &r, 1, NULL) == 0);
  sbuf k = SBUF_INIT;
  sbuf_add(&k, "default\0", 8);
  sbuf_add_be64(&k, 2);
  sbuf_adds(&k, "ghost");
  wbatch_put(b, DB_RUNS_BY_NS, k.data, k.len, "", 0);
  wbatch_put(b, DB_ACTIVE, "ghost", 5, "", 0);
  CHECK(commit(b) == 0);
  sbuf next = SBUF_INIT;
  const char *got = ids(s, (store_run_filter){"default", NULL, NULL, NULL, 0, 10}, &next);
  CHECK(strstr(got, "error EBADSTORE") && strstr(got, "ghost"));
  store_rows rows = STORE_ROWS_INIT;
  char err[512];
  CHECK(store_active_runs(s, &rows, err, sizeof err) == STORE_EBADSTORE);
  store_rows_free(&rows);
  sbuf_free(&k);
  sbuf_free(&next);
  stop();
  store_close(s);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  if (unit_tmpdir("records-runs")) return 1;
  RUN(test_runs_put_get_list);
  RUN(test_examine_cap);
  RUN(test_index_runs);
  RUN(test_steps);
  RUN(test_logs);
  RUN(test_consistent_after_kill);
  RUN(test_missing_record_is_an_error);
  unit_rmtree();
  return UNIT_DONE();
}
