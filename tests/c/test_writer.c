/* test_writer.c: unit tests of the group-commit writer (writer.c) on a real
 * uv loop and a real LMDB environment under /tmp (removed at the end).
 * libuv style: callbacks that must fire are counted, nothing sleeps; a
 * watchdog timer (unref'd, so it never keeps a loop alive) aborts a test
 * whose loop would otherwise hang. */
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "store_lmdb.h"
#include "unit.h"
#include "writer.h"


/* ---- a loop, a store and a writer per test ---------------------------- */

typedef struct {
  uv_loop_t loop;
  uv_timer_t watchdog;
  store *s;
  writer *w;
} fixture;

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  fprintf(stderr, "watchdog: a loop ran for 60 s, a callback never came\n");
  abort();
}

static int setup(fixture *f, const char *name) {
  memset(f, 0, sizeof *f);
  char err[512];
  if (store_open(&f->s, path(name), 0, err, sizeof err)) {
    fprintf(stderr, "store_open: %s\n", err);
    return -1;
  }
  uv_loop_init(&f->loop);
  uv_timer_init(&f->loop, &f->watchdog);
  uv_timer_start(&f->watchdog, on_watchdog, 60000, 0);
  uv_unref((uv_handle_t *)&f->watchdog);
  if (writer_start(&f->w, f->s, &f->loop, err, sizeof err)) {
    fprintf(stderr, "writer_start: %s\n", err);
    return -1;
  }
  return 0;
}

static void teardown(fixture *f) {
  if (f->w) writer_stop(f->w);
  uv_close((uv_handle_t *)&f->watchdog, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT); /* completes the close: frees the writer */
  CHECK(uv_loop_close(&f->loop) == 0);
  store_close(f->s);
}

static int get(store *s, int db, const void *k, size_t kl, sbuf *v) {
  char err[256];
  int found = 0;
  CHECK(store_get(s, db, k, kl, v, &found, err, sizeof err) == 0);
  return found;
}

static void key_of(char *k, const char *prefix, unsigned i) {
  snprintf(k, 32, "%s%08u", prefix, i);
}

/* ---- the done callbacks ----------------------------------------------- */

#define MAXB 4096

typedef struct {
  writer *w;
  int calls;
  int next;           /* the cookie index the next callback must carry */
  int out_of_order;
  int status[MAXB];
  int called[MAXB];
  char msg[512];
  int stop_at;  /* call writer_stop from callback number stop_at (1-based) */
  int chain;    /* submit another batch from each callback while > 0 */
} tally;

typedef struct {
  tally *t;
  int i;
} cookie;

static cookie cookies[MAXB];

static void on_done(void *c, int status, const char *errmsg);

static void submit_put(tally *t, int i, const char *prefix, const char *val) {
  wbatch *b = wbatch_new();
  char k[32];
  key_of(k, prefix, (unsigned)i);
  wbatch_put(b, DB_STEPS, k, strlen(k), val, strlen(val));
  cookies[i].t = t;
  cookies[i].i = i;
  CHECK(writer_submit(t->w, b, on_done, &cookies[i]) == 0);
}

static void on_done(void *c, int status, const char *errmsg) {
  cookie *ck = c;
  tally *t = ck->t;
  t->calls++;
  if (ck->i != t->next) t->out_of_order++;
  t->next = ck->i + 1;
  t->status[ck->i] = status;
  t->called[ck->i]++;
  if (status && errmsg) snprintf(t->msg, sizeof t->msg, "%s", errmsg);
  CHECK((status == 0) == (errmsg == NULL));
  if (t->stop_at && t->calls == t->stop_at) writer_stop(t->w);
  if (t->chain > 0) {
    t->chain--;
    submit_put(t, ck->i + 1, "chain", "v");
  }
}

/* ---- tests ------------------------------------------------------------ */

static void test_one_batch(void) {
  fixture f;
  if (setup(&f, "one")) {
    CHECK(0);
    return;
  }
  /* nothing pending: the writer does not keep the loop alive */
  CHECK(!uv_loop_alive(&f.loop));
  static tally t;
  memset(&t, 0, sizeof t);
  t.w = f.w;
  submit_put(&t, 0, "k", "hello");
  CHECK(uv_loop_alive(&f.loop)); /* a batch is pending */
  /* step by step rather than UV_RUN_DEFAULT, so that an async handle left
   * ref'd fails the check below instead of hanging the test */
  while (t.calls < 1) uv_run(&f.loop, UV_RUN_ONCE);
  CHECK(t.calls == 1);
  CHECK(t.status[0] == 0);
  CHECK(!uv_loop_alive(&f.loop));
  sbuf v = SBUF_INIT;
  CHECK(get(f.s, DB_STEPS, "k00000000", 9, &v));
  CHECK_STR(v.data, "hello");
  writer_stats st;
  writer_get_stats(f.w, &st);
  CHECK(st.commits == 1 && st.batches == 1 && st.ops == 1 && st.grows == 0);
  CHECK(st.batch_hist[0] == 1); /* one batch in the commit: the bucket le 1 */
  sbuf_free(&v);
  teardown(&f);
  CHECK(t.calls == 1); /* stopping runs no callback twice */
}

static void test_many_in_order(void) {
  fixture f;
  if (setup(&f, "many")) {
    CHECK(0);
    return;
  }
  static tally t;
  memset(&t, 0, sizeof t);
  t.w = f.w;
  for (int i = 0; i < 1000; i++) submit_put(&t, i, "m", "value");
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK(t.calls == 1000);
  CHECK(t.out_of_order == 0);
  int bad = 0;
  for (int i = 0; i < 1000; i++) bad += t.status[i] != 0 || t.called[i] != 1;
  CHECK(bad == 0);
  writer_stats st;
  writer_get_stats(f.w, &st);
  CHECK(st.batches == 1000 && st.ops == 1000);
  /* group commit: the batches queued during one fsync share the next */
  printf("  1000 batches in %llu commits\n", (unsigned long long)st.commits);
  CHECK(st.commits >= 1 && st.commits <= 50);
  /* the histograms count every commit; batch sizes add up to the batches */
  uint64_t nb = 0, nc = 0;
  for (int i = 0; i < WRITER_HIST; i++) {
    nb += st.batch_hist[i];
    nc += st.commit_hist[i];
  }
  CHECK(nb == st.commits && nc == st.commits);
  CHECK(st.batch_hist[WRITER_HIST - 1] == 0); /* no commit took more than 1024 */
  sbuf v = SBUF_INIT;
  char k[32];
  int missing = 0;
  for (unsigned i = 0; i < 1000; i++) {
    key_of(k, "m", i);
    missing += !get(f.s, DB_STEPS, k, strlen(k), &v);
  }
  CHECK(missing == 0);
  sbuf_free(&v);
  teardown(&f);
}

/* A batch is atomic, and a batch LMDB refuses (a key longer than the limit)
 * fails alone while the batches around it, in the same group, commit. */
static void test_atomic_and_bad_batch(void) {
  fixture f;
  if (setup(&f, "atomic")) {
    CHECK(0);
    return;
  }
  static tally t;
  memset(&t, 0, sizeof t);
  t.w = f.w;
  for (int i = 0; i < 50; i++) submit_put(&t, i, "g", "good");
  /* number 50: two good puts, then a key too long: none may land */
  wbatch *b = wbatch_new();
  wbatch_put(b, DB_STEPS, "atom1", 5, "x", 1);
  wbatch_put(b, DB_RUNS, "atom2", 5, "x", 1);
  char longkey[600];
  memset(longkey, 'L', sizeof longkey);
  wbatch_put(b, DB_STEPS, longkey, sizeof longkey, "x", 1);
  CHECK(wbatch_count(b) == 3);
  cookies[50].t = &t;
  cookies[50].i = 50;
  CHECK(writer_submit(f.w, b, on_done, &cookies[50]) == 0);
  for (int i = 51; i < 100; i++) submit_put(&t, i, "g", "good");
  /* number 100: put, delete of the same key, delete of a key never written */
  b = wbatch_new();
  wbatch_put(b, DB_STEPS, "gone", 4, "x", 1);
  wbatch_put(b, DB_STEPS, "kept", 4, "y", 1);
  wbatch_del(b, DB_STEPS, "gone", 4);
  wbatch_del(b, DB_STEPS, "never", 5);
  cookies[100].t = &t;
  cookies[100].i = 100;
  CHECK(writer_submit(f.w, b, on_done, &cookies[100]) == 0);
  uv_run(&f.loop, UV_RUN_DEFAULT);

  CHECK(t.calls == 101);
  CHECK(t.out_of_order == 0);
  int bad = 0;
  for (int i = 0; i <= 100; i++) bad += i != 50 && t.status[i] != 0;
  CHECK(bad == 0);
  CHECK(t.status[50] == STORE_EIO);
  CHECK(strstr(t.msg, "writing steps") != NULL);
  CHECK(strstr(t.msg, "600 bytes") != NULL);
  CHECK(strstr(t.msg, "MDB_BAD_VALSIZE") != NULL);
  sbuf v = SBUF_INIT;
  CHECK(!get(f.s, DB_STEPS, "atom1", 5, &v));
  CHECK(!get(f.s, DB_RUNS, "atom2", 5, &v));
  CHECK(get(f.s, DB_STEPS, "g00000049", 9, &v));
  CHECK(get(f.s, DB_STEPS, "g00000051", 9, &v));
  CHECK(!get(f.s, DB_STEPS, "gone", 4, &v));
  CHECK(get(f.s, DB_STEPS, "kept", 4, &v));
  CHECK_STR(v.data, "y");
  writer_stats st;
  writer_get_stats(f.w, &st);
  CHECK(st.batches == 100);
  /* the bad batch did not make the writer retry the rest one by one */
  CHECK(st.commits < 50);
  sbuf_free(&v);
  teardown(&f);
}

/* A small map (SLUICE_MAP_SIZE) and more data than it holds: the writer
 * doubles the map until it fits and every batch succeeds. */
static void test_map_growth(void) {
  setenv("SLUICE_MAP_SIZE", "1048576", 1);
  fixture f;
  int rc = setup(&f, "grow");
  unsetenv("SLUICE_MAP_SIZE");
  if (rc) {
    CHECK(0);
    return;
  }
  MDB_envinfo info;
  mdb_env_info(store_env(f.s), &info);
  CHECK(info.me_mapsize == 1048576);
  static tally t;
  memset(&t, 0, sizeof t);
  t.w = f.w;
  static char val[4096];
  memset(val, 'x', sizeof val - 1);
  /* 64 batches of 16 values of 4 KiB: 4 MiB */
  for (int i = 0; i < 64; i++) {
    wbatch *b = wbatch_new();
    for (int j = 0; j < 16; j++) {
      char k[32];
      key_of(k, "big", (unsigned)(i * 16 + j));
      wbatch_put(b, DB_STEPS, k, strlen(k), val, sizeof val - 1);
    }
    cookies[i].t = &t;
    cookies[i].i = i;
    CHECK(writer_submit(f.w, b, on_done, &cookies[i]) == 0);
  }
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK(t.calls == 64 && t.out_of_order == 0);
  int bad = 0;
  for (int i = 0; i < 64; i++) bad += t.status[i] != 0;
  CHECK(bad == 0);
  writer_stats st;
  writer_get_stats(f.w, &st);
  CHECK(st.grows > 0);
  CHECK(st.batches == 64 && st.ops == 1024);
  mdb_env_info(store_env(f.s), &info);
  CHECK(info.me_mapsize >= ((size_t)4 << 20));
  sbuf v = SBUF_INIT;
  int missing = 0;
  for (unsigned i = 0; i < 1024; i++) {
    char k[32];
    key_of(k, "big", i);
    missing += !get(f.s, DB_STEPS, k, strlen(k), &v) || v.len != sizeof val - 1;
  }
  CHECK(missing == 0);
  sbuf_free(&v);
  teardown(&f);
}

/* writer_stop with batches still queued: all are written and called back
 * before it returns; a submit after it is refused. */
static void test_stop_with_pending(void) {
  fixture f;
  if (setup(&f, "stop")) {
    CHECK(0);
    return;
  }
  static tally t;
  memset(&t, 0, sizeof t);
  t.w = f.w;
  for (int i = 0; i < 300; i++) submit_put(&t, i, "s", "v");
  writer_stop(f.w); /* without running the loop first */
  CHECK(t.calls == 300 && t.out_of_order == 0);
  int bad = 0;
  for (int i = 0; i < 300; i++) bad += t.status[i] != 0;
  CHECK(bad == 0);
  wbatch *b = wbatch_new();
  wbatch_put(b, DB_STEPS, "late", 4, "v", 1);
  CHECK(writer_submit(f.w, b, on_done, &cookies[300]) == -1);
  f.w = NULL;
  uv_close((uv_handle_t *)&f.watchdog, NULL);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&f.loop) == 0); /* the async handle is closed */
  CHECK(t.calls == 300);
  sbuf v = SBUF_INIT;
  CHECK(get(f.s, DB_STEPS, "s00000299", 9, &v));
  CHECK(!get(f.s, DB_STEPS, "late", 4, &v));
  sbuf_free(&v);
  store_close(f.s);
}

/* writer_stop from inside a done callback, mid-group: the callbacks after it
 * still run once each, in order. */
static void test_stop_from_callback(void) {
  fixture f;
  if (setup(&f, "stopcb")) {
    CHECK(0);
    return;
  }
  static tally t;
  memset(&t, 0, sizeof t);
  t.w = f.w;
  t.stop_at = 3;
  for (int i = 0; i < 20; i++) submit_put(&t, i, "c", "v");
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK(t.calls == 20 && t.out_of_order == 0);
  int once = 0;
  for (int i = 0; i < 20; i++) once += t.called[i] == 1;
  CHECK(once == 20);
  uv_close((uv_handle_t *)&f.watchdog, NULL);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&f.loop) == 0);
  store_close(f.s);
}

/* Each callback submits the next batch: the loop stays alive across the
 * chain and ends on its own when it ends. */
static void test_chain_keeps_loop_alive(void) {
  fixture f;
  if (setup(&f, "chain")) {
    CHECK(0);
    return;
  }
  static tally t;
  memset(&t, 0, sizeof t);
  t.w = f.w;
  t.chain = 30;
  submit_put(&t, 0, "chain", "v");
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK(t.calls == 31 && t.out_of_order == 0);
  CHECK(!uv_loop_alive(&f.loop));
  writer_stats st;
  writer_get_stats(f.w, &st);
  CHECK(st.batches == 31 && st.commits == 31); /* one at a time: no group */
  teardown(&f);
}

/* Durability: a child process writes, reports each acknowledged batch down a
 * pipe and kills itself (SIGKILL: no exit handlers, no close) right after the
 * last callback; the parent reopens the store and finds every one. */
#define DUR_N 500
#define DUR_OUTSTANDING 16

typedef struct {
  writer *w;
  int fd;
  int submitted, acked;
} dur_state;

static dur_state dur;

static void dur_submit(int i);

static void dur_done(void *c, int status, const char *errmsg) {
  (void)errmsg;
  int i = (int)(intptr_t)c;
  if (status) _exit(5);
  if (write(dur.fd, &i, sizeof i) != (ssize_t)sizeof i) _exit(6);
  dur.acked++;
  if (dur.acked == DUR_N) raise(SIGKILL);
  if (dur.submitted < DUR_N) dur_submit(dur.submitted);
}

static void dur_submit(int i) {
  wbatch *b = wbatch_new();
  char k[32], v[32];
  key_of(k, "dur", (unsigned)i);
  snprintf(v, sizeof v, "value %d", i);
  wbatch_put(b, DB_STEPS, k, strlen(k), v, strlen(v));
  wbatch_put(b, DB_RUNS, k, strlen(k), v, strlen(v));
  dur.submitted++;
  if (writer_submit(dur.w, b, dur_done, (void *)(intptr_t)i)) _exit(7);
}

static void test_durable_across_kill(void) {
  int fds[2];
  CHECK(pipe(fds) == 0);
  const char *dir = path("durable");
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    uv_loop_t loop;
    uv_loop_init(&loop);
    store *s;
    char err[512];
    if (store_open(&s, dir, 0, err, sizeof err)) _exit(2);
    if (writer_start(&dur.w, s, &loop, err, sizeof err)) _exit(3);
    dur.fd = fds[1];
    for (int i = 0; i < DUR_OUTSTANDING; i++) dur_submit(i);
    uv_run(&loop, UV_RUN_DEFAULT);
    _exit(4); /* not reached: the last callback kills the process */
  }
  close(fds[1]);
  static int acked[DUR_N];
  int i, n = 0;
  while (read(fds[0], &i, sizeof i) == (ssize_t)sizeof i) {
    if (i >= 0 && i < DUR_N) acked[i] = 1;
    n++;
  }
  close(fds[0]);
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  CHECK(n == DUR_N);
  store *s;
  char err[512];
  CHECK(store_open(&s, dir, STORE_READONLY, err, sizeof err) == 0);
  sbuf v = SBUF_INIT;
  int lost = 0;
  for (unsigned j = 0; j < DUR_N; j++) {
    if (!acked[j]) continue;
    char k[32], want[32];
    key_of(k, "dur", j);
    snprintf(want, sizeof want, "value %u", j);
    lost += !get(s, DB_STEPS, k, strlen(k), &v) || strcmp(v.data, want) != 0;
    lost += !get(s, DB_RUNS, k, strlen(k), &v);
  }
  CHECK(lost == 0);
  sbuf_free(&v);
  store_close(s);
}

/* Another process grows the map past ours: our writer (write txn) and our
 * reads (read txn) meet MDB_MAP_RESIZED, adopt the new size and go on. The
 * children are forked before this process opens the store (LMDB: no fork
 * with an environment open) and wait for their turn on a pipe. */
static void child_writes_mib(const char *dir, int go_fd, int done_fd, int round, int mib) {
  char c;
  if (read(go_fd, &c, 1) != 1) _exit(2);
  setenv("SLUICE_MAP_SIZE", "1048576", 1);
  fixture f;
  memset(&f, 0, sizeof f);
  char err[512];
  if (store_open(&f.s, dir, 0, err, sizeof err)) _exit(3);
  uv_loop_init(&f.loop);
  if (writer_start(&f.w, f.s, &f.loop, err, sizeof err)) _exit(4);
  static tally t;
  t.w = f.w;
  static char val[8192];
  memset(val, 'r', sizeof val - 1);
  for (int i = 0; i < mib * 128; i++) {
    wbatch *b = wbatch_new();
    char k[32];
    key_of(k, round == 1 ? "r1-" : "r2-", (unsigned)i);
    wbatch_put(b, DB_STEPS, k, strlen(k), val, sizeof val - 1);
    cookies[i].t = &t;
    cookies[i].i = i;
    writer_submit(f.w, b, on_done, &cookies[i]);
  }
  uv_run(&f.loop, UV_RUN_DEFAULT);
  for (int i = 0; i < mib * 128; i++)
    if (t.status[i]) _exit(5);
  writer_stop(f.w);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  store_close(f.s);
  if (write(done_fd, "d", 1) != 1) _exit(6);
  _exit(0);
}

static void test_map_resized_by_other_process(void) {
  const char *dir = path("resized");
  int go[2][2], done[2][2];
  pid_t pid[2];
  for (int r = 0; r < 2; r++) {
    CHECK(pipe(go[r]) == 0 && pipe(done[r]) == 0);
    pid[r] = fork();
    if (pid[r] == 0) {
      /* only our own ends stay open, so a parent that gives up means EOF */
      for (int q = 0; q <= r; q++) {
        close(go[q][1]);
        close(done[q][0]);
        if (q < r) close(go[q][0]), close(done[q][1]);
      }
      child_writes_mib(dir, go[r][0], done[r][1], r + 1, r == 0 ? 4 : 8);
    }
  }
  for (int r = 0; r < 2; r++) close(go[r][0]), close(done[r][1]);
  setenv("SLUICE_MAP_SIZE", "1048576", 1);
  fixture f;
  int rc = setup(&f, "resized");
  unsetenv("SLUICE_MAP_SIZE");
  if (rc) {
    CHECK(0);
    for (int r = 0; r < 2; r++) close(go[r][1]), close(done[r][0]); /* children see EOF */
    return;
  }
  char c;
  MDB_envinfo before, after;
  sbuf v = SBUF_INIT;

  /* round 1: the child writes 4 MiB, then our writer writes */
  CHECK(write(go[0][1], "g", 1) == 1);
  CHECK(read(done[0][0], &c, 1) == 1);
  mdb_env_info(store_env(f.s), &before);
  static tally t;
  memset(&t, 0, sizeof t);
  t.w = f.w;
  submit_put(&t, 0, "mine", "v");
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK(t.calls == 1 && t.status[0] == 0);
  mdb_env_info(store_env(f.s), &after);
  CHECK(after.me_mapsize > before.me_mapsize);
  CHECK(get(f.s, DB_STEPS, "r1-00000511", 11, &v) && v.len == 8191);

  /* round 2: the child writes 8 MiB more, then we read */
  CHECK(write(go[1][1], "g", 1) == 1);
  CHECK(read(done[1][0], &c, 1) == 1);
  mdb_env_info(store_env(f.s), &before);
  CHECK(get(f.s, DB_STEPS, "r2-00001023", 11, &v) && v.len == 8191);
  mdb_env_info(store_env(f.s), &after);
  CHECK(after.me_mapsize > before.me_mapsize);
  CHECK(get(f.s, DB_STEPS, "mine00000000", 12, &v));

  for (int r = 0; r < 2; r++) {
    int status = 0;
    CHECK(waitpid(pid[r], &status, 0) == pid[r]);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(go[r][1]), close(done[r][0]);
  }
  sbuf_free(&v);
  teardown(&f);
}

int main(void) {
  if (unit_tmpdir("writer") != 0) return 1;
  RUN(test_one_batch);
  RUN(test_many_in_order);
  RUN(test_atomic_and_bad_batch);
  RUN(test_map_growth);
  RUN(test_stop_with_pending);
  RUN(test_stop_from_callback);
  RUN(test_chain_keeps_loop_alive);
  RUN(test_durable_across_kill);
  RUN(test_map_resized_by_other_process);
  unit_rmtree();
  return UNIT_DONE();
}
