/* control.h: the store's control socket without Lua or libuv (DESIGN §7):
 * where <store>/control.sock lives, binding it owner-only, connecting to it,
 * the peer's user id, and the frame format.
 *
 * Frames: a 4-byte big-endian payload length, then the payload (a JSON
 * document, the codec's). Only the process holding the store's writer lock
 * listens, so a socket file found by that process is stale (left by a
 * killed one) and is replaced. */
#ifndef SLUICE_CONTROL_H
#define SLUICE_CONTROL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sbuf.h"

#define CONTROL_SOCKET_NAME "control.sock"
/* the largest payload of one frame: a run's input or result travels in one */
#define CONTROL_FRAME_MAX ((uint32_t)256 << 20)

/* Creates <dir>/control.sock listening, mode 0600, in place of whatever is
 * there: bound under a temporary name, chmod'ed, listening, then renamed over
 * the final name, so the socket is never reachable with wider permissions
 * and a stale one is replaced in one step. The caller must hold the store's
 * writer lock. A path longer than sockaddr_un allows is bound through
 * /proc/self/fd. On success returns 0 with *fd (close-on-exec, blocking) and
 * *ino (the socket file's inode, for control_unlink). Returns an errno value
 * with a message in err otherwise. */
int control_listen(const char *dir, int *fd, ino_t *ino, char *err, size_t errsz);

/* Removes <dir>/control.sock if it is still the socket with inode ino (a
 * later holder's socket is left alone). Returns 0 or an errno value. */
int control_unlink(const char *dir, ino_t ino);

/* Connects to <dir>/control.sock without blocking. Returns 0 with *fd (close-
 * on-exec, non-blocking), or an errno value with a message in err: ENOENT (no
 * socket), ECONNREFUSED (a socket nobody listens on: its process is gone),
 * EAGAIN (the listener's backlog is full: try again), EACCES (another user's
 * socket), others. */
int control_connect(const char *dir, int *fd, char *err, size_t errsz);

/* The user id of the process at the other end of a connected socket.
 * Returns 0 or an errno value. */
int control_peer_uid(int fd, uid_t *uid);

/* The 4-byte header of a frame of len payload bytes. */
void control_frame_header(uint32_t len, unsigned char out[4]);

/* Reassembles frames from a byte stream read in pieces of any size. */
typedef struct {
  sbuf buf;
  size_t off; /* start of the unconsumed bytes in buf */
} control_reader;

#define CONTROL_READER_INIT {SBUF_INIT, 0}

/* Appends n bytes read from the stream. Frames returned before are invalid
 * from here. */
void control_reader_feed(control_reader *r, const void *p, size_t n);

/* Takes the next whole frame: returns 1 with *payload and *len (valid until
 * the next feed), 0 when no whole frame is buffered yet, -1 when the next
 * frame announces more than CONTROL_FRAME_MAX bytes (the stream is unusable). */
int control_reader_next(control_reader *r, const char **payload, uint32_t *len);

void control_reader_free(control_reader *r);

#endif
