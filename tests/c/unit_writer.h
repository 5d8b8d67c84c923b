/* unit_writer.h: the C tests' writer, used synchronously: start one on a
 * store (its own loop), commit a batch and wait for its status, stop it.
 * One writer at a time per test program. */
#ifndef SLUICE_UNIT_WRITER_H
#define SLUICE_UNIT_WRITER_H

#include <stdio.h>
#include <uv.h>

#include "store.h"
#include "writer.h"

typedef struct {
  int calls, status;
} done_rec;

static inline void on_done(void *cookie, int status, const char *errmsg) {
  done_rec *d = cookie;
  d->calls++;
  d->status = status;
  if (status) fprintf(stderr, "batch failed: %s\n", errmsg);
}

static uv_loop_t loop;
static writer *w;

/* 0, or the writer's status (its message on stderr) */
static inline int start(store *s) {
  uv_loop_init(&loop);
  char err[256];
  int rc = writer_start(&w, s, &loop, err, sizeof err);
  if (rc) fprintf(stderr, "writer_start: %s\n", err);
  return rc;
}

static inline void stop(void) {
  writer_stop(w);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

/* commits b and waits: 0 or the commit's status (-1: not submitted) */
static inline int commit(store_batch *b) {
  done_rec d = {0, 0};
  if (writer_submit(w, b, on_done, &d) != 0) return -1;
  while (d.calls == 0) uv_run(&loop, UV_RUN_ONCE);
  return d.status;
}

#endif
