/* steps_pending.h: step records that are acknowledged (their group's log
 * record is flushed) but not yet in LMDB: the writer (writer.c) defers
 * them and drains them into LMDB in one transaction every few
 * milliseconds (wal.c's header says why that is durable); every step read
 * (records_steps.c) merges them over LMDB's, the newest record of an id
 * winning. One set per store handle, behind a mutex: the writer thread adds
 * and drains, the loop thread reads. */
#ifndef SLUICE_STEPS_PENDING_H
#define SLUICE_STEPS_PENDING_H

#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

typedef struct steps_pending steps_pending;

steps_pending *pending_new(void);
void pending_free(steps_pending *p);

void pending_lock(steps_pending *p);
void pending_unlock(steps_pending *p);

/* Under the lock. Adds run's step record rec (a record of records_steps.c)
 * after every other one. */
void pending_add(steps_pending *p, const void *run, size_t rn, const void *rec, size_t recn);

/* Under the lock. Appends the entries of run (oldest first: the ones being
 * drained, then the rest) to out, as entries of the format below. */
void pending_copy_run(steps_pending *p, const void *run, size_t rn, sbuf *out);
/* Under the lock: every entry (for the census), the same way. */
void pending_copy_all(steps_pending *p, sbuf *out);

/* Entries: le16 run length, run, le32 record length, record. Iterates
 * [buf, buf+len) from *at: 1 with the next entry, 0 at the end. */
int pending_next(const char *buf, size_t len, size_t *at, const char **run, size_t *rn,
                 const unsigned char **rec, size_t *recn);

/* Writer thread, lock taken inside. How many records wait (both parts),
 * and since when (CLOCK_MONOTONIC us of the oldest not being drained; 0:
 * none). */
size_t pending_count(steps_pending *p);
uint64_t pending_since_us(steps_pending *p);

/* Writer thread. The part being drained: if it is empty, every waiting
 * record moves into it first. The entries stay readable until
 * pending_drain_end (call it only after the transaction that applied them
 * committed). buf, len: the entries, valid until pending_drain_end. */
void pending_drain_begin(steps_pending *p, const char **buf, size_t *len);
void pending_drain_end(steps_pending *p);

/* Under the lock: where the entries added next begin, and taking them back
 * (the commit that was to show them failed). */
size_t pending_mark(steps_pending *p);
void pending_truncate(steps_pending *p, size_t mark);
/* Writer thread: whether records are being drained. */
int pending_draining(steps_pending *p);

/* A sequence count around a group that both adds pending records and
 * commits the rest of their batches to LMDB: the writer bumps it before
 * and after (odd: in between); a reader whose copy and read transaction
 * began while it was odd or changed retries, so it sees a batch whole. */
void pending_gen_bump(steps_pending *p);
uint64_t pending_gen(steps_pending *p);

#endif
