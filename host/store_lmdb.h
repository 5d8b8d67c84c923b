/* store_lmdb.h: the LMDB implementation of the store (store.h), for its own
 * files only: store_lmdb.c (the environment: opens and checks it, names the
 * databases, hands out read transactions, grows the map), writer.c (the one
 * writer, group commit), wal.c (the write-ahead log that makes a commit
 * durable with one flush) and records_*.c (the key layouts and record formats
 * of store.h's operations). Nothing outside them includes this header or
 * knows a key byte (DESIGN §5).
 *
 * Databases and their keys (composite keys are '\0'-separated, integers
 * big-endian so that byte order is numeric order):
 *   meta         "format" -> "2"                   (format version)
 *                "api_keys" -> number of API keys (decimal; records_access.c)
 *                "key_used\0" key id -> time of the key's last use
 *   runs         run_id -> JSON run record
 *   runs_by_time be64(created_at_us) run_id -> ""  (history, newest last)
 *   steps        run_id "\0" step_id -> step record (records_steps.c): a binary
 *                header (status, attempts, position, times, id, branch) then
 *                the JSON of the result (or of the error of a failed step)
 *   step_log     be64(seq) -> le64 prev seq of the run, le16 length + run_id,
 *                step record: where a step's record goes first, appended, so
 *                concurrent runs' steps share leaves (records_steps.c says
 *                when they move to `steps`, 64 to 128 of a run at a time)
 *   step_heads   run_id -> le64 newest seq, le64 floor, le32 count: the runs
 *                with records in step_log
 *   schedules    schedule name -> JSON {name, spec, tz, next_at, last_at, ...}
 *                (records_schedules.c)
 *   events       be64(seq) -> event record (records_events.c): le64 ts_us,
 *                le16 length + type, le16 length + stream key, JSON of data
 *   stream_index stream "\0" be64(seq) -> ""  (one stream key in order)
 *   consumers    consumer name -> JSON {name, pattern, after, gen, updated_at}
 *   sends        be64(seq) -> JSON {name, data, ts} (send/on events)
 *   meta         "events_trimmed_to" -> decimal: highest event position trimmed;
 *                "trim\0" stream -> decimal: that key's highest trimmed;
 *                "sends_dispatched" -> decimal: the dispatch cursor
 *   active_runs  run_id -> ""  (runs not yet completed, failed or cancelled:
 *                what serve resumes, without reading the whole history)
 *   runs_by_ns, runs_by_pipeline, runs_by_status  the run listings of the
 *                HTTP API, newest first by a reverse scan (records_runs.c):
 *                ns "\0" [pipeline | status "\0"] be64(created_at_us) run_id -> ""
 *   api_keys     key id -> JSON {name, namespace, role, hash, created_at}
 *   namespaces   namespace -> JSON {status, runs_per_day, ...} (lua/quota.lua)
 *   quotas       namespace "\0" YYYY-MM-DD -> runs started that UTC day
 *                (decimal, moved by the writer's counter add: wbatch_add)
 *   idempotency  namespace "\0" pipeline "\0" Idempotency-Key -> run_id
 *   (main)       LMDB's own database of the names above also holds
 *                "\0sluice.wal_tail" -> native u64 seq, u64 offset: where the
 *                log's next record goes (wal.c; put in each record's transaction,
 *                and in the log file for a group that commits nothing: the
 *                newer of the two counts), and "\0sluice.defer_from" -> native
 *                u64 seq, u64 offset: the oldest record whose deferred step
 *                records LMDB may lack (writer.c; absent: none)
 *   logs         run_id "\0" be64(us) be32(seq) -> JSON log line (records_steps.c:
 *                lines logged inside steps, committed with the step's record)
 *
 * Threads: the environment is opened with MDB_NOTLS, so a read transaction
 * may be used by any coroutine on the loop thread. Map growth needs no
 * transaction open anywhere in the process; a process-wide rwlock makes read
 * transactions (shared) exclude growth (exclusive). Read transactions are
 * short: begin, copy out, end. */
#ifndef SLUICE_STORE_LMDB_H
#define SLUICE_STORE_LMDB_H

#include <lmdb.h>
#include <stddef.h>

#include "sbuf.h"
#include "store.h"

enum {
  DB_META = 0,
  DB_RUNS,
  DB_RUNS_BY_TIME,
  DB_STEPS,
  DB_SCHEDULES,
  DB_EVENTS,
  DB_STREAMS,
  DB_CONSUMERS,
  DB_SENDS,
  DB_ACTIVE,
  DB_RUNS_BY_NS,
  DB_RUNS_BY_PIPELINE,
  DB_RUNS_BY_STATUS,
  DB_API_KEYS,
  DB_NAMESPACES,
  DB_QUOTAS,
  DB_IDEMPOTENCY,
  DB_LOGS,
  DB_STEP_LOG, /* added in format 2; new databases go last (the log's records name them by number) */
  DB_STEP_HEADS,
  DB_COUNT
};

/* 2: steps go through step_log and step_heads (a store of format 1 opens as
 * one whose log is empty, and is marked 2 by its first read-write open) */
#define STORE_FORMAT_VERSION 2

/* records_steps.c: the most records of a run chained in the log before they
 * move to `steps` (half to all of it, by the run's id); the log's size past
 * which its oldest records go, STEPS_LOG_TRIM at a time (whole leaves freed
 * at once, not one record per commit) */
#define STEPS_LOG_RUN 128
#define STEPS_LOG_MAX 16384
#define STEPS_LOG_TRIM 512

/* prefixes of meta's per-name marks (each followed by "\0" and the name) */
#define META_TRIM_MARK "trim"
#define META_KEY_USED "key_used"

MDB_env *store_env(store *s);
/* The write-ahead log of a read-write store (NULL when read-only). */
struct wal *store_wal(store *s);
/* The step records acknowledged but not yet in LMDB (steps_pending.h). */
struct steps_pending *store_pending(store *s);
MDB_dbi store_dbi(const store *s, int db);
const char *store_db_name(int db);

/* Begins a read transaction (taking the shared lock). Retries on
 * MDB_MAP_RESIZED after adopting the new size. End it with store_read_end. */
int store_read_begin(store *s, MDB_txn **txn, char *err, size_t errsz);
void store_read_end(store *s, MDB_txn *txn);

/* Copies the value under key into out (reset first). *found tells whether it
 * exists. Returns 0 or a status with err. */
int store_get(store *s, int db, const void *key, size_t klen, sbuf *out, int *found,
              char *err, size_t errsz);

/* Calls fn for every entry whose key starts with prefix (plen may be 0), in
 * key order, or in reverse order if reverse != 0, inside one read
 * transaction. Key and value are valid only during the call. fn returns 0 to
 * go on, 1 to stop early, or a negative status to abort the scan (returned). */
typedef int (*store_scan_fn)(void *ud, const void *key, size_t klen, const void *val,
                             size_t vlen);
int store_scan(store *s, int db, const void *prefix, size_t plen, int reverse,
               store_scan_fn fn, void *ud, char *err, size_t errsz);

/* Point reads in one read transaction: for i in [0, n) calls fn with the
 * value under key(i) (val NULL when absent). key and fn return 0 to go on,
 * 1 to stop, or a negative status to abort (returned). */
typedef int (*store_key_fn)(void *ud, size_t i, const void **key, size_t *klen);
typedef int (*store_each_fn)(void *ud, size_t i, const void *val, size_t vlen);
int store_get_each(store *s, int db, size_t n, store_key_fn key, store_each_fn fn, void *ud,
                   char *err, size_t errsz);

/* For the writer thread only: the exclusive lock and doubling of the map
 * after MDB_MAP_FULL, with no transaction of this thread open. */
int store_grow(store *s, char *err, size_t errsz);

/* As store_scan, starting at from: forward, at the first key >= from (when
 * from sorts after prefix; else at the prefix); in reverse, at the last key
 * < from (a page of a listing newest first, before a cursor). */
int store_scan_from(store *s, int db, const void *prefix, size_t plen, const void *from,
                    size_t flen, int reverse, store_scan_fn fn, void *ud, char *err,
                    size_t errsz);

/* For the writer thread only: a write transaction held under the shared lock,
 * so that growth and adopting a map another process grew wait for it.
 * store_write_begin adopts a resized map and retries. Both return 0 or the
 * raw LMDB/errno code (not a status: the writer must tell MDB_MAP_FULL
 * apart). store_write_end commits (commit != 0) or aborts; txn is gone after
 * it either way. */
int store_write_begin(store *s, MDB_txn **txn);
int store_write_end(store *s, MDB_txn *txn, int commit);

/* records_steps.c, for the writer: OP_STEP's application (the step record
 * rec of run appended to step_log, moves to `steps` when due), and the
 * census's count of steps (those of `steps` and the log's newer ids). LMDB
 * codes. */
int records_step_apply(MDB_txn *txn, store *s, const void *run, size_t rn, const void *rec,
                       size_t recn);
/* A drain's application of a deferred step record (writer.c): straight
 * into `steps` (a drain holds many records of each run, so they share the
 * run's leaves as the log's moves would, written once instead of twice),
 * unless the run has records in step_log, which count over `steps`: then
 * as records_step_apply. Reads see the same either way. */
int records_step_drain(MDB_txn *txn, store *s, const void *run, size_t rn, const void *rec,
                       size_t recn);
int records_steps_census(MDB_txn *txn, store *s, int64_t *n);
/* EINVAL unless records_step_apply would take (run, rec) (checked when a
 * record is deferred: its batch fails then, not its drain). */
int records_step_valid(const void *run, size_t rn, const void *rec, size_t recn);
/* OP_SETTLE (writer_stop, when steps were written): every run's log records
 * moved to `steps`, and the log emptied but for its last record. */
int records_steps_settle(MDB_txn *txn, store *s);

/* Maps an LMDB or errno code to a status above. */
int store_status(int rc);

/* Building store.h's store_named_rows inside a read (store_rows.c): reset,
 * add rows (copies; extra may be NULL), then done once no row follows. */
void named_rows_reset(store_named_rows *r);
void named_rows_add(store_named_rows *r, const void *name, size_t nlen, const void *rec,
                    size_t rlen, const void *extra, size_t elen);
void named_rows_done(store_named_rows *r);

/* A page of db's entries whose key starts with prefix, after the key
 * prefix+after (alen 0: from the first), at most limit, into out (reset
 * first; store_rows.c): each row named by its key without the prefix, rec
 * its value. For the listings of store.h's tools section. */
int store_page(store *s, int db, const void *prefix, size_t plen, const char *after, size_t alen,
               size_t limit, store_named_rows *out, char *err, size_t errsz);

#endif
