/* wal.h: the store's write-ahead log (wal.c has the design and why an
 * acknowledgement means durable). For store_lmdb.c (open, close) and
 * writer.c (each group) only. Functions return 0 or an errno/LMDB code
 * (the writer tells MDB_MAP_FULL apart) unless they say otherwise. */
#ifndef SLUICE_WAL_H
#define SLUICE_WAL_H

#include <lmdb.h>
#include <stddef.h>

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

#endif
