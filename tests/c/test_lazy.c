/* test_lazy.c: lazy commits of event groups (writer.c, wal.c's apply_lazy):
 * a writer acknowledges groups of events after their log record's flush and
 * commits them to LMDB together later. What a user relies on: a read of the
 * events in the same process after an acknowledgement finds them, and the
 * census counts them (each waits for the commit); far fewer LMDB commits than groups; nothing
 * acknowledged is lost when the writer is killed (kill -9, the same boot)
 * with groups in its open transaction, whether the next to write is a new
 * process or one that was running beside it all along, and the next to
 * read finds them. A power cut:
 * test_powercut.c. Real stores, real writers, real processes. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "store.h"
#include "store_lmdb.h"
#include "unit.h"
#include "writer.h"

#define STREAMS 100

static void stream_of(unsigned i, char *k, size_t n) { snprintf(k, n, "k:%u", i % STREAMS); }

/* the batch of event i (position i + 1) */
static wbatch *event(unsigned i) {
  char k[16], data[64], err[256];
  stream_of(i, k, sizeof k);
  snprintf(data, sizeof data, "{\"i\":%u}", i);
  wbatch *b = wbatch_new();
  if (store_append_event(b, (uint64_t)i + 1, 1000 + i, "ev", 2, k, strlen(k), data,
                         strlen(data), err, sizeof err)) {
    fprintf(stderr, "append: %s\n", err);
    exit(10);
  }
  return b;
}

/* event i is stored and indexed */
static int has(store *s, unsigned i) {
  char k[16], err[256];
  stream_of(i, k, sizeof k);
  store_event_probe p;
  if (store_probe_event(s, (uint64_t)i + 1, k, strlen(k), &p, err, sizeof err)) return 0;
  return p.found && p.same_stream && p.indexed;
}

/* of the events i < n with acked[i] (NULL: all), how many are missing */
static unsigned missing(store *s, unsigned n, const unsigned char *acked) {
  unsigned bad = 0;
  for (unsigned i = 0; i < n; i++) {
    if (acked && !acked[i]) continue;
    if (!has(s, i) && bad++ < 3) fprintf(stderr, "  event %u missing\n", i);
  }
  return bad;
}

static struct {
  writer *w;
  store *s;
  unsigned next, total, inflight, window, acked, failed, reads_bad, read_every;
  int ack_fd;
  unsigned char *acked_set;
} a;

static void fill(void);

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
  /* read-your-write: the event just acknowledged, right away, and the
   * census (`sluice store check`'s count) counts every one acknowledged */
  if (a.s && a.read_every && status == 0 && i % a.read_every == 0) {
    store_census c;
    char err[256];
    if (store_census_of(a.s, &c, err, sizeof err) || c.n[STORE_K_EVENTS] < (int64_t)a.acked)
      a.reads_bad++;
    if (!has(a.s, i)) a.reads_bad++;
  }
  fill();
}

static void fill(void) {
  while (a.inflight < a.window && a.next < a.total) {
    unsigned i = a.next++;
    if (writer_submit(a.w, event(i), done, (void *)(uintptr_t)i)) exit(8);
    a.inflight++;
  }
}

static void run_one(const char *dir, unsigned total, unsigned window, unsigned read_every) {
  store *s;
  char err[512];
  CHECK(store_open(&s, dir, 0, err, sizeof err) == 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  memset(&a, 0, sizeof a);
  a.ack_fd = -1;
  a.total = total;
  a.window = window;
  a.read_every = read_every;
  a.s = s;
  CHECK(writer_start(&a.w, s, &loop, err, sizeof err) == 0);
  fill();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(a.failed == 0 && a.acked == a.total);
  CHECK(a.reads_bad == 0);
  writer_stats st;
  writer_get_stats(a.w, &st);
  fprintf(stderr, "  window %u, a read after every %u acks: %llu groups, %llu LMDB commits\n",
          window, read_every, (unsigned long long)st.commits,
          (unsigned long long)st.lmdb_commits);
  /* without reads, groups share commits (a read asks for one) */
  if (!read_every) CHECK(st.lmdb_commits * 4 < st.commits);
  writer_stop(a.w);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  CHECK(missing(s, total, NULL) == 0);
  store_close(s);
  /* committed at stop: a read-only open finds all of them */
  CHECK(store_open(&s, dir, STORE_READONLY, err, sizeof err) == 0);
  CHECK(missing(s, total, NULL) == 0);
  store_close(s);
}

static void test_one_process(void) {
  run_one(path("one64"), 20000, 64, 0);
  run_one(path("one1"), 3000, 1, 0);
  run_one(path("read64"), 20000, 64, 7);
  run_one(path("read1"), 2000, 1, 1);
}

/* ---- kill -9 with groups in the open transaction --------------------------- */

static int killed_child(const char *dir, int ack_fd, int ready_fd) {
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
  if (ready_fd >= 0 && write(ready_fd, "r", 1) != 1) return 5;
  fill();
  uv_run(&loop, UV_RUN_DEFAULT);
  return 4; /* not reached: killed */
}

/* reads acknowledgements from fd until target, kills pid, reads the rest */
static unsigned kill_after(pid_t pid, int fd, unsigned target, unsigned char *acked,
                           unsigned *max) {
  unsigned n = 0, i;
  *max = 0;
  while (n < target && read(fd, &i, sizeof i) == (ssize_t)sizeof i) {
    acked[i] = 1, n++;
    if (i >= *max) *max = i + 1;
  }
  kill(pid, SIGKILL);
  while (read(fd, &i, sizeof i) == (ssize_t)sizeof i) {
    acked[i] = 1, n++;
    if (i >= *max) *max = i + 1;
  }
  close(fd);
  int status;
  CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
  return n;
}

/* The next process to open the store applies them, a read-only one too. */
static void test_kill9(void) {
  static unsigned char acked[1000000];
  for (int round = 0; round < 3; round++) {
    memset(acked, 0, sizeof acked);
    char d[256];
    snprintf(d, sizeof d, "%s%d", path("k9"), round);
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      _exit(killed_child(d, fds[1], -1));
    }
    close(fds[1]);
    unsigned max, n = kill_after(pid, fds[0], 3000 + 2000 * (unsigned)round, acked, &max);
    CHECK(n >= 3000);
    store *s;
    char err[512];
    if (round == 1) {
      /* a read-only open first (`sluice events` after the serve's kill):
       * it has a read-write open apply them before it reads */
      CHECK(store_open(&s, d, STORE_READONLY, err, sizeof err) == 0);
      CHECK(missing(s, max, acked) == 0);
      store_close(s);
    }
    CHECK(store_open(&s, d, 0, err, sizeof err) == 0);
    CHECK(missing(s, max, acked) == 0);
    store_close(s);
    /* and they are in LMDB, committed: a read-only open after it */
    CHECK(store_open(&s, d, STORE_READONLY, err, sizeof err) == 0);
    CHECK(missing(s, max, acked) == 0);
    store_close(s);
  }
}

/* A process that had the store open all along (a `sluice keys add` beside
 * the serve: it does not hold the deferring lock) writes first after the
 * kill: its group goes after the dead writer's acknowledged ones, which it
 * applies first. */
static void once(void *cookie, int status, const char *errmsg) {
  if (status) fprintf(stderr, "a batch failed: %s\n", errmsg);
  *(int *)cookie = status ? 2 : 1;
}

static void test_kill9_beside(void) {
  static unsigned char acked[1000000];
  const char *d = path("beside");
  int fds[2], ready[2];
  CHECK(pipe(fds) == 0 && pipe(ready) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    close(ready[0]);
    _exit(killed_child(d, fds[1], ready[1]));
  }
  close(fds[1]);
  close(ready[1]);
  char c;
  CHECK(read(ready[0], &c, 1) == 1); /* it holds the deferring lock */
  close(ready[0]);
  store *s;
  char err[512];
  CHECK(store_open(&s, d, 0, err, sizeof err) == 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  writer *w;
  CHECK(writer_start(&w, s, &loop, err, sizeof err) == 0);
  memset(acked, 0, sizeof acked);
  unsigned max, n = kill_after(pid, fds[0], 4000, acked, &max);
  CHECK(n >= 4000);
  /* a record of another kind, then one more event after all of them */
  for (int k = 0; k < 2; k++) {
    wbatch *b;
    if (k == 0) {
      b = wbatch_new();
      wbatch_put(b, DB_RUNS, "beside", 6, "y", 1);
    } else {
      b = event(max);
    }
    int ok = 0;
    CHECK(writer_submit(w, b, once, &ok) == 0);
    while (!ok) uv_run(&loop, UV_RUN_ONCE);
    CHECK(ok == 1);
  }
  CHECK(missing(s, max, acked) == 0);
  CHECK(has(s, max));
  writer_stop(w);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  store_close(s);
  CHECK(store_open(&s, d, 0, err, sizeof err) == 0);
  CHECK(missing(s, max, acked) == 0);
  CHECK(has(s, max));
  store_close(s);
}

/* As above, but the process beside dies too, right after its group, and the
 * machine "restarts" (another boot id: recovery restores the newest
 * checkpoint and replays the log after it). That process's first group
 * checkpointed before it applied the dead writer's groups (it held no pin
 * yet): the checkpoint must name LMDB's own tail, so that recovery replays
 * them. */
static int beside_child(const char *d, int go_fd, int done_fd) {
  char c;
  store *s;
  char err[512];
  if (store_open(&s, d, 0, err, sizeof err)) return 2;
  uv_loop_t loop;
  uv_loop_init(&loop);
  writer *w;
  if (writer_start(&w, s, &loop, err, sizeof err)) return 3;
  if (read(go_fd, &c, 1) != 1) return 4;
  wbatch *b = wbatch_new();
  wbatch_put(b, DB_RUNS, "beside", 6, "y", 1);
  int ok = 0;
  if (writer_submit(w, b, once, &ok)) return 5;
  while (!ok) uv_run(&loop, UV_RUN_ONCE);
  if (write(done_fd, "d", 1) != 1) return 6;
  pause(); /* killed: no stop, so no checkpoint of its own after that group */
  return 7;
}

static void test_restart_beside(void) {
  static unsigned char acked[1000000];
  const char *d = path("restart");
  int fds[2], ready[2], go[2], done_p[2];
  CHECK(pipe(fds) == 0 && pipe(ready) == 0 && pipe(go) == 0 && pipe(done_p) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    close(ready[0]);
    _exit(killed_child(d, fds[1], ready[1]));
  }
  close(fds[1]);
  close(ready[1]);
  char c;
  CHECK(read(ready[0], &c, 1) == 1);
  close(ready[0]);
  pid_t pid2 = fork();
  if (pid2 == 0) {
    close(go[1]);
    close(done_p[0]);
    _exit(beside_child(d, go[0], done_p[1]));
  }
  close(go[0]);
  close(done_p[1]);
  usleep(200000); /* it has the store open */
  memset(acked, 0, sizeof acked);
  unsigned max, n = kill_after(pid, fds[0], 4000, acked, &max);
  CHECK(n >= 4000);
  CHECK(write(go[1], "g", 1) == 1);
  CHECK(read(done_p[0], &c, 1) == 1);
  kill(pid2, SIGKILL);
  int status;
  CHECK(waitpid(pid2, &status, 0) == pid2 && WIFSIGNALED(status));
  close(go[1]);
  close(done_p[0]);
  setenv("SLUICE_BOOT_ID", "lazy-test-another-boot", 1);
  store *s;
  char err[512];
  CHECK(store_open(&s, d, 0, err, sizeof err) == 0);
  CHECK(missing(s, max, acked) == 0);
  store_close(s);
  unsetenv("SLUICE_BOOT_ID");
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  if (unit_tmpdir("lazy")) return 1;
  RUN(test_one_process);
  RUN(test_kill9);
  RUN(test_kill9_beside);
  RUN(test_restart_beside);
  unit_rmtree();
  return UNIT_DONE();
}
