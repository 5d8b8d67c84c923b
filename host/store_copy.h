/* store_copy.h: `sluice store copy`: every record of a store into another,
 * empty one, of either backend (LMDB to PostgreSQL, PostgreSQL to LMDB, or
 * the same kind), over store_any.h.
 *
 * What moves, each record as it is stored (its JSON byte for byte):
 * namespaces, API keys with their last use, quota counters (the count),
 * schedules, consumers' checkpoints, sends at their positions and the
 * dispatch cursor, events at their positions with their times and stream
 * keys, the trim marks and the last position taken (trimmed positions stay
 * taken: consumers' checkpoints name positions, so nothing moves), runs with
 * all their listings, their steps and run logs, idempotency keys.
 *
 * How: the source is read in pages (bounded memory: one page, one run's
 * steps and logs, one batch), the destination written in batches of at
 * most `batch` writes, one commit at a time. Before anything is written the
 * destination's census must be empty (refused otherwise: nothing written);
 * after the last commit the destination's census is read again and
 * compared, kind by kind, with the source's and with what was copied.
 *
 * The caller makes sure nobody writes the source meanwhile (the CLI holds
 * an LMDB source's writer lock). A copy that fails half-way leaves the
 * destination holding part of the source: it must be emptied before the
 * next attempt (which refuses otherwise). */
#ifndef SLUICE_STORE_COPY_H
#define SLUICE_STORE_COPY_H

#include <stdio.h>
#include <uv.h>

#include "store.h"

typedef struct {
  size_t page;    /* records per read (0: 1000) */
  size_t batch;   /* writes per commit (0: 2000) */
  FILE *progress; /* a line every second or so once a copy takes longer (NULL: none) */
  store_run_fields_fn run_fields; /* reads a run record's fields (runs' listings) */
  void *ud;
} store_copy_opts;

typedef struct {
  int status;  /* 0: every record was written (then see verified) */
  int refused; /* status != 0 and nothing was written */
  int verified; /* status 0 and the destination's census is the source's */
  char err[2048]; /* why not, when status != 0 or !verified */
  store_census src, dst; /* the source's at the start, the destination's at the end */
  int64_t copied[STORE_KINDS];
} store_copy_result;

typedef void (*store_copy_done_fn)(void *cookie, const store_copy_result *r);

/* Opens from (read-only) and to (created if it is a directory that does
 * not exist) and starts the copy on loop: done runs once, on the loop,
 * possibly before store_copy returns. Returns 0, or a status with err when
 * a store does not open (done not called). */
int store_copy(uv_loop_t *loop, const char *from, const char *to, const store_copy_opts *o,
               store_copy_done_fn done, void *cookie, char *err, size_t errsz);

#endif
