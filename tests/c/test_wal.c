/* test_wal.c: the write-ahead log's own promises (host/wal.c), on real
 * stores under /tmp with real writers:
 * - a new store's log is small, and a read-only open never creates, grows
 *   or writes one;
 * - a store whose log went missing (data.mdb copied alone, say) gets a new
 *   one its records can be recovered from;
 * - the log is a ring: records go on at its start after a wrap mark that
 *   recovery follows;
 * - a group whose LMDB commit fails after its log record was flushed is
 *   never replayed (wal_cancel): its batches were reported failed;
 * - data.mdb stays within a few checkpoints' worth of freed pages of its
 *   data under a load that frees many pages and writes little log;
 * - an LMDB other than 0.9 (whose meta page layout recovery restores) is
 *   refused at open, saying so.
 * "After a restart" is another SLUICE_BOOT_ID: recovery runs as after a
 * power cut. Commit failures come from this program's own pwrite and writev,
 * which LMDB's calls reach before libc's (an executable's definitions come
 * first) and which fail only for data.mdb's descriptor while asked to. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "store_lmdb.h"
#include "unit.h"
#include "writer.h"

/* ---- writes to data.mdb that fail on demand, and a fake LMDB version ---- */

static int fail_fd = -1; /* writes to it fail with ENOSPC */
static int fake_lmdb_major = -1;

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
  static ssize_t (*real)(int, const void *, size_t, off_t);
  if (!real) real = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
  if (fd >= 0 && fd == fail_fd) {
    errno = ENOSPC;
    return -1;
  }
  return real(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
  static ssize_t (*real)(int, const struct iovec *, int);
  if (!real) real = (ssize_t(*)(int, const struct iovec *, int))dlsym(RTLD_NEXT, "writev");
  if (fd >= 0 && fd == fail_fd) {
    errno = ENOSPC;
    return -1;
  }
  return real(fd, iov, cnt);
}

char *mdb_version(int *major, int *minor, int *patch) {
  static char *(*real)(int *, int *, int *);
  if (!real) real = (char *(*)(int *, int *, int *))dlsym(RTLD_NEXT, "mdb_version");
  if (fake_lmdb_major < 0) return real(major, minor, patch);
  if (major) *major = fake_lmdb_major;
  if (minor) *minor = 0;
  if (patch) *patch = 0;
  return (char *)"LMDB 1.0.0: (test)";
}

/* ---- helpers ---------------------------------------------------------- */

static uv_loop_t loop;

static void on_done(void *cookie, int status, const char *errmsg) {
  (void)errmsg;
  *(int *)cookie = status == 0 ? 1 : -1;
}

/* Opens dir with a writer; 0 or -1 (err printed). */
static int open_rw(const char *dir, store **s, writer **w) {
  char err[512];
  *w = NULL;
  if (store_open(s, dir, 0, err, sizeof err)) {
    fprintf(stderr, "store_open %s: %s\n", dir, err);
    return -1;
  }
  if (writer_start(w, *s, &loop, err, sizeof err)) {
    fprintf(stderr, "writer_start: %s\n", err);
    store_close(*s);
    return -1;
  }
  return 0;
}

static void close_rw(store *s, writer *w) {
  writer_stop(w);
  uv_run(&loop, UV_RUN_DEFAULT);
  store_close(s);
}

/* Commits one batch of a put of key -> val and returns 1 (acknowledged)
 * or -1 (failed). */
static int put1(writer *w, const char *key, const char *val) {
  wbatch *b = wbatch_new();
  wbatch_put(b, DB_STEPS, key, strlen(key), val, strlen(val));
  int done = 0;
  if (writer_submit(w, b, on_done, &done)) return -1;
  while (!done) uv_run(&loop, UV_RUN_ONCE);
  return done;
}

static int has(const char *dir, const char *key) {
  store *s;
  char err[512];
  if (store_open(&s, dir, STORE_READONLY, err, sizeof err)) {
    fprintf(stderr, "store_open %s: %s\n", dir, err);
    return -1;
  }
  sbuf v = SBUF_INIT;
  int found = 0;
  CHECK(store_get(s, DB_STEPS, key, strlen(key), &v, &found, err, sizeof err) == 0);
  sbuf_free(&v);
  store_close(s);
  return found;
}

static off_t size_of(const char *dir, const char *name) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  struct stat st;
  return stat(p, &st) == 0 ? st.st_size : -1;
}

/* The file's bytes, for comparing before and after. */
static sbuf slurp(const char *dir, const char *name) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  sbuf b = SBUF_INIT;
  int fd = open(p, O_RDONLY);
  char buf[65536];
  ssize_t n;
  while (fd >= 0 && (n = read(fd, buf, sizeof buf)) > 0) sbuf_add(&b, buf, (size_t)n);
  if (fd >= 0) close(fd);
  return b;
}

static void restart(const char *boot) { setenv("SLUICE_BOOT_ID", boot, 1); }

/* ---- the tests -------------------------------------------------------- */

/* A new store costs a small log (sluice commands and test suites make
 * hundreds); a read-only open leaves it byte for byte as it was. */
static void test_new_store_small_and_readonly_leaves_log(void) {
  const char *dir = path("small");
  store *s;
  writer *w;
  if (open_rw(dir, &s, &w)) return;
  CHECK(put1(w, "a", "1") == 1);
  close_rw(s, w);
  off_t n = size_of(dir, "wal");
  CHECK(n > 0 && n <= 128 << 10);
  sbuf before = slurp(dir, "wal");
  CHECK(has(dir, "a") == 1);
  sbuf after = slurp(dir, "wal");
  CHECK(before.len == after.len && memcmp(before.data, after.data, before.len) == 0);
  sbuf_free(&before);
  sbuf_free(&after);
}

/* data.mdb without its log (copied alone, or written before the log
 * existed): a read-only open makes none; the next read-write open makes one
 * that continues after the store's last record, so what is written then is
 * recovered after a restart. */
static void test_missing_log(void) {
  const char *dir = path("nolog");
  store *s;
  writer *w;
  if (open_rw(dir, &s, &w)) return;
  for (int i = 0; i < 20; i++) CHECK(put1(w, "old", "x") == 1);
  close_rw(s, w);
  char p[512];
  snprintf(p, sizeof p, "%s/wal", dir);
  CHECK(unlink(p) == 0);
  CHECK(has(dir, "old") == 1);
  CHECK(size_of(dir, "wal") == -1);

  /* a process writes and dies without closing: only the log has it */
  pid_t pid = fork();
  if (pid == 0) {
    uv_loop_init(&loop);
    if (open_rw(dir, &s, &w)) _exit(2);
    _exit(put1(w, "new", "y") == 1 ? 0 : 3);
  }
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  restart("test-wal-missing-log");
  CHECK(has(dir, "new") == 1);
  CHECK(has(dir, "old") == 1);
}

/* The commit fails after the group's record was flushed (data.mdb's writes
 * fail): the batch is reported failed, and after a restart it is not there
 * (the record was retracted; replaying it would make a failed write
 * appear). */
static void test_failed_commit_not_replayed(void) {
  const char *dir = path("cancel");
  restart("test-wal-cancel-1");
  store *s;
  writer *w;
  if (open_rw(dir, &s, &w)) return;
  CHECK(put1(w, "kept", "1") == 1);
  mdb_filehandle_t fd;
  CHECK(mdb_env_get_fd(store_env(s), &fd) == 0);
  fail_fd = fd;
  CHECK(put1(w, "failed", "2") == -1);
  fail_fd = -1;
  close_rw(s, w);
  CHECK(has(dir, "failed") == 0);
  restart("test-wal-cancel-2");
  CHECK(has(dir, "kept") == 1);
  CHECK(has(dir, "failed") == 0);
  /* and the store goes on */
  if (open_rw(dir, &s, &w)) return;
  CHECK(put1(w, "after", "3") == 1);
  close_rw(s, w);
  CHECK(has(dir, "after") == 1);
}

/* Updates that free many pages and write little log (16 random keys of a
 * 10,000-key tree per commit): the pin of each checkpoint keeps freed pages
 * from reuse until the next, so checkpoints must follow the freed pages,
 * not only the log's bytes, or data.mdb grows by a cycle's pages each
 * cycle. */
static void test_data_file_bounded(void) {
  const char *dir = path("bounded");
  store *s;
  writer *w;
  if (open_rw(dir, &s, &w)) return;
  char key[32], val[300];
  memset(val, 'v', sizeof val - 1);
  val[sizeof val - 1] = '\0';
  for (int round = 0; round < 10; round++) {
    wbatch *b = wbatch_new();
    for (int i = round * 1000; i < round * 1000 + 1000; i++) {
      snprintf(key, sizeof key, "k%05d", i);
      wbatch_put(b, DB_STEPS, key, strlen(key), val, strlen(val));
    }
    int done = 0;
    CHECK(writer_submit(w, b, on_done, &done) == 0);
    while (!done) uv_run(&loop, UV_RUN_ONCE);
    CHECK(done == 1);
  }
  off_t data0 = size_of(dir, "data.mdb");
  unsigned seed = 14;
  for (int c = 0; c < 1500; c++) {
    wbatch *b = wbatch_new();
    for (int k = 0; k < 16; k++) {
      snprintf(key, sizeof key, "k%05d", rand_r(&seed) % 10000);
      wbatch_put(b, DB_STEPS, key, strlen(key), val, 100 + (size_t)(c % 150));
    }
    int done = 0;
    CHECK(writer_submit(w, b, on_done, &done) == 0);
    while (!done) uv_run(&loop, UV_RUN_ONCE);
    if (done != 1) {
      CHECK(done == 1);
      break;
    }
  }
  off_t data1 = size_of(dir, "data.mdb");
  close_rw(s, w);
  printf("  data.mdb: %lld bytes of data, %lld after 1500 commits of updates\n",
         (long long)data0, (long long)data1);
  CHECK(data1 <= data0 + (24 << 20));
}

/* A process writes `first` records of 1 KB into a 256 KiB log, closes (a
 * checkpoint there, near the middle), writes `then` more and dies without
 * closing; after a restart all of them must be there. */
static void wrap_round(const char *dir, int first, int then) {
  pid_t pid = fork();
  if (pid == 0) {
    /* no checkpoints but at open, at close and when the ring is full */
    setenv("SLUICE_WAL_SIZE", "262144", 1);
    setenv("SLUICE_WAL_CKPT", "1073741824", 1);
    uv_loop_init(&loop);
    store *s;
    writer *w;
    char key[32], val[1000];
    memset(val, 'w', sizeof val - 1);
    val[sizeof val - 1] = '\0';
    for (int i = 0, part = 0; part < 2; part++) {
      if (open_rw(dir, &s, &w)) _exit(2);
      for (int n = part ? first + then : first; i < n; i++) {
        snprintf(key, sizeof key, "w%04d", i);
        if (put1(w, key, val) != 1) _exit(3);
      }
      if (part == 0) close_rw(s, w);
    }
    _exit(0); /* as if killed: LMDB's last commits are in the page cache only */
  }
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(size_of(dir, "wal") <= 262144);
  restart(dir); /* a boot id of its own: recovery runs */
  store *s;
  char err[512];
  CHECK(store_open(&s, dir, STORE_READONLY, err, sizeof err) == 0);
  unsigned lost = 0;
  sbuf v = SBUF_INIT;
  for (int i = 0; i < first + then; i++) {
    char key[32];
    snprintf(key, sizeof key, "w%04d", i);
    int found = 0;
    CHECK(store_get(s, DB_STEPS, key, strlen(key), &v, &found, err, sizeof err) == 0);
    lost += !found || v.len != 999;
  }
  sbuf_free(&v);
  store_close(s);
  CHECK(lost == 0);
}

/* The log is a ring: a record that does not fit before its end goes to its
 * start after a wrap mark, which recovery follows (120 + 200 records: the
 * process dies after the mark, with the checkpoint before it); when the
 * ring is full (up to the checkpoint's records) the group checkpoints and
 * starts again at the start (120 + 330). */
static void test_log_wraps(void) {
  wrap_round(path("wrap-mark"), 120, 200);
  wrap_round(path("wrap-full"), 120, 330);
}

/* Recovery writes LMDB 0.9's meta pages back: another LMDB is refused. */
static void test_other_lmdb_refused(void) {
  const char *dir = path("version");
  store *s;
  writer *w;
  if (open_rw(dir, &s, &w)) return;
  close_rw(s, w);
  fake_lmdb_major = 1;
  char err[512] = "";
  int rc = store_open(&s, dir, 0, err, sizeof err);
  fake_lmdb_major = -1;
  CHECK(rc == STORE_EIO);
  CHECK(strstr(err, "LMDB 1.0.0") != NULL && strstr(err, "LMDB 0.9") != NULL);
  if (rc == 0) store_close(s);
  CHECK(has(dir, "anything") == 0); /* read-only opens read on */
}

int main(void) {
  if (unit_tmpdir("wal") != 0) return 1;
  signal(SIGXFSZ, SIG_IGN);
  uv_loop_init(&loop);
  restart("test-wal-boot");
  RUN(test_new_store_small_and_readonly_leaves_log);
  RUN(test_missing_log);
  RUN(test_failed_commit_not_replayed);
  RUN(test_data_file_bounded);
  RUN(test_log_wraps);
  RUN(test_other_lmdb_refused);
  CHECK(uv_loop_close(&loop) == 0);
  unit_rmtree();
  return UNIT_DONE();
}
