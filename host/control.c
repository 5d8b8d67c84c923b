/* control.c: the store's control socket without Lua or libuv (see
 * control.h). */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* dir/name into out (PATH_MAX); ENAMETOOLONG if it does not fit */
static int join(char *out, const char *dir, const char *name) {
  int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
  return (n < 0 || n >= PATH_MAX) ? ENAMETOOLONG : 0;
}

/* The address of dir/name. When the path does not fit in sun_path (108
 * bytes) it goes through /proc/self/fd/<fd of dir>: *dirfd is then that
 * descriptor, to close once bound or connected (else -1). */
static int sock_addr(const char *dir, const char *name, struct sockaddr_un *a, socklen_t *alen,
                     int *dirfd, char *err, size_t errsz) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  *dirfd = -1;
  int n = snprintf(a->sun_path, sizeof a->sun_path, "%s/%s", dir, name);
  if (n < 0 || (size_t)n >= sizeof a->sun_path) {
    int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
      int e = errno;
      snprintf(err, errsz, "cannot open %s: %s", dir, strerror(e));
      return e;
    }
    n = snprintf(a->sun_path, sizeof a->sun_path, "/proc/self/fd/%d/%s", dfd, name);
    if (n < 0 || (size_t)n >= sizeof a->sun_path) {
      close(dfd);
      snprintf(err, errsz, "socket name %s is too long", name);
      return ENAMETOOLONG;
    }
    *dirfd = dfd;
  }
  *alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1);
  return 0;
}

int control_listen(const char *dir, int *fd, ino_t *ino, char *err, size_t errsz) {
  char tmpname[64], tmp_path[PATH_MAX], final_path[PATH_MAX];
  snprintf(tmpname, sizeof tmpname, "%s.%ld.tmp", CONTROL_SOCKET_NAME, (long)getpid());
  if (join(tmp_path, dir, tmpname) || join(final_path, dir, CONTROL_SOCKET_NAME)) {
    snprintf(err, errsz, "the store path %s is too long", dir);
    return ENAMETOOLONG;
  }
  struct sockaddr_un a;
  socklen_t alen = 0;
  int dfd = -1;
  int rc = sock_addr(dir, tmpname, &a, &alen, &dfd, err, errsz);
  if (rc != 0) return rc;
  /* a temporary name left by a crashed process that had our pid */
  (void)unlink(tmp_path);
  int e = 0;
  const char *what = "create a socket for";
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    e = errno;
    goto fail;
  }
  /* Until the chmod the temporary name has the umask's mode: a peer of
   * another user that connects then is refused by its uid on accept. */
  what = "bind";
  if (bind(s, (struct sockaddr *)&a, alen) != 0) goto fail_errno;
  what = "chmod";
  if (chmod(tmp_path, 0600) != 0) goto fail_errno;
  what = "listen on";
  if (listen(s, 128) != 0) goto fail_errno;
  struct stat st;
  what = "stat";
  if (stat(tmp_path, &st) != 0) goto fail_errno;
  what = "rename into place";
  if (rename(tmp_path, final_path) != 0) goto fail_errno;
  if (dfd >= 0) close(dfd);
  *fd = s;
  *ino = st.st_ino;
  return 0;
fail_errno:
  e = errno;
fail:
  snprintf(err, errsz, "cannot %s the control socket %s: %s", what, final_path, strerror(e));
  if (s >= 0) close(s);
  (void)unlink(tmp_path);
  if (dfd >= 0) close(dfd);
  return e;
}

int control_unlink(const char *dir, ino_t ino) {
  char p[PATH_MAX];
  if (join(p, dir, CONTROL_SOCKET_NAME)) return ENAMETOOLONG;
  struct stat st;
  if (lstat(p, &st) != 0) return errno == ENOENT ? 0 : errno;
  if (!S_ISSOCK(st.st_mode) || st.st_ino != ino) return 0;
  return unlink(p) == 0 || errno == ENOENT ? 0 : errno;
}

int control_connect(const char *dir, int *fd, char *err, size_t errsz) {
  struct sockaddr_un a;
  socklen_t alen = 0;
  int dfd = -1;
  int rc = sock_addr(dir, CONTROL_SOCKET_NAME, &a, &alen, &dfd, err, errsz);
  if (rc != 0) return rc;
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int e = 0;
  if (s < 0) {
    e = errno;
  } else if (connect(s, (struct sockaddr *)&a, alen) != 0) {
    e = errno;
    close(s);
    /* Linux connects AF_UNIX sockets at once or fails; never in progress */
    if (e == EINPROGRESS) e = EAGAIN;
  }
  if (dfd >= 0) close(dfd);
  if (e == 0) {
    *fd = s;
    return 0;
  }
  switch (e) {
    case ENOENT:
      snprintf(err, errsz, "no control socket at %s/%s", dir, CONTROL_SOCKET_NAME);
      break;
    case ECONNREFUSED:
      snprintf(err, errsz, "nothing listens on %s/%s (the process that made it is gone)", dir,
               CONTROL_SOCKET_NAME);
      break;
    case EAGAIN:
      snprintf(err, errsz, "%s/%s is busy (its backlog is full)", dir, CONTROL_SOCKET_NAME);
      break;
    default:
      snprintf(err, errsz, "cannot connect to %s/%s: %s", dir, CONTROL_SOCKET_NAME, strerror(e));
  }
  return e;
}

int control_peer_uid(int fd, uid_t *uid) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return errno;
  *uid = cred.uid;
  return 0;
}

void control_frame_header(uint32_t len, unsigned char out[4]) {
  out[0] = (unsigned char)(len >> 24);
  out[1] = (unsigned char)(len >> 16);
  out[2] = (unsigned char)(len >> 8);
  out[3] = (unsigned char)len;
}

void control_reader_feed(control_reader *r, const void *p, size_t n) {
  if (r->off > 0) {
    size_t rest = r->buf.len - r->off;
    memmove(r->buf.data, r->buf.data + r->off, rest);
    r->buf.len = rest;
    r->off = 0;
  }
  sbuf_add(&r->buf, p, n);
}

int control_reader_next(control_reader *r, const char **payload, uint32_t *len) {
  size_t avail = r->buf.len - r->off;
  if (avail < 4) return 0;
  uint32_t n = sbuf_read_be32(r->buf.data + r->off);
  if (n > CONTROL_FRAME_MAX) return -1;
  if (avail - 4 < n) return 0;
  *payload = r->buf.data + r->off + 4;
  *len = n;
  r->off += 4 + (size_t)n;
  return 1;
}

void control_reader_free(control_reader *r) {
  sbuf_free(&r->buf);
  r->off = 0;
}
