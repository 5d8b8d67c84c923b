/* lock.c: the store's writer lock (see lock.h). */
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* the lock files this process opened, by path: never closed (lock.h) */
typedef struct lockfile {
  struct lockfile *next;
  int fd;
  int writer, serve; /* bytes held by `owner` */
  pid_t owner;       /* a forked child holds none of them */
  char path[];
} lockfile;

static lockfile *files;

static int open_lockfile(const char *path, lockfile **out, char *err, size_t errsz) {
  for (lockfile *f = files; f; f = f->next) {
    if (strcmp(f->path, path) == 0) {
      if (f->owner != getpid()) f->writer = f->serve = 0;
      f->owner = getpid();
      *out = f;
      return 0;
    }
  }
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  /* a store readable but not writable by us: enough to ask who holds it */
  if (fd < 0 && errno == EACCES) fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    snprintf(err, errsz, "cannot open %s: %s", path, strerror(e));
    return e;
  }
  size_t n = strlen(path) + 1;
  lockfile *f = calloc(1, sizeof *f + n);
  if (!f) abort();
  memcpy(f->path, path, n);
  f->fd = fd;
  f->owner = getpid();
  f->next = files;
  files = f;
  *out = f;
  return 0;
}

static int set_byte(int fd, off_t at) {
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = at, .l_len = 1};
  if (fcntl(fd, F_SETLK, &fl) == 0) return 0;
  return (errno == EACCES || errno == EAGAIN) ? EAGAIN : errno;
}

/* the pid of another process holding the byte, 0 if none, -1 on error */
static pid_t byte_holder(int fd, off_t at) {
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = at, .l_len = 1};
  if (fcntl(fd, F_GETLK, &fl) != 0) return -1;
  return fl.l_type == F_UNLCK ? 0 : fl.l_pid;
}

int store_lock_take(const char *path, int as_serve, store_lock_holder *holder, char *err,
                    size_t errsz) {
  memset(holder, 0, sizeof *holder);
  lockfile *f;
  int e = open_lockfile(path, &f, err, errsz);
  if (e != 0) return e;
  if (f->writer && (f->serve || !as_serve)) return 0;
  /* a holder can let go between a refused F_SETLK and the F_GETLK that asks
   * who it was: then try again, so the holder is never unknown */
  for (int tries = 0; tries < 1000; tries++) {
    if (as_serve && !f->serve) {
      e = set_byte(f->fd, 1);
      if (e == EAGAIN) {
        pid_t p = byte_holder(f->fd, 1);
        if (p == 0) continue;
        if (p > 0) {
          holder->pid = p;
          holder->serve = 1;
          return EAGAIN;
        }
        e = errno;
      }
      if (e != 0) {
        snprintf(err, errsz, "cannot lock %s: %s", path, strerror(e));
        return e;
      }
      f->serve = 1;
    }
    e = set_byte(f->fd, 0);
    if (e == 0) {
      f->writer = 1;
      return 0;
    }
    if (e == EAGAIN) {
      pid_t p = byte_holder(f->fd, 0);
      if (p == 0) continue;
      if (p > 0) {
        holder->pid = p;
        if (!f->serve) {
          pid_t s = byte_holder(f->fd, 1);
          if (s == p) holder->serve = 1;
          else if (s > 0) holder->serve_waiting = s;
        }
        return EAGAIN;
      }
      e = errno;
    }
    snprintf(err, errsz, "cannot lock %s: %s", path, strerror(e));
    return e;
  }
  snprintf(err, errsz, "cannot lock %s: it changes hands too fast to say who holds it", path);
  return EBUSY;
}

int store_lock_query(const char *path, store_lock_holder *holder, char *err, size_t errsz) {
  memset(holder, 0, sizeof *holder);
  lockfile *f;
  int e = open_lockfile(path, &f, err, errsz);
  if (e != 0) return e;
  if (f->writer) {
    holder->pid = getpid();
    holder->serve = f->serve;
    return 0;
  }
  pid_t w = byte_holder(f->fd, 0);
  pid_t s = f->serve ? 0 : byte_holder(f->fd, 1);
  if (w < 0 || s < 0) {
    e = errno;
    snprintf(err, errsz, "cannot query the lock %s: %s", path, strerror(e));
    return e;
  }
  if (w > 0) {
    holder->pid = w;
    holder->serve = s == w;
    holder->serve_waiting = (s > 0 && s != w) ? s : 0;
  } else if (s > 0) {
    holder->pid = s; /* a serve about to take the writer byte */
    holder->serve = 1;
  }
  return 0;
}
