/* test_control.c: the control socket without Lua or libuv (control.c):
 * frames split and joined across reads, the size limit, the socket's mode,
 * a stale socket replaced, a path longer than sockaddr_un, connect errors,
 * the peer's uid, and removal only of our own socket. */
#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "unit.h"

static void frame(control_reader *r, const char *payload) {
  unsigned char h[4];
  uint32_t n = (uint32_t)strlen(payload);
  control_frame_header(n, h);
  control_reader_feed(r, h, 4);
  control_reader_feed(r, payload, n);
}

static void test_frames_split_and_joined(void) {
  control_reader r = CONTROL_READER_INIT;
  const char *p;
  uint32_t n;
  CHECK(control_reader_next(&r, &p, &n) == 0);
  /* one byte at a time: nothing until the last byte */
  unsigned char h[4];
  control_frame_header(5, h);
  for (int i = 0; i < 4; i++) {
    control_reader_feed(&r, h + i, 1);
    CHECK(control_reader_next(&r, &p, &n) == 0);
  }
  control_reader_feed(&r, "hel", 3);
  CHECK(control_reader_next(&r, &p, &n) == 0);
  control_reader_feed(&r, "lo", 2);
  CHECK(control_reader_next(&r, &p, &n) == 1);
  CHECK(n == 5 && memcmp(p, "hello", 5) == 0);
  CHECK(control_reader_next(&r, &p, &n) == 0);
  /* three in one read, one of them empty */
  frame(&r, "{\"a\":1}");
  frame(&r, "");
  frame(&r, "[2]");
  CHECK(control_reader_next(&r, &p, &n) == 1 && n == 7 && memcmp(p, "{\"a\":1}", 7) == 0);
  CHECK(control_reader_next(&r, &p, &n) == 1 && n == 0);
  CHECK(control_reader_next(&r, &p, &n) == 1 && n == 3 && memcmp(p, "[2]", 3) == 0);
  CHECK(control_reader_next(&r, &p, &n) == 0);
  control_reader_free(&r);
}

static void test_frame_too_large(void) {
  control_reader r = CONTROL_READER_INIT;
  unsigned char h[4];
  control_frame_header(CONTROL_FRAME_MAX + 1, h);
  control_reader_feed(&r, h, 4);
  const char *p;
  uint32_t n;
  CHECK(control_reader_next(&r, &p, &n) == -1);
  control_reader_free(&r);
  CHECK(h[0] == 0x10 && h[1] == 0 && h[2] == 0 && h[3] == 1);
}

static void test_listen_connect_mode_and_stale(void) {
  char err[600];
  int fd, cfd;
  ino_t ino;
  const char *dir = path("s1");
  CHECK(mkdir(dir, 0755) == 0);
  CHECK(control_connect(dir, &cfd, err, sizeof err) == ENOENT);
  CHECK(strstr(err, "no control socket at") != NULL);
  CHECK(control_listen(dir, &fd, &ino, err, sizeof err) == 0);
  struct stat st;
  CHECK(stat(path("s1/control.sock"), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(st.st_ino == ino);
  CHECK(control_connect(dir, &cfd, err, sizeof err) == 0);
  int afd = accept(fd, NULL, NULL);
  CHECK(afd >= 0);
  uid_t uid;
  CHECK(control_peer_uid(afd, &uid) == 0 && uid == geteuid());
  close(afd);
  close(cfd);
  /* the listener dies without removing its socket: connect is refused */
  close(fd);
  CHECK(control_connect(dir, &cfd, err, sizeof err) == ECONNREFUSED);
  /* the next holder replaces it; removing the old inode leaves the new one */
  ino_t ino2;
  CHECK(control_listen(dir, &fd, &ino2, err, sizeof err) == 0);
  CHECK(control_connect(dir, &cfd, err, sizeof err) == 0);
  close(cfd);
  if (ino2 != ino) {
    CHECK(control_unlink(dir, ino) == 0);
    CHECK(stat(path("s1/control.sock"), &st) == 0);
  }
  CHECK(control_unlink(dir, ino2) == 0);
  CHECK(stat(path("s1/control.sock"), &st) != 0 && errno == ENOENT);
  close(fd);
  /* no temporary name is left behind */
  char tmpname[64];
  snprintf(tmpname, sizeof tmpname, "s1/control.sock.%ld.tmp", (long)getpid());
  CHECK(stat(path(tmpname), &st) != 0);
}

static void test_long_path(void) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/", tmp);
  /* well past sockaddr_un's 108 bytes */
  for (int i = 0; i < 6; i++) {
    strcat(dir, "a-directory-with-a-long-name-");
    CHECK(mkdir(dir, 0755) == 0);
  }
  CHECK(strlen(dir) > sizeof(((struct sockaddr_un *)0)->sun_path));
  char err[600];
  int fd, cfd;
  ino_t ino;
  CHECK(control_listen(dir, &fd, &ino, err, sizeof err) == 0);
  CHECK(control_connect(dir, &cfd, err, sizeof err) == 0);
  char sock[600];
  snprintf(sock, sizeof sock, "%s/control.sock", dir);
  struct stat st;
  CHECK(stat(sock, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600);
  close(cfd);
  close(fd);
  CHECK(control_unlink(dir, ino) == 0);
}

static void test_errors_name_the_path(void) {
  char err[600];
  int fd;
  ino_t ino;
  CHECK(control_listen(path("missing/dir"), &fd, &ino, err, sizeof err) == ENOENT);
  CHECK(strstr(err, "missing/dir/control.sock") != NULL);
}

int main(void) {
  if (unit_tmpdir("control") != 0) return 1;
  RUN(test_frames_split_and_joined);
  RUN(test_frame_too_large);
  RUN(test_listen_connect_mode_and_stale);
  RUN(test_long_path);
  RUN(test_errors_name_the_path);
  unit_rmtree();
  return UNIT_DONE();
}
