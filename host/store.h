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
 * done(cookie, status, errmsg) callback on the loop thread). Why status 0
 * there means on disk: the writer appends the group's operations to the
 * store's write-ahead log (STORE/wal) as one checksummed record and
 * fdatasyncs it before LMDB commits the group (MDB_NOSYNC: into the page
 * cache only) and before any callback runs. A power cut may leave data.mdb's
 * newest pages and meta page in any state, so recovery does not trust them:
 * a checkpoint flushes data.mdb and saves its meta pages in the log's
 * header while a read transaction pins that state (LMDB reuses no page a
 * reader can reach, so it stays on disk as flushed); the first open after a
 * restart (the machine's boot id changed) writes those meta pages back and
 * replays the records after the checkpoint in order, up to the first torn
 * one, and every acknowledged group comes before that. A commit that fails
 * after its record was flushed retracts the record, so a batch reported
 * failed never reappears. wal.c has the rest (several processes, the log's
 * wrap, LMDB's version); tests/c/test_powercut.c checks it on images of what
 * a power cut can leave.
 *
 * Step records on LMDB (issue 14): while one writer process holds the log's
 * deferring lock (the first read-write open that finds it free), its step
 * records are logged and acknowledged as above but reach LMDB later, all
 * together, every 100 ms at most (and at a settle, and when the writer
 * stops); a group of step records alone commits no LMDB transaction.
 * Reads of steps in that process merge the records not yet in LMDB, so it
 * sees a batch whole as soon as it is acknowledged. Other processes read
 * LMDB: beside a live writer they see its acknowledged steps at most 100 ms
 * plus one commit later, and a group holding any other operation (a run's
 * record, an event) drains every pending record and defers none of its own,
 * so whatever else of LMDB's state they see comes with every step
 * acknowledged before it (a run read as completed has all its steps); once
 * it died (kill -9), a read-only open reads
 * its undrained records from the log and a read-write one applies them
 * first (tests/c/test_defer.c). A read-only handle opened while the writer
 * lived does not pick them up later: reopen it. wal.c has why this is
 * durable.
 *
 * Events on LMDB (issue 14): that same writer acknowledges a group of event
 * records alone after its log flush and leaves its LMDB transaction open
 * for the next such groups, committed 20 ms after the first at most
 * (SLUICE_LAZY_US), at once when a read of events in this process asks,
 * and with any other kind of group. So reads of events in that process see
 * every acknowledged event; other processes see them at most 20 ms plus one
 * commit later, in order (never a later write without the events acked
 * before it); another writing process may wait as long for LMDB's write
 * lock. Once the writer died (kill -9), the next read-write open applies
 * the acknowledged events LMDB lacks from the log before anything else; a
 * read-only open that finds them has a read-write open do so first (a user
 * who may not write the store reads without them until one does). The
 * census waits for the commit as reads do (writer.c, "Lazy commits";
 * tests/c/test_lazy.c, and test_powercut.c for a power cut).
 *
 * Reads: LMDB's complete before the call returns; a remote backend's
 * complete through a done callback on the loop thread (store_pg.h declares
 * each operation so, and the Lua binding suspends the calling coroutine until
 * it runs). */
#ifndef SLUICE_STORE_H
#define SLUICE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

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
/* Drops the store's pages from this process's resident set (they stay in
 * the page cache, read again at the next access): after a pass over many
 * records (the scheduler's 100,000 at start), so that the pass does not
 * keep the whole database counted in the process's RSS. */
int store_release_pages(store *s, char *err, size_t errsz);

/* An empty batch, and the freeing of one that was never committed. */
store_batch *store_batch_new(void);
void store_batch_free(store_batch *b);
size_t store_batch_count(const store_batch *b);

/* Record operations, by record type. Each type's section says what its
 * records hold, what each operation adds to a batch or reads, and what it
 * guarantees beyond the list above. */

/* Appends the JSON of a record or value to out: 0, or -1 with a message in
 * err (the operation given it then adds nothing to its batch). The record
 * operations that take one call it once, to write the JSON straight into
 * the batch (no copy of a value on its way to the store). */
typedef int (*store_fill_fn)(void *ud, sbuf *out, char *err, size_t errsz);

/* Rows a read returns, in memory the caller owns: row i is
 * rows.buf.data + off[i], len[i] bytes (JSON unless said otherwise), and
 * its name (a run's id, say; empty if the read has none) buf.data +
 * name_off[i], name_len[i]. Free with store_rows_free, whatever the read
 * returned. */
typedef struct {
  size_t n, cap;
  size_t *off, *len, *name_off, *name_len;
  sbuf buf;
} store_rows;
#define STORE_ROWS_INIT {0, 0, NULL, NULL, NULL, NULL, SBUF_INIT}
void store_rows_free(store_rows *r);
/* for backends: appends a row named name (nn bytes) */
void store_rows_add(store_rows *r, const void *name, size_t nn, const void *p, size_t n);

/* ---- runs: run records and their indexes ---- */

/* A run record is the JSON object the engine writes (the fields below are
 * in it too), under its id. Its indexes: history by creation time; listings
 * by namespace, by namespace and pipeline, by namespace and status (newest
 * first); and the active runs (status not completed, failed or cancelled),
 * which is what serve resumes. Ids, pipelines, namespaces and statuses are
 * 1..200 bytes without NUL. */
typedef struct {
  const char *id;
  const char *pipeline;
  const char *ns;     /* NULL: "default" */
  const char *status; /* NULL: "pending" */
  int64_t created_us; /* creation time, us since the epoch: the listings' order */
} store_run;

#define STORE_DEFAULT_NS "default"

/* 1 if status is final (completed, failed, cancelled). */
int store_run_status_final(const char *status);

/* Adds to b the run record r (fill writes its JSON) with its index entries:
 * all of them if is_new (the first write of the record), else the move of
 * its status entry from prev_status (the status of the record as read or
 * last put; NULL: none) when it differs. The active-runs entry follows
 * r->status (present unless final) at every put. Atomic with everything
 * else in b. Returns 0, or STORE_EINVAL with err (a field missing, too long,
 * or holding NUL; or what fill reported) and b unchanged. */
int store_put_run(store_batch *b, const store_run *r, int is_new, const char *prev_status,
                  store_fill_fn fill, void *ud, char *err, size_t errsz);

/* The JSON of run id into out (reset first); *found tells if it exists. */
int store_get_run(store *s, const char *id, sbuf *out, int *found, char *err, size_t errsz);

/* A page of runs, newest first (by creation time, then id descending). */
typedef struct {
  const char *ns;       /* NULL: every namespace */
  const char *pipeline; /* NULL: any */
  const char *status;   /* NULL: any */
  const char *before;   /* a cursor an earlier page returned (next), or NULL */
  int64_t since_us;     /* > 0: stop at runs created before it */
  size_t limit;         /* at most this many runs (>= 1) */
} store_run_filter;

/* Reads at most f->limit runs matching f into rows (their JSON), from the
 * indexes only: with both pipeline and status, the pipeline's listing is
 * read and each entry's status checked in the status index, and at most
 * max(1000, 20 * limit) entries are examined per namespace, so a rare
 * status gives a short page with a cursor, never a scan of the history.
 * next (reset first) gets the cursor of the next page, empty at the end.
 * Errors: STORE_EINVAL (before is not a cursor), STORE_EBADSTORE (an index
 * entry whose record is missing), or what the store reported. */
int store_list_runs(store *s, const store_run_filter *f, store_rows *rows, sbuf *next, char *err,
                    size_t errsz);

/* The records of the active runs (status not final), in id order. */
int store_active_runs(store *s, store_rows *rows, char *err, size_t errsz);

/* For stores written before the listings existed: at most max run records
 * with an id after `after` (NULL: from the first), in id order, named by
 * their id; the listing entries (namespace, pipeline, status) of one run;
 * and the mark that every run has them. */
int store_read_runs(store *s, const char *after, size_t max, store_rows *rows, char *err,
                    size_t errsz);
int store_put_run_listings(store_batch *b, const store_run *r, char *err, size_t errsz);
void store_mark_runs_indexed(store_batch *b);
/* 1 if the store is marked so (0 if not, or on error). */
int store_runs_indexed(store *s);

/* Idempotency keys of API-created runs: (namespace, pipeline, key) -> the
 * run id it created, put in the run's first batch. key is 1..200 bytes. */
int store_put_idempotency(store_batch *b, const char *ns, const char *pipeline, const char *key,
                          size_t klen, const char *run_id, char *err, size_t errsz);
int store_get_idempotency(store *s, const char *ns, const char *pipeline, const char *key,
                          size_t klen, sbuf *run_id, int *found, char *err, size_t errsz);

/* ---- steps: one record per step of a run ---- */

/* A step of a run (run id, step id): its status, attempts, place in its
 * branch (the replay's order), times, and a payload: the JSON of its result
 * (completed; none when the step returned nil) or of its error (failed).
 * A "running" record marks a step in flight (no payload); the step's result
 * replaces it. Step ids and branches are at most 65535 bytes. */
enum { STORE_STEP_COMPLETED = 1, STORE_STEP_FAILED = 2, STORE_STEP_RUNNING = 3 };

typedef struct {
  const char *id;
  size_t id_len;
  const char *branch;
  size_t branch_len;
  int status; /* STORE_STEP_* */
  uint32_t attempts, pos;
  int64_t started_us, duration_us;
  /* reads only: the payload (has_payload 0: none) */
  int has_payload;
  const char *payload;
  size_t payload_len;
} store_step;

/* "completed", "failed", "running"; 0 for another string. */
int store_step_status(const char *name);
const char *store_step_status_name(int status);

/* Adds to b the record of st under (run, st->id), replacing one there;
 * fill (NULL: no payload) writes the payload JSON straight into b. Returns
 * 0 or STORE_EINVAL with err (and b unchanged). */
int store_put_step(store_batch *b, const char *run, size_t run_len, const store_step *st,
                   store_fill_fn fill, void *ud, char *err, size_t errsz);

/* The steps of a run, read in memory the caller owns: v[i]'s strings point
 * into buf. */
typedef struct {
  size_t n, cap;
  store_step *v;
  sbuf buf;
} store_steps;
#define STORE_STEPS_INIT {0, 0, NULL, SBUF_INIT}
void store_steps_free(store_steps *l);

/* Every step of run (in step id order), or the one step id (0 or 1 rows).
 * A record that does not parse is STORE_EBADSTORE naming the run. */
int store_load_steps(store *s, const char *run, size_t run_len, store_steps *out, char *err,
                     size_t errsz);
int store_get_step(store *s, const char *run, size_t run_len, const char *id, size_t id_len,
                   store_steps *out, char *err, size_t errsz);

/* ---- run logs: lines logged inside steps ---- */

/* A line is a JSON object under (run, time us, seq): seq orders lines of
 * one microsecond. A step's lines are put in the batch of its record. */
int store_put_log(store_batch *b, const char *run, size_t run_len, int64_t us, uint32_t seq,
                  const void *json, size_t len, char *err, size_t errsz);
void store_del_log(store_batch *b, const char *run, size_t run_len, int64_t us, uint32_t seq);
/* The lines of run, oldest first: rows (JSON) and, if ids is not NULL, the
 * (us, seq) of row i at ids[2i], ids[2i+1] (malloc'd; caller frees). */
int store_read_logs(store *s, const char *run, size_t run_len, store_rows *rows, int64_t **ids,
                    char *err, size_t errsz);

/* ---- events: the stream log, its per-key index and trim marks ---- */

/* An event: its position in the log (seq, from 1, never reused: trimming
 * the newest events keeps their positions taken), the time it was appended
 * (us, not decreasing with seq), a type and a stream key (non-empty, at most
 * 65535 bytes, no NUL), and the JSON of its data. An event's id, what users
 * see, is its position as 16 lowercase hex digits: ids sort as positions. */
#define STORE_EVENT_ID_LEN 16
void store_event_id(uint64_t seq, char id[STORE_EVENT_ID_LEN + 1]);
/* The position of an id; -1 if id is not 16 hex digits. */
int store_event_seq(const char *id, size_t n, uint64_t *seq);

/* 0, or STORE_EINVAL with "type must not be empty" (or the stream key's
 * fault) in err: what store_append_event would refuse. */
int store_event_check(const char *type, size_t typen, const char *stream, size_t streamn,
                      char *err, size_t errsz);

/* Adds the event at position seq and its entry in its stream key's index:
 * both commit with b or neither. The caller allocates positions (one
 * writing process per store: store_events_last tells where to go on).
 * Returns 0 or STORE_EINVAL (see store_event_check). */
int store_append_event(store_batch *b, uint64_t seq, int64_t ts_us, const char *type,
                       size_t typen, const char *stream, size_t streamn, const char *data,
                       size_t datan, char *err, size_t errsz);

typedef struct {
  uint64_t seq;
  int64_t ts_us;
  const char *type, *stream, *data; /* data: JSON text */
  size_t typen, streamn, datan;
} store_event;

/* Rows of a read: rows[0..n) point into memory the struct owns, until
 * store_events_free. last is the last position the read examined: the next
 * page starts after it. */
typedef struct {
  store_event *rows;
  size_t n, cap;
  uint64_t last;
  char *bytes;
  size_t blen, bcap;
} store_events;
#define STORE_EVENTS_INIT {NULL, 0, 0, 0, NULL, 0, 0}
void store_events_free(store_events *e);

/* What to read: the events after position `after` of one stream key
 * (exact, through its index) or of every key starting with stream (""
 * for all: the log in order), at most limit (> 0). */
typedef struct {
  const char *stream;
  size_t streamn;
  int exact;
  uint64_t after;
  size_t limit;
} store_event_query;

/* Reads the events of q in position order into out (reset first). A
 * corrupt record is STORE_EBADSTORE naming its position. An event trimmed
 * between the index and the log read is not returned. */
int store_read_events(store *s, const store_event_query *q, store_events *out, char *err,
                      size_t errsz);

/* The last position taken (the newest event's, or the highest ever
 * trimmed, whichever is greater; 0 for none) and the newest event's time
 * (0 if none is stored). */
int store_events_last(store *s, uint64_t *seq, int64_t *ts_us, char *err, size_t errsz);

/* The position after which the events at or after time ts_us begin (times
 * grow with positions): a read from a time starts after it. */
int store_events_after_time(store *s, int64_t ts_us, uint64_t *after, char *err, size_t errsz);

/* Whether trimming removed events after position `after` of the stream key
 * (exact) or of any key starting with stream: a read from there lost some. */
int store_events_trimmed(store *s, const char *stream, size_t streamn, int exact, uint64_t after,
                         int *trimmed, char *err, size_t errsz);

/* Stream keys holding events: the distinct keys that start with prefix and
 * sort after `after` (alen 0: from the first), in byte order, at most limit.
 * keys[0..n) point into memory owned until store_keys_free. */
typedef struct {
  const char *key;
  size_t len;
} store_key;
typedef struct {
  store_key *keys;
  size_t n, cap;
  char *bytes;
  size_t blen, bcap;
} store_keys;
#define STORE_KEYS_INIT {NULL, 0, 0, NULL, 0, 0}
void store_keys_free(store_keys *k);
int store_stream_keys(store *s, const char *prefix, size_t plen, const char *after, size_t alen,
                      size_t limit, store_keys *out, char *err, size_t errsz);

/* Trimming (retention). Adds to b the removal of the events of q, with
 * their index entries, each key's trim mark (the highest position trimmed
 * of that key, for store_events_trimmed) and the highest position ever
 * trimmed (store_events_last): all commit with b or none. Two kinds:
 * - before_us > 0: in log order after position `after`, of the keys
 *   matching q (exact or prefix), the events older than before_us; at most
 *   limit events are examined. *last is the last examined, *more whether
 *   older events may follow it.
 * - keep >= 0 (exact only): the oldest events of the key beyond its newest
 *   keep, at most limit; *more whether more than limit are in excess.
 * *n is the number of events whose removal was added. The marks are read
 * when b is built: one trimming batch at a time per store. */
typedef struct {
  const char *stream;
  size_t streamn;
  int exact;
  uint64_t after;
  int64_t before_us;
  int64_t keep;
  size_t limit;
} store_trim_query;
int store_trim_events(store *s, store_batch *b, const store_trim_query *q, size_t *n,
                      uint64_t *last, int *more, char *err, size_t errsz);

/* ---- sends: send/on events and their dispatch cursor ---- */

/* A send: its position (seq, from 1; ids as events' ids) and the JSON of
 * its record {name, data, ts}. The dispatch cursor is the last position
 * whose handlers' runs were created: set in the batch that creates them, so
 * a send is dispatched exactly once. */
void store_put_send(store_batch *b, uint64_t seq, const char *json, size_t jsonn);

/* Rows of a read of sends (or consumers): JSON records in owned memory. */
typedef struct {
  uint64_t seq;                /* sends: the position */
  const char *name, *json;     /* consumers: the name */
  size_t namen, jsonn;
} store_row;
typedef struct {
  store_row *rows;
  size_t n, cap;
  char *bytes;
  size_t blen, bcap;
} store_blob_rows;
#define STORE_BLOB_ROWS_INIT {NULL, 0, 0, NULL, 0, 0}
void store_blob_rows_free(store_blob_rows *r);

/* The sends after position `after`, in order, at most limit (> 0). */
int store_sends(store *s, uint64_t after, size_t limit, store_blob_rows *out, char *err, size_t errsz);
/* The last position of a send (0 if none). */
int store_sends_last(store *s, uint64_t *seq, char *err, size_t errsz);

void store_set_dispatch_cursor(store_batch *b, uint64_t seq);
/* The dispatch cursor (0 before the first dispatch). */
int store_dispatch_cursor(store *s, uint64_t *seq, char *err, size_t errsz);

/* ---- consumers: checkpoints of stream consumers ---- */

/* One record per consumer name: the JSON of its state {name, pattern,
 * after, gen, updated_at}. A checkpoint put in the batch that completes
 * the consumer's run moves with it. */
void store_put_consumer(store_batch *b, const char *name, size_t namen, const char *json,
                        size_t jsonn);
/* The consumer's record into out as JSON; *found 0 when there is none. */
int store_get_consumer(store *s, const char *name, size_t namen, store_blob_rows *out, int *found,
                       char *err, size_t errsz);
/* Every consumer's record, in name order. */
int store_consumers(store *s, store_blob_rows *out, char *err, size_t errsz);

/* ---- schedules: schedule records ---- */

/* Records read by name, in memory the caller owns (one buffer): row i is
 * rows[i].name (name_len bytes) and its JSON body rows[i].rec (rec_len
 * bytes), plus a small value that depends on the read (extra, or NULL).
 * Rows come in name order (bytewise). Free with store_named_rows_free. */
typedef struct {
  const char *name, *rec, *extra;
  size_t name_len, rec_len, extra_len;
} store_named_row;
typedef struct {
  store_named_row *rows;
  size_t n, cap;
  sbuf buf;
} store_named_rows;
#define STORE_NAMED_ROWS_INIT {NULL, 0, 0, SBUF_INIT}
void store_named_rows_free(store_named_rows *r);

/* A schedule's record is named by the schedule's name (1 to
 * STORE_NAME_MAX bytes) and its body is a JSON object the scheduler owns
 * (spec, tz, next and last fire, runs, enabled, and for schedules created
 * over the HTTP API their definition). put replaces the record, delete
 * removes it (a name without a record is no error); both commit with the
 * rest of the batch, so a fire's run and the record that moves the schedule
 * past that fire are durable together. A bad name is STORE_EINVAL and adds
 * nothing to the batch. */
#define STORE_NAME_MAX 400
int store_put_schedule(store_batch *b, const char *name, size_t nlen, const char *rec,
                       size_t rlen);
int store_delete_schedule(store_batch *b, const char *name, size_t nlen);

/* The record of schedule name into rec (reset first); *found says whether it
 * exists. */
int store_get_schedule(store *s, const char *name, size_t nlen, sbuf *rec, int *found, char *err,
                       size_t errsz);

/* Up to limit records (0: all) of schedules named after `after` (alen 0:
 * from the first), in name order, into out (emptied first): a listing in pages that
 * never holds the whole set in memory. All rows are from one snapshot. */
int store_list_schedules(store *s, const char *after, size_t alen, size_t limit,
                         store_named_rows *out, char *err, size_t errsz);

/* ---- API keys, namespaces, quota counters, idempotency keys ---- */

/* API keys. A key's record is named by its id (1 to STORE_NAME_MAX bytes)
 * and its body is the JSON object of lua/keys.lua (name, namespace, role,
 * hash of the secret, created_at). Its last use is a separate small mark,
 * so that marking a use never rewrites a record a revoke may be removing.
 * add_key writes a new key's record; the id must not name a key already
 * (the caller made it at random and checked). revoke_key removes the record
 * and its mark (a key gone meanwhile is no error). touch_key writes the mark
 * (when: the caller's time text). */
int store_add_key(store_batch *b, const char *id, size_t idlen, const char *rec, size_t rlen);
int store_revoke_key(store_batch *b, const char *id, size_t idlen);
int store_touch_key(store_batch *b, const char *id, size_t idlen, const char *when, size_t wlen);

/* The record of key id into rec (reset first); *found says whether it exists. */
int store_get_key(store *s, const char *id, size_t idlen, sbuf *rec, int *found, char *err,
                  size_t errsz);

/* How many keys exist, exactly, whatever batches raced (one lookup: the
 * HTTP API asks on every request). */
int store_key_count(store *s, int64_t *n, char *err, size_t errsz);

/* Every key, in id order, into out (emptied first); extra is its last-use mark (NULL:
 * never used). One snapshot. */
int store_list_keys(store *s, store_named_rows *out, char *err, size_t errsz);

/* Namespaces. A namespace's record is named by the namespace (1 to
 * STORE_NAME_MAX bytes), its body the JSON object of lua/quota.lua (status,
 * limits, times). put replaces it. */
int store_put_namespace(store_batch *b, const char *ns, size_t nslen, const char *rec,
                        size_t rlen);
int store_get_namespace(store *s, const char *ns, size_t nslen, sbuf *rec, int *found,
                        char *err, size_t errsz);
/* Every namespace, in name order, into out (emptied first; extra NULL). */
int store_list_namespaces(store *s, store_named_rows *out, char *err, size_t errsz);

/* Quota counters: the runs started over the API in a namespace on a UTC day
 * (day: "YYYY-MM-DD"). count_run adds one to the day's count when the batch
 * commits (an increment applied by the backend at commit, not a value the
 * caller computed: batches that commit count exactly, one that fails counts
 * nothing, whatever else commits between). Put it in the batch that creates
 * the run it admits, so a run and its count are durable together. */
int store_count_run(store_batch *b, const char *ns, size_t nslen, const char *day, size_t dlen);
/* The day's count so far (0 when none). */
int store_quota_used(store *s, const char *ns, size_t nslen, const char *day, size_t dlen,
                     int64_t *n, char *err, size_t errsz);

/* ---- tools: what store copy and store check read and write ---- */

/* The operations below serve `sluice store copy` (store_copy.h) and
 * `sluice store check` (store_check.h), not the engine: listings of the
 * records no engine read lists, writes that put a value the engine only
 * ever moves step by step (a quota's count, a trim mark, the last position
 * taken), and the census and probes of a check. */

/* Record types, as the census counts them and the tools name them. */
enum {
  STORE_K_RUNS,
  STORE_K_STEPS,
  STORE_K_LOGS,
  STORE_K_IDEMPOTENCY,
  STORE_K_EVENTS,
  STORE_K_TRIMS, /* per-key trim marks */
  STORE_K_SENDS,
  STORE_K_CONSUMERS,
  STORE_K_SCHEDULES,
  STORE_K_KEYS,
  STORE_K_KEY_USES, /* API keys' last-use marks */
  STORE_K_NAMESPACES,
  STORE_K_QUOTAS,
  STORE_KINDS
};
/* "runs", "steps", "logs", "idempotency", "events", "trims", "sends",
 * "consumers", "schedules", "keys", "key_uses", "namespaces", "quotas" */
extern const char *const store_kind_names[STORE_KINDS];

/* How many records of each type a store holds (exactly, in one snapshot on
 * LMDB; one statement on PostgreSQL), and its positions: the last event
 * position taken and the newest event's time (store_events_last), the last
 * send position (store_sends_last) and the dispatch cursor. */
typedef struct {
  int64_t n[STORE_KINDS];
  uint64_t events_last, sends_last, dispatched;
  int64_t events_ts;
} store_census;
int store_census_of(store *s, store_census *out, char *err, size_t errsz);

/* Listings in pages, in byte order of the row names, each row named as
 * below; `after` (alen 0: from the first) is the name of the last row of
 * the page before; at most limit (> 0) rows.
 * - quota counters: name namespace "\0" day (YYYY-MM-DD), rec the count
 *   (decimal);
 * - trim marks: name the stream key, rec the highest position trimmed of
 *   it (decimal);
 * - idempotency keys: name namespace "\0" pipeline "\0" key, rec the run id. */
int store_list_quotas(store *s, const char *after, size_t alen, size_t limit,
                      store_named_rows *out, char *err, size_t errsz);
int store_list_trim_marks(store *s, const char *after, size_t alen, size_t limit,
                          store_named_rows *out, char *err, size_t errsz);
int store_list_idempotency(store *s, const char *after, size_t alen, size_t limit,
                           store_named_rows *out, char *err, size_t errsz);

/* Writes of a copy into an empty store: the day's count set to n; a key's
 * trim mark set to seq; the positions up to seq taken (store_events_last
 * reports at least seq afterwards, though no event after the newest is
 * stored). STORE_EINVAL for a bad name or day. */
int store_put_quota(store_batch *b, const char *ns, size_t nslen, const char *day, size_t dlen,
                    int64_t n);
int store_put_trim_mark(store_batch *b, const char *stream, size_t streamn, uint64_t seq);
void store_set_events_taken(store_batch *b, uint64_t seq);

/* The fields of a run record that its listings are made of, read from its
 * JSON by the caller (the codec is Lua's: store.h's backends do not parse
 * records), or -1 with err for a record that does not decode. */
typedef struct {
  char id[201], pipeline[201], ns[201], status[201];
  int64_t created_us;
} store_run_fields;
typedef int (*store_run_fields_fn)(void *ud, const char *json, size_t n, store_run_fields *out,
                                   char *err, size_t errsz);

/* The entries of the runs' listings, for a check (LMDB: these are the
 * index databases; PostgreSQL's listings are SQL indexes of the runs table,
 * which cannot disagree with it). A page of at most limit entries of
 * listing (STORE_LISTING_*) after the entry `after`, named by the entry
 * (rec empty): store_run_entry_parse reads one. */
enum {
  STORE_LISTING_TIME,     /* the history: created_us, id */
  STORE_LISTING_NS,       /* ns, created_us, id */
  STORE_LISTING_PIPELINE, /* ns, pipeline, created_us, id */
  STORE_LISTING_STATUS,   /* ns, status, created_us, id */
  STORE_LISTING_ACTIVE,   /* id */
  STORE_LISTINGS
};
extern const char *const store_listing_names[STORE_LISTINGS];
int store_run_listing_page(store *s, int listing, const char *after, size_t alen, size_t limit,
                           store_named_rows *out, char *err, size_t errsz);
/* The fields of an entry of listing (those it has; the others are left
 * empty, created_us 0): 0, or -1 if it is malformed. */
int store_run_entry_parse(int listing, const char *key, size_t klen, store_run_fields *out);

/* One run, in one snapshot: whether its record exists (found), its fields
 * (fields() of the record: decoded, else why in why), whether the entry of
 * its fields is in each listing (listed[], with the status entry of its own
 * status; active when present), and whether the entry `entry` of listing
 * (listing -1: none) is there still. */
typedef struct {
  int found, decoded, entry;
  int listed[STORE_LISTINGS];
  store_run_fields f;
  char why[256];
} store_run_probe;
int store_probe_run(store *s, const char *id, int listing, const char *entry, size_t elen,
                    store_run_fields_fn fields, void *ud, store_run_probe *out, char *err,
                    size_t errsz);

/* The stream index of events in pages (as the listings above): entries
 * named by the entry; store_stream_entry_parse reads one (the stream key
 * points into key). */
int store_stream_index_page(store *s, const char *after, size_t alen, size_t limit,
                            store_named_rows *out, char *err, size_t errsz);
int store_stream_entry_parse(const char *key, size_t klen, const char **stream, size_t *streamn,
                             uint64_t *seq);
/* The event at seq and the index entry (stream, seq), in one snapshot:
 * whether the event is stored (found), under stream (same_stream), and
 * whether the entry exists (indexed). */
typedef struct {
  int found, same_stream, indexed;
} store_event_probe;
int store_probe_event(store *s, uint64_t seq, const char *stream, size_t streamn,
                      store_event_probe *out, char *err, size_t errsz);

/* ---- meta: small named values of the store ---- */

#endif
