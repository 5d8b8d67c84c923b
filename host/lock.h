/* lock.h: the store's writer lock, which says who writes a store (one
 * process at a time, DESIGN §5) and who that is.
 *
 * POSIX record locks on two bytes of <store>/writer.lock. Byte 0 is held by
 * the process that writes the store: sluice serve, or a foreground command
 * (sluice run, cancel, rerun). Byte 1 is held by the store's serve from
 * before it takes byte 0 until it exits, so a second serve is refused even
 * while the first one waits for a run to finish, and a holder of byte 0 that
 * also holds byte 1 is a serve. The kernel names the holder of a record lock
 * (F_GETLK gives its pid), so the holder is known the moment the lock is
 * taken, never read from a file that is written afterwards; a killed
 * holder's locks go with it.
 *
 * Record locks belong to the process: children do not inherit them, and
 * closing any descriptor of the file would drop them. So this file opens the
 * lock file once per path and never closes it. */
#ifndef SLUICE_LOCK_H
#define SLUICE_LOCK_H

#include <stddef.h>
#include <sys/types.h>

typedef struct {
  pid_t pid;           /* the writer (byte 0), or a serve about to take it */
  int serve;           /* pid is a serve */
  pid_t serve_waiting; /* a serve (byte 1) waiting for pid to finish, or 0 */
} store_lock_holder;

/* Takes the writer lock at path for this process; as_serve takes the serve
 * byte first and keeps it even when byte 0 is busy (call again to retry).
 * Taking it again from this process succeeds. Returns 0; EAGAIN with
 * *holder when another process holds it; another errno value with err. */
int store_lock_take(const char *path, int as_serve, store_lock_holder *holder, char *err,
                    size_t errsz);

/* Who holds the lock at path: returns 0 with holder->pid 0 when nobody
 * does, or this process's pid when it does; an errno value with err. */
int store_lock_query(const char *path, store_lock_holder *holder, char *err, size_t errsz);

#endif
