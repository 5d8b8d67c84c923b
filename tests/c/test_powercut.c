/* test_powercut.c: a power cut loses nothing the writer acknowledged, and
 * leaves a store LMDB can open, read and write (wal.c's durability claim).
 *
 * Two processes (this program again, under LD_PRELOAD=powercut_shim.so,
 * whose header gives the model and why it is faithful) write batches
 * through real writers into one real store, both creating it at once: the
 * first with 1, 8, 64 and 200 batches in flight in turn (the idle flush and
 * the pipelined flush), the second as `sluice keys add` beside a serve
 * (opens, writes 3 batches, closes, again and again). Each batch is a small
 * or a 20 kB value plus a second record in another database; each process
 * reports its acknowledged batches on a pipe after the done callback. The
 * log is small (256 KiB, a checkpoint every 64 KiB), so checkpoints, wraps
 * and hand-overs between the processes happen many times a round. The
 * parent kills both with SIGKILL after a random number of
 * acknowledgements, then builds the files a power cut at that moment could
 * leave: data.mdb and the log each as of its last flush, plus none, all, or
 * a random half (or tenth) of the 512-byte sectors written since. Each such
 * store is opened "after a restart" (another boot id: recovery runs), and:
 * every acknowledged batch is there with its records and the right values,
 * every stored batch has all of its records (atomic; the census's count of
 * steps agrees; an event alone, acknowledged with its LMDB transaction
 * still open, has its record and its index entry), a scan of both
 * databases reads without error, and a new write commits.
 *
 * Fails without recovery's replay of the log, without its restoring of the
 * checkpoint's meta pages, and when checkpoints hold no pin (each checked by
 * hand when this test was written). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "store_lmdb.h"
#include "unit.h"
#include "writer.h"

#define MAXN 200000
#define SECOND 150000 /* the second process's batches are numbered from here */
#define SECTOR 512

static void key_of(char *k, unsigned i) { snprintf(k, 32, "pc%08u", i); }

static int fill_res(void *ud, sbuf *out, char *err, size_t errsz) {
  (void)err, (void)errsz;
  sbuf_adds(out, ud);
  return 0;
}

/* The value of batch i in DB_STEPS: mostly 100 bytes, every 50th 20 kB. */
static size_t value_of(char *v, unsigned i) {
  size_t n = i % 50 == 0 ? 20000 : 100;
  memset(v, 'a' + (int)(i % 26), n);
  snprintf(v, 32, "v%u:", i);
  return n;
}

/* Batch i's step record (records_steps.c's layout: the step log, its
 * chains, the moves into `steps` and the trims, all replayed by recovery):
 * step s<i> of run pr<i % 4>, result [i], and its pair in another database
 * under run \0 step id. */
static void step_of(wbatch *b, unsigned i) {
  char run[16], id[16], res[24], err[256], pair[40];
  snprintf(run, sizeof run, "pr%u", i % 4);
  snprintf(id, sizeof id, "s%u", i);
  snprintf(res, sizeof res, "[%u]", i);
  store_step st = {id, strlen(id), "", 0, STORE_STEP_COMPLETED, 1, i, 1, 1, 0, NULL, 0};
  if (store_put_step(b, run, strlen(run), &st, fill_res, res, err, sizeof err)) {
    fprintf(stderr, "put_step: %s\n", err);
    _exit(10);
  }
  int n = snprintf(pair, sizeof pair, "%s%c%s", run, 0, id);
  wbatch_put(b, DB_SCHEDULES, pair, (size_t)n, "1", 1);
}

/* ---- the child: writes until killed ----------------------------------- */

/* Every third batch of the first process outside the event blocks (below)
 * is a step record alone: the writer defers it (no LMDB commit at all,
 * writer.c), so it is in LMDB only once drained; recovery must find it in
 * the log (wal.c). Run "so". */
static int step_only(unsigned i) { return i < SECOND && i % 3 == 1 && (i / 40) % 4 != 3; }

static void step_alone(wbatch *b, unsigned i) {
  char id[16], res[24], err[256];
  snprintf(id, sizeof id, "s%u", i);
  snprintf(res, sizeof res, "[%u]", i);
  store_step st = {id, strlen(id), "", 0, STORE_STEP_COMPLETED, 1, i, 1, 1, 0, NULL, 0};
  if (store_put_step(b, "so", 2, &st, fill_res, res, err, sizeof err)) {
    fprintf(stderr, "put_step: %s\n", err);
    _exit(10);
  }
}

/* The first process's batches come in blocks of 40 of which every fourth
 * is events alone (seq i, stream k<i % 4>, data [i]): the writer
 * acknowledges a group of them after the log's flush and leaves its LMDB
 * transaction open for the next ones (writer.c, "Lazy commits"; only a
 * group of events alone, so a block of them), and every other round cuts
 * at such an acknowledgement: a cut finds acknowledged events LMDB never
 * committed, and recovery must find them in the log. */
static int event_only(unsigned i) { return i < SECOND && (i / 40) % 4 == 3; }

static int stream_of(char *k, unsigned i) { return snprintf(k, 16, "k%u", i % 4); }

static void event_alone(wbatch *b, unsigned i) {
  char stream[16], data[24], err[256];
  int sn = stream_of(stream, i), dn = snprintf(data, sizeof data, "[%u]", i);
  if (store_append_event(b, i, 1700000000000000 + i, "ev", 2, stream, (size_t)sn, data, (size_t)dn,
                         err, sizeof err)) {
    fprintf(stderr, "append_event: %s\n", err);
    _exit(10);
  }
}

static void be64(unsigned char *k, uint64_t v) {
  for (int j = 7; j >= 0; j--, v >>= 8) k[j] = (unsigned char)(v & 0xff);
}

/* whether event i is stored whole: its record holds its data, and its
 * stream's index has its entry */
static int event_stored(store *s, unsigned i, int *whole) {
  unsigned char k[8], ik[32];
  char data[24], err[256];
  be64(k, i);
  sbuf v = SBUF_INIT;
  int found = 0, ifound = 0;
  CHECK(store_get(s, DB_EVENTS, k, 8, &v, &found, err, sizeof err) == 0);
  int dn = snprintf(data, sizeof data, "[%u]", i);
  *whole = found && v.len >= (size_t)dn && memcmp(v.data + v.len - dn, data, (size_t)dn) == 0;
  int n = stream_of((char *)ik, i);
  ik[n] = 0;
  be64(ik + n + 1, i);
  CHECK(store_get(s, DB_STREAMS, ik, (size_t)n + 9, &v, &ifound, err, sizeof err) == 0);
  *whole = *whole && ifound;
  sbuf_free(&v);
  return found || ifound;
}

static struct {
  writer *w;
  int ack_fd;
  unsigned next, inflight, window, phase_left, phase;
} ch;

static const unsigned windows[] = {1, 64, 8, 200};

static void child_fill(void);

static void child_done(void *cookie, int status, const char *errmsg) {
  unsigned i = (unsigned)(uintptr_t)cookie;
  if (status) {
    fprintf(stderr, "child: batch %u failed: %s\n", i, errmsg);
    _exit(5);
  }
  if (write(ch.ack_fd, &i, sizeof i) != (ssize_t)sizeof i) _exit(6);
  ch.inflight--;
  child_fill();
}

static void child_fill(void) {
  static char v[20000];
  while (ch.inflight < ch.window) {
    if (ch.next >= SECOND) _exit(7); /* the parent should have killed us long ago */
    if (ch.phase_left == 0) {
      ch.window = windows[ch.phase++ % 4];
      ch.phase_left = 300;
      if (ch.inflight >= ch.window) return;
    }
    unsigned i = ch.next++;
    ch.phase_left--;
    char k[32], r[32];
    key_of(k, i);
    size_t n = value_of(v, i);
    int rn = snprintf(r, sizeof r, "r%u", i);
    wbatch *b = wbatch_new();
    if (step_only(i)) {
      step_alone(b, i);
    } else if (event_only(i)) {
      event_alone(b, i);
    } else {
      wbatch_put(b, DB_STEPS, k, strlen(k), v, n);
      wbatch_put(b, DB_RUNS, k, strlen(k), r, (size_t)rn);
      step_of(b, i);
    }
    if (writer_submit(ch.w, b, child_done, (void *)(uintptr_t)i)) _exit(8);
    ch.inflight++;
  }
}

static int child(const char *dir, int ack_fd) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  store *s;
  char err[512];
  if (store_open(&s, dir, 0, err, sizeof err)) {
    fprintf(stderr, "child: %s\n", err);
    return 2;
  }
  if (writer_start(&ch.w, s, &loop, err, sizeof err)) {
    fprintf(stderr, "child: %s\n", err);
    return 3;
  }
  ch.ack_fd = ack_fd;
  ch.window = windows[ch.phase++];
  ch.phase_left = 300;
  child_fill();
  uv_run(&loop, UV_RUN_DEFAULT);
  return 4; /* not reached: killed while writing */
}

/* The second process: as `sluice keys add` beside a running serve, over and
 * over: opens the store, writes 3 batches one at a time, closes it (its
 * writer's last checkpoint, its pin gone), waits 2 ms. */
static void once_done(void *cookie, int status, const char *errmsg) {
  if (status) {
    fprintf(stderr, "child2: a batch failed: %s\n", errmsg);
    _exit(5);
  }
  *(int *)cookie = 1;
}

static int child2(const char *dir, int ack_fd) {
  static char v[20000];
  for (unsigned i = SECOND; i < MAXN;) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    store *s;
    writer *w;
    char err[512];
    if (store_open(&s, dir, 0, err, sizeof err) || writer_start(&w, s, &loop, err, sizeof err)) {
      fprintf(stderr, "child2: %s\n", err);
      return 2;
    }
    for (int k = 0; k < 3; k++, i++) {
      char key[32], r[32];
      key_of(key, i);
      size_t n = value_of(v, i);
      int rn = snprintf(r, sizeof r, "r%u", i);
      wbatch *b = wbatch_new();
      wbatch_put(b, DB_STEPS, key, strlen(key), v, n);
      wbatch_put(b, DB_RUNS, key, strlen(key), r, (size_t)rn);
      step_of(b, i);
      int done = 0;
      if (writer_submit(w, b, once_done, &done)) return 8;
      while (!done) uv_run(&loop, UV_RUN_ONCE);
      if (write(ack_fd, &i, sizeof i) != (ssize_t)sizeof i) return 6;
    }
    writer_stop(w);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    store_close(s);
    usleep(2000);
  }
  return 7;
}

/* ---- the parent: cut, rebuild, check ---------------------------------- */

static void copy_file(const char *from, const char *to) {
  int a = open(from, O_RDONLY), b = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  CHECK(a >= 0 && b >= 0);
  char buf[1 << 16];
  ssize_t n;
  while (a >= 0 && b >= 0 && (n = read(a, buf, sizeof buf)) > 0) CHECK(write(b, buf, (size_t)n) == n);
  if (a >= 0) close(a);
  if (b >= 0) close(b);
}

/* img/name = out/name.durable plus the sectors of out/name.pending chosen
 * with probability pct/100, read from dir/name (the newest bytes). */
static void rebuild(const char *dir, const char *out, const char *img, const char *name, int pct,
                    unsigned *seed) {
  char from[512], to[512], pend[512], real[512];
  snprintf(from, sizeof from, "%s/%s.durable", out, name);
  snprintf(to, sizeof to, "%s/%s", img, name);
  snprintf(pend, sizeof pend, "%s/%s.pending", out, name);
  snprintf(real, sizeof real, "%s/%s", dir, name);
  copy_file(from, to);
  int p = open(pend, O_RDONLY), r = open(real, O_RDONLY), t = open(to, O_WRONLY);
  CHECK(p >= 0 && r >= 0 && t >= 0);
  int64_t rec[2];
  char sec[SECTOR];
  while (p >= 0 && read(p, rec, sizeof rec) == (ssize_t)sizeof rec) { /* a torn last record: ignored */
    for (int64_t s = rec[0] / SECTOR * SECTOR; s < rec[0] + rec[1]; s += SECTOR) {
      if ((int)(rand_r(seed) % 100) >= pct) continue;
      ssize_t n = pread(r, sec, SECTOR, s);
      if (n > 0) CHECK(pwrite(t, sec, (size_t)n, s) == n);
    }
  }
  if (p >= 0) close(p);
  if (r >= 0) close(r);
  if (t >= 0) close(t);
}

typedef struct {
  store *s;
  unsigned count, broken;
} scan_ctx;

static int check_pair(void *ud, const void *key, size_t klen, const void *val, size_t vlen) {
  (void)val, (void)vlen;
  scan_ctx *c = ud;
  c->count++;
  sbuf v = SBUF_INIT;
  int found = 0;
  char err[256];
  if (store_get(c->s, DB_RUNS, key, klen, &v, &found, err, sizeof err) || !found) c->broken++;
  sbuf_free(&v);
  return 0;
}

static int count_only(void *ud, const void *key, size_t klen, const void *val, size_t vlen) {
  (void)key, (void)klen, (void)val, (void)vlen;
  ((scan_ctx *)ud)->count++;
  return 0;
}

static void write_done(void *cookie, int status, const char *errmsg) {
  (void)errmsg;
  *(int *)cookie = status == 0 ? 1 : -1;
}

static void check_image(const char *img, const unsigned char *acked, unsigned nacked) {
  store *s;
  char err[512];
  int rc = store_open(&s, img, STORE_READONLY, err, sizeof err);
  CHECK(rc == 0);
  if (rc) {
    fprintf(stderr, "  %s: %s\n", img, err);
    return;
  }
  static char want[20000];
  sbuf v = SBUF_INIT;
  unsigned lost = 0, wrong = 0, acked_alone = 0, acked_events = 0;
  for (unsigned i = 0; i < MAXN; i++) {
    if (event_only(i)) {
      /* acknowledged: stored whole; any other: whole or absent (atomic) */
      int whole = 0, some = event_stored(s, i, &whole);
      if (acked[i] && !whole) {
        if (lost++ < 3) fprintf(stderr, "  %s: acknowledged event %u is lost\n", img, i);
      } else if (some && !whole) {
        wrong++;
      }
      acked_events += acked[i];
      continue;
    }
    if (!acked[i]) continue;
    if (step_only(i)) {
      char id[16], res[24];
      snprintf(id, sizeof id, "s%u", i);
      int rn2 = snprintf(res, sizeof res, "[%u]", i);
      store_steps st = STORE_STEPS_INIT;
      CHECK(store_get_step(s, "so", 2, id, strlen(id), &st, err, sizeof err) == 0);
      if (st.n != 1) {
        if (lost++ < 3) fprintf(stderr, "  %s: deferred step of batch %u is lost\n", img, i);
      } else {
        wrong += st.v[0].payload_len != (size_t)rn2 || memcmp(st.v[0].payload, res, (size_t)rn2) != 0;
      }
      store_steps_free(&st);
      acked_alone++;
      continue;
    }
    char k[32], r[32];
    key_of(k, i);
    size_t n = value_of(want, i);
    int found = 0;
    CHECK(store_get(s, DB_STEPS, k, strlen(k), &v, &found, err, sizeof err) == 0);
    if (!found) {
      if (lost++ < 3) fprintf(stderr, "  %s: acknowledged batch %u is lost\n", img, i);
      continue;
    }
    wrong += v.len != n || memcmp(v.data, want, n) != 0;
    snprintf(r, sizeof r, "r%u", i);
    CHECK(store_get(s, DB_RUNS, k, strlen(k), &v, &found, err, sizeof err) == 0);
    wrong += !found || v.len != strlen(r) || memcmp(v.data, r, v.len) != 0;
    char run[16], id[16], res[24];
    snprintf(run, sizeof run, "pr%u", i % 4);
    snprintf(id, sizeof id, "s%u", i);
    int rn2 = snprintf(res, sizeof res, "[%u]", i);
    store_steps st = STORE_STEPS_INIT;
    CHECK(store_get_step(s, run, strlen(run), id, strlen(id), &st, err, sizeof err) == 0);
    if (st.n != 1) {
      if (lost++ < 3) fprintf(stderr, "  %s: the step of acknowledged batch %u is lost\n", img, i);
    } else {
      wrong += st.v[0].payload_len != (size_t)rn2 || memcmp(st.v[0].payload, res, (size_t)rn2) != 0;
    }
    store_steps_free(&st);
  }
  /* every stored step record has its pair and the other way round: the
   * runs' steps as read, the pairs, and the census agree */
  size_t read_steps = 0;
  for (int r = 0; r < 4; r++) {
    char run[16];
    snprintf(run, sizeof run, "pr%d", r);
    store_steps st = STORE_STEPS_INIT;
    CHECK(store_load_steps(s, run, strlen(run), &st, err, sizeof err) == 0);
    for (size_t j = 0; j < st.n; j++) {
      char pair[40];
      int pn = snprintf(pair, sizeof pair, "%s%c%.*s", run, 0, (int)st.v[j].id_len, st.v[j].id);
      int found = 0;
      CHECK(store_get(s, DB_SCHEDULES, pair, (size_t)pn, &v, &found, err, sizeof err) == 0);
      wrong += !found;
    }
    read_steps += st.n;
    store_steps_free(&st);
  }
  store_steps alone = STORE_STEPS_INIT;
  CHECK(store_load_steps(s, "so", 2, &alone, err, sizeof err) == 0);
  CHECK(alone.n >= acked_alone);
  size_t alone_n = alone.n;
  store_steps_free(&alone);
  scan_ctx pc = {s, 0, 0};
  CHECK(store_scan(s, DB_SCHEDULES, "", 0, 0, count_only, &pc, err, sizeof err) == 0);
  CHECK(pc.count == read_steps);
  store_census cen;
  CHECK(store_census_of(s, &cen, err, sizeof err) == 0);
  CHECK(lost == 0);
  CHECK(wrong == 0);
  scan_ctx c = {s, 0, 0};
  CHECK(store_scan(s, DB_STEPS, "pc", 2, 0, check_pair, &c, err, sizeof err) == 0);
  CHECK(c.broken == 0);
  CHECK(c.count >= nacked - acked_alone - acked_events);
  unsigned steps = c.count;
  c.count = 0;
  CHECK(store_scan(s, DB_RUNS, "", 0, 0, check_pair, &c, err, sizeof err) == 0);
  CHECK(c.count == steps);
  CHECK(cen.n[STORE_K_STEPS] == (int64_t)(steps + read_steps + alone_n));
  sbuf_free(&v);
  store_close(s);

  /* and it takes new writes */
  uv_loop_t loop;
  uv_loop_init(&loop);
  writer *w = NULL;
  CHECK(store_open(&s, img, 0, err, sizeof err) == 0);
  CHECK(writer_start(&w, s, &loop, err, sizeof err) == 0);
  int done = 0;
  if (w) {
    wbatch *b = wbatch_new();
    wbatch_put(b, DB_STEPS, "after", 5, "cut", 3);
    step_of(b, MAXN);
    CHECK(writer_submit(w, b, write_done, &done) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    writer_stop(w);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  CHECK(done == 1);
  CHECK(uv_loop_close(&loop) == 0);
  store_close(s);
}

static void cut_once(int round, unsigned *seed) {
  const char *shim = getenv("POWERCUT_SHIM");
  CHECK(shim && *shim);
  if (!shim || !*shim) {
    fprintf(stderr, "POWERCUT_SHIM must name powercut_shim.so (ctest sets it)\n");
    return;
  }
  char dir[200], out[256];
  snprintf(dir, sizeof dir, "%s", path(""));
  snprintf(dir + strlen(dir), sizeof dir - strlen(dir), "st%d", round);
  snprintf(out, sizeof out, "%s-out", dir);
  CHECK(mkdir(out, 0755) == 0);
  unsigned target = 200 + rand_r(seed) % 3000;

  /* two writing processes on one store, started together (both create it) */
  int fds[2];
  CHECK(pipe(fds) == 0);
  pid_t pids[2];
  for (int c = 0; c < 2; c++) {
    pids[c] = fork();
    if (pids[c] == 0) {
      close(fds[0]);
      char fd[16];
      snprintf(fd, sizeof fd, "%d", fds[1]);
      setenv("LD_PRELOAD", shim, 1);
      setenv("POWERCUT_DIR", dir, 1);
      setenv("POWERCUT_OUT", out, 1);
      /* a small log: checkpoints and wraps happen many times a round */
      setenv("SLUICE_WAL_SIZE", "262144", 1);
      setenv("SLUICE_WAL_CKPT", "65536", 1);
      setenv("SLUICE_BOOT_ID", "before-the-cut", 1);
      /* an ASan build: the shim comes before the ASan runtime */
      setenv("ASAN_OPTIONS", "verify_asan_link_order=0:detect_leaks=0", 1);
      execl("/proc/self/exe", "test_powercut", c ? "child2" : "child", dir, fd, (char *)NULL);
      _exit(9);
    }
  }
  close(fds[1]);
  static unsigned char acked[MAXN];
  memset(acked, 0, sizeof acked);
  unsigned n = 0, n2 = 0, i;
  int killed = 0;
  /* bounded: children that stop acknowledging for 60 s are killed, and fail;
   * the cut waits for the second process's first acknowledgement (a loaded
   * machine can start it late), for 20 s at most */
  struct pollfd pfd = {fds[0], POLLIN, 0};
  time_t t0 = time(NULL);
  while (poll(&pfd, 1, 60000) == 1 && read(fds[0], &i, sizeof i) == (ssize_t)sizeof i) {
    if (i < MAXN) acked[i] = 1;
    n2 += i >= SECOND;
    /* odd rounds: at an event's acknowledgement (its transaction open) */
    int at = !(round & 1) || event_only(i) || time(NULL) - t0 > 20;
    if (++n >= target && (n2 > 0 || time(NULL) - t0 > 20) && at && !killed) {
      kill(pids[0], SIGKILL);
      kill(pids[1], SIGKILL);
      killed = 1;
    }
  }
  close(fds[0]);
  if (!killed) {
    kill(pids[0], SIGKILL);
    kill(pids[1], SIGKILL);
  }
  for (int c = 0; c < 2; c++) {
    int status = 0;
    CHECK(waitpid(pids[c], &status, 0) == pids[c]);
    CHECK(killed && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  }
  if (!killed) return;
  CHECK(n2 > 0); /* the second process wrote too */
  printf("  round %d: cut after %u acknowledged batches (%u of the second process)\n", round, n,
         n2);

  static const int pcts[] = {0, 100, 50, 50, 10};
  for (int k = 0; k < 5; k++) {
    char img[300];
    snprintf(img, sizeof img, "%s-img%d", dir, k);
    CHECK(mkdir(img, 0755) == 0);
    rebuild(dir, out, img, "data.mdb", pcts[k], seed);
    rebuild(dir, out, img, "wal", pcts[k], seed);
    check_image(img, acked, n);
  }
}

static void test_powercut(void) {
  unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
  printf("  seed %u\n", seed);
  for (int round = 0; round < 4; round++) cut_once(round, &seed);
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "child") == 0) return child(argv[2], atoi(argv[3]));
  if (argc == 4 && strcmp(argv[1], "child2") == 0) return child2(argv[2], atoi(argv[3]));
  if (unit_tmpdir("powercut") != 0) return 1;
  /* the images are opened "after a restart": recovery runs */
  setenv("SLUICE_BOOT_ID", "after-the-cut", 1);
  /* a small step log (here and in the children): trims in every round */
  setenv("SLUICE_STEP_LOG_MAX", "300", 1);
  RUN(test_powercut);
  unit_rmtree();
  return UNIT_DONE();
}
