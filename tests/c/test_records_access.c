/* test_records_access.c: store.h's schedule, API key, namespace and quota
 * counter operations (records_schedules.c, records_access.c) on a real LMDB
 * store under /tmp, written through the writer as in the product: each
 * operation; the writer's counter add, which counts exactly when batches
 * fail around it; the key count and key-use marks consistent with the key
 * records, and each day's count with the runs committed with it, after a
 * writer is killed with SIGKILL in the middle of its batches; a corrupt
 * counter read as an error, not as zero. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "store.h"
#include "unit.h"
#include "writer.h"

typedef struct {
  int calls, status;
} done_rec;

static void on_done(void *cookie, int status, const char *errmsg) {
  done_rec *d = cookie;
  d->calls++;
  d->status = status;
  (void)errmsg;
}

/* Submits the batches (n of them, in order, in one group when they queue
 * together) and waits for all; statuses into st. */
static void write_all(store *s, store_batch **bs, int n, int *st) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  writer *w;
  char err[256];
  CHECK(writer_start(&w, s, &loop, err, sizeof err) == 0);
  done_rec d[8] = {{0, 0}};
  for (int i = 0; i < n; i++) CHECK(writer_submit(w, bs[i], on_done, &d[i]) == 0);
  for (int i = 0; i < n; i++)
    while (d[i].calls == 0) uv_run(&loop, UV_RUN_ONCE);
  writer_stop(w);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
  for (int i = 0; i < n; i++) st[i] = d[i].status;
}

static int write1(store *s, store_batch *b) {
  int st;
  write_all(s, &b, 1, &st);
  return st;
}

static store *open_store(const char *dir, int flags) {
  char err[512];
  store *s = NULL;
  int rc = store_open(&s, dir, flags, err, sizeof err);
  if (rc) fprintf(stderr, "%s\n", err);
  CHECK(rc == 0);
  return s;
}

#define S(x) x, strlen(x)

static void test_schedules(void) {
  store *s = open_store(path("sched"), 0);
  if (!s) return;
  char err[512];
  store_batch *b = store_batch_new();
  CHECK(store_put_schedule(b, S("b"), S("{\"name\":\"b\"}")) == 0);
  CHECK(store_put_schedule(b, S("a"), S("{\"name\":\"a\"}")) == 0);
  CHECK(store_put_schedule(b, S("c"), S("{\"name\":\"c\"}")) == 0);
  CHECK(store_put_schedule(b, "", 0, S("{}")) == STORE_EINVAL);
  CHECK(store_batch_count(b) == 3);
  CHECK(write1(s, b) == 0);
  sbuf rec = SBUF_INIT;
  int found = 0;
  CHECK(store_get_schedule(s, S("a"), &rec, &found, err, sizeof err) == 0 && found);
  CHECK(rec.len == 12 && memcmp(rec.data, "{\"name\":\"a\"}", 12) == 0);
  CHECK(store_get_schedule(s, S("zz"), &rec, &found, err, sizeof err) == 0 && !found);
  /* pages in name order */
  store_named_rows rows = STORE_NAMED_ROWS_INIT;
  CHECK(store_list_schedules(s, NULL, 0, 2, &rows, err, sizeof err) == 0);
  CHECK(rows.n == 2);
  if (rows.n == 2) {
    CHECK_STR(rows.rows[0].name, "a");
    CHECK_STR(rows.rows[1].name, "b");
    CHECK_STR(rows.rows[1].rec, "{\"name\":\"b\"}");
    CHECK(rows.rows[1].extra == NULL);
  }
  CHECK(store_list_schedules(s, S("b"), 2, &rows, err, sizeof err) == 0);
  CHECK(rows.n == 1 && strcmp(rows.rows[0].name, "c") == 0);
  /* delete, and delete of what is not there */
  b = store_batch_new();
  CHECK(store_delete_schedule(b, S("b")) == 0);
  CHECK(store_delete_schedule(b, S("nope")) == 0);
  CHECK(write1(s, b) == 0);
  CHECK(store_list_schedules(s, NULL, 0, 0, &rows, err, sizeof err) == 0);
  CHECK(rows.n == 2 && strcmp(rows.rows[1].name, "c") == 0);
  store_named_rows_free(&rows);
  sbuf_free(&rec);
  store_close(s);
}

static void test_keys_and_namespaces(void) {
  store *s = open_store(path("keys"), 0);
  if (!s) return;
  char err[512];
  int64_t n = -1;
  CHECK(store_key_count(s, &n, err, sizeof err) == 0 && n == 0);
  store_batch *b = store_batch_new();
  CHECK(store_add_key(b, S("k1"), S("{\"name\":\"one\"}")) == 0);
  CHECK(store_add_key(b, S("k2"), S("{\"name\":\"two\"}")) == 0);
  CHECK(store_add_key(b, "a\0b", 3, S("{}")) == STORE_EINVAL);
  CHECK(store_touch_key(b, S("k2"), S("2026-12-01T10:00:00Z")) == 0);
  CHECK(store_put_namespace(b, S("acme"), S("{\"name\":\"acme\"}")) == 0);
  CHECK(write1(s, b) == 0);
  CHECK(store_key_count(s, &n, err, sizeof err) == 0 && n == 2);
  store_named_rows rows = STORE_NAMED_ROWS_INIT;
  CHECK(store_list_keys(s, &rows, err, sizeof err) == 0 && rows.n == 2);
  if (rows.n == 2) {
    CHECK_STR(rows.rows[0].name, "k1");
    CHECK(rows.rows[0].extra == NULL);
    CHECK_STR(rows.rows[1].extra, "2026-12-01T10:00:00Z");
    CHECK_STR(rows.rows[1].rec, "{\"name\":\"two\"}");
  }
  sbuf rec = SBUF_INIT;
  int found;
  CHECK(store_get_key(s, S("k1"), &rec, &found, err, sizeof err) == 0 && found);
  /* the count kept for earlier binaries moves with the records */
  CHECK(store_get(s, DB_META, S("api_keys"), &rec, &found, err, sizeof err) == 0 && found);
  CHECK(rec.len == 1 && rec.data[0] == '2');
  /* revoke takes the record and its mark */
  b = store_batch_new();
  CHECK(store_revoke_key(b, S("k2")) == 0);
  CHECK(write1(s, b) == 0);
  CHECK(store_key_count(s, &n, err, sizeof err) == 0 && n == 1);
  CHECK(store_get(s, DB_META, "key_used\0k2", 11, &rec, &found, err, sizeof err) == 0 && !found);
  CHECK(store_get_key(s, S("k2"), &rec, &found, err, sizeof err) == 0 && !found);
  b = store_batch_new();
  CHECK(store_revoke_key(b, S("k1")) == 0);
  CHECK(write1(s, b) == 0);
  CHECK(store_get(s, DB_META, S("api_keys"), &rec, &found, err, sizeof err) == 0 && !found);
  /* namespaces */
  CHECK(store_get_namespace(s, S("acme"), &rec, &found, err, sizeof err) == 0 && found);
  CHECK(store_list_namespaces(s, &rows, err, sizeof err) == 0 && rows.n == 1);
  CHECK(rows.n == 1 && strcmp(rows.rows[0].name, "acme") == 0);
  store_named_rows_free(&rows);
  sbuf_free(&rec);
  store_close(s);
}

static void test_quota_counter(void) {
  store *s = open_store(path("quota"), 0);
  if (!s) return;
  char err[512];
  int64_t n = -1;
  CHECK(store_quota_used(s, S("acme"), S("2026-12-01"), &n, err, sizeof err) == 0 && n == 0);
  store_batch *b = store_batch_new();
  CHECK(store_count_run(b, S("acme"), S("2026-12-01")) == 0);
  CHECK(store_count_run(b, S("acme"), S("2026-12-1")) == STORE_EINVAL);
  CHECK(store_count_run(b, S("acme"), S("2026/12/01")) == STORE_EINVAL);
  CHECK(write1(s, b) == 0);
  CHECK(store_quota_used(s, S("acme"), S("2026-12-01"), &n, err, sizeof err) == 0 && n == 1);
  /* three batches in one group, the middle one failing (a key over LMDB's
   * limit): the others count, it does not */
  store_batch *bs[3];
  char big[600];
  memset(big, 'x', sizeof big);
  for (int i = 0; i < 3; i++) {
    bs[i] = store_batch_new();
    CHECK(store_count_run(bs[i], S("acme"), S("2026-12-01")) == 0);
  }
  wbatch_put(bs[1], DB_RUNS, big, sizeof big, "{}", 2);
  int st[3];
  write_all(s, bs, 3, st);
  CHECK(st[0] == 0 && st[1] != 0 && st[2] == 0);
  CHECK(store_quota_used(s, S("acme"), S("2026-12-01"), &n, err, sizeof err) == 0 && n == 3);
  CHECK(store_quota_used(s, S("acme"), S("2026-12-02"), &n, err, sizeof err) == 0 && n == 0);
  /* a counter that is not a number is an error, never a count of 0 */
  b = store_batch_new();
  wbatch_put(b, DB_QUOTAS, "acme\0" "2026-12-03", 15, "x7", 2);
  CHECK(write1(s, b) == 0);
  CHECK(store_quota_used(s, S("acme"), S("2026-12-03"), &n, err, sizeof err) == STORE_EBADSTORE);
  CHECK(strstr(err, "is not a count") != NULL);
  /* and a count_run on it fails its batch rather than restart at 1 */
  b = store_batch_new();
  CHECK(store_count_run(b, S("acme"), S("2026-12-03")) == 0);
  CHECK(write1(s, b) != 0);
  store_close(s);
}

/* A child writes batches of keys, marks and counted runs until killed; the
 * parent kills it with SIGKILL at some point of its work, reopens and checks
 * that every count and mark agrees with the records. */
static void crash_child(const char *dir) {
  store *s = NULL;
  char err[512];
  if (store_open(&s, dir, 0, err, sizeof err) != 0) _exit(3);
  uv_loop_t loop;
  uv_loop_init(&loop);
  writer *w;
  if (writer_start(&w, s, &loop, err, sizeof err) != 0) _exit(4);
  done_rec d = {0, 0};
  for (unsigned i = 0;; i++) {
    char id[32], run[32], day[16];
    store_batch *b = store_batch_new();
    snprintf(id, sizeof id, "k%u", i);
    store_add_key(b, S(id), S("{\"name\":\"k\"}"));
    if (i % 3 == 0) store_touch_key(b, S(id), S("2026-12-01T00:00:00Z"));
    if (i > 0 && i % 2 == 0) {
      snprintf(id, sizeof id, "k%u", i - 1);
      store_revoke_key(b, S(id));
    }
    snprintf(day, sizeof day, "2026-12-%02u", 1 + i % 3);
    snprintf(run, sizeof run, "%s r%u", day, i);
    wbatch_put(b, DB_RUNS, S(run), S("{}"));
    store_count_run(b, S("acme"), S(day));
    int before = d.calls;
    writer_submit(w, b, on_done, &d);
    while (d.calls == before) uv_run(&loop, UV_RUN_ONCE);
  }
}

typedef struct {
  int64_t keys, marks_without_key, runs[3];
} census;

static int count_cb(void *ud, const void *k, size_t kn, const void *v, size_t vn) {
  (void)k, (void)kn, (void)v, (void)vn;
  (*(int64_t *)ud)++;
  return 0;
}

typedef struct {
  store *s;
  int64_t orphans;
} mark_ctx;

static int mark_cb(void *ud, const void *k, size_t kn, const void *v, size_t vn) {
  (void)v, (void)vn;
  mark_ctx *c = ud;
  char err[256];
  sbuf rec = SBUF_INIT;
  int found = 0;
  store_get_key(c->s, (const char *)k + 9, kn - 9, &rec, &found, err, sizeof err);
  if (!found) c->orphans++;
  sbuf_free(&rec);
  return 0;
}

static void test_crash_consistency(void) {
  srand((unsigned)time(NULL));
  for (int round = 0; round < 4; round++) {
    char name[32];
    snprintf(name, sizeof name, "crash%d", round);
    const char *dir = path(name);
    store *s = open_store(dir, 0); /* created before the child races it */
    if (!s) return;
    store_close(s);
    pid_t pid = fork();
    if (pid == 0) crash_child(dir);
    usleep(50000 + (unsigned)(rand() % 250000));
    kill(pid, SIGKILL);
    int wst;
    waitpid(pid, &wst, 0);
    CHECK(WIFSIGNALED(wst));
    s = open_store(dir, 0);
    if (!s) return;
    char err[512];
    int64_t n = 0, records = 0, counted = 0;
    CHECK(store_key_count(s, &n, err, sizeof err) == 0);
    CHECK(store_scan(s, DB_API_KEYS, "", 0, 0, count_cb, &records, err, sizeof err) == 0);
    CHECK(n == records);
    sbuf v = SBUF_INIT;
    int found = 0;
    CHECK(store_get(s, DB_META, S("api_keys"), &v, &found, err, sizeof err) == 0);
    sbuf_addc(&v, '\0');
    CHECK((found ? atoll(v.data) : 0) == records);
    mark_ctx mc = {s, 0};
    CHECK(store_scan(s, DB_META, "key_used\0", 9, 0, mark_cb, &mc, err, sizeof err) == 0);
    CHECK(mc.orphans == 0);
    int64_t runs_total = 0;
    for (int dday = 1; dday <= 3; dday++) {
      char day[16];
      snprintf(day, sizeof day, "2026-12-%02d", dday);
      int64_t runs = 0, c = -1;
      CHECK(store_scan(s, DB_RUNS, day, 10, 0, count_cb, &runs, err, sizeof err) == 0);
      CHECK(store_quota_used(s, S("acme"), S(day), &c, err, sizeof err) == 0);
      CHECK(c == runs);
      runs_total += runs;
      counted += c;
    }
    CHECK(counted == runs_total);
    if (round == 0) fprintf(stderr, "crash round 0: %lld batches durable\n", (long long)runs_total);
    sbuf_free(&v);
    store_close(s);
  }
}

int main(void) {
  if (unit_tmpdir("records-access")) return 1;
  RUN(test_schedules);
  RUN(test_keys_and_namespaces);
  RUN(test_quota_counter);
  RUN(test_crash_consistency);
  unit_rmtree();
  return UNIT_DONE();
}
