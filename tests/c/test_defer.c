/* test_defer.c: deferred step records (writer.c, wal.c, steps_pending.h):
 * a writer holding the log's deferring lock acknowledges step records after
 * their log record's flush and applies them to LMDB later; every read sees
 * them meanwhile (this process), the groups of step records alone commit no
 * LMDB transaction, and nothing acknowledged is lost when the writer is
 * killed (kill -9, the same boot: a read-only open reads them from the log,
 * a read-write one applies them) or beside another writer process. A power
 * cut: test_powercut.c. Real stores, real writers, real processes. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "store.h"
#include "steps_pending.h"
#include "store_lmdb.h"
#include "unit.h"
#include "writer.h"

static int fill_str(void *ud, sbuf *out, char *err, size_t errsz) {
  (void)err, (void)errsz;
  sbuf_adds(out, ud);
  return 0;
}

#define RUNS 8

static void put(wbatch *b, unsigned i) {
  char run[16], id[16], res[32], err[256];
  snprintf(run, sizeof run, "d%u", i % RUNS);
  snprintf(id, sizeof id, "s%u", i / RUNS);
  snprintf(res, sizeof res, "[%u]", i);
  store_step st = {id, strlen(id), "", 0, STORE_STEP_COMPLETED, 1, i, 1, 1, 0, NULL, 0};
  if (store_put_step(b, run, strlen(run), &st, fill_str, res, err, sizeof err)) {
    fprintf(stderr, "put_step: %s\n", err);
    exit(10);
  }
}

/* Every step i < n of the model is read back right: the number missing. */
static unsigned missing(store *s, unsigned n, const unsigned char *acked) {
  unsigned bad = 0;
  char err[512];
  for (unsigned r = 0; r < RUNS; r++) {
    char run[16];
    snprintf(run, sizeof run, "d%u", r);
    store_steps l = STORE_STEPS_INIT;
    if (store_load_steps(s, run, strlen(run), &l, err, sizeof err) != 0) {
      fprintf(stderr, "load: %s\n", err);
      return n;
    }
    for (unsigned i = r; i < n; i += RUNS) {
      if (acked && !acked[i]) continue;
      char id[16], res[32];
      snprintf(id, sizeof id, "s%u", i / RUNS);
      snprintf(res, sizeof res, "[%u]", i);
      int found = 0;
      for (size_t j = 0; j < l.n && !found; j++)
        found = l.v[j].id_len == strlen(id) && memcmp(l.v[j].id, id, l.v[j].id_len) == 0 &&
                l.v[j].payload_len == strlen(res) && memcmp(l.v[j].payload, res, strlen(res)) == 0;
      if (!found && bad++ < 3) fprintf(stderr, "  step %u (run %s id %s) missing\n", i, run, id);
    }
    store_steps_free(&l);
  }
  return bad;
}

/* ---- one process, many groups in flight -------------------------------- */

static struct {
  writer *w;
  store *s;
  unsigned next, total, inflight, window, acked, failed, reads_bad, early_bad;
  int ack_fd;
  int mixed; /* every 997th batch carries another record too */
  unsigned char *acked_set;
} a;

static void fill(void);

/* A batch that commits LMDB anyway (mixed) drains the pending steps and
 * defers none of its own, so that another process reading LMDB alone sees
 * every step acknowledged before it: when it is acknowledged, no step
 * submitted before it (or it) is still pending. The number that are. */
static unsigned pending_upto(store *s, unsigned upto) {
  sbuf all = SBUF_INIT;
  /* under the set's lock, as every reader: the writer thread drains it */
  pending_lock(store_pending(s));
  pending_copy_all(store_pending(s), &all);
  pending_unlock(store_pending(s));
  unsigned bad = 0;
  size_t at = 0, rn, recn;
  const char *run;
  const unsigned char *rec;
  while (pending_next(all.data, all.len, &at, &run, &rn, &rec, &recn)) {
    unsigned r = 0, k = 0;
    size_t idn = recn >= 30 ? (size_t)(rec[28] | rec[29] << 8) : 0;
    char idb[16] = {0}, rb[16] = {0};
    if (idn == 0 || idn >= sizeof idb || 30 + idn > recn || rn >= sizeof rb) {
      bad++;
      continue;
    }
    memcpy(idb, rec + 30, idn);
    memcpy(rb, run, rn);
    if (sscanf(rb, "d%u", &r) != 1 || sscanf(idb, "s%u", &k) != 1 || k * RUNS + r <= upto) bad++;
  }
  sbuf_free(&all);
  return bad;
}

static void done(void *cookie, int status, const char *errmsg) {
  unsigned i = (unsigned)(uintptr_t)cookie;
  if (status) {
    fprintf(stderr, "batch %u failed: %s\n", i, errmsg);
    a.failed++;
  } else {
    a.acked++;
    if (a.acked_set) a.acked_set[i] = 1;
    if (a.ack_fd >= 0 && write(a.ack_fd, &i, sizeof i) != (ssize_t)sizeof i) _exit(6);
  }
  a.inflight--;
  if (a.mixed && a.s && i % 997 == 0 && status == 0) a.early_bad += pending_upto(a.s, i);
  /* reads while records are pending: every acknowledged step is there */
  if (a.s && a.acked % 500 == 0 && a.acked_set) a.reads_bad += missing(a.s, a.next, a.acked_set);
  fill();
}

static void fill(void) {
  while (a.inflight < a.window && a.next < a.total) {
    unsigned i = a.next++;
    wbatch *b = wbatch_new();
    put(b, i);
    if (a.mixed && i % 997 == 0) {
      char k[32];
      snprintf(k, sizeof k, "k%u", i);
      wbatch_put(b, DB_RUNS, k, strlen(k), "x", 1);
    }
    if (writer_submit(a.w, b, done, (void *)(uintptr_t)i)) exit(8);
    a.inflight++;
  }
}

static void test_one_process(void) {
  const char *dir = path("one");
  store *s;
  char err[512];
  CHECK(store_open(&s, dir, 0, err, sizeof err) == 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  memset(&a, 0, sizeof a);
  a.ack_fd = -1;
  a.total = 20000;
  a.window = 64;
  a.mixed = 1;
  a.s = s;
  a.acked_set = calloc(a.total, 1);
  CHECK(writer_start(&a.w, s, &loop, err, sizeof err) == 0);
  fill();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(a.failed == 0 && a.acked == a.total);
  CHECK(a.reads_bad == 0);
  CHECK(a.early_bad == 0);
  CHECK(missing(s, a.total, NULL) == 0);
  writer_stats st;
  writer_get_stats(a.w, &st);
  /* most groups committed nothing to LMDB */
  fprintf(stderr, "  %llu groups, %llu LMDB commits\n", (unsigned long long)st.commits,
          (unsigned long long)st.lmdb_commits);
  CHECK(st.lmdb_commits * 2 < st.commits);
  store_census cen;
  CHECK(store_census_of(s, &cen, err, sizeof err) == 0);
  CHECK(cen.n[STORE_K_STEPS] == (int64_t)a.total);
  writer_stop(a.w);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  store_close(s);
  /* settled at stop: all in LMDB, as a read-only open sees it */
  CHECK(store_open(&s, dir, STORE_READONLY, err, sizeof err) == 0);
  CHECK(missing(s, a.total, NULL) == 0);
  store_close(s);
  free(a.acked_set);
}

/* ---- beside another writer process ------------------------------------ */

static void once(void *cookie, int status, const char *errmsg) {
  if (status) {
    fprintf(stderr, "second process: a batch failed: %s\n", errmsg);
    _exit(5);
  }
  *(int *)cookie = 1;
}

/* As `sluice keys add` beside a serve: opens the store, writes 3 batches
 * (a step of run e<k> and a record), closes it, for ms milliseconds. */
static int second(const char *dir, int ms) {
  uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000;
  for (unsigned i = 0; uv_hrtime() < end;) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    store *s;
    writer *w2;
    char err[512];
    if (store_open(&s, dir, 0, err, sizeof err) || writer_start(&w2, s, &loop, err, sizeof err)) {
      fprintf(stderr, "second process: %s\n", err);
      return 2;
    }
    for (int k = 0; k < 3; k++, i++) {
      char run[16], id[16], key[32], err2[256];
      snprintf(run, sizeof run, "e%u", i % 3);
      snprintf(id, sizeof id, "s%u", i);
      snprintf(key, sizeof key, "e%u", i);
      store_step st = {id, strlen(id), "", 0, STORE_STEP_COMPLETED, 1, i, 1, 1, 0, NULL, 0};
      wbatch *b = wbatch_new();
      if (store_put_step(b, run, strlen(run), &st, fill_str, "1", err2, sizeof err2)) return 3;
      wbatch_put(b, DB_RUNS, key, strlen(key), "y", 1);
      int ok = 0;
      if (writer_submit(w2, b, once, &ok)) return 8;
      while (!ok) uv_run(&loop, UV_RUN_ONCE);
    }
    writer_stop(w2);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    store_close(s);
    usleep(1000);
  }
  return 0;
}

static void test_two_processes(void) {
  const char *dir = path("two");
  /* the second process is forked before this one opens the store or starts
   * threads (a child forked from a threaded parent can deadlock on a lock a
   * parent thread held at the fork: ASan's allocator did), and starts once
   * this one holds the deferring lock */
  int go[2];
  CHECK(pipe(go) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(go[1]);
    char c;
    _exit(read(go[0], &c, 1) == 1 ? second(dir, 3000) : 9);
  }
  close(go[0]);
  store *s;
  char err[512];
  CHECK(store_open(&s, dir, 0, err, sizeof err) == 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  memset(&a, 0, sizeof a);
  a.ack_fd = -1;
  a.total = 30000;
  a.window = 64;
  a.acked_set = calloc(a.total, 1);
  CHECK(writer_start(&a.w, s, &loop, err, sizeof err) == 0);
  CHECK(write(go[1], "g", 1) == 1);
  close(go[1]);
  fill();
  uv_run(&loop, UV_RUN_DEFAULT);
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(a.failed == 0 && a.acked == a.total);
  CHECK(missing(s, a.total, NULL) == 0);
  writer_stop(a.w);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  store_close(s);
  free(a.acked_set);
}

/* ---- kill -9 of the writer, the same boot -------------------------------- */

static int killed_child(const char *dir, int ack_fd) {
  store *s;
  char err[512];
  if (store_open(&s, dir, 0, err, sizeof err)) {
    fprintf(stderr, "child: %s\n", err);
    return 2;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  memset(&a, 0, sizeof a);
  a.ack_fd = ack_fd;
  a.total = 1000000;
  a.window = 64;
  if (writer_start(&a.w, s, &loop, err, sizeof err)) return 3;
  fill();
  uv_run(&loop, UV_RUN_DEFAULT);
  return 4; /* not reached: killed */
}

static void test_kill9(void) {
  const char *dir = path("k9");
  static unsigned char acked[1000000];
  for (int round = 0; round < 3; round++) {
    memset(acked, 0, sizeof acked);
    char d[256];
    snprintf(d, sizeof d, "%s%d", dir, round);
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      _exit(killed_child(d, fds[1]));
    }
    close(fds[1]);
    unsigned n = 0, i, max = 0, target = 3000 + 2000 * (unsigned)round;
    while (n < target && read(fds[0], &i, sizeof i) == (ssize_t)sizeof i) {
      acked[i] = 1, n++;
      if (i >= max) max = i + 1;
    }
    kill(pid, SIGKILL);
    while (read(fds[0], &i, sizeof i) == (ssize_t)sizeof i) {
      acked[i] = 1, n++;
      if (i >= max) max = i + 1;
    }
    close(fds[0]);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
    CHECK(n >= target);
    store *s;
    char err[512];
    /* read-only, before anyone opens it to write: from the log */
    CHECK(store_open(&s, d, STORE_READONLY, err, sizeof err) == 0);
    CHECK(missing(s, max, acked) == 0);
    store_close(s);
    /* a read-write open applies them (and a read-only one after it reads LMDB) */
    CHECK(store_open(&s, d, 0, err, sizeof err) == 0);
    CHECK(missing(s, max, acked) == 0);
    store_close(s);
    setenv("SLUICE_DEFER_LOAD", "0", 1); /* the read-only open: LMDB only */
    CHECK(store_open(&s, d, STORE_READONLY, err, sizeof err) == 0);
    CHECK(missing(s, max, acked) == 0);
    store_close(s);
    unsetenv("SLUICE_DEFER_LOAD");
  }
}

/* ---- a run with records in the step log, then deferred ones ------------ */

/* n steps of run "c" (ids s0..), each payload tag, from a fresh writer
 * left running (the caller exits without the stop's settle); each acked
 * before the next */
static int put_c(store *s, unsigned n, const char *tag) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  writer *w;
  char err[512];
  if (writer_start(&w, s, &loop, err, sizeof err)) {
    fprintf(stderr, "writer: %s\n", err);
    return 2;
  }
  for (unsigned i = 0; i < n; i++) {
    char id[16], err2[256];
    snprintf(id, sizeof id, "s%u", i);
    store_step st = {id, strlen(id), "", 0, STORE_STEP_COMPLETED, 1, i, 1, 1, 0, NULL, 0};
    wbatch *b = wbatch_new();
    if (store_put_step(b, "c", 1, &st, fill_str, (void *)tag, err2, sizeof err2)) return 3;
    int ok = 0;
    if (writer_submit(w, b, once, &ok)) return 4;
    while (!ok) uv_run(&loop, UV_RUN_ONCE);
  }
  return 0;
}

/* steps of run "c" whose payload is not tag */
static unsigned not_tagged(store *s, unsigned n, const char *tag) {
  store_steps l = STORE_STEPS_INIT;
  char err[512];
  if (store_load_steps(s, "c", 1, &l, err, sizeof err) != 0) return n;
  unsigned bad = n > l.n ? n - (unsigned)l.n : 0;
  for (size_t j = 0; j < l.n; j++)
    if (l.v[j].payload_len != strlen(tag) || memcmp(l.v[j].payload, tag, strlen(tag)) != 0) bad++;
  store_steps_free(&l);
  return bad;
}

/* A process that does not defer leaves run c's records in the step log (it
 * dies before its stop settles them); the next one defers newer records of
 * the same ids, and its drain must not put them under the log's older ones
 * (which count over `steps`): reads give the newer ones, during the run and
 * after the stop's settle. */
static void test_log_then_deferred(void) {
  const char *dir = path("chain");
  pid_t pid = fork();
  if (pid == 0) {
    setenv("SLUICE_DEFER", "0", 1);
    store *s;
    char err[512];
    if (store_open(&s, dir, 0, err, sizeof err)) _exit(2);
    _exit(put_c(s, 40, "\"old\""));
  }
  int status;
  CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  store *s;
  char err[512];
  CHECK(store_open(&s, dir, 0, err, sizeof err) == 0);
  CHECK(not_tagged(s, 40, "\"old\"") == 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  writer *w;
  CHECK(writer_start(&w, s, &loop, err, sizeof err) == 0);
  for (unsigned i = 0; i < 40; i++) {
    char id[16], err2[256];
    snprintf(id, sizeof id, "s%u", i);
    store_step st = {id, strlen(id), "", 0, STORE_STEP_COMPLETED, 1, i, 1, 1, 0, NULL, 0};
    wbatch *b = wbatch_new();
    CHECK(store_put_step(b, "c", 1, &st, fill_str, "\"new\"", err2, sizeof err2) == 0);
    int ok = 0;
    CHECK(writer_submit(w, b, once, &ok) == 0);
    while (!ok) uv_run(&loop, UV_RUN_ONCE);
  }
  /* drained (the writer goes idle: its drain comes within ~100 ms) */
  for (int t = 0; t < 5000 && pending_count(store_pending(s)) > 0; t++) {
    uv_run(&loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
  CHECK(pending_count(store_pending(s)) == 0);
  CHECK(not_tagged(s, 40, "\"new\"") == 0);
  writer_stop(w);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  CHECK(not_tagged(s, 40, "\"new\"") == 0);
  store_close(s);
  CHECK(store_open(&s, dir, STORE_READONLY, err, sizeof err) == 0);
  CHECK(not_tagged(s, 40, "\"new\"") == 0);
  store_close(s);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  if (unit_tmpdir("defer")) return 1;
  RUN(test_one_process);
  RUN(test_two_processes);
  RUN(test_kill9);
  RUN(test_log_then_deferred);
  unit_rmtree();
  return UNIT_DONE();
}
