/* test_lock.c: the store's writer lock (lock.c) between real processes:
 * the holder's pid and role are known from the moment it holds the lock, a
 * serve waiting for a run keeps a second serve out, and a killed holder's
 * lock is free at once. */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lock.h"
#include "unit.h"

typedef struct {
  pid_t pid;
  int to_child, from_child;
} child;

/* A child that takes the lock (as serve or not), reports the result with
 * one byte ('0' taken, 'b' busy), then waits for a byte before exiting. */
static child spawn_holder(const char *lockpath, int as_serve) {
  int down[2], up[2];
  child c = {-1, -1, -1};
  if (pipe(down) != 0 || pipe(up) != 0) return c;
  pid_t pid = fork();
  if (pid == 0) {
    close(down[1]);
    close(up[0]);
    store_lock_holder h;
    char err[256];
    int rc = store_lock_take(lockpath, as_serve, &h, err, sizeof err);
    char b = rc == 0 ? '0' : rc == EAGAIN ? 'b' : 'e';
    if (write(up[1], &b, 1) != 1) _exit(2);
    if (read(down[0], &b, 1) < 0) _exit(2);
    _exit(0);
  }
  close(down[0]);
  close(up[1]);
  c.pid = pid;
  c.to_child = down[1];
  c.from_child = up[0];
  return c;
}

static char result(child *c) {
  char b = '?';
  if (read(c->from_child, &b, 1) != 1) return '?';
  return b;
}

static void finish(child *c) {
  char b = 'x';
  if (write(c->to_child, &b, 1) != 1) kill(c->pid, SIGKILL);
  waitpid(c->pid, NULL, 0);
  close(c->to_child);
  close(c->from_child);
}

static void test_holder_known_and_role(void) {
  const char *lp = path("a.lock");
  child run = spawn_holder(lp, 0);
  CHECK(result(&run) == '0');
  store_lock_holder h;
  char err[256];
  CHECK(store_lock_query(lp, &h, err, sizeof err) == 0);
  CHECK(h.pid == run.pid && h.serve == 0 && h.serve_waiting == 0);
  /* a serve waits: it holds the serve byte, the run still writes */
  child serve = spawn_holder(lp, 1);
  CHECK(result(&serve) == 'b');
  CHECK(store_lock_query(lp, &h, err, sizeof err) == 0);
  CHECK(h.pid == run.pid && h.serve == 0 && h.serve_waiting == serve.pid);
  /* a second serve is refused, naming the first */
  child serve2 = spawn_holder(lp, 1);
  CHECK(result(&serve2) == 'b');
  finish(&serve2);
  CHECK(store_lock_take(lp, 1, &h, err, sizeof err) == EAGAIN);
  CHECK(h.pid == serve.pid && h.serve == 1);
  finish(&serve);
  finish(&run);
}

static void test_serve_holder_and_kill(void) {
  const char *lp = path("b.lock");
  child serve = spawn_holder(lp, 1);
  CHECK(result(&serve) == '0');
  store_lock_holder h;
  char err[256];
  CHECK(store_lock_take(lp, 0, &h, err, sizeof err) == EAGAIN);
  CHECK(h.pid == serve.pid && h.serve == 1);
  kill(serve.pid, SIGKILL);
  waitpid(serve.pid, NULL, 0);
  close(serve.to_child);
  close(serve.from_child);
  /* the kernel dropped its locks with it */
  CHECK(store_lock_query(lp, &h, err, sizeof err) == 0 && h.pid == 0);
  CHECK(store_lock_take(lp, 0, &h, err, sizeof err) == 0);
  CHECK(store_lock_take(lp, 0, &h, err, sizeof err) == 0); /* again: still ours */
  CHECK(store_lock_query(lp, &h, err, sizeof err) == 0 && h.pid == getpid());
  /* and a child of ours does not inherit it: it is refused, naming us */
  child c = spawn_holder(lp, 0);
  CHECK(result(&c) == 'b');
  finish(&c);
}

int main(void) {
  if (unit_tmpdir("lock") != 0) return 1;
  RUN(test_holder_known_and_role);
  RUN(test_serve_holder_and_kill);
  unit_rmtree();
  return UNIT_DONE();
}
