/* store.h: the store's contract, by record type (DESIGN §5). The engine and
 * its Lua binding (l_store*.c, "sluice._store") use only what is declared
 * here; no key byte, record format or backend type appears in it. LMDB
 * (store_lmdb.c, writer.c, records_*.c) is the first implementation; a
 * second backend (PostgreSQL) implements the same list with the same
 * guarantees.
 *
 * Guarantees every backend gives:
 * - Writes are built into a store_batch by the record operations below and
 *   committed together: all of a batch or none of it. Every index a record
 *   has (runs by time, by namespace, by pipeline, by status, active runs, a
 *   stream key's events) is written in the same batch as the record, so an
 *   index never names a record that does not exist, nor misses one.
 * - A batch is durable when its done callback runs with status 0 (a crash
 *   or power cut after that loses nothing of it), and not before: a batch
 *   whose done callback has not run may or may not be there after a crash.
 * - Batches from the loop thread commit in the order they were submitted.
 * - Reads see only committed batches. A read operation returns its rows in
 *   memory the caller owns (no transaction or lock is held when it returns),
 *   and a read that fails returns a status: never an empty result instead.
 * - Operations that can fail return 0 or a STORE_* status, and write a
 *   message that names what failed to err.
 *
 * Commit: the LMDB backend's is the writer (writer.h: writer_submit with a
 * done(cookie, status, errmsg) callback on the loop thread). */
#ifndef SLUICE_STORE_H
#define SLUICE_STORE_H

#include <stddef.h>
#include <stdint.h>

/* status codes (negative); 0 is success */
enum {
  STORE_OK = 0,
  STORE_ENOTFOUND = -1, /* read-only open of a store that does not exist */
  STORE_EBADSTORE = -2, /* not a store, a newer format, or a corrupt record */
  STORE_EACCES = -3,    /* directory or files not writable / readable */
  STORE_EFULL = -4,     /* disk full */
  STORE_EIO = -5,       /* anything else the backend or the OS reported */
  STORE_EINVAL = -6     /* a record operation given a value it cannot store */
};

/* The code of a status, as Lua sees it: "EIO", "EFULL", ... */
const char *store_status_code(int status);

#define STORE_READONLY 1

typedef struct store store;
typedef struct store_batch store_batch;

/* Opens (creating if needed, unless STORE_READONLY) the store in dir.
 * Only dir itself is created: a missing parent is STORE_EBADSTORE naming
 * it. A directory this user may not enter is STORE_EACCES, not
 * STORE_ENOTFOUND. On error returns a status above and writes to err a
 * message that names dir and says what to do. */
int store_open(store **out, const char *dir, int flags, char *err, size_t errsz);
void store_close(store *s);
const char *store_dir(const store *s);

/* An empty batch, and the freeing of one that was never committed. */
store_batch *store_batch_new(void);
void store_batch_free(store_batch *b);
size_t store_batch_count(const store_batch *b);

/* Record operations, by record type. Each type's section says what its
 * records hold, what each operation adds to a batch or reads, and what it
 * guarantees beyond the list above. */

/* ---- runs: run records and their indexes ---- */

/* ---- steps: one record per step of a run ---- */

/* ---- run logs: lines logged inside steps ---- */

/* ---- events: the stream log, its per-key index and trim marks ---- */

/* ---- sends: send/on events and their dispatch cursor ---- */

/* ---- consumers: checkpoints of stream consumers ---- */

/* ---- schedules: schedule records ---- */

/* ---- API keys, namespaces, quota counters, idempotency keys ---- */

/* ---- meta: small named values of the store ---- */

#endif
