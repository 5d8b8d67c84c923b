/* wal.h: the store's write-ahead log (wal.c has the design and why an
 * acknowledgement means durable). For store_lmdb.c (open, close) and
 * writer.c (each group) only. Functions return 0 or an errno/LMDB code
 * (the writer tells MDB_MAP_FULL apart) unless they say otherwise. */
#ifndef SLUICE_WAL_H
#define SLUICE_WAL_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct wal wal;

/* The log's file name in the store directory (and the prefix of the
 * temporary file it is created as). */
#define WAL_FILE "wal"

/* Read-only open, before mdb_env_open: *recover = 1 if the machine restarted
 * since the log was last written, so the store must be recovered (by a
 * read-write open) before anyone reads it. No log: *recover = 0. Returns 0
 * or a STORE_* status with err. */
int wal_check(const char *dir, int *recover, char *err, size_t errsz);

/* Read-write open, before mdb_env_open: opens the log if there is one and
 * holds its lock until wal_attach (or wal_close), and if the machine
 * restarted since it was written, puts the checkpoint's meta pages back
 * into data.mdb (*recover = 1). *out is NULL when there is no log yet.
 * Returns 0 or a STORE_* status with err. */
int wal_open(wal **out, const char *dir, int *recover, char *err, size_t errsz);

/* After mdb_env_open and the databases: creates the log if there is none
 * (*l NULL: a new store, or one written before the log existed), or replays
 * its tail after a restart (recover), or checkpoints if the open wrote
 * (wrote); then switches the environment to MDB_NOSYNC and releases the
 * log's lock. Returns 0 or a STORE_* status with err. */
int wal_attach(wal **l, store *s, int recover, int wrote, char *err, size_t errsz);

/* Ends the checkpoint's pin (a read transaction) and closes the log. */
void wal_close(wal *l);

/* Writer thread, in the group's write transaction txn, before its batches
 * are applied (need: their bytes): decides where the record goes (after a
 * wrap mark at the ring's start if it does not fit before the end), asks the
 * checkpoint thread for a checkpoint that is due and for zeros ahead, and
 * checkpoints in txn first when this process holds no pin, the ring is full
 * or the checkpoint thread fell far behind. */
int wal_prepare(wal *l, store *s, MDB_txn *txn, size_t need);

/* Writer thread, after the group's batches are applied in txn: appends
 * payload (the group's operations) as one record, puts the log's new tail in
 * txn, and flushes the log (one fdatasync). Commit txn after it. */
int wal_append(wal *l, store *s, MDB_txn *txn, const void *payload, size_t len);

/* The commit after wal_append failed: the record must never be replayed.
 * Overwrites it and flushes; aborts the process if it cannot. */
void wal_cancel(wal *l);

/* Writer thread, when it stops: a checkpoint, so a restart has nothing to
 * replay. Returns 0 or a code. */
int wal_checkpoint_now(wal *l, store *s);

/* Applies one record's operations in txn (writer.c: the writer's batch
 * format). Returns 0 or a code. */
int store_apply_ops(MDB_txn *txn, store *s, const void *ops, size_t len);
/* As store_apply_ops, all of them (APPLY_ALL), or only the deferred step
 * records (APPLY_DEFERRED: a record whose other operations the store has). */
enum { APPLY_ALL = 0, APPLY_DEFER = 1, APPLY_DEFERRED = 2, APPLY_UNDEFERRED = 3 };
int store_apply_ops_mode(MDB_txn *txn, store *s, const void *ops, size_t len, int mode);
/* As store_apply_ops_mode, adding to *applied the operations applied
 * (APPLY_UNDEFERRED: every one but the deferred step records). */
int store_apply_ops_n(MDB_txn *txn, store *s, const void *ops, size_t len, int mode,
                      size_t *applied);
/* Adds the deferred step records of one record's operations to p (whose
 * lock the caller holds; NULL: none) and counts the others in *others (if
 * not NULL). Returns 0 or MDB_CORRUPTED if the record does not parse. */
struct steps_pending;
int store_each_deferred(const void *ops, size_t len, struct steps_pending *p, size_t *others);

/* ---- deferred step records (writer.c; wal.c's header has the design) ---- */

/* wal_prepare's code when the ring must wrap to FIRST but records with
 * deferred steps still need it: drain them (or wait for their writer to)
 * and retry. */
#define WAL_EDRAIN (-29001)

/* Writer thread, in txn: takes the log's deferring lock (at most once a
 * second while another process holds it); when it gets it and a writer
 * that died left deferred steps behind, applies them in txn (*applied = 1:
 * txn must commit). Returns 0 or a code. */
int wal_defer_acquire(wal *l, store *s, MDB_txn *txn, int *applied);
/* ---- lazy commits (writer.c: groups of events acknowledged after the
 * log's flush, committed to LMDB together) ---- */

/* wal_prepare's code when the writer's transaction holds acknowledged
 * groups (wal_lazy_open, or a dead writer's it applied: wal_took_over) and
 * a checkpoint must run in it: commit the transaction and retry the group
 * in a new one. */
#define WAL_ECOMMIT (-29002)
/* The writer's transaction (the one wal_prepare gets next) holds
 * acknowledged groups LMDB has not committed: open = 1, until it commits. */
void wal_lazy_open(wal *l, int open);
/* wal_prepare applied, in its txn, the acknowledged groups a lazy writer
 * that died left uncommitted (txn must commit). Reading clears it. */
int wal_took_over(wal *l);

/* This process holds the deferring lock (only its writer defers). */
int wal_defer_held(const wal *l);
/* The position of the record wal_prepare placed (for the mark). */
void wal_next(const wal *l, uint64_t *seq, uint64_t *off);
/* In txn: the mark (the oldest record whose deferred steps LMDB may lack),
 * put when deferring starts, deleted when everything is drained. */
int wal_mark_put(MDB_txn *txn, uint64_t seq, uint64_t off);
int wal_mark_del(MDB_txn *txn);
/* After the group's transaction committed, or was aborted because it had
 * nothing for LMDB: publishes the record's end in the log file (the tail
 * every writer process reads). Returns 0 or errno. */
int wal_publish(wal *l);
/* Read-only open: if no live process defers and a mark is set, adds the
 * deferred steps after it to the store's pending set; and sets *lazy_left
 * when the log holds records after LMDB's tail with more than deferred
 * steps in them (a lazy writer killed with acknowledged events LMDB lacks,
 * or a group whose writer died before its commit): only a read-write open
 * applies those (store_lmdb.c has one do it). STORE_* status. */
int wal_load_deferred(store *s, int *lazy_left, char *err, size_t errsz);

#endif
