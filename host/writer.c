/* writer.c: the store's one writer, with group commit (see writer.h, DESIGN §5).
 *
 * The loop thread queues batches (writer_submit: a mutex, a list append and
 * at most one condvar signal; no I/O). One writer thread takes the whole
 * queue at once and applies it in one LMDB write transaction; before that
 * transaction commits, the group's operations go to the write-ahead log as
 * one record and the log is flushed (wal.c: one fdatasync per group); LMDB
 * then commits with MDB_NOSYNC. So the batches that queued up during one
 * flush share the next one. It then hands the group back on a done list and
 * wakes the loop with uv_async_send; the async callback runs each batch's done
 * callback in submission order on the loop thread.
 *
 * Why an acknowledgement means the batch is on disk: the done callbacks run
 * only after the group's log record was flushed and its transaction
 * committed (a group of events alone: flushed, its transaction left open
 * for the next ones, "Lazy commits" below); wal.c's header says why a flushed record survives a power cut
 * and how recovery puts it back (tests/c/test_powercut.c cuts the files
 * back to what was flushed, plus any subset of what was not, and checks).
 * A commit that fails after its record was written retracts the record
 * (wal_cancel), so a batch called back with an error is never replayed.
 *
 * Failures: MDB_MAP_FULL aborts, grows the map (store_grow) and retries the
 * group. A batch whose own operation fails (a key LMDB refuses) fails alone
 * and the rest of the group is retried without it. Any other failure of the
 * group (at commit, say) retries each batch in its own transaction, so only
 * the batches that fail again fail.
 *
 * Threads: every LMDB write happens on the writer thread. The async handle,
 * the pending count and its ref/unref, and the callback list are the loop
 * thread's; the queue, the done list, the stop flag and the stats are under
 * the mutex. */
#include "writer.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#include "sbuf.h"
#include "steps_pending.h"
#include "wal.h"

/* OP_ADD's value: an int64_t delta; OP_STEP's key: a run id; OP_DSTEP: an
 * OP_STEP the writer deferred (so written in the group's log record): in
 * LMDB only once drained, see below */
enum { OP_PUT = 1, OP_DEL = 2, OP_ADD = 3, OP_STEP = 4, OP_SETTLE = 5, OP_DSTEP = 6 };

/* One operation in a batch's buffer: this header, then the key, then (for a
 * put) the value. Read with memcpy: records are not aligned. */
typedef struct {
  uint32_t db;
  uint32_t op;
  uint64_t klen;
  uint64_t vlen;
} rec_hdr;

struct store_batch {
  wbatch *next;
  sbuf buf; /* rec_hdr key [val], one after the other */
  size_t count;
  size_t open_at; /* wbatch_put_begin: where its header is, + 1 (0: none) */
  writer_done_fn done;
  void *cookie;
  int steps;  /* holds a step record (writer_stop then settles the step log) */
  int settle; /* holds OP_SETTLE: deferred steps are drained first */
  int others; /* holds an operation other than a step record (see write_range) */
  int failed; /* writer thread: decided to fail, status and errmsg set */
  int status;
  char *errmsg;
};

struct writer {
  store *s;
  uv_loop_t *loop;
  uv_async_t async;
  pthread_t thread;
  sbuf ops; /* writer thread: a group's operations, for its log record */
  int defer_ok; /* SLUICE_DEFER is not 0: step records may be deferred */
  int mark_set; /* writer thread: this writer's mark is in LMDB */
  /* lazy commits (see below): the open transaction holding acknowledged
   * groups, since when, their bytes; writer thread only */
  MDB_txn *ltxn;
  uint64_t ltxn_since, ltxn_bytes, lazy_us;
  uint64_t lazy_gen; /* writer thread: groups kept in a transaction so far */

  pthread_mutex_t mu;
  pthread_cond_t cond;
  /* under mu */
  wbatch *q_head, *q_tail; /* submitted, not yet taken by the thread */
  wbatch *d_head, *d_tail; /* written (or failed), callback not yet run */
  int stopping;
  int thread_waiting; /* the thread sleeps on cond: the next submit signals */
  /* the newest lazy group called back, and the newest LMDB committed; a
   * reader that finds committed < acked sets commit_req and waits on
   * rcond (writer_sync_reads) */
  uint64_t acked_gen, committed_gen;
  int commit_req;
  pthread_cond_t rcond;
  writer_stats stats;

  /* loop thread only */
  wbatch *cb_head, *cb_tail; /* taken from the done list, being called back */
  size_t pending;            /* submitted and not yet called back */
  int stopped;               /* writer_stop was called */
  int wrote_steps;           /* a batch with a step record was submitted */
};

/* ---- batches ---------------------------------------------------------- */

wbatch *wbatch_new(void) {
  wbatch *b = calloc(1, sizeof *b);
  if (!b) {
    fprintf(stderr, "sluice: out of memory\n");
    abort();
  }
  return b;
}

static void add_rec(wbatch *b, int db, int op, const void *key, size_t klen, const void *val,
                    size_t vlen) {
  rec_hdr h = {(uint32_t)db, (uint32_t)op, klen, vlen};
  /* a negative db becomes a large one and fails the batch when applied */
  sbuf_reserve(&b->buf, sizeof h + klen + vlen);
  sbuf_add(&b->buf, &h, sizeof h);
  sbuf_add(&b->buf, key, klen);
  if (op != OP_DEL) sbuf_add(&b->buf, val, vlen);
  b->count++;
  b->others = 1;
}

void wbatch_put(wbatch *b, int db, const void *key, size_t klen, const void *val,
                size_t vlen) {
  add_rec(b, db, OP_PUT, key, klen, val, vlen);
}

void wbatch_del(wbatch *b, int db, const void *key, size_t klen) {
  add_rec(b, db, OP_DEL, key, klen, NULL, 0);
}

static sbuf *op_begin(wbatch *b, int db, int op, const void *key, size_t klen) {
  b->open_at = b->buf.len + 1;
  if (op != OP_STEP) b->others = 1;
  rec_hdr h = {(uint32_t)db, (uint32_t)op, klen, 0};
  sbuf_add(&b->buf, &h, sizeof h);
  sbuf_add(&b->buf, key, klen);
  return &b->buf;
}

sbuf *wbatch_put_begin(wbatch *b, int db, const void *key, size_t klen) {
  return op_begin(b, db, OP_PUT, key, klen);
}

sbuf *wbatch_step_begin(wbatch *b, const void *run, size_t rn) {
  b->steps = 1;
  return op_begin(b, DB_STEPS, OP_STEP, run, rn);
}

void wbatch_put_end(wbatch *b) {
  size_t at = b->open_at - 1;
  rec_hdr h;
  memcpy(&h, b->buf.data + at, sizeof h);
  h.vlen = b->buf.len - at - sizeof h - h.klen;
  memcpy(b->buf.data + at, &h, sizeof h);
  b->open_at = 0;
  b->count++;
}

void wbatch_put_cancel(wbatch *b) {
  b->buf.len = b->open_at - 1;
  b->open_at = 0;
}

void wbatch_add(wbatch *b, int db, const void *key, size_t klen, int64_t delta) {
  add_rec(b, db, OP_ADD, key, klen, &delta, sizeof delta);
}

/* OP_ADD inside txn: the counter's decimal text moved by delta. */
static int apply_add(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, const void *p) {
  int64_t delta, n = 0;
  memcpy(&delta, p, sizeof delta);
  MDB_val v;
  int rc = mdb_get(txn, dbi, k, &v);
  if (rc == 0) {
    char text[24];
    char *end;
    if (v.mv_size == 0 || v.mv_size >= sizeof text) return EINVAL;
    memcpy(text, v.mv_data, v.mv_size);
    text[v.mv_size] = '\0';
    errno = 0;
    n = strtoll(text, &end, 10);
    if (errno || *end) return EINVAL;
  } else if (rc != MDB_NOTFOUND) {
    return rc;
  }
  n += delta;
  if (n <= 0) {
    rc = mdb_del(txn, dbi, k, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
  }
  char out[24];
  MDB_val nv = {(size_t)snprintf(out, sizeof out, "%lld", (long long)n), out};
  return mdb_put(txn, dbi, k, &nv, 0);
}

/* store.h's batch is this writer's */
store_batch *store_batch_new(void) { return wbatch_new(); }
void store_batch_free(store_batch *b) { wbatch_free(b); }
size_t store_batch_count(const store_batch *b) { return wbatch_count(b); }

size_t wbatch_count(const wbatch *b) { return b->count; }

void wbatch_free(wbatch *b) {
  if (!b) return;
  sbuf_free(&b->buf);
  free(b->errmsg);
  free(b);
}

/* ---- the writer thread ------------------------------------------------ */

/* What went wrong in a transaction, for the message. */
typedef struct {
  wbatch *bad; /* the batch whose operation failed, NULL if commit failed */
  int db;
  size_t klen;
} failure;

static char *fmt_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *fmt_msg(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *m;
  int n = vasprintf(&m, fmt, ap);
  va_end(ap);
  if (n < 0) {
    fprintf(stderr, "sluice: out of memory\n");
    abort();
  }
  return m;
}

static char *error_message(writer *w, int rc, const failure *f) {
  const char *dir = store_dir(w->s);
  const char *what = f->bad ? store_db_name(f->db) : "the store";
  switch (store_status(rc)) {
    case STORE_EFULL:
      return fmt_msg("disk full (%s) writing %s: free space and retry", strerror(rc), dir);
    case STORE_EACCES:
      return fmt_msg("store %s is read-only (%s): fix its permissions or pass --store with a "
                     "writable directory",
                     dir, strerror(rc));
    default:
      break;
  }
  if (f->bad && rc == MDB_BAD_VALSIZE) {
    return fmt_msg("writing %s: a key of %zu bytes is empty or longer than the store's limit "
                   "of %d bytes (%s)",
                   what, f->klen, mdb_env_get_maxkeysize(store_env(w->s)), mdb_strerror(rc));
  }
  if (f->bad && (f->db < 0 || f->db >= DB_COUNT)) {
    return fmt_msg("writing: no database number %d in the store", f->db);
  }
  if (f->bad) return fmt_msg("writing %s in %s: %s", what, dir, mdb_strerror(rc));
  return fmt_msg("writing to store %s: %s", dir, mdb_strerror(rc));
}

static void fail_batch(writer *w, wbatch *b, int rc, const failure *f) {
  b->failed = 1;
  b->status = store_status(rc);
  if (b->status == STORE_OK) b->status = STORE_EIO;
  free(b->errmsg);
  b->errmsg = error_message(w, rc, f);
}

/* Applies the operations in [ops, ops+len) (a batch's buffer, or a log
 * record: batches' buffers one after the other). mode APPLY_DEFER: step
 * records are checked, turned into OP_DSTEP in place and not applied
 * (counted in *deferred); APPLY_DEFERRED: only OP_DSTEP is applied. On
 * failure *fdb and *fklen say which operation. *applied: how many
 * operations went to LMDB. */
static int apply_ops(MDB_txn *txn, store *s, const char *ops, size_t len, int mode, int *fdb,
                     size_t *fklen, size_t *applied, size_t *deferred) {
  const char *p = ops, *end = p + len;
  while (p < end) {
    rec_hdr h;
    memcpy(&h, p, sizeof h);
    char *at = (char *)p; /* APPLY_DEFER rewrites the op (a batch's own buffer) */
    p += sizeof h;
    MDB_val k = {h.klen, (void *)p};
    p += h.klen;
    int rc;
    int step = h.op == OP_STEP || h.op == OP_DSTEP;
    if ((mode == APPLY_DEFERRED && h.op != OP_DSTEP) ||
        (mode == APPLY_UNDEFERRED && h.op == OP_DSTEP)) {
      p += h.vlen; /* 0 for a delete */
      continue;
    }
    if (h.db >= DB_COUNT) {
      rc = EINVAL;
    } else if (step && mode == APPLY_DEFER) {
      rc = records_step_valid(k.mv_data, k.mv_size, p, h.vlen);
      p += h.vlen;
      if (rc == 0) {
        h.op = OP_DSTEP;
        memcpy(at, &h, sizeof h);
        (*deferred)++;
      }
    } else if (h.op == OP_PUT) {
      MDB_val v = {h.vlen, (void *)p};
      p += h.vlen;
      rc = mdb_put(txn, store_dbi(s, (int)h.db), &k, &v, 0);
    } else if (h.op == OP_ADD) {
      rc = apply_add(txn, store_dbi(s, (int)h.db), &k, p);
      p += h.vlen;
    } else if (step) {
      rc = records_step_apply(txn, s, k.mv_data, k.mv_size, p, h.vlen);
      p += h.vlen;
    } else if (h.op == OP_SETTLE) {
      rc = records_steps_settle(txn, s);
    } else {
      rc = mdb_del(txn, store_dbi(s, (int)h.db), &k, NULL);
      if (rc == MDB_NOTFOUND) rc = 0; /* deleting what is not there is done */
    }
    if (rc) {
      *fdb = (int)h.db;
      *fklen = h.klen;
      return rc;
    }
    if (!(step && mode == APPLY_DEFER)) (*applied)++;
  }
  return 0;
}

int store_apply_ops_mode(MDB_txn *txn, store *s, const void *ops, size_t len, int mode) {
  int db;
  size_t klen, applied = 0, deferred = 0;
  return apply_ops(txn, s, ops, len, mode == APPLY_DEFER ? APPLY_ALL : mode, &db, &klen,
                   &applied, &deferred);
}

int store_apply_ops_n(MDB_txn *txn, store *s, const void *ops, size_t len, int mode,
                      size_t *applied) {
  int db;
  size_t klen, deferred = 0;
  return apply_ops(txn, s, ops, len, mode == APPLY_DEFER ? APPLY_ALL : mode, &db, &klen,
                   applied, &deferred);
}

int store_apply_ops(MDB_txn *txn, store *s, const void *ops, size_t len) {
  return store_apply_ops_mode(txn, s, ops, len, APPLY_ALL);
}

int store_each_deferred(const void *ops, size_t len, steps_pending *pp, size_t *others) {
  const char *p = ops, *end = p + len;
  if (others) *others = 0;
  while (p < end) {
    rec_hdr h;
    if ((size_t)(end - p) < sizeof h) return MDB_CORRUPTED;
    memcpy(&h, p, sizeof h);
    p += sizeof h;
    if (h.klen > (size_t)(end - p) || h.vlen > (size_t)(end - p) - h.klen) return MDB_CORRUPTED;
    if (h.op != OP_DSTEP) {
      if (others) (*others)++;
    } else if (pp) {
      pending_add(pp, p, h.klen, p + h.klen, h.vlen);
    }
    p += h.klen + (h.op == OP_DEL ? 0 : h.vlen);
  }
  return 0;
}

static int apply_batch(MDB_txn *txn, store *s, wbatch *b, int mode, failure *f, size_t *applied,
                       size_t *deferred) {
  int rc = apply_ops(txn, s, b->buf.data, b->buf.len, mode, &f->db, &f->klen, applied, deferred);
  if (rc) f->bad = b;
  return rc;
}

/* LMDB reports a short write as EIO, and that is how a full disk usually
 * shows (the write fills what is left): with next to no space left, call it
 * ENOSPC so the user reads "disk full". */
static int disk_nearly_full(const char *dir) {
  struct statvfs v;
  if (statvfs(dir, &v) != 0) return 0;
  return (uint64_t)v.f_bavail * v.f_frsize < ((uint64_t)4 << 20);
}

const uint64_t writer_batch_bounds[WRITER_HIST - 1] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
const uint64_t writer_commit_bounds_us[WRITER_HIST - 1] = {100,   250,   500,   1000,  2500,  5000,
                                                           10000, 25000, 50000, 100000, 250000};

void writer_hist_add(uint64_t *hist, const uint64_t *bounds, uint64_t v) {
  int i = 0;
  while (i < WRITER_HIST - 1 && v > bounds[i]) i++;
  hist[i]++;
}

static uint64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Deferring (wal.c's header has why it is durable). A step record costs
 * ~100 bytes, an LMDB commit a fixed ~8 pages (bench/RESULTS.md): so while
 * this process holds the log's deferring lock, the groups' step records are
 * logged and acknowledged as before but kept in the store's pending set
 * (steps_pending.h, which every read merges) and applied to LMDB together,
 * in the transaction of a group that finds them due (DRAIN_US after the
 * oldest, DRAIN_MAX of them, or a settle) or on their own when the writer
 * is idle that long. A group of step records only commits no LMDB
 * transaction at all; the first one after a drain commits the mark (where
 * recovery starts). */
#define DRAIN_US_DEFAULT 100000
#define DRAIN_MAX 8192

/* DRAIN_US_DEFAULT, or SLUICE_DRAIN_US (benchmarks of the interval) */
static uint64_t drain_us(void) {
  static uint64_t v;
  if (!v) {
    const char *e = getenv("SLUICE_DRAIN_US");
    long n = e ? atol(e) : 0;
    v = n > 0 && n <= 1000000 ? (uint64_t)n : DRAIN_US_DEFAULT;
  }
  return v;
}
#define DRAIN_US drain_us()

static int drain_due(steps_pending *pp, int settle, int force) {
  size_t n = pending_count(pp);
  if (n == 0) return 0;
  if (settle || force || n >= DRAIN_MAX || pending_draining(pp)) return 1;
  uint64_t since = pending_since_us(pp);
  return since && mono_us() - since >= DRAIN_US;
}

/* Applies the pending records being drained in txn (records_step_drain:
 * into `steps` directly, as they are many per run). */
static int apply_drain(MDB_txn *txn, store *s, steps_pending *pp, int *drained) {
  const char *buf;
  size_t len, at = 0, rn, recn;
  const char *run;
  const unsigned char *rec;
  pending_drain_begin(pp, &buf, &len);
  *drained = len > 0;
  while (pending_next(buf, len, &at, &run, &rn, &rec, &recn)) {
    int rc = records_step_drain(txn, s, run, rn, rec, recn);
    if (rc) return rc;
  }
  return 0;
}

/* Lazy commits (issue 14). Per group, LMDB's commit writes ~10 pages at one
 * event and ~50 at 64 (the stream index's leaves), ten times the log's
 * bytes, and the checkpoints flush all of them: measured (bench/RESULTS.md,
 * h-emit2), half the 64-emitter groups' log flushes ran beside a
 * checkpoint's and took 4x as long. So a group of event records alone
 * (puts to the events and stream-index databases: lazy_ok) is
 * acknowledged after its log record's flush as every group, but its
 * transaction stays open: the next such groups are applied in it, and it
 * commits LAZY_US after the first (or when a reader asks, another kind of
 * group comes, LAZY_BYTES are in it, or the writer stops). Why nothing
 * acknowledged is lost or half-applied:
 * - Each group's record is flushed before its acknowledgement, under
 *   LMDB's write lock, which the open transaction holds throughout (so no
 *   other process writes or checkpoints meanwhile; no tail is published).
 * - A power cut: recovery replays every record after the checkpoint, and a
 *   checkpoint is of a committed state and names LMDB's own tail (wal.c).
 * - This process dies (same boot): LMDB is its last commit; the records
 *   between its tail and the published one are the acknowledged groups it
 *   lacks: the valid records after LMDB's tail, in sequence. Only the
 *   holder of the log's deferring lock commits lazily, and whoever takes
 *   that lock next, or writes first without it, applies them (wal.c's
 *   apply_lazy) before anything else and places its record after them.
 * - A failure in a transaction that holds acknowledged groups cannot fail
 *   them any more: lazy_ok checks the keys before (LMDB's only refusal of an
 *   event put), leaves room in the map, and wal_prepare does not checkpoint
 *   in such a transaction (WAL_ECOMMIT: commit first). What is left, an I/O
 *   error, stops the process (lazy_fatal): the log holds the groups, and the
 *   next open applies them.
 * - Read-your-write: a read of events in this process after an
 *   acknowledgement sees it: records_events.c's reads call
 *   writer_sync_reads, which waits for the commit of every lazy group
 *   acknowledged so far (and asks for it now). Other processes see the
 *   groups once committed, within LAZY_US.
 * SLUICE_LAZY_US (0: off) sets the interval. */
#define LAZY_US_DEFAULT 20000
#define LAZY_BYTES ((uint64_t)8 << 20)

static void lazy_fatal(writer *w, const char *what, int rc) {
  fprintf(stderr,
          "sluice: %s %s with acknowledged writes in it: %s; stopping (its log holds them: "
          "the next open applies them)\n",
          what, store_dir(w->s), mdb_strerror(rc));
  abort();
}

/* A group of event records alone, keys LMDB takes, and room in the map
 * for the open transaction to grow (a full map could not be grown with it
 * open). */
static int lazy_ok(writer *w, wbatch *first, wbatch *end, size_t need) {
  if (!w->lazy_us || pending_count(store_pending(w->s)) > 0) return 0;
  wal *l = store_wal(w->s);
  if (!l || !wal_defer_held(l) || w->ltxn_bytes + need > LAZY_BYTES) return 0;
  size_t maxk = (size_t)mdb_env_get_maxkeysize(store_env(w->s));
  int any = 0;
  for (wbatch *b = first; b != end; b = b->next) {
    if (b->failed) continue;
    if (b->settle || b->steps) return 0;
    const char *p = b->buf.data, *e = p + b->buf.len;
    while (p < e) {
      rec_hdr h;
      memcpy(&h, p, sizeof h);
      if (h.op != OP_PUT || (h.db != DB_EVENTS && h.db != DB_STREAMS) || h.klen == 0 ||
          h.klen > maxk)
        return 0;
      p += sizeof h + h.klen + h.vlen;
      any = 1;
    }
  }
  if (!any) return 0;
  MDB_envinfo info;
  MDB_stat st;
  if (mdb_env_info(store_env(w->s), &info) != 0 || mdb_env_stat(store_env(w->s), &st) != 0)
    return 0;
  uint64_t used = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
  uint64_t room = ((uint64_t)32 << 20) + 8 * (w->ltxn_bytes + need);
  return used + room < (uint64_t)info.me_mapsize;
}

/* Commits the open lazy transaction; readers waiting on it go on. */
static void lazy_commit(writer *w) {
  MDB_txn *t = w->ltxn;
  if (!t) return;
  w->ltxn = NULL;
  w->ltxn_since = w->ltxn_bytes = 0;
  int rc = store_write_end(w->s, t, 1);
  if (rc) lazy_fatal(w, "committing to", rc);
  pthread_mutex_lock(&w->mu);
  w->committed_gen = w->lazy_gen;
  w->commit_req = 0;
  w->stats.lmdb_commits++;
  pthread_cond_broadcast(&w->rcond);
  pthread_mutex_unlock(&w->mu);
}

/* Ends txn after a failure: aborted, unless it holds acknowledged groups. */
static int end_failed(writer *w, MDB_txn *txn, int carried, int rc) {
  if (carried) lazy_fatal(w, "writing to", rc);
  store_write_end(w->s, txn, 0);
  return rc;
}

/* Applies the batches from first up to (not including) end that have not
 * failed, in one transaction, and commits it (or, when it holds nothing for
 * LMDB but deferred step records, aborts it: the log record and the
 * published tail carry them). first == end: a drain alone. Returns an LMDB
 * code. On success adds to *commits, *batches, *ops. */
static int write_range(writer *w, wbatch *first, wbatch *end, failure *f, writer_stats *st) {
  memset(f, 0, sizeof *f);
  uint64_t t0 = mono_us();
  wal *l = store_wal(w->s);
  steps_pending *pp = store_pending(w->s);
  size_t need = 0;
  int settle = 0, others = 0;
  for (wbatch *b = first; b != end; b = b->next)
    if (!b->failed) need += b->buf.len, settle |= b->settle, others |= b->others;
  int lazy = first != end && lazy_ok(w, first, end, need);
  if (!lazy) lazy_commit(w);
  MDB_txn *txn;
  int rc = 0, carried = w->ltxn != NULL;
  if (carried) {
    txn = w->ltxn;
    w->ltxn = NULL;
  } else {
    rc = store_write_begin(w->s, &txn);
    if (rc) return rc;
  }
  if (l && first != end) {
    wal_lazy_open(l, carried);
    rc = wal_prepare(l, w->s, txn, need);
    wal_lazy_open(l, 0);
    /* again while another process's records keep coming in between (each
     * pass commits what it applied) */
    for (int tries = 0; rc == WAL_ECOMMIT && tries < 1000; tries++) {
      /* nothing of this group is applied yet: commit what txn holds (the
       * acknowledged lazy groups, or a dead writer's wal_prepare applied:
       * still in the log if this fails) and start again */
      if (carried) {
        w->ltxn = txn;
        lazy_commit(w);
      } else {
        wal_took_over(l);
        rc = store_write_end(w->s, txn, 1);
        if (rc) return rc;
      }
      carried = 0;
      rc = store_write_begin(w->s, &txn);
      if (rc) return rc;
      rc = wal_prepare(l, w->s, txn, need);
    }
    if (rc == WAL_ECOMMIT) {
      wal_took_over(l);
      store_write_end(w->s, txn, 0);
      return EBUSY;
    }
  }
  int dirty = l ? wal_took_over(l) : 0, applied_dead = 0;
  if (rc == 0 && l && !wal_defer_held(l)) rc = wal_defer_acquire(l, w->s, txn, &applied_dead);
  dirty |= applied_dead;
  /* A group that commits LMDB anyway (it holds other operations: a run's
   * record, an event) drains every pending record and defers none of its
   * own: so another process that sees any of LMDB's state sees every step
   * acknowledged before it (a run read as completed has all its steps), and
   * only groups of step records alone wait for a drain. */
  int holder = l && w->defer_ok && wal_defer_held(l), drained = 0;
  int defer = holder && !others;
  if (rc == 0 && holder && drain_due(pp, settle || others, first == end))
    rc = apply_drain(txn, w->s, pp, &drained);
  if (rc) return end_failed(w, txn, carried, rc);
  dirty |= drained;
  uint64_t nb = 0, nops = 0;
  size_t applied = 0, deferred = 0;
  wbatch *lone = NULL;
  sbuf_reset(&w->ops);
  for (wbatch *b = first; b != end; b = b->next) {
    if (b->failed) continue;
    rc = apply_batch(txn, w->s, b, defer ? APPLY_DEFER : APPLY_ALL, f, &applied, &deferred);
    if (rc) return end_failed(w, txn, carried, rc);
    /* the group's record: the batches' buffers one after the other (a lone
     * batch's buffer as it is, without a copy) */
    if (nb == 1) sbuf_add(&w->ops, lone->buf.data, lone->buf.len);
    if (nb >= 1) sbuf_add(&w->ops, b->buf.data, b->buf.len);
    if (nb == 0) lone = b;
    nb++;
    nops += b->count;
  }
  if (!l) dirty = 1;
  dirty |= applied > 0;
  /* the mark: where recovery finds the oldest deferred record LMDB lacks */
  int mark = w->mark_set;
  if (holder && deferred && (!w->mark_set || drained)) {
    uint64_t ms, mo;
    wal_next(l, &ms, &mo);
    rc = wal_mark_put(txn, ms, mo);
    mark = 1, dirty = 1;
  } else if (holder && drained && !deferred && w->mark_set) {
    rc = wal_mark_del(txn);
    mark = 0, dirty = 1;
  }
  if (rc) return end_failed(w, txn, carried, rc);
  int logged = 0;
  if (l && nb > 0) {
    rc = nb == 1 ? wal_append(l, w->s, txn, lone->buf.data, lone->buf.len)
                 : wal_append(l, w->s, txn, w->ops.data, w->ops.len);
    if (rc) return end_failed(w, txn, carried, rc);
    logged = 1;
  }
  /* the deferred records are readable from the moment LMDB shows the rest
   * of their batches (a reader sees a batch whole); taken back if the
   * commit fails */
  size_t undo = 0;
  int whole = deferred && dirty; /* readers retry across this (pending_gen) */
  if (whole) pending_gen_bump(pp);
  if (deferred) {
    pending_lock(pp);
    undo = pending_mark(pp);
    for (wbatch *b = first; b != end && rc == 0; b = b->next)
      if (!b->failed && b->steps) rc = store_each_deferred(b->buf.data, b->buf.len, pp, NULL);
    pending_unlock(pp);
  }
  /* a lazy group: acknowledged with its transaction left open (its end
   * published in the log file, as below), unless it is time to commit */
  if (rc == 0 && lazy && logged && !deferred && !drained) {
    if (!carried) w->ltxn_since = t0;
    pthread_mutex_lock(&w->mu);
    int asked = w->commit_req;
    pthread_mutex_unlock(&w->mu);
    /* no tail published in the log file: none is needed while the write
     * lock is held, and after a crash apply_lazy walks the records to
     * their end (a page less to flush per group) */
    if (!asked && mono_us() - w->ltxn_since < w->lazy_us) {
      w->ltxn = txn;
      w->ltxn_bytes += need;
      w->lazy_gen++;
      goto counted;
    }
  }
  /* a record without a commit: its end is published in the log file,
   * under the write lock still (another process reads it there next) */
  if (rc == 0 && logged && !dirty) rc = wal_publish(l);
  if (rc == 0) rc = store_write_end(w->s, txn, dirty);
  else store_write_end(w->s, txn, 0);
  if (carried) {
    /* the acknowledged groups in it are committed with this one */
    if (rc) lazy_fatal(w, "committing to", rc);
    w->ltxn_since = w->ltxn_bytes = 0;
    pthread_mutex_lock(&w->mu);
    w->committed_gen = w->lazy_gen;
    w->commit_req = 0;
    pthread_cond_broadcast(&w->rcond);
    pthread_mutex_unlock(&w->mu);
  }
  if (rc && deferred) {
    pending_lock(pp);
    pending_truncate(pp, undo);
    pending_unlock(pp);
  }
  if (whole) pending_gen_bump(pp);
  if (rc && logged) wal_cancel(l);
  if (rc == EIO && disk_nearly_full(store_dir(w->s))) rc = ENOSPC;
  if (rc == 0) {
    if (drained) pending_drain_end(pp);
    w->mark_set = mark;
    if (dirty) st->lmdb_commits++;
  }
counted:
  if (rc == 0 && nb > 0) {
    uint64_t us = mono_us() - t0;
    st->commits++;
    st->batches += nb;
    st->ops += nops;
    st->commit_us_sum += us;
    writer_hist_add(st->batch_hist, writer_batch_bounds, nb);
    writer_hist_add(st->commit_hist, writer_commit_bounds_us, us);
  }
  return rc;
}

/* Grows the map after MDB_MAP_FULL. Returns 0, or fails every batch still
 * undecided in [first, end) with a message and returns -1. */
static int grow_or_fail(writer *w, wbatch *first, wbatch *end, const failure *f,
                        writer_stats *st) {
  char err[256];
  int status = store_grow(w->s, err, sizeof err);
  if (status == 0) {
    st->grows++;
    return 0;
  }
  const char *what = f->bad ? store_db_name(f->db) : "the store";
  for (wbatch *b = first; b != end; b = b->next) {
    if (b->failed) continue;
    b->failed = 1;
    b->status = status;
    free(b->errmsg);
    b->errmsg = fmt_msg("writing %s: %s, and the map could not grow: %s", what,
                        mdb_strerror(MDB_MAP_FULL), err);
  }
  return -1;
}

/* An idle writer's drain (and a wrap's): a transaction of the pending
 * records alone. A failure leaves them pending for the next group. */
static int drain_alone(writer *w, writer_stats *st) {
  failure f;
  int rc;
  for (int grows = 0;; grows++) {
    rc = write_range(w, NULL, NULL, &f, st);
    if (rc != MDB_MAP_FULL || grows >= 48) break;
    char err[256];
    if (store_grow(w->s, err, sizeof err) != 0) break;
  }
  if (rc) fprintf(stderr, "sluice: applying deferred steps to %s: %s (they stay in its log)\n",
                  store_dir(w->s), mdb_strerror(rc));
  return rc;
}

/* The map never needs more doublings than this; past it something else is
 * wrong and the batches fail rather than loop. */
#define MAX_GROWS 48

static void write_group(writer *w, wbatch *group, writer_stats *st) {
  failure f;
  size_t left = 0;
  for (wbatch *b = group; b; b = b->next) left++;
  int grows = 0, waits = 0, rc;
  for (;;) {
    rc = write_range(w, group, NULL, &f, st);
    if (rc == 0) return;
    /* the ring must wrap, over records whose deferred steps LMDB lacks:
     * ours are drained now; another process's within its drain time */
    if (rc == WAL_EDRAIN && waits++ < 5000) {
      if (pending_count(store_pending(w->s)) > 0) {
        drain_alone(w, st);
      } else {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
      }
      continue;
    }
    if (rc == MDB_MAP_FULL && grows++ < MAX_GROWS) {
      if (grow_or_fail(w, group, NULL, &f, st)) return;
      continue;
    }
    /* the batch's own operation failed (the same in any transaction): it
     * fails alone and the others go on together */
    if (f.bad && (rc == MDB_BAD_VALSIZE || rc == EINVAL)) {
      fail_batch(w, f.bad, rc, &f);
      if (--left == 0) return;
      continue;
    }
    break;
  }
  if (left == 1) {
    for (wbatch *b = group; b; b = b->next)
      if (!b->failed) fail_batch(w, b, rc, &f);
    return;
  }
  /* something else failed the group: one transaction per batch finds which */
  for (wbatch *b = group; b; b = b->next) {
    if (b->failed) continue;
    grows = 0;
    for (waits = 0;;) {
      rc = write_range(w, b, b->next, &f, st);
      if (rc == WAL_EDRAIN && waits++ < 5000) {
        if (pending_count(store_pending(w->s)) > 0) drain_alone(w, st);
        else nanosleep(&(struct timespec){0, 1000000}, NULL);
        continue;
      }
      if (rc == MDB_MAP_FULL && grows++ < MAX_GROWS) {
        if (grow_or_fail(w, b, b->next, &f, st)) break;
        continue;
      }
      if (rc) fail_batch(w, b, rc, &f);
      break;
    }
  }
}

static void *writer_main(void *arg) {
  writer *w = arg;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    /* an open lazy transaction commits LAZY_US after its first group, when
     * a reader asks, or when the writer stops */
    while (w->ltxn && !w->q_head) {
      int trc = 0;
      if (!w->commit_req && !w->stopping) {
        uint64_t due = w->ltxn_since + w->lazy_us;
        struct timespec ts = {(time_t)(due / 1000000), (long)(due % 1000000) * 1000};
        w->thread_waiting = 1;
        trc = pthread_cond_timedwait(&w->cond, &w->mu, &ts);
        w->thread_waiting = 0;
      }
      if (w->q_head && !w->commit_req && !w->stopping) break;
      if (trc == ETIMEDOUT || w->commit_req || w->stopping) {
        pthread_mutex_unlock(&w->mu);
        lazy_commit(w);
        pthread_mutex_lock(&w->mu);
      }
    }
    while (!w->q_head && !w->stopping) {
      /* deferred records wait at most DRAIN_US for a group to drain them */
      uint64_t since = pending_since_us(store_pending(w->s));
      w->thread_waiting = 1;
      if (!since) {
        pthread_cond_wait(&w->cond, &w->mu);
        w->thread_waiting = 0;
        continue;
      }
      uint64_t due = since + DRAIN_US;
      struct timespec ts = {(time_t)(due / 1000000), (long)(due % 1000000) * 1000};
      int trc = pthread_cond_timedwait(&w->cond, &w->mu, &ts);
      w->thread_waiting = 0;
      if (trc == ETIMEDOUT && !w->q_head) {
        pthread_mutex_unlock(&w->mu);
        writer_stats st;
        memset(&st, 0, sizeof st);
        drain_alone(w, &st);
        pthread_mutex_lock(&w->mu);
        w->stats.lmdb_commits += st.lmdb_commits;
      }
    }
    if (!w->q_head) break; /* stopping, and everything is written */
    wbatch *group = w->q_head, *tail = w->q_tail;
    w->q_head = w->q_tail = NULL;
    pthread_mutex_unlock(&w->mu);

    writer_stats st;
    memset(&st, 0, sizeof st);
    write_group(w, group, &st);

    pthread_mutex_lock(&w->mu);
    if (w->d_tail) {
      w->d_tail->next = group;
    } else {
      w->d_head = group;
    }
    w->d_tail = tail;
    w->acked_gen = w->lazy_gen; /* before the callbacks can run */
    w->stats.commits += st.commits;
    w->stats.batches += st.batches;
    w->stats.ops += st.ops;
    w->stats.grows += st.grows;
    w->stats.commit_us_sum += st.commit_us_sum;
    w->stats.lmdb_commits += st.lmdb_commits;
    for (int i = 0; i < WRITER_HIST; i++) {
      w->stats.batch_hist[i] += st.batch_hist[i];
      w->stats.commit_hist[i] += st.commit_hist[i];
    }
    pthread_mutex_unlock(&w->mu);
    uv_async_send(&w->async); /* coalesces: one wakeup may cover many groups */
    pthread_mutex_lock(&w->mu);
  }
  uint64_t commits = w->stats.commits;
  pthread_mutex_unlock(&w->mu);
  if (pending_count(store_pending(w->s)) > 0) {
    writer_stats st;
    memset(&st, 0, sizeof st);
    drain_alone(w, &st); /* a failure leaves the mark: the next open applies them */
  }
  /* everything is durable in the log already; a checkpoint leaves a
   * restart nothing to replay (of this writer's commits: none, none) */
  wal *l = store_wal(w->s);
  int rc = l && commits > 0 ? wal_checkpoint_now(l, w->s) : 0;
  if (rc) fprintf(stderr, "sluice: checkpointing %s at exit: %s (its log keeps every write)\n",
                  store_dir(w->s), mdb_strerror(rc));
  return NULL;
}

/* ---- the loop thread -------------------------------------------------- */

/* Runs the done callbacks of everything the thread has finished, in order.
 * Re-entrant: a done callback may submit, or call writer_stop, which runs
 * the rest of the list itself before the outer call resumes (finding it
 * empty), so the order holds either way. */
static void run_callbacks(writer *w) {
  pthread_mutex_lock(&w->mu);
  wbatch *head = w->d_head, *tail = w->d_tail;
  w->d_head = w->d_tail = NULL;
  pthread_mutex_unlock(&w->mu);
  if (head) {
    if (w->cb_tail) {
      w->cb_tail->next = head;
    } else {
      w->cb_head = head;
    }
    w->cb_tail = tail;
  }
  wbatch *b;
  while ((b = w->cb_head) != NULL) {
    w->cb_head = b->next;
    if (!w->cb_head) w->cb_tail = NULL;
    /* before the callback, so that a submit from it refs the handle again */
    if (--w->pending == 0) uv_unref((uv_handle_t *)&w->async);
    if (b->done) b->done(b->cookie, b->failed ? b->status : 0, b->failed ? b->errmsg : NULL);
    wbatch_free(b);
  }
}

static void on_async(uv_async_t *h) { run_callbacks(h->data); }

static void on_close(uv_handle_t *h) {
  writer *w = h->data;
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cond);
  pthread_cond_destroy(&w->rcond);
  sbuf_free(&w->ops);
  free(w);
}

/* The writer of each store, for writer_sync_reads (one per store). */
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
  store *s;
  writer *w;
} reg[8];

static void reg_set(store *s, writer *w) {
  pthread_mutex_lock(&reg_mu);
  for (size_t i = 0; i < sizeof reg / sizeof reg[0]; i++) {
    if (w && !reg[i].s) {
      reg[i].s = s, reg[i].w = w;
      break;
    }
    if (!w && reg[i].s == s) reg[i].s = NULL, reg[i].w = NULL;
  }
  pthread_mutex_unlock(&reg_mu);
}

void writer_sync_reads(store *s) {
  writer *w = NULL;
  pthread_mutex_lock(&reg_mu);
  for (size_t i = 0; i < sizeof reg / sizeof reg[0]; i++)
    if (reg[i].s == s) w = reg[i].w;
  pthread_mutex_unlock(&reg_mu);
  if (!w) return;
  pthread_mutex_lock(&w->mu);
  uint64_t target = w->acked_gen;
  while (w->committed_gen < target) {
    w->commit_req = 1;
    pthread_cond_signal(&w->cond);
    pthread_cond_wait(&w->rcond, &w->mu);
  }
  pthread_mutex_unlock(&w->mu);
}

int writer_start(writer **out, store *s, uv_loop_t *loop, char *err, size_t errsz) {
  *out = NULL;
  unsigned envflags = 0;
  mdb_env_get_flags(store_env(s), &envflags);
  if (envflags & MDB_RDONLY) {
    snprintf(err, errsz, "store %s is open read-only: nothing can be written to it",
             store_dir(s));
    return STORE_EACCES;
  }
  writer *w = calloc(1, sizeof *w);
  if (!w) abort();
  w->s = s;
  w->loop = loop;
  const char *d = getenv("SLUICE_DEFER"); /* 0: never defer (A/B benchmarks, tests) */
  w->defer_ok = !(d && strcmp(d, "0") == 0);
  const char *lz = getenv("SLUICE_LAZY_US"); /* 0: commit every group (A/B, tests) */
  long lzn = lz && *lz ? atol(lz) : LAZY_US_DEFAULT;
  w->lazy_us = lzn > 0 && lzn <= 1000000 ? (uint64_t)lzn : 0;
  if (!w->defer_ok) w->lazy_us = 0;
  pthread_mutex_init(&w->mu, NULL);
  /* CLOCK_MONOTONIC: the drain deadline is pending_since_us's clock */
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->cond, &ca);
  pthread_condattr_destroy(&ca);
  pthread_cond_init(&w->rcond, NULL);
  int rc = uv_async_init(loop, &w->async, on_async);
  if (rc) {
    snprintf(err, errsz, "starting the writer of %s: %s", store_dir(s), uv_strerror(rc));
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cond);
    pthread_cond_destroy(&w->rcond);
    free(w);
    return STORE_EIO;
  }
  w->async.data = w;
  uv_unref((uv_handle_t *)&w->async); /* nothing pending yet */

  /* the thread takes no signals: they belong to the loop thread */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = pthread_create(&w->thread, NULL, writer_main, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc) {
    snprintf(err, errsz, "starting the writer of %s: %s", store_dir(s), strerror(rc));
    /* the loop frees w when it runs the close callback */
    uv_close((uv_handle_t *)&w->async, on_close);
    return STORE_EIO;
  }
  reg_set(s, w);
  *out = w;
  return 0;
}

int writer_submit(writer *w, wbatch *b, writer_done_fn done, void *cookie) {
  if (w->stopped) {
    wbatch_free(b);
    return -1;
  }
  b->next = NULL;
  b->done = done;
  b->cookie = cookie;
  w->wrote_steps |= b->steps;
  if (w->pending++ == 0) uv_ref((uv_handle_t *)&w->async);
  pthread_mutex_lock(&w->mu);
  if (w->q_tail) {
    w->q_tail->next = b;
  } else {
    w->q_head = b;
  }
  w->q_tail = b;
  int wake = w->thread_waiting;
  w->thread_waiting = 0; /* one signal per sleep is enough */
  pthread_mutex_unlock(&w->mu);
  if (wake) pthread_cond_signal(&w->cond);
  return 0;
}

/* The caller must run the loop once more so that the close callback frees
 * w. It must hold no read transaction: the thread may be waiting to grow the
 * map, which waits for every transaction of the process, and we join it. */
void writer_stop(writer *w) {
  if (w->stopped) return;
  /* a store left quiet has every step record in the layout by run (no
   * batch's outcome waits on it: a failure leaves the log as it was) */
  if (w->wrote_steps) {
    wbatch *b = wbatch_new();
    add_rec(b, DB_STEP_LOG, OP_SETTLE, NULL, 0, NULL, 0);
    b->settle = 1;
    writer_submit(w, b, NULL, NULL);
  }
  w->stopped = 1;
  pthread_mutex_lock(&w->mu);
  w->stopping = 1;
  pthread_mutex_unlock(&w->mu);
  pthread_cond_signal(&w->cond);
  pthread_join(w->thread, NULL); /* it writes what is queued, then exits */
  reg_set(w->s, NULL); /* everything is committed: reads need not wait */
  run_callbacks(w);
  uv_close((uv_handle_t *)&w->async, on_close);
}

void writer_get_stats(writer *w, writer_stats *out) {
  pthread_mutex_lock(&w->mu);
  *out = w->stats;
  pthread_mutex_unlock(&w->mu);
}
