/* writer.h: the one writer of the store, with group commit (DESIGN §5).
 *
 * The loop thread builds a batch of puts/deletes and submits it; a writer
 * thread takes everything queued, applies it in one LMDB write transaction
 * and commits it after one flush of the write-ahead log (wal.c); then it
 * wakes the loop (uv_async_send) and each batch's done callback runs on the
 * loop thread.
 * A batch is atomic: all its operations commit together or none does. If a
 * group transaction fails, its batches are retried one per transaction so
 * one bad batch (a key too long, say) fails alone. MDB_MAP_FULL grows the map
 * (store_grow) and retries; a full disk fails the batches with STORE_EFULL.
 *
 * The loop never waits on fsync: writer_submit only queues. The async handle
 * keeps the loop alive only while batches are pending. */
#ifndef SLUICE_WRITER_H
#define SLUICE_WRITER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store_lmdb.h"

typedef struct store_batch wbatch; /* the LMDB backend's store_batch */
typedef struct writer writer;

/* status is 0 when the batch is durable, else a STORE_* status and errmsg. */
typedef void (*writer_done_fn)(void *cookie, int status, const char *errmsg);

wbatch *wbatch_new(void);
void wbatch_put(wbatch *b, int db, const void *key, size_t klen, const void *val,
                size_t vlen);
void wbatch_del(wbatch *b, int db, const void *key, size_t klen);
/* Adds delta to the counter under key when the batch is applied (inside the
 * write transaction, so concurrent batches never lose a count): the value is
 * decimal text, absent is 0, and a result <= 0 deletes it. A value that is
 * not a counter fails the batch. */
void wbatch_add(wbatch *b, int db, const void *key, size_t klen, int64_t delta);
size_t wbatch_count(const wbatch *b);
/* A put whose value the caller appends to the returned buffer (encoding it
 * straight into the batch), ended by wbatch_put_end (the value is what was
 * appended) or dropped by wbatch_put_cancel. Nothing else is added to b in
 * between. */
sbuf *wbatch_put_begin(wbatch *b, int db, const void *key, size_t klen);
void wbatch_put_end(wbatch *b);
void wbatch_put_cancel(wbatch *b);
/* As wbatch_put_begin, for a step record of run (records_steps.c): applied
 * by records_step_apply, which chooses its key. */
sbuf *wbatch_step_begin(wbatch *b, const void *run, size_t rn);
void wbatch_free(wbatch *b); /* only for a batch never submitted */

int writer_start(writer **out, store *s, uv_loop_t *loop, char *err, size_t errsz);

/* Queues b (the writer owns it from here) and returns 0; done(cookie, ...)
 * runs on the loop thread once. Returns -1 if the writer is stopping (b is
 * freed, done is not called). */
int writer_submit(writer *w, wbatch *b, writer_done_fn done, void *cookie);

/* Commits everything queued, stops and joins the thread, runs the remaining
 * done callbacks, and closes the async handle: the caller must run the loop
 * once more so the close completes (the writer is freed then). */
void writer_stop(writer *w);

/* Histograms of commits, for /metrics: bucket i counts the commits with a
 * value <= bounds[i] (and not <= bounds[i-1]); the last bucket the rest. */
#define WRITER_HIST 12
extern const uint64_t writer_batch_bounds[WRITER_HIST - 1];     /* batches per commit */
extern const uint64_t writer_commit_bounds_us[WRITER_HIST - 1]; /* begin to durable, us */
/* Counts v in the bucket of hist it falls in (PostgreSQL's group commits too: pg.c). */
void writer_hist_add(uint64_t *hist, const uint64_t *bounds, uint64_t v);

/* Before a read of events in this process: waits until LMDB has every
 * group of events acknowledged so far (writer.c commits those lazily) and
 * asks for the commit now. No writer of s: returns at once. */
void writer_sync_reads(store *s);

typedef struct {
  uint64_t commits; /* transactions committed */
  uint64_t batches; /* batches made durable */
  uint64_t ops;     /* puts and deletes applied */
  uint64_t grows;   /* map doublings */
  uint64_t batch_hist[WRITER_HIST];
  uint64_t commit_hist[WRITER_HIST];
  uint64_t commit_us_sum;
  uint64_t lmdb_commits; /* of them and of drains, those that committed LMDB (writer.c defers steps) */
} writer_stats;
void writer_get_stats(writer *w, writer_stats *out);

#endif
