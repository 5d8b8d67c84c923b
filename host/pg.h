/* pg.h: one PostgreSQL connection on the host's libuv loop, for the
 * PostgreSQL backend of the store (store.h; issue 15). libpq runs in
 * non-blocking mode and pipeline mode: its socket is watched with a uv_poll
 * handle, so no call here waits on the network and the loop keeps serving.
 *
 * Work is a pg_batch: statements with parameters ($1, $2, ...). Two ways to
 * submit one:
 * - pg_submit (writes, group commit as writer.h): batches queued while a
 *   transaction is in flight go together in the next one, sent in one round
 *   trip. At most one write transaction is in flight, so batches commit in
 *   the order they were submitted. A batch is atomic: its done callback gets
 *   status 0 once the transaction holding it committed (durable on the
 *   server: synchronous_commit as the server has it, on by default). If a
 *   statement of one batch fails on its own (a constraint, a bad value:
 *   SQLSTATE classes 22, 23, 42), that batch fails alone and the others are
 *   sent again together; any other failure of a group sends its batches
 *   again one per transaction, so only the ones that fail again fail.
 * - pg_read (reads, or a statement whose effect the caller checks itself):
 *   pipelined at once behind whatever is in flight, one implicit transaction
 *   per batch, never grouped with others.
 * Each statement's PGresult can be read in the done callback
 * (pg_batch_result), e.g. the ids of an INSERT ... RETURNING.
 *
 * Connection loss: the connection is re-established with exponential
 * backoff (and jitter, so hosts do not reconnect in step). A batch whose
 * transaction was sent but whose commit was not confirmed fails with
 * STORE_EIO and a message saying it may or may not have committed: the
 * caller treats it as not committed and does the work again (at-least-once
 * at the step boundary). A read in flight fails the same way (it may have
 * been a write). Work not yet sent waits for the connection, and fails after
 * queue_timeout_ms without one, with the last connection error.
 *
 * Limits: libpq resolves a host name with a blocking getaddrinfo when it
 * starts connecting; use an IP address or a Unix socket directory where a
 * slow resolver could stall the loop. A server that stops answering on an
 * open connection is noticed by TCP (set keepalives_idle or
 * tcp_user_timeout in the connection string), not by a timer here.
 *
 * Statuses are store.h's: STORE_EIO (connection, server), STORE_EINVAL (a
 * value or statement PostgreSQL refused: SQLSTATE classes 22, 23, 42),
 * STORE_EFULL (53100 disk full), STORE_EACCES (42501). Messages name
 * PostgreSQL and carry the SQLSTATE; pg_batch_sqlstate gives it alone.
 * Callbacks run on the loop thread, never from inside a pg_* call. */
#ifndef SLUICE_PG_H
#define SLUICE_PG_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store.h"

typedef struct pg pg;
typedef struct pg_batch pg_batch;

#define PG_HIST 12 /* writer.h's WRITER_HIST */

typedef struct {
  uint32_t backoff_min_ms;     /* first delay before reconnecting (default 50) */
  uint32_t backoff_max_ms;     /* longest delay (default 5000) */
  uint32_t connect_timeout_ms; /* one connection attempt (default 10000) */
  uint32_t queue_timeout_ms;   /* unsent work waits this long for a connection (default 30000) */
  uint32_t group_max;          /* batches per write transaction (default 1024) */
} pg_opts;

/* status 0: done (a write committed; a read ran); else a STORE_* status and
 * a message. b's results are readable during the call only; b is freed
 * after it. */
typedef void (*pg_done_fn)(void *cookie, int status, const char *errmsg, const pg_batch *b);

/* Checks conninfo (a postgres:// URL or key=value string) and starts
 * connecting; returns at once. opts may be NULL (defaults). Work may be
 * submitted right away: it is sent once connected. Returns 0, or
 * STORE_EINVAL with err if conninfo does not parse. */
int pg_open(pg **out, uv_loop_t *loop, const char *conninfo, const pg_opts *opts, char *err,
            size_t errsz);

/* done(cookie, 0, NULL, NULL) once connected (at once, from the loop, if
 * connected now), or done with STORE_EIO and libpq's message when the next
 * connection attempt fails. For a command that should fail fast rather
 * than wait for a server that is not there. Returns 0, or -1 if closing. */
int pg_when_connected(pg *p, pg_done_fn done, void *cookie);

/* Fails everything queued or in flight (their done callbacks run before it
 * returns, with STORE_EIO "closed"), closes the connection and the loop
 * handles; p is freed when the loop has run their close callbacks. */
void pg_close(pg *p);

pg_batch *pg_batch_new(void);
/* Adds a statement. values[i] NULL is SQL NULL; formats NULL or formats[i]
 * 0: text (NUL-terminated, lengths ignored); 1: binary, lengths[i] bytes.
 * Everything is copied. */
void pg_batch_add(pg_batch *b, const char *sql, int nparams, const char *const *values,
                  const int *lengths, const int *formats);
/* Adds a row: a statement whose SQL takes each parameter as an array
 * (`$1::text[]`, typically INSERT ... SELECT FROM unnest($1::text[], ...)),
 * given here as one value each (text, or bytes of text in binary format).
 * The rows of one SQL in a write transaction go as one statement, at the
 * place of the first, each parameter the array of that parameter of every
 * row in submission order (a lone row: arrays of one): one statement's cost
 * for the rows of a whole group. Of rows with the same first nkey
 * parameters (the key) only the last goes, as the last of a series of
 * INSERT ... ON CONFLICT DO UPDATE of whole rows would win (one replaced
 * so is not sent: a value in it that PostgreSQL would refuse fails
 * nothing). So: a row's
 * SQL must not depend on what other statements of the transaction did
 * between two rows (it runs before them), and no statement may need an
 * earlier version of a row that a later row of the same key replaces. A
 * merged statement that fails sends its batches again one per transaction,
 * so the error reaches the batch whose row it was. No result of its own
 * (pg_batch_result: NULL) but for the first row's. */
void pg_batch_add_row(pg_batch *b, const char *sql, int nparams, int nkey,
                      const char *const *values, const int *lengths, const int *formats);
/* pg_batch_add_row whose sql only inserts (no ON CONFLICT: an insert
 * costs PostgreSQL a probe of the key less than an upsert, and no
 * speculative insertion), and upsert the same row as an upsert of the same
 * parameters. A write transaction in which such a statement meets an
 * existing key (23505: a row written again) commits nothing; its batches go
 * again, first, their rows of this kind as upsert. For rows whose key is
 * usually new. */
void pg_batch_add_row_new(pg_batch *b, const char *sql, const char *upsert, int nparams, int nkey,
                          const char *const *values, const int *lengths, const int *formats);
size_t pg_batch_count(const pg_batch *b);
void pg_batch_free(pg_batch *b); /* only for a batch never submitted */

/* In a done callback: statement i's result (NULL if it did not run). */
const PGresult *pg_batch_result(const pg_batch *b, size_t i);
/* In a failed batch's done callback: the SQLSTATE ("" if none). */
const char *pg_batch_sqlstate(const pg_batch *b);

/* Queue b (owned from here); done runs once. Returns 0, or -1 if p is
 * closing (b is freed, done is not called). */
int pg_submit(pg *p, pg_batch *b, pg_done_fn done, void *cookie);
int pg_read(pg *p, pg_batch *b, pg_done_fn done, void *cookie);
/* pg_read, and SQL of b seen before on this connection is prepared once, as
 * the writes' is, rather than parsed and planned each time. For SQL that
 * names its result columns: a prepared SELECT * fails (0A000) once its
 * table's columns change, so not for ad-hoc SQL. */
int pg_read_prepared(pg *p, pg_batch *b, pg_done_fn done, void *cookie);

/* Every write transaction sent from now on starts with b's statements
 * (owned from here; NULL: none), e.g. a condition the whole transaction
 * depends on. Their results are not seen; if one fails, every batch of
 * that transaction fails with its error (none is sent again). Write
 * transactions already sent keep what they had. For the fence of a
 * registered host (store_pg.h, "hosts and leases"). */
void pg_set_prelude(pg *p, pg_batch *b);

typedef struct {
  uint64_t commits;    /* write transactions committed */
  uint64_t batches;    /* write batches committed */
  uint64_t reads;      /* read batches done */
  uint64_t connects;   /* connections established (the first one too) */
  uint64_t lost;       /* connections lost */
  uint64_t unknown;    /* batches failed with their commit outcome unknown */
  int connected;
  /* the write transactions as writer.h's histograms count them (bounds
   * there): batches in each, sent to committed in us */
  uint64_t batch_hist[PG_HIST], commit_hist[PG_HIST], commit_us_sum;
} pg_stats;
void pg_get_stats(const pg *p, pg_stats *out);

/* The status for a SQLSTATE (above). */
int pg_status_of_sqlstate(const char *sqlstate);

#endif
