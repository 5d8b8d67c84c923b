/* test_store.c: unit tests of store.c on a real LMDB environment in a fresh
 * directory under /tmp (removed at the end): opening, the errors a user can
 * meet (missing store, not a store, newer format, no permission), get, and
 * prefix scans forwards and backwards with keys holding 0x00 and 0xff bytes.
 * Writes go through the writer, as in the product. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "store_lmdb.h"
#include "unit.h"
#include "writer.h"


static void write_file(const char *p, const char *text, size_t times) {
  FILE *f = fopen(p, "w");
  for (size_t i = 0; i < times; i++) fputs(text, f);
  fclose(f);
}

/* ---- writing through the writer, synchronously for the tests ---------- */

typedef struct {
  int calls;
  int status;
} done_rec;

static void on_done(void *cookie, int status, const char *errmsg) {
  done_rec *d = cookie;
  d->calls++;
  d->status = status;
  if (status) fprintf(stderr, "batch failed: %s\n", errmsg);
}

/* Submits b and runs a loop until its done callback fired; returns status. */
static int write_batch(store *s, wbatch *b) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  writer *w;
  char err[256];
  int rc = writer_start(&w, s, &loop, err, sizeof err);
  CHECK(rc == 0);
  if (rc) return rc;
  done_rec d = {0, 0};
  CHECK(writer_submit(w, b, on_done, &d) == 0);
  while (d.calls == 0) uv_run(&loop, UV_RUN_ONCE);
  CHECK(d.calls == 1);
  writer_stop(w);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
  return d.status;
}

static void put1(store *s, int db, const void *k, size_t kl, const char *v) {
  wbatch *b = wbatch_new();
  wbatch_put(b, db, k, kl, v, strlen(v));
  CHECK(write_batch(s, b) == 0);
}

/* ---- tests ------------------------------------------------------------ */

static void test_open_create_reopen(void) {
  char err[512] = "";
  store *s;
  const char *dir = path("a/b/.sluice");
  struct stat st;
  /* only the store's own directory is created, never missing parents (a
   * typo in --store must not build a tree): the message names the parent */
  CHECK(store_open(&s, dir, 0, err, sizeof err) == STORE_EBADSTORE);
  CHECK(strstr(err, "its parent directory ") != NULL && strstr(err, path("a/b")) != NULL);
  CHECK(strstr(err, "does not exist: create it first") != NULL);
  CHECK(stat(path("a"), &st) != 0);
  CHECK(mkdir(path("a"), 0755) == 0 && mkdir(path("a/b"), 0755) == 0);
  int rc = store_open(&s, dir, 0, err, sizeof err);
  CHECK(rc == STORE_OK);
  if (rc) {
    fprintf(stderr, "%s\n", err);
    return;
  }
  CHECK_STR(store_dir(s), dir);
  CHECK_STR(store_db_name(DB_STEPS), "steps");
  CHECK_STR(store_db_name(DB_RUNS_BY_TIME), "runs_by_time");
  sbuf v = SBUF_INIT;
  int found = 0;
  CHECK(store_get(s, DB_META, "format", 6, &v, &found, err, sizeof err) == 0);
  CHECK(found);
  CHECK_STR(v.data, "2");
  MDB_envinfo info;
  mdb_env_info(store_env(s), &info);
  CHECK(info.me_mapsize >= ((size_t)256 << 20));
  CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0755);
  put1(s, DB_RUNS, "r1", 2, "{\"id\":\"r1\"}");
  store_close(s);

  /* reopen, writable then read-only: the data and the format are there */
  CHECK(store_open(&s, dir, 0, err, sizeof err) == 0);
  CHECK(store_get(s, DB_RUNS, "r1", 2, &v, &found, err, sizeof err) == 0 && found);
  CHECK_STR(v.data, "{\"id\":\"r1\"}");
  store_close(s);
  CHECK(store_open(&s, dir, STORE_READONLY, err, sizeof err) == 0);
  CHECK(store_get(s, DB_RUNS, "r1", 2, &v, &found, err, sizeof err) == 0 && found);
  CHECK(store_get(s, DB_RUNS, "r2", 2, &v, &found, err, sizeof err) == 0 && !found);
  CHECK(v.len == 0);
  CHECK(store_get(s, DB_META, "format", 6, &v, &found, err, sizeof err) == 0 && found);
  CHECK_STR(v.data, "2");
  /* a writer refuses a read-only store */
  uv_loop_t loop;
  uv_loop_init(&loop);
  writer *w = NULL;
  CHECK(writer_start(&w, s, &loop, err, sizeof err) == STORE_EACCES);
  CHECK(w == NULL);
  CHECK(strstr(err, "read-only") != NULL);
  CHECK(uv_loop_close(&loop) == 0);
  store_close(s);
  sbuf_free(&v);
}

static void test_readonly_missing(void) {
  char err[512] = "";
  store *s = (store *)1;
  const char *dir = path("nowhere/.sluice");
  CHECK(store_open(&s, dir, STORE_READONLY, err, sizeof err) == STORE_ENOTFOUND);
  CHECK(s == NULL);
  CHECK(strstr(err, "no store at") != NULL);
  CHECK(strstr(err, dir) != NULL);
  CHECK(strstr(err, "run a pipeline first") != NULL);
  struct stat st;
  CHECK(stat(dir, &st) != 0); /* a read-only open creates nothing */

  /* an empty directory is no store either */
  mkdir(path("empty"), 0755);
  CHECK(store_open(&s, path("empty"), STORE_READONLY, err, sizeof err) == STORE_ENOTFOUND);
  CHECK(stat(path("empty/data.mdb"), &st) != 0);

  /* nor one that another process is creating: data.mdb still empty */
  mkdir(path("creating"), 0755);
  write_file(path("creating/data.mdb"), "", 0);
  CHECK(store_open(&s, path("creating"), STORE_READONLY, err, sizeof err) == STORE_ENOTFOUND);
  CHECK(strstr(err, "no store at") != NULL);
}

static void test_not_a_store(void) {
  char err[512] = "";
  store *s;
  /* data.mdb that is not LMDB */
  mkdir(path("junk"), 0755);
  write_file(path("junk/data.mdb"), "this is not an LMDB environment, just text\n", 400);
  CHECK(store_open(&s, path("junk"), 0, err, sizeof err) == STORE_EBADSTORE);
  CHECK(strstr(err, path("junk")) != NULL);
  CHECK(strstr(err, "is not a sluice store") != NULL);
  CHECK(strstr(err, "--store") != NULL);
  CHECK(store_open(&s, path("junk"), STORE_READONLY, err, sizeof err) == STORE_EBADSTORE);
  CHECK(strstr(err, path("junk")) != NULL);

  /* a file where the directory should be */
  write_file(path("afile"), "x", 1);
  CHECK(store_open(&s, path("afile"), 0, err, sizeof err) == STORE_EBADSTORE);
  CHECK(strstr(err, path("afile")) != NULL);
  CHECK(strstr(err, "not a directory") != NULL);

  /* a directory of someone's files: not turned into a store */
  mkdir(path("home"), 0755);
  write_file(path("home/notes.txt"), "x", 1);
  CHECK(store_open(&s, path("home"), 0, err, sizeof err) == STORE_EBADSTORE);
  CHECK(strstr(err, path("home")) != NULL);
  CHECK(strstr(err, "no data.mdb") != NULL);
  struct stat st;
  CHECK(stat(path("home/data.mdb"), &st) != 0);
}

static void test_newer_format(void) {
  char err[512] = "";
  store *s;
  const char *dir = path("future");
  CHECK(store_open(&s, dir, 0, err, sizeof err) == 0);
  put1(s, DB_META, "format", 6, "99");
  store_close(s);
  CHECK(store_open(&s, dir, 0, err, sizeof err) == STORE_EBADSTORE);
  CHECK(strstr(err, dir) != NULL);
  CHECK(strstr(err, "has format 99, this sluice understands up to 2: upgrade sluice") != NULL);
  CHECK(store_open(&s, dir, STORE_READONLY, err, sizeof err) == STORE_EBADSTORE);
  CHECK(strstr(err, "has format 99") != NULL);
}

/* An LMDB environment made by something older: no named databases at all. A
 * read-only open treats them as empty. */
static void test_readonly_old_store(void) {
  const char *dir = path("old");
  mkdir(dir, 0755);
  MDB_env *env;
  CHECK(mdb_env_create(&env) == 0);
  CHECK(mdb_env_open(env, dir, 0, 0644) == 0);
  mdb_env_close(env);
  char err[512] = "";
  store *s;
  int rc = store_open(&s, dir, STORE_READONLY, err, sizeof err);
  CHECK(rc == 0);
  if (rc) {
    fprintf(stderr, "%s\n", err);
    return;
  }
  sbuf v = SBUF_INIT;
  int found = 1;
  CHECK(store_get(s, DB_STEPS, "x", 1, &v, &found, err, sizeof err) == 0 && !found);
  CHECK(store_get(s, DB_META, "format", 6, &v, &found, err, sizeof err) == 0 && !found);
  store_close(s);
  sbuf_free(&v);
}

/* ---- scans ------------------------------------------------------------ */

typedef struct {
  int n;
  char got[32][16];
  size_t len[32];
  int stop_after; /* return 1 after this many (0: never) */
  int fail_with;  /* return this negative status on the first entry */
} scan_rec;

static int on_entry(void *ud, const void *key, size_t klen, const void *val, size_t vlen) {
  scan_rec *r = ud;
  if (r->fail_with) return r->fail_with;
  if (r->n < 32 && klen <= 16) {
    memcpy(r->got[r->n], key, klen);
    r->len[r->n] = klen;
  }
  /* every value is its key with a 'v' in front: check the pairing */
  CHECK(vlen == klen + 1 && memcmp((const char *)val + 1, key, klen) == 0);
  r->n++;
  if (r->stop_after && r->n >= r->stop_after) return 1;
  return 0;
}

#define K(s) s, sizeof(s) - 1

static const struct {
  const char *k;
  size_t len;
} scan_keys[] = {
    {K("\x00")},         {K("\x00\x01")}, {K("a")},        {K("a\0x")},
    {K("a\0y")},         {K("ab")},       {K("b")},        {K("\xff")},
    {K("\xff\x00")},     {K("\xff\xff")}, {K("\xff\xff\x00")}, {K("\xff\xff\xff")},
    {K("\xfe\xff\xff")},
};
#define NKEYS (sizeof scan_keys / sizeof scan_keys[0])

/* expect: the keys, by index into scan_keys, in the order they must come */
static void check_scan(store *s, const char *prefix, size_t plen, int reverse, const int *expect,
                       int n, int line) {
  scan_rec r;
  memset(&r, 0, sizeof r);
  char err[256];
  int rc = store_scan(s, DB_STEPS, prefix, plen, reverse, on_entry, &r, err, sizeof err);
  int ok = rc == 0 && r.n == n;
  for (int i = 0; ok && i < n; i++) {
    ok = r.len[i] == scan_keys[expect[i]].len &&
         memcmp(r.got[i], scan_keys[expect[i]].k, r.len[i]) == 0;
  }
  if (!ok) {
    fprintf(stderr, "scan at line %d (reverse=%d): rc=%d, %d entries, expected %d\n", line,
            reverse, rc, r.n, n);
  }
  CHECK(ok);
}

#define SCAN(prefix, plen, rev, ...)                                           \
  do {                                                                         \
    static const int e_[] = {__VA_ARGS__};                                     \
    check_scan(s, prefix, plen, rev, e_ + 1, (int)(sizeof e_ / sizeof e_[0]) - 1, __LINE__); \
  } while (0)

static void test_get_and_scan(void) {
  char err[512] = "";
  store *s;
  CHECK(store_open(&s, path("scan"), 0, err, sizeof err) == 0);
  wbatch *b = wbatch_new();
  for (size_t i = 0; i < NKEYS; i++) {
    char v[32];
    v[0] = 'v';
    memcpy(v + 1, scan_keys[i].k, scan_keys[i].len);
    wbatch_put(b, DB_STEPS, scan_keys[i].k, scan_keys[i].len, v, scan_keys[i].len + 1);
  }
  /* a neighbouring database must not show up in scans of this one */
  wbatch_put(b, DB_RUNS, "a", 1, "x", 1);
  CHECK(write_batch(s, b) == 0);

  sbuf v = SBUF_INIT;
  int found = 0;
  CHECK(store_get(s, DB_STEPS, "a\0x", 3, &v, &found, err, sizeof err) == 0 && found);
  CHECK(v.len == 4 && memcmp(v.data, "va\0x", 4) == 0);
  CHECK(store_get(s, DB_STEPS, "\xff\xff\x00", 3, &v, &found, err, sizeof err) == 0 && found);
  CHECK(v.len == 4 && memcmp(v.data, "v\xff\xff\x00", 4) == 0);
  CHECK(store_get(s, DB_STEPS, "a\0z", 3, &v, &found, err, sizeof err) == 0 && !found);
  CHECK(store_get(s, DB_STEPS, "", 0, &v, &found, err, sizeof err) == 0 && !found);
  char huge[2000];
  memset(huge, 'k', sizeof huge);
  CHECK(store_get(s, DB_STEPS, huge, sizeof huge, &v, &found, err, sizeof err) == 0 && !found);

  /* indexes into scan_keys; the first number of each list is a dummy */
  SCAN("", 0, 0, -1, 0, 1, 2, 3, 4, 5, 6, 12, 7, 8, 9, 10, 11);
  SCAN("", 0, 1, -1, 11, 10, 9, 8, 7, 12, 6, 5, 4, 3, 2, 1, 0);
  SCAN("a", 1, 0, -1, 2, 3, 4, 5);
  SCAN("a", 1, 1, -1, 5, 4, 3, 2);
  SCAN("a\0", 2, 0, -1, 3, 4);
  SCAN("a\0", 2, 1, -1, 4, 3);
  SCAN("\x00", 1, 0, -1, 0, 1);
  SCAN("\x00", 1, 1, -1, 1, 0);
  /* prefixes at the end of the keyspace: no successor exists */
  SCAN("\xff", 1, 0, -1, 7, 8, 9, 10, 11);
  SCAN("\xff", 1, 1, -1, 11, 10, 9, 8, 7);
  SCAN("\xff\xff", 2, 1, -1, 11, 10, 9);
  SCAN("\xff\xff\xff", 3, 1, -1, 11);
  SCAN("\xff\xff\xff\xff", 4, 1, -1);
  /* a prefix ending in 0xff whose successor is inside the keyspace */
  SCAN("\xfe\xff", 2, 1, -1, 12);
  SCAN("\xfe\xff", 2, 0, -1, 12);
  /* prefixes that match nothing, between and after keys */
  SCAN("az", 2, 0, -1);
  SCAN("az", 2, 1, -1);
  SCAN("c", 1, 1, -1);
  SCAN("a\xff", 2, 1, -1);
  SCAN(huge, sizeof huge, 0, -1);

  /* stopping early, and aborting with a status */
  scan_rec r;
  memset(&r, 0, sizeof r);
  r.stop_after = 2;
  CHECK(store_scan(s, DB_STEPS, "", 0, 1, on_entry, &r, err, sizeof err) == 0);
  CHECK(r.n == 2);
  memset(&r, 0, sizeof r);
  r.fail_with = STORE_EIO;
  CHECK(store_scan(s, DB_STEPS, "a", 1, 0, on_entry, &r, err, sizeof err) == STORE_EIO);

  /* read transactions nest on one thread (MDB_NOTLS) */
  MDB_txn *t1, *t2;
  CHECK(store_read_begin(s, &t1, err, sizeof err) == 0);
  CHECK(store_read_begin(s, &t2, err, sizeof err) == 0);
  MDB_val k = {1, "b"}, val;
  CHECK(mdb_get(t2, store_dbi(s, DB_STEPS), &k, &val) == 0);
  store_read_end(s, t2);
  CHECK(mdb_get(t1, store_dbi(s, DB_STEPS), &k, &val) == 0);
  store_read_end(s, t1);
  store_close(s);
  sbuf_free(&v);
}

/* No permission to write the store: as root, permission bits do not stop us,
 * so a child process drops to nobody (uid 65534) first; otherwise the files
 * are made read-only. */
static void test_no_permission(void) {
  char err[512] = "";
  store *s;
  const char *dir = path("locked");
  CHECK(store_open(&s, dir, 0, err, sizeof err) == 0);
  store_close(s);
  /* a store in a directory its owner keeps to itself */
  const char *priv = path("private");
  CHECK(store_open(&s, priv, 0, err, sizeof err) == 0);
  store_close(s);
  chmod(priv, 0700);
  chmod(tmp, 0755); /* let nobody reach it */
  pid_t pid = fork();
  if (pid == 0) {
    int dropped = geteuid() == 0; /* as nobody, another user's 0700 is closed */
    if (dropped) {
      if (setgroups(0, NULL) || setgid(65534) || setuid(65534)) _exit(3);
    } else {
      chmod(path("locked/data.mdb"), 0444);
      chmod(path("locked/lock.mdb"), 0444);
      chmod(dir, 0555);
    }
    int rc = store_open(&s, dir, 0, err, sizeof err);
    if (rc != STORE_EACCES || !strstr(err, dir) || !strstr(err, "read-only (Permission denied)")) {
      fprintf(stderr, "writable open without permission: %d %s\n", rc, err);
      _exit(1);
    }
    rc = store_open(&s, path("locked/new"), 0, err, sizeof err);
    if (rc != STORE_EACCES || !strstr(err, "Permission denied")) {
      fprintf(stderr, "creating without permission: %d %s\n", rc, err);
      _exit(2);
    }
    /* an unreadable store is not a missing one: both opens say why */
    if (dropped) {
      for (int ro = 0; ro <= 1; ro++) {
        rc = store_open(&s, priv, ro ? STORE_READONLY : 0, err, sizeof err);
        if (rc != STORE_EACCES || !strstr(err, priv) ||
            !strstr(err, "is not accessible (Permission denied)")) {
          fprintf(stderr, "unreadable store (read-only %d): %d %s\n", ro, rc, err);
          _exit(4);
        }
      }
    }
    _exit(0);
  }
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  chmod(dir, 0755);
  chmod(priv, 0755);
  chmod(tmp, 0700);
}

/* The store on a read-only filesystem (a backup, a read-only volume): a
 * writable open says so, a read-only open reads it. Needs a private mount
 * namespace (root, or CAP_SYS_ADMIN); skipped without one. The child's bind
 * mount vanishes with it. */
static void test_readonly_filesystem(void) {
  char err[512] = "";
  store *s;
  const char *dir = path("rofs");
  CHECK(store_open(&s, dir, 0, err, sizeof err) == 0);
  put1(s, DB_RUNS, "r1", 2, "kept");
  store_close(s);
  pid_t pid = fork();
  if (pid == 0) {
    if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
        mount(dir, dir, NULL, MS_BIND, NULL) ||
        mount(NULL, dir, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL))
      _exit(77);
    int rc = store_open(&s, dir, 0, err, sizeof err);
    if (rc != STORE_EACCES || !strstr(err, dir) || !strstr(err, "read-only (Read-only file system)")) {
      fprintf(stderr, "writable open on a read-only fs: %d %s\n", rc, err);
      _exit(1);
    }
    rc = store_open(&s, dir, STORE_READONLY, err, sizeof err);
    if (rc) {
      fprintf(stderr, "read-only open on a read-only fs: %d %s\n", rc, err);
      _exit(2);
    }
    sbuf v = SBUF_INIT;
    int found = 0;
    rc = store_get(s, DB_RUNS, "r1", 2, &v, &found, err, sizeof err);
    int ok = rc == 0 && found && strcmp(v.data, "kept") == 0;
    sbuf_free(&v);
    store_close(s);
    _exit(ok ? 0 : 3);
  }
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
    printf("  skipped test_readonly_filesystem: no mount namespace here\n");
    return;
  }
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void) {
  if (unit_tmpdir("store") != 0) return 1;
  RUN(test_open_create_reopen);
  RUN(test_readonly_missing);
  RUN(test_not_a_store);
  RUN(test_newer_format);
  RUN(test_readonly_old_store);
  RUN(test_get_and_scan);
  RUN(test_no_permission);
  RUN(test_readonly_filesystem);
  unit_rmtree();
  return UNIT_DONE();
}
