/* store_pg.h: the PostgreSQL backend of store.h's record operations (issue
 * 15), over one pg.h connection on the loop, in the schema of
 * lua/pg_schema.lua (`sluice store migrate`). Each operation here is the
 * store.h operation of the same name (store_X -> pgstore_X) with the same
 * arguments, records and guarantees, except:
 *
 * - Reads complete through a callback: done(cookie, status, err) runs on the
 *   loop thread once out is filled (status 0) or the read failed, later than
 *   the call returns, except for a read refused before anything is sent
 *   (STORE_EINVAL: a bad limit, a NUL in a name), whose done runs at once. Strings of the query and out must stay valid until then.
 *   Each read is one SQL statement, so it sees one snapshot.
 * - Positions of events and sends are allocated inside the commit, not by
 *   the caller (several hosts write one store): pgstore_append_event and
 *   pgstore_put_send take no position, and the commit's done gets the first
 *   position of the batch's events and of its sends. Ids become visible in
 *   position order: the counter row lock (lua/pg_schema.lua says why) is
 *   held by the appending transaction until it commits, and the appends go
 *   last in their batch so that the lock is held for as short as possible.
 * - Event times are kept not decreasing with positions across hosts: the
 *   batch's first time is max(the caller's, the last time allocated + 1).
 * - trim_events reads what to remove (a read, through done) and adds the
 *   removal to the batch; the trim marks move with GREATEST inside the
 *   commit, so trimming batches from several hosts do not lose a mark.
 * - Names and keys cannot hold NUL bytes (PostgreSQL text): STORE_EINVAL.
 *
 * Statuses are store.h's; messages say "PostgreSQL" and carry the SQLSTATE
 * (pg.h). A connection lost with a commit in flight fails that batch with
 * STORE_EIO (it may or may not have committed: pg.h). */
#ifndef SLUICE_STORE_PG_H
#define SLUICE_STORE_PG_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store.h"

typedef struct pgstore pgstore;
typedef struct pgstore_batch pgstore_batch;

typedef void (*pgstore_done_fn)(void *cookie, int status, const char *err);

/* Starts connecting to url (postgres://...) on loop; returns at once.
 * STORE_EINVAL with err if url does not parse. The first read or commit
 * fails with STORE_EBADSTORE if the schema is not the one migrations
 * produce (the check is sent first, on open). */
int pgstore_open(pgstore **out, uv_loop_t *loop, const char *url, char *err, size_t errsz);
/* Fails what is in flight (STORE_EIO "closed") and closes. */
void pgstore_close(pgstore *s);
/* The URL without its password (for messages). */
const char *pgstore_name(const pgstore *s);
/* What the connection did so far (pg.h's pg_stats): write transactions
 * and the batches they committed (group commit: fewer of the first), reads,
 * connections lost, batches failed with their outcome unknown; and the
 * write transactions as writer.h's histograms count them (its bounds):
 * batches in each, sent to committed in us. */
#define PGSTORE_HIST 12 /* writer.h's WRITER_HIST */
typedef struct {
  uint64_t commits, batches, reads, lost, unknown;
  uint64_t batch_hist[PGSTORE_HIST], commit_hist[PGSTORE_HIST], commit_us_sum;
} pgstore_stats;
void pgstore_get_stats(const pgstore *s, pgstore_stats *out);

pgstore_batch *pgstore_batch_new(void);
void pgstore_batch_free(pgstore_batch *b); /* only one never committed */
size_t pgstore_batch_count(const pgstore_batch *b);

/* What a commit allocated: the first position of the batch's events (0 if
 * it had none) and of its sends. */
typedef struct {
  uint64_t first_event, first_send;
  size_t events, sends;
} pgstore_commit_info;
typedef void (*pgstore_commit_fn)(void *cookie, int status, const char *err,
                                  const pgstore_commit_info *info);
/* Queues b (owned from here) for group commit; done runs once. -1 if the
 * store is closing (b freed, done not called). */
int pgstore_commit(pgstore *s, pgstore_batch *b, pgstore_commit_fn done, void *cookie);

/* ---- runs, steps, run logs, idempotency keys (store_pg_runs.c) ----
 * As store.h's, except:
 * - A run is one row and its listings are indexes on its columns: put_run
 *   moves every listing with the record whatever is_new and prev_status say
 *   (they are checked as on LMDB), and nothing is ever to backfill, so
 *   store_read_runs, store_put_run_listings and store_mark_runs_indexed have
 *   no version here (store_runs_indexed is always true).
 * - list_runs reads an index holding every filter (pipeline and status
 *   together too), so a page is short only at the end: no cap on entries
 *   examined. Order, filters and cursors are LMDB's (a cursor is the same
 *   text on both backends).
 * - put_idempotency is an insert: a key taken already (by another host
 *   meanwhile) fails the batch with STORE_EINVAL (SQLSTATE 23505), so one
 *   key never names two runs.
 * - get_steps is get_step for n ids at once (one statement), in id order.
 * - Names, step ids, branches and log lines cannot hold NUL: STORE_EINVAL. */
int pgstore_put_run(pgstore_batch *b, const store_run *r, int is_new, const char *prev_status,
                    store_fill_fn fill, void *ud, char *err, size_t errsz);
void pgstore_get_run(pgstore *s, const char *id, sbuf *out, int *found, pgstore_done_fn done,
                     void *cookie);
void pgstore_list_runs(pgstore *s, const store_run_filter *f, store_rows *rows, sbuf *next,
                       pgstore_done_fn done, void *cookie);
void pgstore_active_runs(pgstore *s, store_rows *rows, pgstore_done_fn done, void *cookie);
int pgstore_put_idempotency(pgstore_batch *b, const char *ns, const char *pipeline,
                            const char *key, size_t klen, const char *run_id, char *err,
                            size_t errsz);
void pgstore_get_idempotency(pgstore *s, const char *ns, const char *pipeline, const char *key,
                             size_t klen, sbuf *run_id, int *found, pgstore_done_fn done,
                             void *cookie);
int pgstore_put_step(pgstore_batch *b, const char *run, size_t run_len, const store_step *st,
                     store_fill_fn fill, void *ud, char *err, size_t errsz);
void pgstore_load_steps(pgstore *s, const char *run, size_t run_len, store_steps *out,
                        pgstore_done_fn done, void *cookie);
void pgstore_get_steps(pgstore *s, const char *run, size_t run_len, const char *const *ids,
                       const size_t *id_lens, size_t n, store_steps *out, pgstore_done_fn done,
                       void *cookie);
int pgstore_put_log(pgstore_batch *b, const char *run, size_t run_len, int64_t us, uint32_t seq,
                    const void *json, size_t len, char *err, size_t errsz);
void pgstore_del_log(pgstore_batch *b, const char *run, size_t run_len, int64_t us, uint32_t seq);
void pgstore_read_logs(pgstore *s, const char *run, size_t run_len, store_rows *rows,
                       int64_t **ids, pgstore_done_fn done, void *cookie);

/* ---- events ---- */
int pgstore_append_event(pgstore_batch *b, int64_t ts_us, const char *type, size_t typen,
                         const char *stream, size_t streamn, const char *data, size_t datan,
                         char *err, size_t errsz);
void pgstore_read_events(pgstore *s, const store_event_query *q, store_events *out,
                         pgstore_done_fn done, void *cookie);
void pgstore_events_last(pgstore *s, uint64_t *seq, int64_t *ts_us, pgstore_done_fn done,
                         void *cookie);
void pgstore_events_after_time(pgstore *s, int64_t ts_us, uint64_t *after, pgstore_done_fn done,
                               void *cookie);
void pgstore_events_trimmed(pgstore *s, const char *stream, size_t streamn, int exact,
                            uint64_t after, int *trimmed, pgstore_done_fn done, void *cookie);
void pgstore_stream_keys(pgstore *s, const char *prefix, size_t plen, const char *after,
                         size_t alen, size_t limit, store_keys *out, pgstore_done_fn done,
                         void *cookie);
/* The results (n, last, more) are set when done runs with 0, and b holds
 * the removal then. b must stay uncommitted until done. */
typedef struct {
  size_t n;
  uint64_t last;
  int more;
} pgstore_trim_result;
void pgstore_trim_events(pgstore *s, pgstore_batch *b, const store_trim_query *q,
                         pgstore_trim_result *out, pgstore_done_fn done, void *cookie);

/* ---- sends ---- */
void pgstore_put_send(pgstore_batch *b, const char *json, size_t jsonn);
void pgstore_sends(pgstore *s, uint64_t after, size_t limit, store_blob_rows *out,
                   pgstore_done_fn done, void *cookie);
void pgstore_sends_last(pgstore *s, uint64_t *seq, pgstore_done_fn done, void *cookie);
void pgstore_set_dispatch_cursor(pgstore_batch *b, uint64_t seq);
void pgstore_dispatch_cursor(pgstore *s, uint64_t *seq, pgstore_done_fn done, void *cookie);

/* ---- the record of a step that appended or sent ---- */
/* The step (run_id, step_id), put earlier in b (its row exists when the
 * commit reaches this), gets as its result what the commit allocated, in
 * the same transaction: PGSTORE_EVENT_IDS the list of the ids (16 hex
 * digits) of b's events, PGSTORE_FIRST_SEND {"seq": the position of b's
 * first send}. These are the results `emit` and `send` record inside a run
 * on LMDB, where the caller knows the positions before the commit; here
 * replay finds the committed ones. The commit fails (STORE_EINVAL) if the
 * step's row is not there. STORE_EINVAL for a NUL in an id. */
enum { PGSTORE_EVENT_IDS = 1, PGSTORE_FIRST_SEND = 2 };
int pgstore_step_positions(pgstore_batch *b, const char *run_id, size_t rn, const char *step_id,
                           size_t sn, int kind);

/* ---- consumers ---- */
int pgstore_put_consumer(pgstore_batch *b, const char *name, size_t namen, const char *json,
                         size_t jsonn);
void pgstore_get_consumer(pgstore *s, const char *name, size_t namen, store_blob_rows *out,
                          int *found, pgstore_done_fn done, void *cookie);
void pgstore_consumers(pgstore *s, store_blob_rows *out, pgstore_done_fn done, void *cookie);

/* ---- schedules ---- */
int pgstore_put_schedule(pgstore_batch *b, const char *name, size_t nlen, const char *rec,
                         size_t rlen);
int pgstore_delete_schedule(pgstore_batch *b, const char *name, size_t nlen);
void pgstore_get_schedule(pgstore *s, const char *name, size_t nlen, sbuf *rec, int *found,
                          pgstore_done_fn done, void *cookie);
/* schedule name's record and its row version (0 when not found), and the
 * write of a fire that commits only over that version (a compare-and-set:
 * nothing is written when the record changed or went meanwhile) */
void pgstore_get_schedule_version(pgstore *s, const char *name, size_t nlen, sbuf *rec,
                                  int64_t *version, int *found, pgstore_done_fn done,
                                  void *cookie);
int pgstore_put_schedule_if(pgstore_batch *b, const char *name, size_t nlen, const char *rec,
                            size_t rlen, int64_t version);
void pgstore_list_schedules(pgstore *s, const char *after, size_t alen, size_t limit,
                            store_named_rows *out, pgstore_done_fn done, void *cookie);

/* ---- API keys, namespaces, quota counters ---- */
int pgstore_add_key(pgstore_batch *b, const char *id, size_t idlen, const char *rec, size_t rlen);
int pgstore_revoke_key(pgstore_batch *b, const char *id, size_t idlen);
int pgstore_touch_key(pgstore_batch *b, const char *id, size_t idlen, const char *when,
                      size_t wlen);
void pgstore_get_key(pgstore *s, const char *id, size_t idlen, sbuf *rec, int *found,
                     pgstore_done_fn done, void *cookie);
void pgstore_key_count(pgstore *s, int64_t *n, pgstore_done_fn done, void *cookie);
void pgstore_list_keys(pgstore *s, store_named_rows *out, pgstore_done_fn done, void *cookie);
int pgstore_put_namespace(pgstore_batch *b, const char *ns, size_t nslen, const char *rec,
                          size_t rlen);
void pgstore_get_namespace(pgstore *s, const char *ns, size_t nslen, sbuf *rec, int *found,
                           pgstore_done_fn done, void *cookie);
void pgstore_list_namespaces(pgstore *s, store_named_rows *out, pgstore_done_fn done,
                             void *cookie);
int pgstore_count_run(pgstore_batch *b, const char *ns, size_t nslen, const char *day,
                      size_t dlen);
void pgstore_quota_used(pgstore *s, const char *ns, size_t nslen, const char *day, size_t dlen,
                        int64_t *n, pgstore_done_fn done, void *cookie);

/* ---- store copy and store check (store.h's tools section; store_pg_tools.c) ----
 * The census, the listings and the writes of store.h's tools section, and
 * what a copy into an empty store needs beyond them: events and sends at
 * the positions they had (the normal append allocates them in the commit),
 * then the counters set past them (events: the last position taken;
 * events_ts: the newest time; sends), so that appends go on after the
 * copied positions. A copy writes a store no host uses: nothing else
 * allocates positions meanwhile. check reads what can disagree on
 * PostgreSQL (its listings are SQL indexes of the runs table, kept by the
 * server): the counters' rows and the events' time counter against the
 * newest time stored, steps, logs and idempotency keys of runs that do not
 * exist; each problem a row named by the record, rec what is wrong (at most
 * 100 of each kind). The run columns the listings index are checked
 * against the records by the caller (pgstore_run_columns). */
void pgstore_census(pgstore *s, store_census *out, pgstore_done_fn done, void *cookie);
void pgstore_list_quotas(pgstore *s, const char *after, size_t alen, size_t limit,
                         store_named_rows *out, pgstore_done_fn done, void *cookie);
void pgstore_list_trim_marks(pgstore *s, const char *after, size_t alen, size_t limit,
                             store_named_rows *out, pgstore_done_fn done, void *cookie);
void pgstore_list_idempotency(pgstore *s, const char *after, size_t alen, size_t limit,
                              store_named_rows *out, pgstore_done_fn done, void *cookie);
int pgstore_put_quota(pgstore_batch *b, const char *ns, size_t nslen, const char *day,
                      size_t dlen, int64_t n);
int pgstore_put_trim_mark(pgstore_batch *b, const char *stream, size_t streamn, uint64_t seq);
/* n events (or sends) at their positions, in one statement */
int pgstore_put_events_at(pgstore_batch *b, const store_event *ev, size_t n, char *err,
                          size_t errsz);
int pgstore_put_sends_at(pgstore_batch *b, const store_row *rows, size_t n);
void pgstore_set_counters(pgstore_batch *b, uint64_t events, int64_t events_ts, uint64_t sends);
void pgstore_check(pgstore *s, store_named_rows *out, pgstore_done_fn done, void *cookie);
/* Run records in id order after the id `after` (NULL: from the first), at
 * most max, named by their id: what store_read_runs gives on LMDB, for the
 * tools' pages (not an index backfill: PostgreSQL's listings need none). */
void pgstore_run_records(pgstore *s, const char *after, size_t max, store_rows *rows,
                         pgstore_done_fn done, void *cookie);
/* The same pages with the run's columns, which its listings index: rows
 * named by the id, rec the record, extra namespace "\0" pipeline "\0"
 * status "\0" active ("t" or "f") "\0" created_at_us (decimal). */
void pgstore_run_columns(pgstore *s, const char *after, size_t max, store_named_rows *out,
                         pgstore_done_fn done, void *cookie);

/* ---- hosts and leases (store_pg_hosts.c; lua/hosts.lua) ----
 * Several `sluice serve` on one database share its runs. A host registers
 * a row in sluice.hosts (an id unique per process start) that lives while
 * its expires_at, set from the server's clock, is in the future; the
 * heartbeat moves it on (one statement for the host and so all its
 * leases). A lease (kind, name) -> host says who does a piece of work: a
 * run ('run', run id), a consumer's batches ('consumer', name), the `on`
 * dispatcher ('dispatch', "*"), the schedules ('schedules', "*"). A host
 * once expired never comes back (its renewal fails): its leases are freed
 * by another host's claim pass (the reap) under a row lock on the dead host
 * that each of its own write transactions holds too, through the fence, so
 * a dead host's commit either precedes the takeover or is refused.
 *
 * Reads and the renewal complete through done like the reads above; the
 * others are write transactions (grouped, fenced once the fence is set).
 * JSON results go into out as one text: see each operation. */
typedef struct {
  const char *id, *name; /* NUL-terminated, no NUL inside */
  int pid;
  uint32_t lease_ms;
  const char *info; /* a JSON object, or NULL */
  size_t infon;
  int claims; /* it claims runs (serve): counted in the claims' shares */
} pgstore_host;

/* Inserts the host's row, alive for lease_ms from the server's now(). */
void pgstore_host_register(pgstore *s, const pgstore_host *h, pgstore_done_fn done, void *cookie);
/* Moves the host's expiry to now() + lease_ms: *alive 1, or 0 when it had
 * expired already (or was never registered): it must stop, others may have
 * its work. */
void pgstore_host_renew(pgstore *s, const char *id, uint32_t lease_ms, int *alive,
                        pgstore_done_fn done, void *cookie);
/* Deletes the host's row and with it its leases (a clean exit). */
void pgstore_host_deregister(pgstore *s, const char *id, pgstore_done_fn done, void *cookie);
/* Ends host id's lease now (a host known dead: the previous one of a
 * state dir whose lock the caller holds): the next reap frees its leases. */
void pgstore_host_expire(pgstore *s, const char *id, pgstore_done_fn done, void *cookie);
/* From now on every write transaction of s (every commit and the
 * operations here) begins with sluice.fence(id): refused once the host
 * expired. NULL: none. Set it once registered. */
void pgstore_host_fence(pgstore *s, const char *id);
/* Frees the leases of expired hosts (skipping a host whose commit is in
 * flight: the next pass gets it), forgets hosts expired for more than an
 * hour, then leases to host id active runs that have no lease, of the
 * pipelines named in pipelines (a JSON array of strings), oldest first, FOR
 * UPDATE SKIP LOCKED: two hosts never claim one run. As many as its share
 * (the runs of those pipelines held by live claiming hosts or by nobody,
 * over the number of those hosts, less those id holds), at least floor, at
 * most limit: a backlog spreads over the hosts instead of going to the
 * first that polls. out: a JSON object {runs = an array of {id, pipeline,
 * record} of the runs claimed, free = how many had no lease before}. */
void pgstore_claim_runs(pgstore *s, const char *id, const char *pipelines, size_t pn,
                        size_t limit, size_t floor, sbuf *out, pgstore_done_fn done,
                        void *cookie);
/* The active runs leased to host id: out a JSON array as the runs of
 * pgstore_claim_runs's (to resume those a claim whose outcome was unknown
 * took). */
void pgstore_host_runs(pgstore *s, const char *id, sbuf *out, pgstore_done_fn done,
                       void *cookie);
/* The runs leased to host id that are cancelled (another host wrote the
 * cancel): out a JSON array of their ids, for host id to stop them. */
void pgstore_host_cancelled(pgstore *s, const char *id, sbuf *out, pgstore_done_fn done,
                            void *cookie);
/* Adds to b the lease of new run `run` for host id (lua/pg_schema.lua's
 * sluice.hold_run): b then fails, with "is leased to another host", when
 * another host holds it. 0 or STORE_EINVAL (a run id holding NUL). */
int pgstore_hold_run(pgstore_batch *b, const char *id, const char *run, size_t runn);
/* The schedules created over the HTTP API (and maybe a few others: the
 * caller checks each record's source): out a JSON array of {name, record}
 * by name. */
void pgstore_api_schedules(pgstore *s, sbuf *out, pgstore_done_fn done, void *cookie);
/* Who executes the runs named in ids (a JSON array of strings): out a JSON
 * object {run id: {host = holder's id, alive = its lease is unexpired,
 * machine, pid}} of those leased, the expiry on the server's clock. */
void pgstore_run_hosts(pgstore *s, const char *ids, size_t n, sbuf *out, pgstore_done_fn done,
                       void *cookie);
/* Takes lease (kind, name) for host id unless another host holds it:
 * holder gets the holder's id afterwards (id itself: taken or held
 * already). Reaps first, as a claim does: a lease of an expired host is
 * free. */
void pgstore_take_lease(pgstore *s, const char *id, const char *kind, const char *name,
                        size_t namen, sbuf *holder, pgstore_done_fn done, void *cookie);
/* Gives up host id's leases of kind named in names (a JSON array). */
void pgstore_release_leases(pgstore *s, const char *id, const char *kind, const char *names,
                            size_t nn, pgstore_done_fn done, void *cookie);
/* The hosts alive, and those expired in the last recent_s seconds: out a
 * JSON array of {id, name, pid, alive, started_s, heartbeat_s, expires_s
 * (seconds ago / from now on the server's clock), info, leases: {kind:
 * count}, named: ["kind name", ...] (the leases that are not runs)}. */
void pgstore_list_hosts(pgstore *s, uint32_t recent_s, sbuf *out, pgstore_done_fn done,
                        void *cookie);

#endif
