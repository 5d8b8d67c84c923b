/* records_events.c: the LMDB implementation of store.h's events, sends and
 * consumers sections: the only code that knows their keys and record
 * formats (store_lmdb.h lists them). Reads copy rows out of the read
 * transaction (store_scan_from, store_get_each) into memory the caller
 * owns; writes add to the writer's batch.
 *
 * Event record: int64 LE ts_us, uint16 LE length + type, uint16 LE length +
 * stream key, then the JSON of data. Log key: be64 seq. Index key: stream
 * "\0" be64 seq. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sbuf.h"
#include "store.h"
#include "store_lmdb.h"
#include "writer.h"

#define TRIMMED_TO "events_trimmed_to"
#define DISPATCHED "sends_dispatched"
#define TRIM_MARK META_TRIM_MARK /* then "\0" stream */

static void seterr(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errsz, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errsz, fmt, ap);
  va_end(ap);
}

/* appends n bytes to a row set's bytes; returns their offset */
static size_t keep(char **bytes, size_t *blen, size_t *bcap, const void *p, size_t n) {
  *bytes = sbuf_grow_array(*bytes, bcap, *blen + n + 1, 1);
  size_t off = *blen;
  if (n) memcpy(*bytes + off, p, n);
  *blen += n;
  return off;
}

/* ---- ids ---------------------------------------------------------------- */

void store_event_id(uint64_t seq, char id[STORE_EVENT_ID_LEN + 1]) {
  snprintf(id, STORE_EVENT_ID_LEN + 1, "%016" PRIx64, seq);
}

int store_event_seq(const char *id, size_t n, uint64_t *seq) {
  if (n != STORE_EVENT_ID_LEN) return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    char c = id[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    v = v << 4 | (uint64_t)d;
  }
  *seq = v;
  return 0;
}

/* ---- the event record ----------------------------------------------------- */

static const char *bad_name(const char *s, size_t n) {
  if (n == 0) return "must not be empty";
  if (n > 0xffff) return "is longer than 65535 bytes";
  if (memchr(s, '\0', n)) return "must not contain NUL bytes";
  return NULL;
}

int store_event_check(const char *type, size_t typen, const char *stream, size_t streamn,
                      char *err, size_t errsz) {
  const char *why;
  if ((why = bad_name(type, typen))) {
    seterr(err, errsz, "type %s", why);
    return STORE_EINVAL;
  }
  if ((why = bad_name(stream, streamn))) {
    seterr(err, errsz, "stream key %s", why);
    return STORE_EINVAL;
  }
  return 0;
}

static void put_le(sbuf *b, uint64_t v, int n) {
  unsigned char k[8];
  for (int i = 0; i < n; i++, v >>= 8) k[i] = (unsigned char)(v & 0xff);
  sbuf_add(b, k, (size_t)n);
}

static void index_key(sbuf *k, const char *stream, size_t n, uint64_t seq) {
  sbuf_reset(k);
  sbuf_add(k, stream, n);
  sbuf_addc(k, '\0');
  sbuf_add_be64(k, seq);
}

int store_append_event(store_batch *b, uint64_t seq, int64_t ts_us, const char *type,
                       size_t typen, const char *stream, size_t streamn, const char *data,
                       size_t datan, char *err, size_t errsz) {
  int st = store_event_check(type, typen, stream, streamn, err, errsz);
  if (st) return st;
  sbuf rec = SBUF_INIT, key = SBUF_INIT;
  sbuf_reserve(&rec, 12 + typen + streamn + datan);
  put_le(&rec, (uint64_t)ts_us, 8);
  put_le(&rec, typen, 2);
  sbuf_add(&rec, type, typen);
  put_le(&rec, streamn, 2);
  sbuf_add(&rec, stream, streamn);
  sbuf_add(&rec, data, datan);
  sbuf_add_be64(&key, seq);
  wbatch_put(b, DB_EVENTS, key.data, key.len, rec.data, rec.len);
  index_key(&key, stream, streamn, seq);
  wbatch_put(b, DB_STREAMS, key.data, key.len, "", 0);
  sbuf_free(&rec);
  sbuf_free(&key);
  return 0;
}

typedef struct {
  int64_t ts;
  const char *type, *stream, *data;
  size_t typen, streamn, datan;
} event_rec;

static int parse_event(const unsigned char *v, size_t n, event_rec *e) {
  if (n < 12) return -1;
  uint64_t ts = 0;
  for (int i = 7; i >= 0; i--) ts = (ts << 8) | v[i];
  e->ts = (int64_t)ts;
  size_t off = 8;
  e->typen = (size_t)v[off] | (size_t)v[off + 1] << 8;
  off += 2;
  if (off + e->typen + 2 > n) return -1;
  e->type = (const char *)v + off;
  off += e->typen;
  e->streamn = (size_t)v[off] | (size_t)v[off + 1] << 8;
  off += 2;
  if (off + e->streamn > n) return -1;
  e->stream = (const char *)v + off;
  off += e->streamn;
  e->data = (const char *)v + off;
  e->datan = n - off;
  return 0;
}

/* ---- reading events --------------------------------------------------------- */

void store_events_free(store_events *e) {
  free(e->rows);
  free(e->bytes);
  *e = (store_events)STORE_EVENTS_INIT;
}

/* adds a row; its strings are offsets into bytes until fix_rows */
static void add_row(store_events *out, uint64_t seq, const event_rec *e) {
  out->rows = sbuf_grow_array(out->rows, &out->cap, out->n + 1, sizeof *out->rows);
  store_event *r = &out->rows[out->n++];
  r->seq = seq;
  r->ts_us = e->ts;
  r->typen = e->typen;
  r->streamn = e->streamn;
  r->datan = e->datan;
  r->type = (const char *)(uintptr_t)keep(&out->bytes, &out->blen, &out->bcap, e->type, e->typen);
  r->stream =
      (const char *)(uintptr_t)keep(&out->bytes, &out->blen, &out->bcap, e->stream, e->streamn);
  r->data = (const char *)(uintptr_t)keep(&out->bytes, &out->blen, &out->bcap, e->data, e->datan);
}

static void fix_rows(store_events *out) {
  for (size_t i = 0; i < out->n; i++) {
    store_event *r = &out->rows[i];
    r->type = out->bytes + (uintptr_t)r->type;
    r->stream = out->bytes + (uintptr_t)r->stream;
    r->data = out->bytes + (uintptr_t)r->data;
  }
}

typedef struct {
  const char *prefix;
  size_t plen;
  int exact;        /* stream must equal prefix */
  size_t limit;     /* rows to return (log scan: 0 for no bound) */
  size_t examine;   /* entries to examine (0: no bound) */
  int64_t before;   /* > 0: stop at the first event at or after this time */
  size_t examined;
  int reached;      /* stopped at an event at or after `before` */
  store_events *out;
  uint64_t bad;     /* the position of a corrupt record */
} log_scan;

static int on_log(void *ud, const void *key, size_t klen, const void *val, size_t vlen) {
  log_scan *ls = ud;
  if (klen != 8) {
    ls->bad = UINT64_MAX;
    return STORE_EBADSTORE;
  }
  uint64_t seq = sbuf_read_be64(key);
  event_rec e;
  if (parse_event(val, vlen, &e) != 0) {
    ls->bad = seq;
    return STORE_EBADSTORE;
  }
  if (ls->before > 0 && e.ts >= ls->before) {
    ls->reached = 1;
    return 1;
  }
  ls->out->last = seq;
  ls->examined++;
  if (e.streamn >= ls->plen && memcmp(e.stream, ls->prefix, ls->plen) == 0 &&
      (!ls->exact || e.streamn == ls->plen)) {
    add_row(ls->out, seq, &e);
  }
  if (ls->limit && ls->out->n >= ls->limit) return 1;
  if (ls->examine && ls->examined >= ls->examine) return 1;
  return 0;
}

static int corrupt(store *s, uint64_t seq, char *err, size_t errsz) {
  if (seq == UINT64_MAX) {
    seterr(err, errsz, "reading events in store %s: a log key is not a position (corrupt store)",
           store_dir(s));
  } else {
    seterr(err, errsz, "reading events in store %s: the event at %016" PRIx64 " is corrupt",
           store_dir(s), seq);
  }
  return STORE_EBADSTORE;
}

static int scan_log(store *s, log_scan *ls, char *err, size_t errsz) {
  sbuf from = SBUF_INIT;
  sbuf_add_be64(&from, ls->out->last + 1);
  int st = store_scan_from(s, DB_EVENTS, "", 0, from.data, from.len, 0, on_log, ls, err, errsz);
  sbuf_free(&from);
  if (st == STORE_EBADSTORE && ls->bad) return corrupt(s, ls->bad, err, errsz);
  return st;
}

/* the positions of one key's events, from its index */
typedef struct {
  size_t plen; /* stream "\0" */
  size_t limit;
  uint64_t *seqs;
  size_t n, cap;
} index_scan;

static int on_index(void *ud, const void *key, size_t klen, const void *val, size_t vlen) {
  (void)val;
  (void)vlen;
  index_scan *is = ud;
  if (klen != is->plen + 8) return STORE_EBADSTORE;
  is->seqs = sbuf_grow_array(is->seqs, &is->cap, is->n + 1, sizeof *is->seqs);
  is->seqs[is->n++] = sbuf_read_be64((const char *)key + is->plen);
  return is->limit && is->n >= is->limit ? 1 : 0;
}

static int scan_index(store *s, const char *stream, size_t n, uint64_t after, index_scan *is,
                      char *err, size_t errsz) {
  sbuf k = SBUF_INIT;
  index_key(&k, stream, n, after + 1);
  is->plen = n + 1;
  int st = store_scan_from(s, DB_STREAMS, k.data, is->plen, k.data, k.len, 0, on_index, is, err,
                           errsz);
  sbuf_free(&k);
  if (st == STORE_EBADSTORE && !err[0]) {
    seterr(err, errsz, "reading the stream index in store %s: a malformed entry of key '%.*s'",
           store_dir(s), (int)(n > 200 ? 200 : n), stream);
  }
  return st;
}

typedef struct {
  const uint64_t *seqs;
  unsigned char key[8];
  store_events *out;
  uint64_t bad;
} fetch;

static int fetch_key(void *ud, size_t i, const void **key, size_t *klen) {
  fetch *f = ud;
  uint64_t v = f->seqs[i];
  for (int j = 7; j >= 0; j--, v >>= 8) f->key[j] = (unsigned char)(v & 0xff);
  *key = f->key;
  *klen = 8;
  return 0;
}

static int fetch_val(void *ud, size_t i, const void *val, size_t vlen) {
  fetch *f = ud;
  if (!val) return 0; /* trimmed since the index was read */
  event_rec e;
  if (parse_event(val, vlen, &e) != 0) {
    f->bad = f->seqs[i];
    return STORE_EBADSTORE;
  }
  add_row(f->out, f->seqs[i], &e);
  return 0;
}

int store_read_events(store *s, const store_event_query *q, store_events *out, char *err,
                      size_t errsz) {
  writer_sync_reads(s); /* lazily committed events (writer.c) */
  out->n = 0;
  out->blen = 0;
  out->last = q->after;
  err[0] = '\0';
  if (q->limit == 0) {
    seterr(err, errsz, "reading events: the limit must be positive");
    return STORE_EINVAL;
  }
  /* room for a page of ~100-byte events up front */
  size_t want = q->limit < 1024 ? q->limit : 1024;
  out->rows = sbuf_grow_array(out->rows, &out->cap, want, sizeof *out->rows);
  out->bytes = sbuf_grow_array(out->bytes, &out->bcap, want * 160, 1);
  int st;
  if (!q->exact) {
    log_scan ls = {q->stream, q->streamn, 0, q->limit, 0, 0, 0, 0, out, 0};
    st = scan_log(s, &ls, err, errsz);
  } else {
    index_scan is = {0, q->limit, NULL, 0, 0};
    is.seqs = sbuf_grow_array(NULL, &is.cap, want, sizeof *is.seqs);
    st = scan_index(s, q->stream, q->streamn, q->after, &is, err, errsz);
    if (st == 0 && is.n > 0) {
      out->last = is.seqs[is.n - 1];
      fetch f = {is.seqs, {0}, out, 0};
      st = store_get_each(s, DB_EVENTS, is.n, fetch_key, fetch_val, &f, err, errsz);
      if (st == STORE_EBADSTORE && f.bad) st = corrupt(s, f.bad, err, errsz);
    }
    free(is.seqs);
  }
  if (st) {
    out->n = 0;
    return st;
  }
  fix_rows(out);
  return 0;
}

/* ---- positions ---------------------------------------------------------------- */

static int meta_u64(store *s, const char *key, size_t klen, uint64_t *v, char *err,
                    size_t errsz) {
  sbuf val = SBUF_INIT;
  int found = 0;
  *v = 0;
  int st = store_get(s, DB_META, key, klen, &val, &found, err, errsz);
  if (st == 0 && found) {
    char num[32];
    char *end;
    size_t n = val.len < sizeof num - 1 ? val.len : sizeof num - 1;
    memcpy(num, val.data, n);
    num[n] = '\0';
    *v = strtoull(num, &end, 10);
    if (n == 0 || *end != '\0' || val.len >= sizeof num) {
      seterr(err, errsz, "reading %.*s in store %s: not a number", (int)klen, key, store_dir(s));
      st = STORE_EBADSTORE;
    }
  }
  sbuf_free(&val);
  return st;
}

static void put_meta_u64(store_batch *b, const char *key, size_t klen, uint64_t v) {
  char num[32];
  int n = snprintf(num, sizeof num, "%" PRIu64, v);
  wbatch_put(b, DB_META, key, klen, num, (size_t)n);
}

typedef struct {
  uint64_t seq;
  int64_t ts;
  int found;
} head;

static int on_head(void *ud, const void *key, size_t klen, const void *val, size_t vlen) {
  head *h = ud;
  event_rec e;
  if (klen != 8 || parse_event(val, vlen, &e) != 0) return STORE_EBADSTORE;
  h->seq = sbuf_read_be64(key);
  h->ts = e.ts;
  h->found = 1;
  return 1;
}

/* the first event at a position >= seq (reverse: the last one) */
static int event_at(store *s, uint64_t seq, int reverse, head *h, char *err, size_t errsz) {
  sbuf k = SBUF_INIT;
  if (!reverse) sbuf_add_be64(&k, seq);
  h->found = 0;
  int st = store_scan_from(s, DB_EVENTS, "", 0, k.data, k.len, reverse, on_head, h, err, errsz);
  sbuf_free(&k);
  if (st == STORE_EBADSTORE && !err[0]) {
    seterr(err, errsz, "reading events in store %s: a corrupt event record", store_dir(s));
  }
  return st;
}

int store_events_last(store *s, uint64_t *seq, int64_t *ts_us, char *err, size_t errsz) {
  writer_sync_reads(s); /* lazily committed events (writer.c) */
  err[0] = '\0';
  uint64_t trimmed;
  int st = meta_u64(s, TRIMMED_TO, sizeof TRIMMED_TO - 1, &trimmed, err, errsz);
  head h;
  if (st == 0) st = event_at(s, 0, 1, &h, err, errsz);
  if (st) return st;
  *seq = h.found && h.seq > trimmed ? h.seq : trimmed;
  *ts_us = h.found ? h.ts : 0;
  return 0;
}

int store_events_after_time(store *s, int64_t ts_us, uint64_t *after, char *err, size_t errsz) {
  writer_sync_reads(s); /* lazily committed events (writer.c) */
  err[0] = '\0';
  head first, last;
  int st = event_at(s, 0, 0, &first, err, errsz);
  if (st == 0 && first.found) st = event_at(s, 0, 1, &last, err, errsz);
  if (st) return st;
  *after = 0;
  if (!first.found) return 0;
  /* the first position whose event (or the next one stored) has ts >= ts_us */
  uint64_t lo = first.seq, hi = last.seq + 1;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    head h;
    st = event_at(s, mid, 0, &h, err, errsz);
    if (st) return st;
    if (!h.found || h.ts >= ts_us) {
      hi = mid;
    } else {
      lo = h.seq + 1;
    }
  }
  *after = lo - 1;
  return 0;
}

typedef struct {
  uint64_t after;
  int trimmed;
} trim_probe;

static int on_mark(void *ud, const void *key, size_t klen, const void *val, size_t vlen) {
  (void)key;
  (void)klen;
  trim_probe *t = ud;
  char num[32];
  size_t n = vlen < sizeof num - 1 ? vlen : sizeof num - 1;
  memcpy(num, val, n);
  num[n] = '\0';
  if (strtoull(num, NULL, 10) > t->after) {
    t->trimmed = 1;
    return 1;
  }
  return 0;
}

int store_events_trimmed(store *s, const char *stream, size_t streamn, int exact, uint64_t after,
                         int *trimmed, char *err, size_t errsz) {
  writer_sync_reads(s); /* lazily committed events (writer.c) */
  sbuf k = SBUF_INIT;
  sbuf_add(&k, TRIM_MARK, sizeof TRIM_MARK); /* with its "\0" */
  sbuf_add(&k, stream, streamn);
  trim_probe t = {after, 0};
  int st;
  if (exact) {
    sbuf v = SBUF_INIT;
    int found;
    st = store_get(s, DB_META, k.data, k.len, &v, &found, err, errsz);
    if (st == 0 && found) on_mark(&t, NULL, 0, v.data, v.len);
    sbuf_free(&v);
  } else {
    st = store_scan(s, DB_META, k.data, k.len, 0, on_mark, &t, err, errsz);
  }
  sbuf_free(&k);
  *trimmed = t.trimmed;
  return st;
}

/* ---- stream keys -------------------------------------------------------------- */

void store_keys_free(store_keys *k) {
  free(k->keys);
  free(k->bytes);
  *k = (store_keys)STORE_KEYS_INIT;
}

/* copies the stream key of the first index entry seen into the sbuf */
static int on_first_key(void *ud, const void *key, size_t klen, const void *val, size_t vlen) {
  (void)val;
  (void)vlen;
  sbuf *f = ud;
  const char *nul = memchr(key, '\0', klen);
  if (!nul || (size_t)(nul - (const char *)key) + 9 != klen) return STORE_EBADSTORE;
  sbuf_add(f, key, (size_t)(nul - (const char *)key));
  return 1;
}

int store_stream_keys(store *s, const char *prefix, size_t plen, const char *after, size_t alen,
                      size_t limit, store_keys *out, char *err, size_t errsz) {
  writer_sync_reads(s); /* lazily committed events (writer.c) */
  out->n = 0;
  out->blen = 0;
  err[0] = '\0';
  sbuf from = SBUF_INIT, key = SBUF_INIT;
  if (alen > 0) {
    sbuf_add(&from, after, alen);
    sbuf_addc(&from, '\1'); /* past every index entry of `after` */
  }
  int st = 0;
  while (out->n < limit) {
    sbuf_reset(&key);
    st = store_scan_from(s, DB_STREAMS, prefix, plen, from.data, from.len, 0, on_first_key, &key,
                         err, errsz);
    if (st == STORE_EBADSTORE && !err[0]) {
      seterr(err, errsz, "reading the stream index in store %s: a malformed entry", store_dir(s));
    }
    if (st || key.len == 0) break;
    out->keys = sbuf_grow_array(out->keys, &out->cap, out->n + 1, sizeof *out->keys);
    out->keys[out->n].key =
        (const char *)(uintptr_t)keep(&out->bytes, &out->blen, &out->bcap, key.data, key.len);
    out->keys[out->n++].len = key.len;
    sbuf_reset(&from);
    sbuf_add(&from, key.data, key.len);
    sbuf_addc(&from, '\1');
  }
  for (size_t i = 0; i < out->n; i++) out->keys[i].key = out->bytes + (uintptr_t)out->keys[i].key;
  sbuf_free(&from);
  sbuf_free(&key);
  if (st) out->n = 0;
  return st;
}

/* ---- trimming ------------------------------------------------------------------- */

static void add_removal(store_batch *b, sbuf *k, uint64_t seq, const char *stream, size_t n) {
  sbuf_reset(k);
  sbuf_add_be64(k, seq);
  wbatch_del(b, DB_EVENTS, k->data, k->len);
  index_key(k, stream, n, seq);
  wbatch_del(b, DB_STREAMS, k->data, k->len);
}

static void add_mark(store_batch *b, sbuf *k, const char *stream, size_t n, uint64_t seq) {
  sbuf_reset(k);
  sbuf_add(k, TRIM_MARK, sizeof TRIM_MARK);
  sbuf_add(k, stream, n);
  put_meta_u64(b, k->data, k->len, seq);
}

int store_trim_events(store *s, store_batch *b, const store_trim_query *q, size_t *n,
                      uint64_t *last, int *more, char *err, size_t errsz) {
  writer_sync_reads(s); /* lazily committed events (writer.c) */
  *n = 0;
  *last = q->after;
  *more = 0;
  err[0] = '\0';
  if (q->limit == 0 || (q->before_us <= 0 && (q->keep < 0 || !q->exact))) {
    seterr(err, errsz, "trimming events: give a positive limit and a time, or a count of one key");
    return STORE_EINVAL;
  }
  uint64_t prev;
  int st = meta_u64(s, TRIMMED_TO, sizeof TRIMMED_TO - 1, &prev, err, errsz);
  if (st) return st;
  uint64_t top = 0;
  sbuf k = SBUF_INIT;
  if (q->before_us > 0) {
    store_events ev = STORE_EVENTS_INIT;
    ev.last = q->after;
    log_scan ls = {q->stream, q->streamn, q->exact, 0, q->limit, q->before_us, 0, 0, &ev, 0};
    st = scan_log(s, &ls, err, errsz);
    if (st == 0) {
      fix_rows(&ev);
      *last = ev.last;
      *more = !ls.reached && ls.examined >= q->limit;
      for (size_t i = 0; i < ev.n; i++) {
        add_removal(b, &k, ev.rows[i].seq, ev.rows[i].stream, ev.rows[i].streamn);
      }
      /* each key's mark is its newest removed: the last row of that key */
      for (size_t i = ev.n; i-- > 0;) {
        const store_event *r = &ev.rows[i];
        size_t j = i + 1;
        while (j < ev.n && !(ev.rows[j].streamn == r->streamn &&
                             memcmp(ev.rows[j].stream, r->stream, r->streamn) == 0)) {
          j++;
        }
        if (j == ev.n) add_mark(b, &k, r->stream, r->streamn, r->seq);
      }
      *n = ev.n;
      if (ev.n) top = ev.rows[ev.n - 1].seq;
    }
    store_events_free(&ev);
  } else {
    index_scan is = {0, 0, NULL, 0, 0};
    st = scan_index(s, q->stream, q->streamn, 0, &is, err, errsz);
    if (st == 0 && is.n > (size_t)q->keep) {
      size_t excess = is.n - (size_t)q->keep;
      size_t take = excess < q->limit ? excess : q->limit;
      for (size_t i = 0; i < take; i++) add_removal(b, &k, is.seqs[i], q->stream, q->streamn);
      add_mark(b, &k, q->stream, q->streamn, is.seqs[take - 1]);
      *n = take;
      *more = excess > take;
      *last = top = is.seqs[take - 1];
    }
    free(is.seqs);
  }
  if (st == 0 && *n > 0 && top > prev) put_meta_u64(b, TRIMMED_TO, sizeof TRIMMED_TO - 1, top);
  sbuf_free(&k);
  return st;
}

/* ---- rows of JSON records: sends and consumers ------------------------------------- */

void store_blob_rows_free(store_blob_rows *r) {
  free(r->rows);
  free(r->bytes);
  *r = (store_blob_rows)STORE_BLOB_ROWS_INIT;
}

typedef struct {
  store_blob_rows *out;
  int by_seq; /* keys are be64 positions (sends), else names */
  size_t limit;
} rows_scan;

static int on_row(void *ud, const void *key, size_t klen, const void *val, size_t vlen) {
  rows_scan *rs = ud;
  store_blob_rows *o = rs->out;
  if (rs->by_seq && klen != 8) return STORE_EBADSTORE;
  o->rows = sbuf_grow_array(o->rows, &o->cap, o->n + 1, sizeof *o->rows);
  store_row *r = &o->rows[o->n++];
  r->seq = rs->by_seq ? sbuf_read_be64(key) : 0;
  r->namen = rs->by_seq ? 0 : klen;
  r->name = (const char *)(uintptr_t)keep(&o->bytes, &o->blen, &o->bcap, key, rs->by_seq ? 0 : klen);
  r->jsonn = vlen;
  r->json = (const char *)(uintptr_t)keep(&o->bytes, &o->blen, &o->bcap, val, vlen);
  return rs->limit && o->n >= rs->limit ? 1 : 0;
}

static int scan_rows(store *s, int db, const char *what, const void *from, size_t flen,
                     rows_scan *rs, char *err, size_t errsz) {
  rs->out->n = 0;
  rs->out->blen = 0;
  err[0] = '\0';
  int st = store_scan_from(s, db, "", 0, from, flen, 0, on_row, rs, err, errsz);
  if (st == STORE_EBADSTORE && !err[0]) {
    seterr(err, errsz, "reading %s in store %s: a key is not a position (corrupt store)", what,
           store_dir(s));
  }
  if (st) {
    rs->out->n = 0;
    return st;
  }
  for (size_t i = 0; i < rs->out->n; i++) {
    rs->out->rows[i].name = rs->out->bytes + (uintptr_t)rs->out->rows[i].name;
    rs->out->rows[i].json = rs->out->bytes + (uintptr_t)rs->out->rows[i].json;
  }
  return 0;
}

/* ---- sends ------------------------------------------------------------------------ */

void store_put_send(store_batch *b, uint64_t seq, const char *json, size_t jsonn) {
  sbuf k = SBUF_INIT;
  sbuf_add_be64(&k, seq);
  wbatch_put(b, DB_SENDS, k.data, k.len, json, jsonn);
  sbuf_free(&k);
}

int store_sends(store *s, uint64_t after, size_t limit, store_blob_rows *out, char *err, size_t errsz) {
  if (limit == 0) {
    seterr(err, errsz, "reading sends: the limit must be positive");
    return STORE_EINVAL;
  }
  sbuf from = SBUF_INIT;
  sbuf_add_be64(&from, after + 1);
  rows_scan rs = {out, 1, limit};
  int st = scan_rows(s, DB_SENDS, "sends", from.data, from.len, &rs, err, errsz);
  sbuf_free(&from);
  return st;
}

static int on_last_send(void *ud, const void *key, size_t klen, const void *val, size_t vlen) {
  (void)val;
  (void)vlen;
  if (klen != 8) return STORE_EBADSTORE;
  *(uint64_t *)ud = sbuf_read_be64(key);
  return 1;
}

int store_sends_last(store *s, uint64_t *seq, char *err, size_t errsz) {
  *seq = 0;
  err[0] = '\0';
  int st = store_scan(s, DB_SENDS, "", 0, 1, on_last_send, seq, err, errsz);
  if (st == STORE_EBADSTORE && !err[0]) {
    seterr(err, errsz, "reading sends in store %s: a key is not a position (corrupt store)",
           store_dir(s));
  }
  return st;
}

void store_set_dispatch_cursor(store_batch *b, uint64_t seq) {
  put_meta_u64(b, DISPATCHED, sizeof DISPATCHED - 1, seq);
}

int store_dispatch_cursor(store *s, uint64_t *seq, char *err, size_t errsz) {
  return meta_u64(s, DISPATCHED, sizeof DISPATCHED - 1, seq, err, errsz);
}

/* ---- consumers ---------------------------------------------------------------------- */

void store_put_consumer(store_batch *b, const char *name, size_t namen, const char *json,
                        size_t jsonn) {
  wbatch_put(b, DB_CONSUMERS, name, namen, json, jsonn);
}

int store_get_consumer(store *s, const char *name, size_t namen, store_blob_rows *out, int *found,
                       char *err, size_t errsz) {
  sbuf v = SBUF_INIT;
  out->n = 0;
  out->blen = 0;
  int st = store_get(s, DB_CONSUMERS, name, namen, &v, found, err, errsz);
  if (st == 0 && *found) {
    out->rows = sbuf_grow_array(out->rows, &out->cap, 1, sizeof *out->rows);
    size_t no = keep(&out->bytes, &out->blen, &out->bcap, name, namen);
    size_t jo = keep(&out->bytes, &out->blen, &out->bcap, v.data, v.len);
    out->rows[0] = (store_row){0, out->bytes + no, out->bytes + jo, namen, v.len};
    out->n = 1;
  }
  sbuf_free(&v);
  return st;
}

int store_consumers(store *s, store_blob_rows *out, char *err, size_t errsz) {
  rows_scan rs = {out, 0, 0};
  return scan_rows(s, DB_CONSUMERS, "consumers", NULL, 0, &rs, err, errsz);
}

/* ---- for store copy and store check ---------------------------------------------- */

int store_list_trim_marks(store *s, const char *after, size_t alen, size_t limit,
                          store_named_rows *out, char *err, size_t errsz) {
  writer_sync_reads(s); /* lazily committed events (writer.c) */
  return store_page(s, DB_META, TRIM_MARK, sizeof TRIM_MARK, after, alen, limit, out, err, errsz);
}

int store_put_trim_mark(store_batch *b, const char *stream, size_t streamn, uint64_t seq) {
  if (bad_name(stream, streamn)) return STORE_EINVAL;
  sbuf k = SBUF_INIT;
  add_mark(b, &k, stream, streamn, seq);
  sbuf_free(&k);
  return 0;
}

void store_set_events_taken(store_batch *b, uint64_t seq) {
  /* store_events_last is the greater of the newest event and this */
  put_meta_u64(b, TRIMMED_TO, sizeof TRIMMED_TO - 1, seq);
}

int store_stream_index_page(store *s, const char *after, size_t alen, size_t limit,
                            store_named_rows *out, char *err, size_t errsz) {
  writer_sync_reads(s); /* lazily committed events (writer.c) */
  return store_page(s, DB_STREAMS, "", 0, after, alen, limit, out, err, errsz);
}

int store_stream_entry_parse(const char *key, size_t klen, const char **stream, size_t *streamn,
                             uint64_t *seq) {
  if (klen < 10 || key[klen - 9] != '\0' || memchr(key, '\0', klen - 9)) return -1;
  *stream = key;
  *streamn = klen - 9;
  *seq = sbuf_read_be64(key + klen - 8);
  return 0;
}

int store_probe_event(store *s, uint64_t seq, const char *stream, size_t streamn,
                      store_event_probe *out, char *err, size_t errsz) {
  writer_sync_reads(s); /* lazily committed events (writer.c) */
  memset(out, 0, sizeof *out);
  MDB_dbi events = store_dbi(s, DB_EVENTS), index = store_dbi(s, DB_STREAMS);
  if (!events || !index) return 0;
  MDB_txn *txn;
  int st = store_read_begin(s, &txn, err, errsz);
  if (st) return st;
  sbuf k = SBUF_INIT;
  sbuf_add_be64(&k, seq);
  MDB_val key = {k.len, k.data}, v;
  int rc = mdb_get(txn, events, &key, &v);
  if (rc == 0) {
    out->found = 1;
    event_rec e;
    out->same_stream = parse_event(v.mv_data, v.mv_size, &e) == 0 && e.streamn == streamn &&
                       memcmp(e.stream, stream, streamn) == 0;
  }
  if (rc == 0 || rc == MDB_NOTFOUND) {
    index_key(&k, stream, streamn, seq);
    key = (MDB_val){k.len, k.data};
    rc = mdb_get(txn, index, &key, &v);
    out->indexed = rc == 0;
  }
  store_read_end(s, txn);
  sbuf_free(&k);
  if (rc && rc != MDB_NOTFOUND) {
    seterr(err, errsz, "reading events in store %s: %s", store_dir(s), mdb_strerror(rc));
    return store_status(rc);
  }
  return 0;
}
