/* powercut_shim.c: an LD_PRELOAD library that records, for the files of one
 * store directory, what a power cut could leave on disk (test_powercut.c).
 *
 * The model. After a power cut, a file holds every byte that an fsync or
 * fdatasync of it (or an O_DSYNC/O_SYNC write) made durable before the cut;
 * of what was written since its last flush, any subset of 512-byte sectors
 * may have reached the disk, in any order (the page cache writes back when
 * it likes, the disk reorders, a write can be torn between sectors). So for
 * each watched file the shim keeps:
 *   OUT/NAME.durable  the file as of its last flush: each flush copies the
 *                     ranges written since the one before from the real file
 *                     (the real file is the page cache: the newest bytes);
 *   OUT/NAME.pending  the ranges written since the last flush, as pairs of
 *                     int64 (offset, length), appended after each write.
 * test_powercut.c kills the process at a random moment, then builds each
 * file from NAME.durable plus a random subset of the sectors NAME.pending
 * lists (read from the real file), and checks the store.
 *
 * Why that is faithful here. The store writes data.mdb only with write(),
 * writev() and pwrite() (LMDB without MDB_WRITEMAP maps the file read-only;
 * its meta page goes through an O_DSYNC descriptor unless MDB_NOMETASYNC)
 * and makes it durable with fdatasync(); the shim intercepts exactly those.
 * A writable shared map of a watched file (MDB_WRITEMAP), ftruncate or
 * fallocate of one would change what can survive in ways this model does not
 * cover: the shim aborts the process saying so, rather than pass a test it
 * does not model. lock.mdb is not watched: LMDB rebuilds it when the first
 * process opens the environment, which after a power cut is always so. File
 * names (creating data.mdb) are taken as durable: ext4's fdatasync of a new
 * file commits its directory entry with it.
 *
 * A kill while the shim records is a cut at that moment: a write whose range
 * was not yet appended to NAME.pending is dropped (unflushed bytes may be
 * lost), a flush that copied some ranges has flushed some sectors (allowed
 * before fdatasync returns). The process is told only after the real call
 * and the record, so nothing it acknowledged depends on a record not made.
 *
 * Several processes may write the same files (each under the shim, with the
 * same POWERCUT_OUT): the page cache is one, so a flush by any of them makes
 * every write recorded before it durable. The two files are shared: the
 * first process to watch a file copies it, each write and its record, and
 * each flush, run under an flock of OUT/NAME.lock.
 *
 * Env: POWERCUT_DIR (the store directory, absolute), POWERCUT_OUT (where the
 * files per watched file go). Without them the shim does nothing. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAXFD 1024
#define MAXFILES 16

typedef struct {
  char name[256];
  int rfd;       /* the real file, read-only: the bytes to copy */
  int durable;   /* OUT/name.durable */
  int pending;   /* OUT/name.pending */
  int lock;      /* OUT/name.lock: flock, for several processes */
} watched;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static watched files[MAXFILES];
static int nfiles;
static signed char fd_file[MAXFD]; /* fd -> index in files + 1, 0: not watched */

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static void *(*real_mmap64)(void *, size_t, int, int, int, off_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_fallocate)(int, int, off_t, off_t);

static void die(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n > 0) {
    if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    ssize_t w = real_write ? real_write(2, buf, (size_t)n) : -1;
    (void)w;
  }
  abort();
}

/* Also called from each wrapper: a sanitizer runtime's own start-up may call
 * open or write before this library's constructor ran. */
static void init(void) {
  if (real_fdatasync) return;
  real_open = dlsym(RTLD_NEXT, "open");
  real_open64 = dlsym(RTLD_NEXT, "open64");
  real_close = dlsym(RTLD_NEXT, "close");
  real_write = dlsym(RTLD_NEXT, "write");
  real_pwrite = dlsym(RTLD_NEXT, "pwrite");
  real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
  real_writev = dlsym(RTLD_NEXT, "writev");
  real_pwritev = dlsym(RTLD_NEXT, "pwritev");
  real_fsync = dlsym(RTLD_NEXT, "fsync");
  real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
  real_mmap = dlsym(RTLD_NEXT, "mmap");
  real_mmap64 = dlsym(RTLD_NEXT, "mmap64");
  real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
  real_fallocate = dlsym(RTLD_NEXT, "fallocate");
  if (!real_open || !real_close || !real_write || !real_pwrite || !real_writev ||
      !real_fsync || !real_fdatasync || !real_mmap || !real_ftruncate)
    die("powercut shim: a libc function is missing");
}

__attribute__((constructor)) static void init_at_load(void) { init(); }

static const char *dir_of_interest(void) {
  const char *d = getenv("POWERCUT_DIR");
  return d && *d && getenv("POWERCUT_OUT") ? d : NULL;
}

static void copy_all(int from, int to) {
  char buf[1 << 16];
  off_t at = 0;
  for (;;) {
    ssize_t n = pread(from, buf, sizeof buf, at);
    if (n < 0) die("powercut shim: reading: %s", strerror(errno));
    if (n == 0) break;
    if (real_pwrite(to, buf, (size_t)n, at) != n) die("powercut shim: copying: %s", strerror(errno));
    at += n;
  }
}

/* Copies [off, off+len) of the real file into the durable image. */
static void copy_range(watched *f, off_t off, off_t len) {
  char buf[1 << 16];
  while (len > 0) {
    size_t want = len < (off_t)sizeof buf ? (size_t)len : sizeof buf;
    ssize_t n = pread(f->rfd, buf, want, off);
    if (n < 0) die("powercut shim: reading %s: %s", f->name, strerror(errno));
    if (n == 0) break; /* beyond the end: nothing there */
    if (real_pwrite(f->durable, buf, (size_t)n, off) != n)
      die("powercut shim: writing %s.durable: %s", f->name, strerror(errno));
    off += n;
    len -= n;
  }
}

/* Called with mu held, after a real open of path returned fd. */
static void maybe_watch(const char *path, int fd) {
  const char *d = dir_of_interest();
  if (!d || fd < 0 || fd >= MAXFD) return;
  size_t dl = strlen(d);
  if (strncmp(path, d, dl) != 0 || path[dl] != '/') return;
  const char *name = path + dl + 1;
  if (strchr(name, '/') || strcmp(name, "lock.mdb") == 0 || strcmp(name, "writer.lock") == 0)
    return;
  for (int i = 0; i < nfiles; i++) {
    if (strcmp(files[i].name, name) == 0) {
      fd_file[fd] = (signed char)(i + 1);
      return;
    }
  }
  if (nfiles == MAXFILES) die("powercut shim: too many files in %s", d);
  watched *f = &files[nfiles];
  snprintf(f->name, sizeof f->name, "%s", name);
  f->rfd = real_open(path, O_RDONLY | O_CLOEXEC);
  char p[4096];
  snprintf(p, sizeof p, "%s/%s.lock", getenv("POWERCUT_OUT"), name);
  f->lock = real_open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (f->lock < 0 || flock(f->lock, LOCK_EX) != 0)
    die("powercut shim: locking %s: %s", p, strerror(errno));
  snprintf(p, sizeof p, "%s/%s.durable", getenv("POWERCUT_OUT"), name);
  f->durable = real_open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  int first = f->durable >= 0;
  if (!first && errno == EEXIST) f->durable = real_open(p, O_RDWR | O_CLOEXEC);
  snprintf(p, sizeof p, "%s/%s.pending", getenv("POWERCUT_OUT"), name);
  f->pending = real_open(p, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (f->rfd < 0 || f->durable < 0 || f->pending < 0)
    die("powercut shim: opening %s: %s", p, strerror(errno));
  /* what is there when first opened by any process is durable: a new
   * store, or one closed cleanly (the test starts from those) */
  if (first) copy_all(f->rfd, f->durable);
  flock(f->lock, LOCK_UN);
  nfiles++;
  fd_file[fd] = (signed char)nfiles;
}

/* The cross-process half of the lock (mu is the threads' half). */
static void xlock(watched *f) {
  if (flock(f->lock, LOCK_EX) != 0) die("powercut shim: flock: %s", strerror(errno));
}
static void xunlock(watched *f) { flock(f->lock, LOCK_UN); }

static watched *watched_fd(int fd) {
  if (fd < 0 || fd >= MAXFD || !fd_file[fd]) return NULL;
  return &files[fd_file[fd] - 1];
}

/* After a write of len bytes at off to a watched fd (mu held). */
static void record(int fd, watched *f, off_t off, ssize_t len) {
  if (len <= 0) return;
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & (O_DSYNC | O_SYNC))) {
    copy_range(f, off, len); /* durable when the write returns */
    return;
  }
  int64_t rec[2] = {off, len};
  if (real_write(f->pending, rec, sizeof rec) != (ssize_t)sizeof rec)
    die("powercut shim: recording a write to %s: %s", f->name, strerror(errno));
}

/* After a successful flush of a watched file (mu held). */
static void flushed(watched *f) {
  off_t end = lseek(f->pending, 0, SEEK_END);
  for (off_t at = 0; at + 16 <= end; at += 16) {
    int64_t rec[2];
    if (pread(f->pending, rec, sizeof rec, at) != (ssize_t)sizeof rec)
      die("powercut shim: reading %s.pending: %s", f->name, strerror(errno));
    copy_range(f, rec[0], rec[1]);
  }
  if (real_ftruncate(f->pending, 0) != 0)
    die("powercut shim: truncating %s.pending: %s", f->name, strerror(errno));
}

static int do_open(int (*fn)(const char *, int, ...), const char *path, int flags, mode_t mode) {
  pthread_mutex_lock(&mu);
  int fd = fn(path, flags, mode);
  if (fd >= 0) maybe_watch(path, fd);
  pthread_mutex_unlock(&mu);
  return fd;
}

int open(const char *path, int flags, ...) {
  init();
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  return do_open(real_open, path, flags, mode);
}

int open64(const char *path, int flags, ...) {
  init();
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  return do_open(real_open64 ? real_open64 : real_open, path, flags, mode);
}

int close(int fd) {
  init();
  pthread_mutex_lock(&mu);
  if (fd >= 0 && fd < MAXFD) fd_file[fd] = 0;
  int rc = real_close(fd);
  pthread_mutex_unlock(&mu);
  return rc;
}

ssize_t write(int fd, const void *buf, size_t n) {
  init();
  if (!watched_fd(fd)) return real_write(fd, buf, n);
  pthread_mutex_lock(&mu);
  watched *f = watched_fd(fd);
  if (f) xlock(f);
  off_t off = lseek(fd, 0, SEEK_CUR);
  ssize_t w = real_write(fd, buf, n);
  if (f && off >= 0) record(fd, f, off, w);
  if (f) xunlock(f);
  pthread_mutex_unlock(&mu);
  return w;
}

static ssize_t do_pwrite(ssize_t (*fn)(int, const void *, size_t, off_t), int fd,
                         const void *buf, size_t n, off_t off) {
  if (!watched_fd(fd)) return fn(fd, buf, n, off);
  pthread_mutex_lock(&mu);
  watched *f = watched_fd(fd);
  if (f) xlock(f);
  ssize_t w = fn(fd, buf, n, off);
  if (f) record(fd, f, off, w);
  if (f) xunlock(f);
  pthread_mutex_unlock(&mu);
  return w;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
  init();
  return do_pwrite(real_pwrite, fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
  init();
  return do_pwrite(real_pwrite64 ? real_pwrite64 : real_pwrite, fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
  init();
  if (!watched_fd(fd)) return real_writev(fd, iov, cnt);
  pthread_mutex_lock(&mu);
  watched *f = watched_fd(fd);
  if (f) xlock(f);
  off_t off = lseek(fd, 0, SEEK_CUR);
  ssize_t w = real_writev(fd, iov, cnt);
  if (f && off >= 0) record(fd, f, off, w);
  if (f) xunlock(f);
  pthread_mutex_unlock(&mu);
  return w;
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
  init();
  if (!watched_fd(fd)) return real_pwritev(fd, iov, cnt, off);
  pthread_mutex_lock(&mu);
  watched *f = watched_fd(fd);
  if (f) xlock(f);
  ssize_t w = real_pwritev(fd, iov, cnt, off);
  if (f) record(fd, f, off, w);
  if (f) xunlock(f);
  pthread_mutex_unlock(&mu);
  return w;
}

static int do_sync(int (*fn)(int), int fd) {
  if (!watched_fd(fd)) return fn(fd);
  pthread_mutex_lock(&mu);
  watched *f = watched_fd(fd);
  if (f) xlock(f);
  int rc = fn(fd);
  if (rc == 0 && f) flushed(f);
  if (f) xunlock(f);
  pthread_mutex_unlock(&mu);
  return rc;
}

int fsync(int fd) {
  init();
  return do_sync(real_fsync, fd);
}

int fdatasync(int fd) {
  init();
  return do_sync(real_fdatasync, fd);
}

static void check_map(int prot, int flags, int fd) {
  watched *f = watched_fd(fd);
  if (f && (prot & PROT_WRITE) && (flags & MAP_SHARED))
    die("powercut shim: a writable shared map of %s (MDB_WRITEMAP?): writes through a map are "
        "not modelled; extend the shim (msync) before testing that mode",
        f->name);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  init();
  check_map(prot, flags, fd);
  return real_mmap(addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  init();
  check_map(prot, flags, fd);
  return (real_mmap64 ? real_mmap64 : real_mmap)(addr, len, prot, flags, fd, off);
}

int ftruncate(int fd, off_t len) {
  init();
  watched *f = watched_fd(fd);
  if (f) die("powercut shim: ftruncate of %s is not modelled", f->name);
  return real_ftruncate(fd, len);
}

int fallocate(int fd, int mode, off_t off, off_t len) {
  init();
  watched *f = watched_fd(fd);
  if (f) die("powercut shim: fallocate of %s is not modelled", f->name);
  return real_fallocate(fd, mode, off, len);
}
