/* test_step_layout.c: the step records' layout on LMDB (records_steps.c):
 * steps appended to step_log, chained per run, moved 128 at a time into the
 * layout by run, the log trimmed (moving the chain of a run idle since),
 * settled when the writer stops; every read (a run's steps, one step, the
 * census) the same as a model of the puts through all of it, replacements
 * included; and a store of format 1 (steps only in `steps`) read as it is
 * and marked 2 by a write open. A real store through the writer. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "store.h"
#include "store_lmdb.h"
#include "unit.h"
#include "unit_writer.h"
#include "writer.h"


static store *open_store(const char *dir, int flags) {
  store *s;
  char err[512];
  if (store_open(&s, dir, flags, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return NULL;
  }
  return s;
}

static int fill_str(void *ud, sbuf *out, char *err, size_t errsz) {
  (void)err, (void)errsz;
  sbuf_adds(out, ud);
  return 0;
}

/* ---- the model: per run, per step id, the last put ---------------------- */

#define RUNS 11 /* r0..r9 and "idle" */
#define IDS 300

static struct {
  int ver;    /* 0: never put */
  int status; /* STORE_STEP_* */
} model[RUNS][IDS];

static const char *run_name(int r) {
  static char buf[RUNS][16];
  if (r == RUNS - 1) return "idle";
  snprintf(buf[r], sizeof buf[r], "r%d", r);
  return buf[r];
}

static int put(store_batch *b, int r, int id, int ver, int status) {
  char sid[16], payload[64], err[256];
  snprintf(sid, sizeof sid, "s%d", id);
  snprintf(payload, sizeof payload, "[%d,%d,%d]", r, id, ver);
  store_step st = {sid, strlen(sid), "", 0, status, 1, (uint32_t)id, 10, 1, 0, NULL, 0};
  const char *run = run_name(r);
  int rc = store_put_step(b, run, strlen(run), &st, fill_str, payload, err, sizeof err);
  if (rc == 0) model[r][id].ver = ver, model[r][id].status = status;
  return rc;
}

static int cmp_id(const void *a, const void *b) {
  const char *x = *(const char *const *)a, *y = *(const char *const *)b;
  return strcmp(x, y); /* ids without NUL: bytes, then length, as the keys */
}

/* Every read of run r agrees with the model: 0, else -1 (with a message). */
static int check_run(store *s, int r) {
  const char *run = run_name(r);
  char err[512];
  store_steps l = STORE_STEPS_INIT;
  if (store_load_steps(s, run, strlen(run), &l, err, sizeof err) != 0) {
    fprintf(stderr, "load %s: %s\n", run, err);
    return -1;
  }
  char ids[IDS][16];
  const char *want[IDS];
  size_t n = 0;
  for (int i = 0; i < IDS; i++) {
    if (!model[r][i].ver) continue;
    snprintf(ids[n], sizeof ids[n], "s%d", i);
    want[n] = ids[n];
    n++;
  }
  qsort(want, n, sizeof want[0], cmp_id);
  int bad = l.n != n;
  if (bad) fprintf(stderr, "run %s: %zu steps read, %zu put\n", run, l.n, n);
  for (size_t i = 0; !bad && i < n; i++) {
    const store_step *st = &l.v[i];
    int id = atoi(want[i] + 1);
    char payload[64];
    snprintf(payload, sizeof payload, "[%d,%d,%d]", r, id, model[r][id].ver);
    if (st->id_len != strlen(want[i]) || memcmp(st->id, want[i], st->id_len) != 0 ||
        st->status != model[r][id].status || st->payload_len != strlen(payload) ||
        memcmp(st->payload, payload, st->payload_len) != 0 || st->pos != (uint32_t)id) {
      fprintf(stderr, "run %s row %zu: got %.*s %.*s, want %s %s\n", run, i, (int)st->id_len,
              st->id, (int)st->payload_len, st->payload, want[i], payload);
      bad = 1;
    }
  }
  store_steps_free(&l);
  /* one step: present ones and a missing one */
  for (int i = 0; !bad && i < IDS; i += 7) {
    char sid[16];
    snprintf(sid, sizeof sid, "s%d", i);
    if (store_get_step(s, run, strlen(run), sid, strlen(sid), &l, err, sizeof err) != 0) bad = 1;
    char payload[64];
    snprintf(payload, sizeof payload, "[%d,%d,%d]", r, i, model[r][i].ver);
    if (!bad && model[r][i].ver &&
        (l.n != 1 || l.v[0].payload_len != strlen(payload) || memcmp(l.v[0].payload, payload, l.v[0].payload_len)))
      bad = 1;
    if (!bad && !model[r][i].ver && l.n != 0) bad = 1;
    if (bad) fprintf(stderr, "run %s: get_step %s disagrees\n", run, sid);
    store_steps_free(&l);
  }
  return bad ? -1 : 0;
}

static int64_t model_count(void) {
  int64_t n = 0;
  for (int r = 0; r < RUNS; r++)
    for (int i = 0; i < IDS; i++) n += model[r][i].ver != 0;
  return n;
}

static size_t entries(store *s, int db) {
  char err[256];
  MDB_txn *txn;
  if (store_read_begin(s, &txn, err, sizeof err)) return (size_t)-1;
  MDB_stat ms;
  size_t n = mdb_stat(txn, store_dbi(s, db), &ms) == 0 ? ms.ms_entries : (size_t)-1;
  store_read_end(s, txn);
  return n;
}

static int census_steps(store *s, int64_t *n) {
  char err[256];
  store_census c;
  if (store_census_of(s, &c, err, sizeof err)) {
    fprintf(stderr, "census: %s\n", err);
    return -1;
  }
  *n = c.n[STORE_K_STEPS];
  return 0;
}

static void test_interleaved(void) {
  memset(model, 0, sizeof model);
  store *s = open_store(path("mix"), 0);
  CHECK(s && start(s) == 0);
  if (!s) return;
  /* a run that writes a few steps and then waits while the others go on:
   * its records become the log's oldest while they still count */
  store_batch *b = store_batch_new();
  for (int i = 0; i < 5; i++) CHECK(put(b, RUNS - 1, i, 1, STORE_STEP_COMPLETED) == 0);
  CHECK(commit(b) == 0);
  srand(14);
  int ver = 1, bad = 0;
  size_t max_log = 0;
  for (int c = 0; c < 500 && !bad; c++) {
    b = store_batch_new();
    for (int k = 0; k < 40; k++) {
      int r = rand() % (RUNS - 1), id = rand() % IDS;
      int status = rand() % 5 == 0 ? STORE_STEP_RUNNING : STORE_STEP_COMPLETED;
      CHECK(put(b, r, id, ++ver, status) == 0);
    }
    CHECK(commit(b) == 0);
    size_t n = entries(s, DB_STEP_LOG);
    if (n > max_log) max_log = n;
    if (c % 50 == 49) bad |= check_run(s, rand() % (RUNS - 1)) != 0;
  }
  CHECK(!bad);
  /* 20,000 appends: trimmed down to its bound, and the idle run's chain moved */
  CHECK(max_log <= STEPS_LOG_MAX + STEPS_LOG_TRIM + 40 && max_log > STEPS_LOG_MAX);
  sbuf v = SBUF_INIT;
  int found = 0;
  char err[256];
  CHECK(store_get(s, DB_STEPS, "idle\0s0", 7, &v, &found, err, sizeof err) == 0 && found);
  sbuf_free(&v);
  for (int r = 0; r < RUNS; r++) CHECK(check_run(s, r) == 0);
  int64_t n = -1;
  CHECK(census_steps(s, &n) == 0 && n == model_count());
  CHECK(entries(s, DB_STEP_HEADS) > 0);

  /* a stopped writer settles: every record by run, the log but its last */
  stop();
  CHECK(entries(s, DB_STEP_HEADS) == 0);
  CHECK(entries(s, DB_STEP_LOG) == 1);
  CHECK(entries(s, DB_STEPS) == (size_t)model_count());
  for (int r = 0; r < RUNS; r++) CHECK(check_run(s, r) == 0);
  store_close(s);

  /* reopened: the sequence goes on, new records replace settled ones */
  s = open_store(path("mix"), 0);
  CHECK(s && start(s) == 0);
  if (!s) return;
  b = store_batch_new();
  for (int i = 0; i < 10; i++) CHECK(put(b, 0, i, ++ver, STORE_STEP_FAILED) == 0);
  CHECK(commit(b) == 0);
  CHECK(entries(s, DB_STEP_LOG) == 11);
  CHECK(check_run(s, 0) == 0);
  CHECK(census_steps(s, &n) == 0 && n == model_count());
  stop();
  store_close(s);
  s = open_store(path("mix"), STORE_READONLY);
  CHECK(s != NULL);
  if (!s) return;
  for (int r = 0; r < RUNS; r++) CHECK(check_run(s, r) == 0);
  store_close(s);
}

/* A store of format 1: its steps only in `steps`, no step_log nor heads. */
static void test_format_1(void) {
  memset(model, 0, sizeof model);
  const char *dir = path("old");
  store *s = open_store(dir, 0);
  CHECK(s && start(s) == 0);
  if (!s) return;
  store_batch *b = store_batch_new();
  CHECK(put(b, 0, 1, 1, STORE_STEP_COMPLETED) == 0);
  CHECK(put(b, 0, 2, 1, STORE_STEP_COMPLETED) == 0);
  CHECK(commit(b) == 0);
  stop(); /* settled: the records in `steps`, as format 1 had them */
  MDB_txn *txn;
  CHECK(store_write_begin(s, &txn) == 0);
  MDB_val k = {6, "format"}, v = {1, "1"};
  CHECK(mdb_put(txn, store_dbi(s, DB_META), &k, &v, 0) == 0);
  CHECK(mdb_drop(txn, store_dbi(s, DB_STEP_LOG), 1) == 0);
  CHECK(mdb_drop(txn, store_dbi(s, DB_STEP_HEADS), 1) == 0);
  CHECK(store_write_end(s, txn, 1) == 0);
  store_close(s);

  /* read-only: read as it is, left as it is */
  s = open_store(dir, STORE_READONLY);
  CHECK(s != NULL);
  if (!s) return;
  CHECK(store_dbi(s, DB_STEP_LOG) == 0);
  CHECK(check_run(s, 0) == 0);
  int64_t n = -1;
  CHECK(census_steps(s, &n) == 0 && n == 2);
  sbuf f = SBUF_INIT;
  int found = 0;
  char err[256];
  CHECK(store_get(s, DB_META, "format", 6, &f, &found, err, sizeof err) == 0 && found);
  CHECK(f.len == 1 && f.data[0] == '1');
  store_close(s);

  /* read-write: marked 2, the log made; old records replaced and added to */
  s = open_store(dir, 0);
  CHECK(s && start(s) == 0);
  if (!s) return;
  CHECK(store_get(s, DB_META, "format", 6, &f, &found, err, sizeof err) == 0 && found);
  CHECK(f.len == 1 && f.data[0] == '2');
  sbuf_free(&f);
  CHECK(check_run(s, 0) == 0);
  b = store_batch_new();
  CHECK(put(b, 0, 2, 2, STORE_STEP_FAILED) == 0);
  CHECK(put(b, 0, 3, 2, STORE_STEP_COMPLETED) == 0);
  CHECK(commit(b) == 0);
  CHECK(check_run(s, 0) == 0);
  CHECK(census_steps(s, &n) == 0 && n == 3);
  stop();
  store_close(s);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  /* the layout as each commit leaves it: no records deferred in memory
   * (writer.c; test_defer.c tests deferring) */
  setenv("SLUICE_DEFER", "0", 1);
  if (unit_tmpdir("step-layout")) return 1;
  RUN(test_interleaved);
  RUN(test_format_1);
  unit_rmtree();
  return UNIT_DONE();
}
