/* records_steps.c: the LMDB records of steps and of run logs (store.h
 * "steps", "run logs"). The only code that knows their keys and format:
 *   step_log    be64(seq) -> le64 prev, le16 run length, run, step record
 *   step_heads  run -> le64 last, le64 floor, le32 count
 *   steps       run \0 step_id -> step record
 *   logs        run \0 be64(us) be32(seq) -> JSON line
 *
 * Where a step's record goes (why two places). A step is first appended to
 * step_log under the next sequence number (MDB_APPEND: the log's last leaf,
 * so the steps of every run in one group commit share one or two leaves),
 * chained to the run's previous log record through `prev`; step_heads holds,
 * per run with records in the log, the newest of them (last), the sequence
 * below which none of the run's log records count any more (floor) and how
 * many are chained (count): a few dozen bytes per active run, so the heads
 * of 64 concurrent runs fit in one or two leaves. When a run has 64 to
 * STEPS_LOG_RUN (128, by a hash of its id) records chained, they move
 * together into `steps`, the layout by run (a few of the run's leaves
 * written once per ~100 steps instead of one leaf per step), and the run's
 * head goes. The log's records
 * are never deleted one by one in the middle (that would rewrite a leaf per
 * record): once the log holds STEPS_LOG_TRIM records more than
 * STEPS_LOG_MAX, the append that found it so deletes its first records down
 * to STEPS_LOG_MAX (whole leaves at once), moving the rest of a run's chain
 * first when such a record still counts. A record counts iff its run has a head and
 * its seq is above the head's floor.
 *
 * All of that runs in the writer's transaction (records_step_apply, the
 * writer's OP_STEP): the batch holds only (run, record), so recovery's
 * replay of the write-ahead log does the same moves from the same state.
 * Deferred records (writer.c's drain: ~100 ms of them, dozens per run) go
 * straight into `steps` instead (records_step_drain): a drain's records of
 * one run share that run's leaves as a move would, written once instead of
 * in the log and then again in the move (bench/RESULTS.md: ~100 B less
 * written per step). A run with records in the log takes its drained ones
 * through the log too, as those count over `steps`.
 *
 * Reads merge: a run's chain (at most 128 records, newest first; the newest
 * record of an id wins) over its records in `steps`, in step id order. A
 * store of format 1 has only `steps`: the same layout with an empty log.
 *
 * A step record is a small binary header then the payload: the JSON of the
 * step's result (or of its error). Only the payload is a user value; the
 * header is read without parsing JSON, which is what makes resuming a
 * 10,000-step run cost milliseconds (a JSON record per step cost ~1.3 us to
 * decode, most of it for fields the replay does not need).
 *
 *   offset size
 *   0      1    format (1)
 *   1      1    status: 1 completed, 2 failed, 3 running (a step in flight)
 *   2      1    1 if a payload follows
 *   3      1    reserved (0)
 *   4      4    attempts            (little-endian unsigned)
 *   8      4    position in branch
 *   12     8    started, us since the epoch (little-endian signed)
 *   20     8    duration, us
 *   28     2    length of id        then id bytes
 *   ..     2    length of branch    then branch bytes
 *   ..          payload (JSON) to the end
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "steps_pending.h"
#include "store.h"
#include "store_lmdb.h"
#include "writer.h"

#define HDR 28

/* LMDB's key limit (0.9's MDB_MAXKEYSIZE): run \0 step_id in `steps`, run
 * in step_heads */
#define STEP_KEY_MAX 511
#define STEP_RUN_MAX (STEP_KEY_MAX - 2)

static const char *const STATUS[] = {"?", "completed", "failed", "running"};

int store_step_status(const char *name) {
  for (int i = 1; name && i <= 3; i++)
    if (strcmp(name, STATUS[i]) == 0) return i;
  return 0;
}

const char *store_step_status_name(int status) {
  return status >= 1 && status <= 3 ? STATUS[status] : "failed";
}

int store_put_step(store_batch *b, const char *run, size_t run_len, const store_step *st,
                   store_fill_fn fill, void *ud, char *err, size_t errsz) {
  if (run_len == 0 || memchr(run, '\0', run_len)) {
    snprintf(err, errsz, "a step needs a run id without NUL");
    return STORE_EINVAL;
  }
  if (st->id_len == 0 || st->id_len > 0xffff || memchr(st->id, '\0', st->id_len)) {
    snprintf(err, errsz, "a step id is 1 to 65535 bytes without NUL");
    return STORE_EINVAL;
  }
  if (run_len + 1 + st->id_len > STEP_KEY_MAX) {
    snprintf(err, errsz, "step '%.*s' of run '%.*s': run id and step id together are %zu bytes, "
             "over the store's limit of %d: use a shorter step id", (int)(st->id_len > 64 ? 64 : st->id_len),
             st->id, (int)(run_len > 64 ? 64 : run_len), run, run_len + st->id_len, STEP_KEY_MAX - 1);
    return STORE_EINVAL;
  }
  if (st->branch_len > 0xffff) {
    snprintf(err, errsz, "step '%.*s': branch name longer than 65535 bytes", (int)st->id_len, st->id);
    return STORE_EINVAL;
  }
  if (st->status < 1 || st->status > 3) {
    snprintf(err, errsz, "step '%.*s': no step status %d", (int)st->id_len, st->id, st->status);
    return STORE_EINVAL;
  }
  sbuf *out = wbatch_step_begin(b, run, run_len);
  unsigned char head[4] = {1, (unsigned char)st->status, fill ? 1 : 0, 0};
  sbuf_add(out, head, 4);
  sbuf_put_le(out, st->attempts, 4);
  sbuf_put_le(out, st->pos, 4);
  sbuf_put_le(out, (uint64_t)st->started_us, 8);
  sbuf_put_le(out, (uint64_t)st->duration_us, 8);
  sbuf_put_le(out, st->id_len, 2);
  sbuf_add(out, st->id, st->id_len);
  sbuf_put_le(out, st->branch_len, 2);
  sbuf_add(out, st->branch, st->branch_len);
  if (fill && fill(ud, out, err, errsz) != 0) {
    wbatch_put_cancel(b);
    return STORE_EINVAL;
  }
  wbatch_put_end(b);
  return 0;
}

void store_steps_free(store_steps *l) {
  free(l->v);
  sbuf_free(&l->buf);
  *l = (store_steps)STORE_STEPS_INIT;
}

/* Parses the record at v (n bytes) into r, pointers into v. */
static int parse(const unsigned char *v, size_t n, store_step *r) {
  if (n < HDR + 4 || v[0] != 1) return -1;
  r->status = v[1];
  r->has_payload = v[2];
  r->attempts = (uint32_t)sbuf_get_le(v + 4, 4);
  r->pos = (uint32_t)sbuf_get_le(v + 8, 4);
  r->started_us = (int64_t)sbuf_get_le(v + 12, 8);
  r->duration_us = (int64_t)sbuf_get_le(v + 20, 8);
  r->id_len = (size_t)sbuf_get_le(v + 28, 2);
  if (HDR + 2 + r->id_len + 2 > n) return -1;
  r->id = (const char *)v + HDR + 2;
  r->branch_len = (size_t)sbuf_get_le((const unsigned char *)r->id + r->id_len, 2);
  r->branch = r->id + r->id_len + 2;
  size_t off = HDR + 4 + r->id_len + r->branch_len;
  if (off > n) return -1;
  r->payload = (const char *)v + off;
  r->payload_len = n - off;
  return 0;
}

/* ---- the log: its records and heads ------------------------------------ */

typedef struct {
  uint64_t last, floor;
  uint32_t count;
} head;

#define HEAD_LEN 20
#define LOG_PRE 10 /* prev, run length */

static uint64_t be64_of(const MDB_val *k) {
  return k->mv_size == 8 ? sbuf_read_be64(k->mv_data) : 0;
}

/* The head of run (rn bytes) into h: 0, MDB_NOTFOUND, or an LMDB code. */
static int head_get(MDB_txn *txn, MDB_dbi hd, const char *run, size_t rn, head *h) {
  MDB_val k = {rn, (void *)run}, v;
  int rc = mdb_get(txn, hd, &k, &v);
  if (rc) return rc;
  if (v.mv_size != HEAD_LEN) return MDB_CORRUPTED;
  const unsigned char *p = v.mv_data;
  h->last = sbuf_get_le(p, 8);
  h->floor = sbuf_get_le(p + 8, 8);
  h->count = (uint32_t)sbuf_get_le(p + 16, 4);
  return 0;
}

/* The log record at seq: its prev, run and step record (pointers into the
 * map, valid in txn). */
typedef struct logrec {
  uint64_t seq, prev;
  const char *run;
  size_t rn;
  const unsigned char *rec;
  size_t recn;
} logrec;

static int log_get(MDB_txn *txn, MDB_dbi lg, uint64_t seq, logrec *out) {
  unsigned char kb[8];
  for (int i = 0; i < 8; i++) kb[i] = (unsigned char)(seq >> (56 - 8 * i));
  MDB_val k = {8, kb}, v;
  int rc = mdb_get(txn, lg, &k, &v);
  if (rc) return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc; /* a chain names it */
  const unsigned char *p = v.mv_data;
  if (v.mv_size < LOG_PRE) return MDB_CORRUPTED;
  out->seq = seq;
  out->prev = sbuf_get_le(p, 8);
  out->rn = (size_t)sbuf_get_le(p + 8, 2);
  if (LOG_PRE + out->rn > v.mv_size) return MDB_CORRUPTED;
  out->run = (const char *)p + LOG_PRE;
  out->rec = p + LOG_PRE + out->rn;
  out->recn = v.mv_size - LOG_PRE - out->rn;
  return 0;
}

/* The chain of h (newest first) into v[0..*n): at most STEPS_LOG_RUN. */
static int chain(MDB_txn *txn, MDB_dbi lg, const head *h, logrec *v, size_t *n) {
  *n = 0;
  for (uint64_t seq = h->last; seq > h->floor && *n < h->count && *n < STEPS_LOG_RUN;) {
    int rc = log_get(txn, lg, seq, &v[*n]);
    if (rc) return rc;
    if (v[*n].prev >= seq) return MDB_CORRUPTED;
    seq = v[(*n)++].prev;
  }
  return 0;
}

static int same_id(const store_step *a, const store_step *b) {
  return a->id_len == b->id_len && memcmp(a->id, b->id, a->id_len) == 0;
}

/* Moves the run's chained records into `steps` (oldest first, so the
 * newest of an id is what stays) and deletes its head. */
static int compact(MDB_txn *txn, store *s, const char *run, size_t rn, const head *h) {
  MDB_dbi lg = store_dbi(s, DB_STEP_LOG), cold = store_dbi(s, DB_STEPS);
  logrec v[STEPS_LOG_RUN];
  size_t n;
  int rc = chain(txn, lg, h, v, &n);
  if (rc) return rc;
  char kb[STEP_KEY_MAX];
  memcpy(kb, run, rn);
  kb[rn] = '\0';
  while (n-- > 0) {
    store_step st;
    if (parse(v[n].rec, v[n].recn, &st) != 0) return MDB_CORRUPTED;
    if (rn + 1 + st.id_len > sizeof kb) return MDB_BAD_VALSIZE;
    memcpy(kb + rn + 1, st.id, st.id_len);
    MDB_val k = {rn + 1 + st.id_len, kb}, val = {v[n].recn, (void *)v[n].rec};
    rc = mdb_put(txn, cold, &k, &val, 0);
    if (rc) return rc;
  }
  MDB_val hk = {rn, (void *)run};
  return mdb_del(txn, store_dbi(s, DB_STEP_HEADS), &hk, NULL);
}

/* Deletes the log's first record, moving its run's chain first if it still
 * counts. */
static int trim_one(MDB_txn *txn, store *s) {
  MDB_dbi lg = store_dbi(s, DB_STEP_LOG), hd = store_dbi(s, DB_STEP_HEADS);
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, lg, &c);
  if (rc) return rc;
  MDB_val k, v;
  rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
  mdb_cursor_close(c);
  if (rc) return rc == MDB_NOTFOUND ? 0 : rc;
  uint64_t seq = be64_of(&k);
  logrec r;
  if ((rc = log_get(txn, lg, seq, &r)) != 0) return rc;
  char run[STEP_KEY_MAX];
  size_t rn = r.rn < sizeof run ? r.rn : sizeof run;
  memcpy(run, r.run, rn);
  head h;
  rc = head_get(txn, hd, run, rn, &h);
  if (rc == 0 && seq > h.floor) rc = compact(txn, s, run, rn, &h);
  else if (rc == MDB_NOTFOUND) rc = 0;
  if (rc) return rc;
  unsigned char kb[8];
  /* not k: it pointed into a page the writes above may have moved */
  for (int i = 0; i < 8; i++) kb[i] = (unsigned char)(seq >> (56 - 8 * i));
  MDB_val dk = {8, kb};
  return mdb_del(txn, lg, &dk, NULL);
}

/* How many records of run are chained before they move: STEPS_LOG_RUN/2 to
 * STEPS_LOG_RUN by a hash of its id, so runs that go at one pace (a map's
 * items, a benchmark's runs) move in different commits, not all in one
 * (whose pages LMDB would keep allocated for good). */
static uint32_t due(const void *run, size_t rn) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < rn; i++) h = (h ^ ((const unsigned char *)run)[i]) * 16777619u;
  return STEPS_LOG_RUN / 2 + h % (STEPS_LOG_RUN / 2 + 1);
}

/* STEPS_LOG_MAX, or SLUICE_STEP_LOG_MAX (for tests: a power cut between
 * trims). Read on the writer thread, and by recovery before it starts; a
 * replay under another bound places records otherwise, and reads the same. */
static size_t log_max(void) {
  static size_t v;
  if (!v) {
    const char *e = getenv("SLUICE_STEP_LOG_MAX");
    long n = e ? atol(e) : 0;
    v = n > 0 ? (size_t)n : STEPS_LOG_MAX;
  }
  return v;
}

int records_step_valid(const void *run, size_t rn, const void *rec, size_t recn) {
  store_step st;
  if (rn == 0 || rn > STEP_RUN_MAX || parse(rec, recn, &st) != 0) return EINVAL;
  (void)run;
  return 0;
}

int records_step_apply(MDB_txn *txn, store *s, const void *run, size_t rn, const void *rec,
                       size_t recn) {
  MDB_dbi lg = store_dbi(s, DB_STEP_LOG), hd = store_dbi(s, DB_STEP_HEADS);
  store_step st;
  if (!lg || !hd || rn == 0 || rn > STEP_RUN_MAX || parse(rec, recn, &st) != 0) return EINVAL;
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, lg, &c);
  if (rc) return rc;
  MDB_val k, v;
  rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
  mdb_cursor_close(c);
  if (rc && rc != MDB_NOTFOUND) return rc;
  uint64_t seq = rc == 0 ? be64_of(&k) + 1 : 1;
  head h;
  rc = head_get(txn, hd, run, rn, &h);
  if (rc == MDB_NOTFOUND) h = (head){0, seq - 1, 0};
  else if (rc) return rc;
  unsigned char kb[8];
  for (int i = 0; i < 8; i++) kb[i] = (unsigned char)(seq >> (56 - 8 * i));
  MDB_val lk = {8, kb}, lv = {LOG_PRE + rn + recn, NULL};
  rc = mdb_put(txn, lg, &lk, &lv, MDB_APPEND | MDB_RESERVE);
  if (rc) return rc;
  unsigned char *p = lv.mv_data;
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(h.last >> (8 * i));
  p[8] = (unsigned char)(rn & 0xff), p[9] = (unsigned char)(rn >> 8);
  memcpy(p + LOG_PRE, run, rn);
  memcpy(p + LOG_PRE + rn, rec, recn);
  h.last = seq;
  h.count++;
  if (h.count >= due(run, rn)) {
    rc = compact(txn, s, run, rn, &h);
  } else {
    unsigned char hb[HEAD_LEN];
    for (int i = 0; i < 8; i++) hb[i] = (unsigned char)(h.last >> (8 * i));
    for (int i = 0; i < 8; i++) hb[8 + i] = (unsigned char)(h.floor >> (8 * i));
    for (int i = 0; i < 4; i++) hb[16 + i] = (unsigned char)(h.count >> (8 * i));
    MDB_val hk = {rn, (void *)run}, hv = {HEAD_LEN, hb};
    rc = mdb_put(txn, hd, &hk, &hv, 0);
  }
  if (rc) return rc;
  MDB_stat ms;
  if ((rc = mdb_stat(txn, lg, &ms)) != 0) return rc;
  if (ms.ms_entries <= log_max() + STEPS_LOG_TRIM) return 0;
  for (size_t n = ms.ms_entries; rc == 0 && n > log_max(); n--) rc = trim_one(txn, s);
  return rc;
}

int records_step_drain(MDB_txn *txn, store *s, const void *run, size_t rn, const void *rec,
                       size_t recn) {
  MDB_dbi hd = store_dbi(s, DB_STEP_HEADS), cold = store_dbi(s, DB_STEPS);
  store_step st;
  if (!hd || !cold || rn == 0 || rn > STEP_RUN_MAX || parse(rec, recn, &st) != 0) return EINVAL;
  head h;
  int rc = head_get(txn, hd, run, rn, &h);
  /* records of the run in the log count over `steps`: this one goes after
   * them, through the log */
  if (rc == 0) return records_step_apply(txn, s, run, rn, rec, recn);
  if (rc != MDB_NOTFOUND) return rc;
  char kb[STEP_KEY_MAX];
  if (rn + 1 + st.id_len > sizeof kb) return MDB_BAD_VALSIZE;
  memcpy(kb, run, rn);
  kb[rn] = '\0';
  memcpy(kb + rn + 1, st.id, st.id_len);
  MDB_val k = {rn + 1 + st.id_len, kb}, val = {recn, (void *)rec};
  return mdb_put(txn, cold, &k, &val, 0);
}

int records_steps_settle(MDB_txn *txn, store *s) {
  MDB_dbi lg = store_dbi(s, DB_STEP_LOG), hd = store_dbi(s, DB_STEP_HEADS);
  if (!lg || !hd) return 0;
  /* the runs first: compact deletes the head a cursor would stand on */
  sbuf runs = SBUF_INIT;
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, hd, &c);
  if (rc) return rc;
  MDB_val k, v;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    uint16_t n = (uint16_t)k.mv_size;
    sbuf_add(&runs, &n, sizeof n);
    sbuf_add(&runs, k.mv_data, k.mv_size);
  }
  mdb_cursor_close(c);
  if (rc == MDB_NOTFOUND) rc = 0;
  for (size_t at = 0; rc == 0 && at < runs.len;) {
    uint16_t n;
    memcpy(&n, runs.data + at, sizeof n);
    const char *run = runs.data + at + sizeof n;
    at += sizeof n + n;
    head h;
    rc = head_get(txn, hd, run, n, &h);
    if (rc == 0) rc = compact(txn, s, run, n, &h);
  }
  sbuf_free(&runs);
  if (rc) return rc;
  /* every record is one that no longer counts; the last stays, so the next
   * sequence number goes on from it */
  if ((rc = mdb_cursor_open(txn, lg, &c)) != 0) return rc;
  MDB_stat ms;
  rc = mdb_stat(txn, lg, &ms);
  for (size_t left = ms.ms_entries; rc == 0 && left > 1; left--) {
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    if (rc == 0) rc = mdb_cursor_del(c, 0);
  }
  mdb_cursor_close(c);
  return rc;
}

/* ---- reads ------------------------------------------------------------- */

/* Appends a copy of the record r (parsed from val) to out; the pointers
 * hold offsets into out->buf until fix_up (the buffer moves as it grows). */
static void add_step(store_steps *l, const store_step *parsed, const void *val, size_t vn) {
  store_step r = *parsed;
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    store_step *v = realloc(l->v, cap * sizeof *v);
    if (!v) abort();
    l->v = v, l->cap = cap;
  }
  size_t base = l->buf.len;
  sbuf_add(&l->buf, val, vn);
  const char *p = val;
  r.id = (const char *)(base + (size_t)(r.id - p));
  r.branch = (const char *)(base + (size_t)(r.branch - p));
  r.payload = (const char *)(base + (size_t)(r.payload - p));
  l->v[l->n++] = r;
}

static void fix_up(store_steps *l, size_t first) {
  for (size_t i = first; i < l->n; i++) {
    store_step *r = &l->v[i];
    r->id = l->buf.data + (size_t)r->id;
    r->branch = l->buf.data + (size_t)r->branch;
    r->payload = l->buf.data + (size_t)r->payload;
  }
}

/* a log record of a read, parsed (first: by_id sorts these too) */
typedef struct {
  store_step st;
  const struct logrec *r;
} logent;

/* step id order, as the keys of `steps` sort (bytes, then length) */
static int by_id(const void *a, const void *b) {
  const store_step *x = a, *y = b;
  size_t n = x->id_len < y->id_len ? x->id_len : y->id_len;
  int c = memcmp(x->id, y->id, n);
  if (c) return c;
  return x->id_len < y->id_len ? -1 : x->id_len > y->id_len;
}

/* The run's log records that count, newest of each id only, parsed into
 * st[0..*n) (pointers into the map). */
static int live_log(MDB_txn *txn, store *s, const char *run, size_t rn, store_step *st,
                    const logrec **recs, logrec *buf, size_t *n) {
  *n = 0;
  MDB_dbi lg = store_dbi(s, DB_STEP_LOG), hd = store_dbi(s, DB_STEP_HEADS);
  if (!lg || !hd || rn > STEP_RUN_MAX) return 0; /* a store of format 1 read-only: no log */
  head h;
  int rc = head_get(txn, hd, run, rn, &h);
  if (rc) return rc == MDB_NOTFOUND ? 0 : rc;
  size_t m;
  if ((rc = chain(txn, lg, &h, buf, &m)) != 0) return rc;
  for (size_t i = 0; i < m; i++) {
    store_step r;
    if (parse(buf[i].rec, buf[i].recn, &r) != 0) return MDB_CORRUPTED;
    int dup = 0;
    for (size_t j = 0; j < *n && !dup; j++) dup = same_id(&st[j], &r);
    if (dup) continue;
    recs[*n] = &buf[i];
    st[(*n)++] = r;
  }
  return 0;
}

/* ---- deferred records (steps_pending.h): newer than LMDB's ------------- */

typedef struct {
  store_step st;
  const unsigned char *rec;
  size_t recn;
} pent;

static int by_pent(const void *a, const void *b) {
  return by_id(&((const pent *)a)->st, &((const pent *)b)->st);
}

/* The record a parsed step of out came from (parse's layout). */
static const char *raw_of(const store_step *r, size_t *n) {
  const char *p = r->id - (HDR + 2);
  *n = (size_t)(r->payload + r->payload_len - p);
  return p;
}

/* Puts the run's pending records (pend: entries, oldest first) over out's
 * [first, n) (LMDB's, in id order, whose bytes start at buf_first); id:
 * that step only. */
static int merge_pending(store_steps *out, size_t first, size_t buf_first, const sbuf *pend,
                         const char *id, size_t idn) {
  pent *pv = NULL;
  size_t n = 0, cap = 0, at = 0, rn, recn;
  const char *r;
  const unsigned char *rec;
  while (pending_next(pend->data, pend->len, &at, &r, &rn, &rec, &recn)) {
    store_step st;
    if (parse(rec, recn, &st) != 0) {
      free(pv);
      return -1;
    }
    if (id && (st.id_len != idn || memcmp(st.id, id, idn) != 0)) continue;
    size_t i = 0;
    while (i < n && !same_id(&pv[i].st, &st)) i++;
    if (i == n) pv = sbuf_grow_array(pv, &cap, ++n, sizeof *pv);
    pv[i] = (pent){st, rec, recn}; /* the newest of an id wins */
  }
  if (n == 0) {
    free(pv);
    return 0;
  }
  qsort(pv, n, sizeof *pv, by_pent);
  store_steps tmp = STORE_STEPS_INIT;
  size_t i = first, j = 0;
  while (i < out->n || j < n) {
    int d = i == out->n ? 1 : j == n ? -1 : by_id(&out->v[i], &pv[j].st);
    if (d < 0) {
      size_t vn;
      const char *v = raw_of(&out->v[i++], &vn);
      add_step(&tmp, &out->v[i - 1], v, vn);
    } else {
      add_step(&tmp, &pv[j].st, pv[j].rec, pv[j].recn);
      j++;
      if (d == 0) i++;
    }
  }
  fix_up(&tmp, 0);
  out->n = first;
  out->buf.len = buf_first;
  for (size_t k = 0; k < tmp.n; k++) {
    size_t vn;
    const char *v = raw_of(&tmp.v[k], &vn);
    add_step(out, &tmp.v[k], v, vn);
  }
  fix_up(out, first);
  store_steps_free(&tmp);
  free(pv);
  return 0;
}

/* Copies the run's pending records (all runs': run NULL) into pend and
 * begins a read transaction that shows the rest of their batches. */
static int read_with_pending(store *s, const char *run, size_t rn, sbuf *pend, MDB_txn **txn,
                             char *err, size_t errsz) {
  steps_pending *pp = store_pending(s);
  for (int tries = 0;; tries++) {
    uint64_t g = pp ? pending_gen(pp) : 0;
    if ((g & 1) && tries < 100000) {
      sched_yield(); /* a group between its records and its commit */
      continue;
    }
    sbuf_reset(pend);
    if (pp) {
      pending_lock(pp);
      if (run) pending_copy_run(pp, run, rn, pend);
      else pending_copy_all(pp, pend);
      pending_unlock(pp);
    }
    int st = store_read_begin(s, txn, err, errsz);
    if (st) return st;
    if (!pp || pending_gen(pp) == g || tries >= 100000) return 0;
    store_read_end(s, *txn);
  }
}

static int load(store *s, const char *run, size_t rn, const char *id, size_t idn,
                store_steps *out, char *err, size_t errsz) {
  MDB_txn *txn;
  sbuf pend = SBUF_INIT;
  int st = read_with_pending(s, run, rn, &pend, &txn, err, errsz);
  if (st) {
    sbuf_free(&pend);
    return st;
  }
  size_t first = out->n, buf_first = out->buf.len;
  store_step lst[STEPS_LOG_RUN];
  const logrec *lrec[STEPS_LOG_RUN];
  logrec lbuf[STEPS_LOG_RUN];
  size_t ln = 0;
  int rc = live_log(txn, s, run, rn, lst, lrec, lbuf, &ln);
  int bad = rc == MDB_CORRUPTED;
  MDB_dbi cold = store_dbi(s, DB_STEPS);
  sbuf k = SBUF_INIT;
  sbuf_add(&k, run, rn);
  sbuf_addc(&k, '\0');
  size_t plen = k.len;
  if (id) sbuf_add(&k, id, idn);
  if (rc == 0 && id) {
    store_step want = {.id = id, .id_len = idn};
    size_t i = 0;
    while (i < ln && !same_id(&lst[i], &want)) i++;
    if (i < ln) {
      add_step(out, &lst[i], lrec[i]->rec, lrec[i]->recn);
    } else if (cold && k.len <= STEP_KEY_MAX) {
      MDB_val kk = {k.len, k.data}, v;
      rc = mdb_get(txn, cold, &kk, &v);
      store_step r;
      if (rc == 0 && parse(v.mv_data, v.mv_size, &r) != 0) bad = 1, rc = MDB_CORRUPTED;
      if (rc == 0) add_step(out, &r, v.mv_data, v.mv_size);
      if (rc == MDB_NOTFOUND) rc = 0;
    }
  } else if (rc == 0) {
    /* a merge of two lists in id order: the log's newer records (sorted
     * here: at most 128) and the run's records in `steps` */
    logent ent[STEPS_LOG_RUN];
    for (size_t i = 0; i < ln; i++) ent[i].st = lst[i], ent[i].r = lrec[i];
    qsort(ent, ln, sizeof ent[0], by_id);
    size_t li = 0;
    MDB_cursor *c = NULL;
    if (cold && (rc = mdb_cursor_open(txn, cold, &c)) == 0) {
      MDB_val kk = {k.len, k.data}, v;
      for (rc = mdb_cursor_get(c, &kk, &v, MDB_SET_RANGE); rc == 0;
           rc = mdb_cursor_get(c, &kk, &v, MDB_NEXT)) {
        if (kk.mv_size < plen || memcmp(kk.mv_data, k.data, plen) != 0) break;
        store_step r;
        if (parse(v.mv_data, v.mv_size, &r) != 0) {
          bad = 1, rc = MDB_CORRUPTED;
          break;
        }
        int d = -1;
        for (; li < ln && (d = by_id(&ent[li].st, &r)) < 0; li++)
          add_step(out, &ent[li].st, ent[li].r->rec, ent[li].r->recn);
        if (li < ln && d == 0) continue; /* the log's is newer: it comes next */
        add_step(out, &r, v.mv_data, v.mv_size);
      }
      mdb_cursor_close(c);
      if (rc == MDB_NOTFOUND) rc = 0;
    }
    for (; rc == 0 && li < ln; li++) add_step(out, &ent[li].st, ent[li].r->rec, ent[li].r->recn);
  }
  store_read_end(s, txn);
  sbuf_free(&k);
  fix_up(out, first);
  if (rc == 0 && !bad && pend.len && merge_pending(out, first, buf_first, &pend, id, idn) != 0)
    bad = 1;
  sbuf_free(&pend);
  if (bad) {
    snprintf(err, errsz, "store %s: run %.*s has a corrupt step record", store_dir(s), (int)rn, run);
    return STORE_EBADSTORE;
  }
  if (rc) {
    snprintf(err, errsz, "reading the steps of run %.*s in store %s: %s", (int)rn, run,
             store_dir(s), mdb_strerror(rc));
    return store_status(rc);
  }
  return 0;
}

int store_load_steps(store *s, const char *run, size_t run_len, store_steps *out, char *err,
                     size_t errsz) {
  return load(s, run, run_len, NULL, 0, out, err, errsz);
}

int store_get_step(store *s, const char *run, size_t run_len, const char *id, size_t id_len,
                   store_steps *out, char *err, size_t errsz) {
  return load(s, run, run_len, id, id_len, out, err, errsz);
}

static int records_steps_census_lmdb(MDB_txn *txn, store *s, int64_t *n);

typedef struct {
  const char *run, *id;
  size_t rn, idn;
} pkey;

static int by_pkey(const void *a, const void *b) {
  const pkey *x = a, *y = b;
  if (x->rn != y->rn) return x->rn < y->rn ? -1 : 1;
  int c = memcmp(x->run, y->run, x->rn);
  if (c) return c;
  if (x->idn != y->idn) return x->idn < y->idn ? -1 : 1;
  return memcmp(x->id, y->id, x->idn);
}

/* The pending records' (run, id) that txn's snapshot lacks. */
static int census_pending(MDB_txn *txn, store *s, int64_t *n) {
  steps_pending *pp = store_pending(s);
  if (!pp) return 0;
  sbuf pend = SBUF_INIT;
  pending_lock(pp);
  pending_copy_all(pp, &pend);
  pending_unlock(pp);
  pkey *v = NULL;
  size_t m = 0, cap = 0, at = 0, rn, recn;
  const char *r;
  const unsigned char *rec;
  while (pending_next(pend.data, pend.len, &at, &r, &rn, &rec, &recn)) {
    store_step st;
    if (parse(rec, recn, &st) != 0) continue;
    v = sbuf_grow_array(v, &cap, m + 1, sizeof *v);
    v[m++] = (pkey){r, st.id, rn, st.id_len};
  }
  if (m > 1) qsort(v, m, sizeof *v, by_pkey);
  MDB_dbi cold = store_dbi(s, DB_STEPS);
  int rc = 0;
  for (size_t i = 0; i < m && rc == 0; i++) {
    if (i > 0 && by_pkey(&v[i - 1], &v[i]) == 0) continue;
    char kb[STEP_KEY_MAX];
    int found = 0;
    if (cold && v[i].rn + 1 + v[i].idn <= sizeof kb) {
      memcpy(kb, v[i].run, v[i].rn);
      kb[v[i].rn] = '\0';
      memcpy(kb + v[i].rn + 1, v[i].id, v[i].idn);
      MDB_val ck = {v[i].rn + 1 + v[i].idn, kb}, cv;
      int r2 = mdb_get(txn, cold, &ck, &cv);
      if (r2 == 0) found = 1;
      else if (r2 != MDB_NOTFOUND) rc = r2;
    }
    if (!found && rc == 0) {
      store_step lst[STEPS_LOG_RUN];
      const logrec *lrec[STEPS_LOG_RUN];
      logrec lbuf[STEPS_LOG_RUN];
      size_t ln = 0;
      store_step want = {.id = v[i].id, .id_len = v[i].idn};
      rc = live_log(txn, s, v[i].run, v[i].rn, lst, lrec, lbuf, &ln);
      for (size_t j = 0; j < ln && !found; j++) found = same_id(&lst[j], &want);
    }
    if (!found && rc == 0) (*n)++;
  }
  free(v);
  sbuf_free(&pend);
  return rc;
}

int records_steps_census(MDB_txn *txn, store *s, int64_t *n) {
  *n = 0;
  int rc0 = census_pending(txn, s, n);
  if (rc0) return rc0;
  int64_t pend_n = *n;
  int rc = records_steps_census_lmdb(txn, s, n);
  *n += pend_n;
  return rc;
}

static int records_steps_census_lmdb(MDB_txn *txn, store *s, int64_t *n) {
  MDB_dbi cold = store_dbi(s, DB_STEPS), hd = store_dbi(s, DB_STEP_HEADS);
  *n = 0;
  MDB_stat ms;
  int rc = cold ? mdb_stat(txn, cold, &ms) : 0;
  if (rc) return rc;
  if (cold) *n = (int64_t)ms.ms_entries;
  if (!hd || !store_dbi(s, DB_STEP_LOG)) return 0;
  /* the log's records of ids that `steps` does not have yet */
  MDB_cursor *c;
  if ((rc = mdb_cursor_open(txn, hd, &c)) != 0) return rc;
  MDB_val k, v;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    store_step lst[STEPS_LOG_RUN];
    const logrec *lrec[STEPS_LOG_RUN];
    logrec lbuf[STEPS_LOG_RUN];
    size_t ln;
    if ((rc = live_log(txn, s, k.mv_data, k.mv_size, lst, lrec, lbuf, &ln)) != 0) break;
    char kb[STEP_KEY_MAX];
    for (size_t i = 0; i < ln; i++) {
      if (k.mv_size + 1 + lst[i].id_len > sizeof kb) {
        (*n)++;
        continue;
      }
      memcpy(kb, k.mv_data, k.mv_size);
      kb[k.mv_size] = '\0';
      memcpy(kb + k.mv_size + 1, lst[i].id, lst[i].id_len);
      MDB_val ck = {k.mv_size + 1 + lst[i].id_len, kb}, cv;
      int r2 = cold ? mdb_get(txn, cold, &ck, &cv) : MDB_NOTFOUND;
      if (r2 == MDB_NOTFOUND) (*n)++;
      else if (r2) { rc = r2; break; }
    }
    if (rc) break;
  }
  mdb_cursor_close(c);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- run logs ---------------------------------------------------------- */

static void log_key(sbuf *k, const char *run, size_t rn, int64_t us, uint32_t seq) {
  sbuf_add(k, run, rn);
  sbuf_addc(k, '\0');
  sbuf_add_be64(k, (uint64_t)us);
  sbuf_add_be32(k, seq);
}

int store_put_log(store_batch *b, const char *run, size_t run_len, int64_t us, uint32_t seq,
                  const void *json, size_t len, char *err, size_t errsz) {
  if (run_len == 0 || memchr(run, '\0', run_len)) {
    snprintf(err, errsz, "a log line needs a run id without NUL");
    return STORE_EINVAL;
  }
  sbuf k = SBUF_INIT;
  log_key(&k, run, run_len, us, seq);
  wbatch_put(b, DB_LOGS, k.data, k.len, json, len);
  sbuf_free(&k);
  return 0;
}

void store_del_log(store_batch *b, const char *run, size_t run_len, int64_t us, uint32_t seq) {
  sbuf k = SBUF_INIT;
  log_key(&k, run, run_len, us, seq);
  wbatch_del(b, DB_LOGS, k.data, k.len);
  sbuf_free(&k);
}

typedef struct {
  store_rows *rows;
  sbuf ids; /* int64 pairs */
  size_t plen;
  int bad;
} logs_ctx;

static int logs_cb(void *ud, const void *k, size_t kn, const void *v, size_t vn) {
  logs_ctx *c = ud;
  if (kn != c->plen + 12) {
    c->bad = 1;
    return STORE_EBADSTORE;
  }
  const char *p = (const char *)k + c->plen;
  int64_t pair[2] = {(int64_t)sbuf_read_be64(p), (int64_t)sbuf_read_be32(p + 8)};
  sbuf_add(&c->ids, pair, sizeof pair);
  store_rows_add(c->rows, "", 0, v, vn);
  return 0;
}

int store_read_logs(store *s, const char *run, size_t run_len, store_rows *rows, int64_t **ids,
                    char *err, size_t errsz) {
  sbuf k = SBUF_INIT;
  sbuf_add(&k, run, run_len);
  sbuf_addc(&k, '\0');
  logs_ctx c = {rows, SBUF_INIT, k.len, 0};
  int rc = store_scan(s, DB_LOGS, k.data, k.len, 0, logs_cb, &c, err, errsz);
  sbuf_free(&k);
  if (c.bad) {
    snprintf(err, errsz, "store %s: run %.*s has a log line under a malformed key", store_dir(s),
             (int)run_len, run);
    rc = STORE_EBADSTORE;
  }
  if (rc < 0 || !ids) {
    sbuf_free(&c.ids);
    if (ids) *ids = NULL;
    return rc < 0 ? rc : 0;
  }
  *ids = (int64_t *)c.ids.data; /* ownership moves to the caller */
  return 0;
}
