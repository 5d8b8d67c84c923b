/* pg.c: one libpq connection in non-blocking pipeline mode on the libuv
 * loop, with group commit and reconnection (see pg.h).
 *
 * The pipeline: every unit of work sent is a run of statements followed by
 * a Sync. With no BEGIN, the statements before a Sync are one implicit
 * transaction (the extended query protocol's), which the Sync commits, or
 * rolls back if a statement failed; PGRES_PIPELINE_SYNC arrives once the
 * commit is done. A failed statement makes libpq report every later
 * statement up to the Sync as PGRES_PIPELINE_ABORTED. So a unit's results
 * are: for each statement, its result then NULL; then the Sync. Units are
 * answered in the order they were sent, so the sent list is a FIFO.
 *
 * The socket: libpq may close and reopen its socket while connecting (one
 * address after another), so the poll handle is stopped before each
 * PQconnectPoll and re-pointed at PQsocket afterwards; a handle is never
 * left watching a descriptor libpq closed. A handle is malloc'd and freed
 * in its close callback, since its memory must outlive uv_close.
 *
 * Callbacks: done callbacks run from libuv callbacks (poll, timer, idle),
 * never from inside pg_submit/pg_read. A callback may submit (queued and
 * sent from the idle handle) or pg_close (everything else fails at once);
 * after each callback the code below checks whether p was closed. */
#include "pg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sbuf.h"
#include "writer.h" /* the histograms' bounds, as the LMDB writer's */

_Static_assert(PG_HIST == WRITER_HIST, "pg_stats' histograms are writer.h's");

enum { ST_BACKOFF, ST_CONNECTING, ST_READY, ST_CLOSED };

typedef struct {
  size_t sql;    /* offset of the NUL-terminated SQL in buf */
  size_t params; /* offset of the first parameter */
  int nparams;
  int prep; /* as sent: the prepared statement executed (index in pg.prep), -1: unnamed */
  int row_key; /* a row (pg_batch_add_row): its first row_key parameters are its key; 0: not */
  int has_upsert; /* a row whose SQL inserts only: upsert is the SQL after a duplicate key */
  size_t upsert;  /* offset of that SQL in buf */
  /* as sent, for a row: */
  int skip;                   /* merged into an earlier row's statement: no result of its own */
  struct pg_batch *merged;    /* the first row of its SQL in the unit: the statement sent */
  int multi;                  /* that statement holds rows of several batches */
} stmt;

/* Prepared statements. A write's SQL seen a second time on a connection is
 * prepared (Parse, named) at the start of the next write transaction that
 * uses it, then executed by name: PostgreSQL then parses, analyses and plans
 * it once per connection instead of once per statement, which was most of
 * the server's time per step (a 64-step group: 16.8 ms unnamed, 6.9 ms
 * prepared, pgbench -M extended/prepared in one pipeline). One-off SQL (a
 * migration's DDL) is never prepared. A prepared statement lives as long as
 * the session, whatever becomes of the transaction that sent its Parse
 * (PostgreSQL's prepared statements are not transactional); a new
 * connection starts with none. A Parse that fails (SQL PostgreSQL refuses)
 * marks its SQL as never prepared and the transaction goes again unprepared,
 * so the error reaches its batch as before. Reads are prepared the same
 * way when their caller says their SQL allows it (pg_read_prepared): the
 * store's reads, per run (its steps, its record, its namespace) were each
 * parsed and planned again. */
enum { PREP_NONE, PREP_SENDING, PREP_READY, PREP_NEVER };
#define PREP_MAX 128 /* the store's statements are a few dozen; more go unnamed */
typedef struct {
  uint64_t hash;
  char *sql;
  int state;
  const void *unit; /* PREP_SENDING: the transaction whose Parse it is */
} prep_entry;

/* A parameter in buf: this header, then len bytes (absent if len < 0: NULL),
 * then a NUL, so that a text value is a C string where it lies. */
typedef struct {
  int32_t len;
  int32_t format;
} param_hdr;

struct pg_batch {
  pg_batch *next;
  sbuf buf;
  stmt *st;
  size_t n, cap;
  PGresult **res; /* n results, while the batch is in flight or in done */
  pg_done_fn done;
  void *cookie;
  int read;  /* pg_read: its own transaction, not grouped */
  int prepare; /* a read whose SQL may be prepared (pg_read_prepared) */
  int alone; /* a write sent again in its own transaction */
  int upserts; /* its rows go as their upsert SQL (a row of it met a duplicate key) */
  int status;
  char *errmsg;
  char sqlstate[6];
};

/* Sent and not yet answered: one transaction (several batches) or one read. */
typedef struct unit {
  struct unit *next;
  struct pg_batch *merged; /* the statements built from rows, linked by next */
  pg_batch *head; /* its batches, linked by next */
  pg_batch *cur;  /* the batch and statement whose results come next */
  size_t cur_i;
  int write;
  pg_batch *bad; /* the batch whose statement failed first; NULL: the commit */
  int dup_row;   /* that statement: rows inserting only, which met a duplicate key */
  uint64_t sent_ns; /* uv_hrtime when sent */
  int *preps;         /* the pg.prep entries whose Parse this unit sent first */
  size_t nprep, prep_i; /* how many; whose result comes next */
  int prep_failed;      /* a Parse failed: everything after it was aborted */
  size_t prelude_left; /* statements of the prelude whose results come first */
  int prelude_failed;  /* then every batch fails with the prelude's error */
  char *errmsg;
  char sqlstate[6];
} unit;

typedef struct waiter {
  struct waiter *next;
  pg_done_fn done;
  void *cookie;
} waiter;

typedef struct {
  uv_poll_t h;
  pg *p;
} poll_box;

struct pg {
  uv_loop_t *loop;
  char *conninfo;
  pg_opts o;
  PGconn *conn;
  int state;
  poll_box *poll; /* NULL when nothing is watched */
  int poll_fd;
  uv_timer_t timer; /* BACKOFF: the reconnect delay; CONNECTING: the attempt's timeout */
  uv_idle_t kick;   /* sends what was queued, runs waiters that are due */
  int kicking;
  int open_handles; /* timer and kick: p is freed when both closed */
  pg_batch *wq_head, *wq_tail; /* writes not sent */
  pg_batch *rq_head, *rq_tail; /* reads not sent */
  unit *u_head, *u_tail;       /* sent, not answered */
  int write_in_flight;
  waiter *waiters;       /* pg_when_connected */
  int flushing;          /* libpq has output it could not send yet */
  uint32_t attempts;     /* failed connection attempts in a row */
  uint64_t down_since;   /* loop time (ms) the connection went down */
  uint64_t rand;
  pg_batch *prelude; /* sent first in each write transaction (pg_set_prelude) */
  prep_entry prep[PREP_MAX];
  size_t nprep;
  char last_err[512];
  pg_stats stats;
};

static void on_poll(uv_poll_t *h, int status, int events);
static void connect_start(pg *p);
static void lost(pg *p, const char *why);
static void update_ref(pg *p);
static void prep_reset(pg *p);

/* ---- batches ---------------------------------------------------------- */

static void *xalloc(size_t n) {
  void *q = calloc(1, n);
  if (!q) {
    fprintf(stderr, "sluice: out of memory\n");
    abort();
  }
  return q;
}

static char *xstrdup(const char *s) {
  char *d = strdup(s);
  if (!d) {
    fprintf(stderr, "sluice: out of memory\n");
    abort();
  }
  return d;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  char *m;
  int n = vasprintf(&m, f, ap);
  va_end(ap);
  if (n < 0) {
    fprintf(stderr, "sluice: out of memory\n");
    abort();
  }
  return m;
}

pg_batch *pg_batch_new(void) { return xalloc(sizeof(pg_batch)); }

void pg_batch_add(pg_batch *b, const char *sql, int nparams, const char *const *values,
                  const int *lengths, const int *formats) {
  if (b->n == b->cap) {
    b->cap = b->cap ? b->cap * 2 : 4;
    b->st = realloc(b->st, b->cap * sizeof *b->st);
    if (!b->st) {
      fprintf(stderr, "sluice: out of memory\n");
      abort();
    }
  }
  stmt *s = &b->st[b->n++];
  memset(s, 0, sizeof *s);
  s->sql = b->buf.len;
  sbuf_add(&b->buf, sql, strlen(sql) + 1);
  s->params = b->buf.len;
  s->nparams = nparams;
  for (int i = 0; i < nparams; i++) {
    int format = formats ? formats[i] : 0;
    const char *v = values[i];
    param_hdr h = {v ? (int32_t)(format ? lengths[i] : (int)strlen(v)) : -1, format};
    sbuf_add(&b->buf, &h, sizeof h);
    if (v) sbuf_add(&b->buf, v, (size_t)h.len);
    sbuf_addc(&b->buf, '\0');
  }
}

void pg_batch_add_row(pg_batch *b, const char *sql, int nparams, int nkey,
                      const char *const *values, const int *lengths, const int *formats) {
  pg_batch_add(b, sql, nparams, values, lengths, formats);
  b->st[b->n - 1].row_key = nkey > 0 ? nkey : 1;
}

void pg_batch_add_row_new(pg_batch *b, const char *sql, const char *upsert, int nparams, int nkey,
                          const char *const *values, const int *lengths, const int *formats) {
  pg_batch_add_row(b, sql, nparams, nkey, values, lengths, formats);
  stmt *s = &b->st[b->n - 1];
  s->has_upsert = 1;
  s->upsert = b->buf.len;
  sbuf_add(&b->buf, upsert, strlen(upsert) + 1);
}

/* the SQL statement s of b goes as */
static const char *stmt_sql(const pg_batch *b, const stmt *s) {
  return b->buf.data + (s->has_upsert && b->upserts ? s->upsert : s->sql);
}

size_t pg_batch_count(const pg_batch *b) { return b->n; }

static void clear_results(pg_batch *b) {
  if (!b->res) return;
  for (size_t i = 0; i < b->n; i++) PQclear(b->res[i]);
  free(b->res);
  b->res = NULL;
}

void pg_batch_free(pg_batch *b) {
  if (!b) return;
  clear_results(b);
  sbuf_free(&b->buf);
  free(b->st);
  free(b->errmsg);
  free(b);
}

const PGresult *pg_batch_result(const pg_batch *b, size_t i) {
  if (!b->res || i >= b->n || !b->res[i]) return NULL;
  ExecStatusType st = PQresultStatus(b->res[i]);
  return st == PGRES_PIPELINE_ABORTED ? NULL : b->res[i];
}

const char *pg_batch_sqlstate(const pg_batch *b) { return b->sqlstate; }

int pg_status_of_sqlstate(const char *s) {
  if (!s || !s[0]) return STORE_EIO;
  if (!strcmp(s, "53100")) return STORE_EFULL;
  if (!strcmp(s, "42501")) return STORE_EACCES;
  if (!strncmp(s, "22", 2) || !strncmp(s, "23", 2) || !strncmp(s, "42", 2)) return STORE_EINVAL;
  return STORE_EIO;
}

/* ---- completing work -------------------------------------------------- */

static void set_failed(pg_batch *b, int status, const char *sqlstate, char *msg) {
  b->status = status;
  free(b->errmsg);
  b->errmsg = msg;
  snprintf(b->sqlstate, sizeof b->sqlstate, "%s", sqlstate ? sqlstate : "");
}

/* Calls back and frees a list of finished batches, in order. */
static void call_all(pg_batch *b) {
  while (b) {
    pg_batch *next = b->next;
    b->next = NULL;
    b->done(b->cookie, b->status, b->status ? b->errmsg : NULL, b);
    pg_batch_free(b);
    b = next;
  }
}

static void append(pg_batch **head, pg_batch **tail, pg_batch *b) {
  b->next = NULL;
  if (*tail) {
    (*tail)->next = b;
  } else {
    *head = b;
  }
  *tail = b;
}

static uint64_t now_ms(pg *p) { return uv_now(p->loop); }

/* Without a connection for queue_timeout_ms: the work not sent fails. */
static void expire_queued(pg *p, pg_batch **out_h, pg_batch **out_t) {
  if (now_ms(p) - p->down_since < p->o.queue_timeout_ms) return;
  pg_batch **qs[2][2] = {{&p->wq_head, &p->wq_tail}, {&p->rq_head, &p->rq_tail}};
  for (int q = 0; q < 2; q++) {
    pg_batch *b = *qs[q][0];
    *qs[q][0] = *qs[q][1] = NULL;
    while (b) {
      pg_batch *next = b->next;
      set_failed(b, STORE_EIO, NULL,
                 fmt("no connection to PostgreSQL for %u ms (%s): not written; check that the "
                     "server is up and the --store URL",
                     p->o.queue_timeout_ms, p->last_err));
      append(out_h, out_t, b);
      b = next;
    }
  }
}

/* ---- the socket -------------------------------------------------------- */

static void free_poll(uv_handle_t *h) { free(h->data); }

static void unwatch(pg *p) {
  if (!p->poll) return;
  uv_poll_stop(&p->poll->h);
  uv_close((uv_handle_t *)&p->poll->h, free_poll);
  p->poll = NULL;
}

/* Watches fd for events; -1 if libuv refused. */
static int watch(pg *p, int fd, int events) {
  if (p->poll && p->poll_fd != fd) unwatch(p);
  if (!p->poll) {
    poll_box *box = xalloc(sizeof *box);
    box->p = p;
    box->h.data = box;
    if (uv_poll_init_socket(p->loop, &box->h, fd) != 0) {
      free(box);
      return -1;
    }
    p->poll = box;
    p->poll_fd = fd;
    update_ref(p);
  }
  return uv_poll_start(&p->poll->h, events, on_poll) == 0 ? 0 : -1;
}

/* The handles keep the loop alive only while work is pending (as the
 * writer's async handle): an idle connection does not hold a process up. */
static void update_ref(pg *p) {
  int pending = p->wq_head || p->rq_head || p->u_head || p->waiters;
  void (*f)(uv_handle_t *) = pending ? uv_ref : uv_unref;
  if (p->state != ST_CLOSED) f((uv_handle_t *)&p->timer);
  if (p->poll) f((uv_handle_t *)&p->poll->h);
}

static void drop_conn(pg *p) {
  unwatch(p);
  if (p->conn) PQfinish(p->conn);
  p->conn = NULL;
  p->flushing = 0;
}

/* libpq's message on one line, without the trailing newline. */
static void conn_error(pg *p, char *out, size_t n) {
  const char *m = p->conn ? PQerrorMessage(p->conn) : "";
  if (!m || !m[0]) m = "connection failed";
  snprintf(out, n, "%s", m);
  for (char *c = out; *c; c++) {
    if (*c == '\n') *c = (c[1] ? ' ' : '\0');
  }
}

/* ---- connecting -------------------------------------------------------- */

static uint32_t backoff_ms(pg *p) {
  uint64_t d = p->o.backoff_min_ms;
  for (uint32_t i = 1; i < p->attempts && d < p->o.backoff_max_ms; i++) d *= 2;
  if (d > p->o.backoff_max_ms) d = p->o.backoff_max_ms;
  /* jitter: somewhere in [d/2, d] */
  p->rand ^= p->rand << 13;
  p->rand ^= p->rand >> 7;
  p->rand ^= p->rand << 17;
  return (uint32_t)(d / 2 + p->rand % (d / 2 + 1));
}

static void on_backoff(uv_timer_t *t) { connect_start(t->data); }

static void call_waiters(pg *p, int status, const char *msg) {
  waiter *w = p->waiters;
  p->waiters = NULL;
  while (w) {
    waiter *next = w->next;
    w->done(w->cookie, status, msg, NULL);
    free(w);
    w = next;
  }
}

/* One connection attempt failed: wait, then try again. */
static void attempt_failed(pg *p, const char *why) {
  snprintf(p->last_err, sizeof p->last_err, "%s", why);
  drop_conn(p);
  p->state = ST_BACKOFF;
  p->attempts++;
  uv_timer_stop(&p->timer);
  uv_timer_start(&p->timer, on_backoff, backoff_ms(p), 0);
  pg_batch *h = NULL, *t = NULL;
  expire_queued(p, &h, &t);
  char msg[600];
  snprintf(msg, sizeof msg, "cannot connect to PostgreSQL: %s", p->last_err);
  update_ref(p);
  call_waiters(p, STORE_EIO, msg);
  call_all(h);
}

static void on_connect_timeout(uv_timer_t *t) {
  pg *p = t->data;
  char msg[64];
  snprintf(msg, sizeof msg, "no answer within %u ms", p->o.connect_timeout_ms);
  attempt_failed(p, msg);
}

static void pump(pg *p);

static void connected(pg *p) {
  uv_timer_stop(&p->timer);
  if (PQsetnonblocking(p->conn, 1) != 0 || PQenterPipelineMode(p->conn) != 1) {
    char e[512];
    conn_error(p, e, sizeof e);
    attempt_failed(p, e);
    return;
  }
  p->state = ST_READY;
  p->attempts = 0;
  p->stats.connects++;
  prep_reset(p);
  if (watch(p, PQsocket(p->conn), UV_READABLE) != 0) {
    lost(p, "cannot watch the connection's socket");
    return;
  }
  call_waiters(p, 0, NULL);
  if (p->state == ST_READY) pump(p);
  if (p->state == ST_READY) update_ref(p);
}

/* Advances the connection state machine after its socket was ready (or at
 * the start, as libpq wants: PGRES_POLLING_WRITING first). */
static void connect_step(pg *p, PostgresPollingStatusType s) {
  char e[512];
  if (s == PGRES_POLLING_OK) {
    connected(p);
    return;
  }
  if (s == PGRES_POLLING_FAILED) {
    conn_error(p, e, sizeof e);
    attempt_failed(p, e);
    return;
  }
  if (watch(p, PQsocket(p->conn), s == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE) != 0)
    attempt_failed(p, "cannot watch the connection's socket");
}

static void quiet_notice(void *arg, const char *message) {
  (void)arg;
  (void)message; /* NOTICEs (e.g. "already exists, skipping") are not errors */
}

static void connect_start(pg *p) {
  p->conn = PQconnectStart(p->conninfo);
  if (!p->conn) {
    attempt_failed(p, "out of memory");
    return;
  }
  if (PQstatus(p->conn) == CONNECTION_BAD) {
    char e[512];
    conn_error(p, e, sizeof e);
    attempt_failed(p, e);
    return;
  }
  PQsetNoticeProcessor(p->conn, quiet_notice, NULL);
  p->state = ST_CONNECTING;
  uv_timer_start(&p->timer, on_connect_timeout, p->o.connect_timeout_ms, 0);
  connect_step(p, PGRES_POLLING_WRITING);
}

/* ---- sending ----------------------------------------------------------- */

static int send_stmt(pg *p, const pg_batch *b, const stmt *s) {
  const char *small_v[16];
  int small_l[16], small_f[16];
  const char **v = small_v;
  int *l = small_l, *f = small_f;
  if (s->nparams > 16) {
    v = xalloc(sizeof *v * (size_t)s->nparams);
    l = xalloc(sizeof *l * (size_t)s->nparams);
    f = xalloc(sizeof *f * (size_t)s->nparams);
  }
  const char *q = b->buf.data + s->params;
  for (int i = 0; i < s->nparams; i++) {
    param_hdr h;
    memcpy(&h, q, sizeof h);
    q += sizeof h;
    v[i] = h.len < 0 ? NULL : q;
    l[i] = h.len < 0 ? 0 : h.len;
    f[i] = h.format;
    q += (h.len < 0 ? 0 : h.len) + 1;
  }
  int np = s->nparams; /* no parameters: no arrays (gcc sees them unset then) */
  int ok;
  if (s->prep >= 0) {
    char name[24];
    snprintf(name, sizeof name, "sluice_%d", s->prep);
    ok = PQsendQueryPrepared(p->conn, name, np, np ? v : NULL, np ? l : NULL, np ? f : NULL, 0);
  } else {
    ok = PQsendQueryParams(p->conn, b->buf.data + s->sql, np, NULL, np ? v : NULL,
                           np ? l : NULL, np ? f : NULL, 0);
  }
  if (v != small_v) {
    free(v);
    free(l);
    free(f);
  }
  return ok;
}

static uint64_t sql_hash(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

/* Decides how statement s of write unit u is sent (s->prep), and sends the
 * Parse when this unit prepares it; 0, or -1 if libpq refused. */
static int prep_stmt(pg *p, unit *u, const pg_batch *b, stmt *s) {
  const char *sql = b->buf.data + s->sql;
  uint64_t h = sql_hash(sql);
  s->prep = -1;
  prep_entry *e = NULL;
  for (size_t i = 0; i < p->nprep; i++) {
    if (p->prep[i].hash == h && !strcmp(p->prep[i].sql, sql)) {
      e = &p->prep[i];
      break;
    }
  }
  if (!e) { /* the first time: remembered, sent unnamed */
    if (p->nprep < PREP_MAX) {
      e = &p->prep[p->nprep++];
      e->hash = h;
      e->sql = xstrdup(sql);
      e->state = PREP_NONE;
    }
    return 0;
  }
  int i = (int)(e - p->prep);
  if (e->state == PREP_READY || (e->state == PREP_SENDING && e->unit == u)) {
    s->prep = i;
  } else if (e->state == PREP_NONE) {
    /* an earlier transaction's Parse in flight could still fail: this one
     * prepares it only when none is */
    char name[24];
    snprintf(name, sizeof name, "sluice_%d", i);
    if (!PQsendPrepare(p->conn, name, sql, s->nparams, NULL)) return -1;
    e->state = PREP_SENDING;
    e->unit = u;
    if (!u->preps) u->preps = xalloc(sizeof *u->preps * PREP_MAX);
    u->preps[u->nprep++] = i;
    s->prep = i;
  }
  return 0;
}

/* ---- rows: one statement per SQL in a unit (pg_batch_add_row) ---------- */

/* a row's parameter i: its bytes (NULL: SQL NULL) */
static const char *row_param(const pg_batch *b, const stmt *s, int i, int32_t *len) {
  const char *q = b->buf.data + s->params;
  for (int k = 0;; k++) {
    param_hdr h;
    memcpy(&h, q, sizeof h);
    q += sizeof h;
    if (k == i) {
      *len = h.len;
      return h.len < 0 ? NULL : q;
    }
    q += (h.len < 0 ? 0 : h.len) + 1;
  }
}

static uint64_t row_hash(const pg_batch *b, const stmt *s) {
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < s->row_key; i++) {
    int32_t n;
    const char *v = row_param(b, s, i, &n);
    for (int32_t k = 0; v && k < n; k++) h = (h ^ (unsigned char)v[k]) * 1099511628211ull;
    h = (h ^ (uint64_t)(uint32_t)n) * 1099511628211ull;
  }
  return h;
}

static int row_same_key(const pg_batch *a, const stmt *x, const pg_batch *b, const stmt *y) {
  for (int i = 0; i < x->row_key; i++) {
    int32_t n, m;
    const char *v = row_param(a, x, i, &n), *w = row_param(b, y, i, &m);
    if (n != m || (n > 0 && memcmp(v, w, (size_t)n) != 0)) return 0;
  }
  return 1;
}

typedef struct {
  pg_batch *b;
  stmt *s;
} row_ref;

static void put_be32(sbuf *o, uint32_t x) {
  unsigned char c[4] = {(unsigned char)(x >> 24), (unsigned char)(x >> 16), (unsigned char)(x >> 8),
                        (unsigned char)x};
  sbuf_add(o, c, 4);
}

/* The statement for the rows of one SQL (first: the first of them in the
 * unit): each parameter becomes an array (text[], binary format) of that
 * parameter of every row, in order; of rows with the same key only the
 * last is kept, since one INSERT ... ON CONFLICT DO UPDATE may not touch a
 * row twice, and one after another the last would win. */
static pg_batch *merge_rows(row_ref *rows, size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  size_t *slot = xalloc(sizeof *slot * cap); /* row index + 1; 0: empty */
  char *keep = xalloc(n);
  for (size_t i = 0; i < n; i++) {
    size_t k = (size_t)row_hash(rows[i].b, rows[i].s) & (cap - 1);
    while (slot[k] && !row_same_key(rows[slot[k] - 1].b, rows[slot[k] - 1].s, rows[i].b, rows[i].s))
      k = (k + 1) & (cap - 1);
    if (slot[k]) keep[slot[k] - 1] = 0;
    slot[k] = i + 1;
    keep[i] = 1;
  }
  const stmt *first = rows[0].s;
  int np = first->nparams;
  sbuf *arr = xalloc(sizeof *arr * (size_t)np);
  size_t kept = 0;
  for (size_t i = 0; i < n; i++) kept += keep[i];
  for (int j = 0; j < np; j++) {
    int nulls = 0;
    for (size_t i = 0; i < n; i++) {
      int32_t len;
      if (keep[i] && !row_param(rows[i].b, rows[i].s, j, &len)) nulls = 1;
    }
    put_be32(&arr[j], 1);     /* dimensions */
    put_be32(&arr[j], (uint32_t)nulls);
    put_be32(&arr[j], 25);    /* element type: text */
    put_be32(&arr[j], (uint32_t)kept);
    put_be32(&arr[j], 1);     /* lower bound */
    for (size_t i = 0; i < n; i++) {
      if (!keep[i]) continue;
      int32_t len;
      const char *v = row_param(rows[i].b, rows[i].s, j, &len);
      put_be32(&arr[j], v ? (uint32_t)len : 0xffffffffu);
      if (v) sbuf_add(&arr[j], v, (size_t)len);
    }
  }
  const char **v = xalloc(sizeof *v * (size_t)np);
  int *l = xalloc(sizeof *l * (size_t)np), *f = xalloc(sizeof *f * (size_t)np);
  for (int j = 0; j < np; j++) {
    v[j] = arr[j].data;
    l[j] = (int)arr[j].len;
    f[j] = 1;
  }
  pg_batch *m = pg_batch_new();
  pg_batch_add(m, stmt_sql(rows[0].b, first), np, v, l, f);
  m->st[0].has_upsert = first->has_upsert && !rows[0].b->upserts; /* as sent: inserts only */
  for (int j = 0; j < np; j++) sbuf_free(&arr[j]);
  free(arr);
  free(v);
  free(l);
  free(f);
  free(slot);
  free(keep);
  return m;
}

/* Decides which statements of u's batches are sent: each SQL of rows once,
 * at its first row, holding them all (merged); the others skipped. */
static void plan_rows(unit *u) {
  row_ref *rows = NULL;
  size_t n = 0, cap = 0;
  for (pg_batch *b = u->head; b; b = b->next) {
    for (size_t i = 0; i < b->n; i++) {
      stmt *s = &b->st[i];
      s->skip = 0;
      s->merged = NULL;
      s->multi = 0;
      if (!s->row_key) continue;
      if (n == cap) {
        cap = cap ? 2 * cap : 64;
        rows = realloc(rows, sizeof *rows * cap);
        if (!rows) abort();
      }
      rows[n++] = (row_ref){b, s};
    }
  }
  for (size_t i = 0; i < n; i++) {
    if (!rows[i].s || rows[i].s->skip) continue;
    const char *sql = stmt_sql(rows[i].b, rows[i].s);
    /* rows i.. of this SQL, gathered in place at i.. */
    size_t m = i + 1;
    for (size_t k = i + 1; k < n; k++) {
      if (rows[k].s->nparams == rows[i].s->nparams && !strcmp(stmt_sql(rows[k].b, rows[k].s), sql)) {
        row_ref t = rows[k];
        memmove(&rows[m + 1], &rows[m], sizeof *rows * (k - m));
        rows[m++] = t;
      }
    }
    pg_batch *mb = merge_rows(&rows[i], m - i);
    mb->next = u->merged;
    u->merged = mb;
    stmt *head = rows[i].s;
    head->merged = mb;
    for (size_t k = i + 1; k < m; k++) {
      rows[k].s->skip = 1;
      if (rows[k].b != rows[i].b) head->multi = 1;
    }
    i = m - 1;
  }
  free(rows);
}

/* the next statement of u whose results come, from (cur, cur_i) on */
static void settle_cursor(unit *u) {
  while (u->cur && (u->cur_i >= u->cur->n || u->cur->st[u->cur_i].skip)) {
    if (++u->cur_i >= u->cur->n) {
      u->cur_i = 0;
      u->cur = u->cur->next;
      while (u->cur && u->cur->n == 0) u->cur = u->cur->next;
    }
  }
}

/* Sends the batches of u and a Sync; 0, or -1 if libpq refused. */
static int send_unit(pg *p, unit *u) {
  plan_rows(u);
  if (u->write || u->head->prepare) { /* the Parses first: their results come before any other */
    for (size_t i = 0; u->write && p->prelude && i < p->prelude->n; i++) {
      if (prep_stmt(p, u, p->prelude, &p->prelude->st[i]) != 0) return -1;
    }
    for (pg_batch *b = u->head; b; b = b->next) {
      for (size_t i = 0; i < b->n; i++) {
        stmt *s = &b->st[i];
        if (s->skip) continue;
        if (s->merged ? prep_stmt(p, u, s->merged, &s->merged->st[0]) : prep_stmt(p, u, b, s))
          return -1;
      }
    }
  } else {
    for (pg_batch *b = u->head; b; b = b->next) {
      for (size_t i = 0; i < b->n; i++) {
        b->st[i].prep = -1;
        if (b->st[i].merged) b->st[i].merged->st[0].prep = -1;
      }
    }
  }
  if (u->write && p->prelude) {
    for (size_t i = 0; i < p->prelude->n; i++) {
      if (!send_stmt(p, p->prelude, &p->prelude->st[i])) return -1;
    }
    u->prelude_left = p->prelude->n;
  }
  for (pg_batch *b = u->head; b; b = b->next) {
    b->res = xalloc(sizeof *b->res * (b->n ? b->n : 1));
    for (size_t i = 0; i < b->n; i++) {
      stmt *s = &b->st[i];
      if (s->skip) continue;
      if (!(s->merged ? send_stmt(p, s->merged, &s->merged->st[0]) : send_stmt(p, b, s))) return -1;
    }
  }
  if (!PQpipelineSync(p->conn)) return -1;
  /* the first statement whose results come (skipping empty batches and merged rows) */
  u->cur = u->head;
  u->cur_i = 0;
  settle_cursor(u);
  return 0;
}

static void free_unit(unit *u) {
  while (u->merged) {
    pg_batch *m = u->merged;
    u->merged = m->next;
    pg_batch_free(m);
  }
  free(u->preps);
  free(u->errmsg);
  free(u);
}

/* A new session has no prepared statement. */
static void prep_reset(pg *p) {
  for (size_t i = 0; i < p->nprep; i++) {
    if (p->prep[i].state != PREP_NEVER) p->prep[i].state = PREP_NONE;
  }
}

static void push_unit(pg *p, unit *u) {
  if (p->u_tail) {
    p->u_tail->next = u;
  } else {
    p->u_head = u;
  }
  p->u_tail = u;
}

/* Sends what libpq holds; watches for writability while some is left. */
static void flush(pg *p) {
  int r = PQflush(p->conn);
  if (r < 0) {
    char e[512];
    conn_error(p, e, sizeof e);
    lost(p, e);
    return;
  }
  if ((r == 1) != p->flushing) {
    p->flushing = r == 1;
    if (watch(p, PQsocket(p->conn), UV_READABLE | (p->flushing ? UV_WRITABLE : 0)) != 0)
      lost(p, "cannot watch the connection's socket");
  }
}

/* Sends the next write group (unless one is in flight) and every read. */
static void pump(pg *p) {
  if (p->state != ST_READY) return;
  char e[512];
  if (!p->write_in_flight && p->wq_head) {
    pg_batch *first = p->wq_head, *last = first;
    uint32_t n = 1;
    if (!first->alone) {
      while (last->next && !last->next->alone && n < p->o.group_max) {
        last = last->next;
        n++;
      }
    }
    p->wq_head = last->next;
    if (!p->wq_head) p->wq_tail = NULL;
    last->next = NULL;
    unit *u = xalloc(sizeof *u);
    u->write = 1;
    u->head = first;
    u->sent_ns = uv_hrtime();
    push_unit(p, u); /* before sending: a failure below is an unknown outcome */
    p->write_in_flight = 1;
    if (send_unit(p, u) != 0) {
      conn_error(p, e, sizeof e);
      lost(p, e);
      return;
    }
  }
  while (p->rq_head) {
    pg_batch *b = p->rq_head;
    p->rq_head = b->next;
    if (!p->rq_head) p->rq_tail = NULL;
    b->next = NULL;
    unit *u = xalloc(sizeof *u);
    u->head = b;
    push_unit(p, u);
    if (send_unit(p, u) != 0) {
      conn_error(p, e, sizeof e);
      lost(p, e);
      return;
    }
  }
  flush(p);
}

static void on_kick(uv_idle_t *h) {
  pg *p = h->data;
  uv_idle_stop(h);
  p->kicking = 0;
  if (p->state != ST_READY) return;
  call_waiters(p, 0, NULL);
  pump(p);
  if (p->state == ST_READY) update_ref(p);
}

static void kick(pg *p) {
  if (p->kicking) return;
  p->kicking = 1;
  uv_idle_start(&p->kick, on_kick);
}

/* ---- results ----------------------------------------------------------- */

static void note_error(unit *u, const PGresult *r) {
  if (u->errmsg) return; /* the first error is the one that says why */
  const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
  if (!primary) primary = PQresultErrorMessage(r);
  if (!primary || !primary[0]) primary = "statement failed";
  u->errmsg = fmt("PostgreSQL: %s (SQLSTATE %s)%s%s", primary, state ? state : "none",
                  detail ? ": " : "", detail ? detail : "");
  snprintf(u->sqlstate, sizeof u->sqlstate, "%s", state ? state : "");
  u->bad = u->cur;
  const stmt *s = u->cur && u->cur_i < u->cur->n ? &u->cur->st[u->cur_i] : NULL;
  /* rows of several batches in one statement: whose row it was is not known */
  if (s && s->multi) u->bad = NULL;
  if (s && s->merged && s->merged->st[0].has_upsert && !strcmp(u->sqlstate, "23505")) u->dup_row = 1;
}

/* Puts the batches of list back at the front of the write queue, in order. */
static void requeue_front(pg *p, pg_batch *list, int alone) {
  pg_batch *h = NULL, *t = NULL;
  while (list) {
    pg_batch *next = list->next;
    clear_results(list);
    list->alone = alone;
    append(&h, &t, list);
    list = next;
  }
  if (!h) return;
  t->next = p->wq_head;
  p->wq_head = h;
  if (!p->wq_tail) p->wq_tail = t;
}

/* The Sync of the unit at the head came: its transaction is over. */
static void finish_unit(pg *p) {
  unit *u = p->u_head;
  p->u_head = u->next;
  if (!p->u_head) p->u_tail = NULL;
  if (u->write) p->write_in_flight = 0;
  pg_batch *done_h = NULL, *done_t = NULL, *b = u->head;
  if (u->prep_failed) {
    /* nothing ran: the same batches go again, first, without that Parse */
    if (u->write) {
      requeue_front(p, b, b->alone);
    } else { /* a read unit is one batch */
      clear_results(b);
      b->next = p->rq_head;
      p->rq_head = b;
      if (!p->rq_tail) p->rq_tail = b;
    }
    free_unit(u);
    update_ref(p);
    if (p->state == ST_READY) pump(p);
    return;
  }
  if (!u->errmsg) {
    if (u->write) {
      uint64_t n = 0, us = (uv_hrtime() - u->sent_ns) / 1000;
      for (pg_batch *x = b; x; x = x->next) n++;
      p->stats.commits++;
      p->stats.commit_us_sum += us;
      writer_hist_add(p->stats.batch_hist, writer_batch_bounds, n);
      writer_hist_add(p->stats.commit_hist, writer_commit_bounds_us, us);
    }
    while (b) {
      pg_batch *next = b->next;
      b->status = 0;
      if (u->write) {
        p->stats.batches++;
      } else {
        p->stats.reads++;
      }
      append(&done_h, &done_t, b);
      b = next;
    }
  } else if (u->prelude_failed) {
    /* the transaction's own condition failed: no batch of it can commit */
    int status = pg_status_of_sqlstate(u->sqlstate);
    while (b) {
      pg_batch *next = b->next;
      set_failed(b, status, u->sqlstate, xstrdup(u->errmsg));
      append(&done_h, &done_t, b);
      b = next;
    }
  } else if (u->write && u->dup_row) {
    /* a row inserting only found its key (a step written again): nothing
     * committed, the same batches go again, first, their rows as upserts */
    for (pg_batch *x = b; x; x = x->next) x->upserts = 1;
    requeue_front(p, b, b->alone);
  } else if (!u->write || !b->next) {
    set_failed(b, pg_status_of_sqlstate(u->sqlstate), u->sqlstate, xstrdup(u->errmsg));
    append(&done_h, &done_t, b);
  } else if (u->bad && pg_status_of_sqlstate(u->sqlstate) == STORE_EINVAL) {
    /* the bad batch's own statement: it fails alone, the others go again together */
    pg_batch *keep_h = NULL, *keep_t = NULL;
    while (b) {
      pg_batch *next = b->next;
      if (b == u->bad) {
        set_failed(b, STORE_EINVAL, u->sqlstate, xstrdup(u->errmsg));
        append(&done_h, &done_t, b);
      } else {
        append(&keep_h, &keep_t, b);
      }
      b = next;
    }
    requeue_front(p, keep_h, 0);
  } else {
    requeue_front(p, b, 1); /* one transaction each finds out which fail */
  }
  free_unit(u);
  update_ref(p);
  call_all(done_h);
  if (p->state == ST_READY) pump(p);
}

/* Reads every result libpq has without waiting. */
static void process(pg *p) {
  while (p->state == ST_READY && p->u_head && !PQisBusy(p->conn)) {
    unit *u = p->u_head;
    PGresult *r = PQgetResult(p->conn);
    if (u->prep_i < u->nprep) { /* a Parse's result, then its end */
      if (!r) {
        u->prep_i++;
        continue;
      }
      prep_entry *e = &p->prep[u->preps[u->prep_i]];
      ExecStatusType ps = PQresultStatus(r);
      if (ps == PGRES_COMMAND_OK) {
        e->state = PREP_READY;
      } else {
        /* refused: never again (the SQL goes unnamed, and its error, if it
         * has one, reaches its batch); aborted behind another: later */
        e->state = ps == PGRES_PIPELINE_ABORTED ? PREP_NONE : PREP_NEVER;
        u->prep_failed = 1;
      }
      PQclear(r);
      continue;
    }
    if (!r) {
      if (u->prelude_left) { /* the end of a prelude statement's results */
        u->prelude_left--;
        continue;
      }
      if (!u->cur) break; /* nothing more until input comes */
      /* the end of the current statement's results */
      u->cur_i++;
      settle_cursor(u);
      continue;
    }
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_PIPELINE_SYNC) {
      PQclear(r);
      finish_unit(p);
      continue;
    }
    if (u->prelude_left) {
      if (st == PGRES_FATAL_ERROR) {
        note_error(u, r);
        u->bad = NULL;
        u->prelude_failed = 1;
      }
      PQclear(r);
      continue;
    }
    if (st == PGRES_FATAL_ERROR) note_error(u, r);
    if (u->cur) {
      PQclear(u->cur->res[u->cur_i]);
      u->cur->res[u->cur_i] = r;
    } else {
      PQclear(r);
    }
  }
  PGnotify *n;
  while (p->state == ST_READY && (n = PQnotifies(p->conn)) != NULL) PQfreemem(n);
  if (p->state == ST_READY && PQstatus(p->conn) == CONNECTION_BAD) {
    char e[512];
    conn_error(p, e, sizeof e);
    lost(p, e);
  }
}

/* The connection broke: what was in flight has an unknown outcome. */
static void lost(pg *p, const char *why) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s", why); /* why may be libpq's, freed below */
  snprintf(p->last_err, sizeof p->last_err, "%s", msg);
  drop_conn(p);
  p->state = ST_BACKOFF;
  p->stats.lost++;
  p->down_since = now_ms(p);
  p->attempts = 0;
  p->write_in_flight = 0;
  pg_batch *h = NULL, *t = NULL;
  unit *u = p->u_head;
  p->u_head = p->u_tail = NULL;
  while (u) {
    unit *next = u->next;
    pg_batch *b = u->head;
    while (b) {
      pg_batch *bn = b->next;
      if (u->write) {
        p->stats.unknown++;
        set_failed(b, STORE_EIO, NULL,
                   fmt("the connection to PostgreSQL was lost before the commit was confirmed "
                       "(%s): the write may or may not have committed",
                       msg));
      } else {
        set_failed(b, STORE_EIO, NULL,
                   fmt("the connection to PostgreSQL was lost during the statement (%s)", msg));
      }
      append(&h, &t, b);
      b = bn;
    }
    free_unit(u);
    u = next;
  }
  prep_reset(p);
  uv_timer_stop(&p->timer);
  uv_timer_start(&p->timer, on_backoff, backoff_ms(p), 0);
  update_ref(p);
  call_all(h);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  pg *p = ((poll_box *)h->data)->p;
  if (p->state == ST_CONNECTING) {
    uv_poll_stop(h); /* libpq may close this socket now */
    connect_step(p, PQconnectPoll(p->conn));
    return;
  }
  if (p->state != ST_READY) return;
  if (status < 0) {
    lost(p, uv_strerror(status));
    return;
  }
  if (events & UV_READABLE) {
    if (!PQconsumeInput(p->conn)) {
      char e[512];
      conn_error(p, e, sizeof e);
      lost(p, e);
      return;
    }
    process(p);
  }
  if (p->state == ST_READY && p->flushing) flush(p);
}

/* ---- the API ----------------------------------------------------------- */

static void on_closed(uv_handle_t *h) {
  pg *p = h->data;
  if (--p->open_handles == 0) {
    for (size_t i = 0; i < p->nprep; i++) free(p->prep[i].sql);
    free(p->conninfo);
    free(p);
  }
}

int pg_open(pg **out, uv_loop_t *loop, const char *conninfo, const pg_opts *opts, char *err,
            size_t errsz) {
  *out = NULL;
  char *perr = NULL;
  PQconninfoOption *parsed = PQconninfoParse(conninfo, &perr);
  if (!parsed) {
    snprintf(err, errsz, "PostgreSQL connection string '%s': %s", conninfo,
             perr ? perr : "out of memory");
    for (char *c = err; *c; c++) {
      if (*c == '\n') *c = (c[1] ? ' ' : '\0');
    }
    PQfreemem(perr);
    return STORE_EINVAL;
  }
  PQconninfoFree(parsed);
  pg *p = xalloc(sizeof *p);
  p->loop = loop;
  p->conninfo = xstrdup(conninfo);
  pg_opts d = {50, 5000, 10000, 30000, 1024};
  if (opts) {
    if (opts->backoff_min_ms) d.backoff_min_ms = opts->backoff_min_ms;
    if (opts->backoff_max_ms) d.backoff_max_ms = opts->backoff_max_ms;
    if (opts->connect_timeout_ms) d.connect_timeout_ms = opts->connect_timeout_ms;
    if (opts->queue_timeout_ms) d.queue_timeout_ms = opts->queue_timeout_ms;
    if (opts->group_max) d.group_max = opts->group_max;
  }
  if (d.backoff_max_ms < d.backoff_min_ms) d.backoff_max_ms = d.backoff_min_ms;
  p->o = d;
  uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  uv_idle_init(loop, &p->kick);
  p->kick.data = p;
  p->open_handles = 2;
  p->rand = uv_hrtime() ^ (uint64_t)(uintptr_t)p;
  if (!p->rand) p->rand = 1;
  p->down_since = now_ms(p);
  snprintf(p->last_err, sizeof p->last_err, "not connected yet");
  connect_start(p);
  *out = p;
  return 0;
}

int pg_when_connected(pg *p, pg_done_fn done, void *cookie) {
  if (p->state == ST_CLOSED) return -1;
  waiter *w = xalloc(sizeof *w);
  w->done = done;
  w->cookie = cookie;
  w->next = p->waiters;
  p->waiters = w;
  if (p->state == ST_READY) kick(p);
  update_ref(p);
  return 0;
}

void pg_close(pg *p) {
  if (!p || p->state == ST_CLOSED) return;
  p->state = ST_CLOSED;
  drop_conn(p);
  uv_timer_stop(&p->timer);
  uv_close((uv_handle_t *)&p->timer, on_closed);
  uv_idle_stop(&p->kick);
  uv_close((uv_handle_t *)&p->kick, on_closed);
  pg_batch *h = NULL, *t = NULL;
  for (unit *u = p->u_head, *next; u; u = next) {
    next = u->next;
    for (pg_batch *b = u->head, *bn; b; b = bn) {
      bn = b->next;
      set_failed(b, STORE_EIO, NULL,
                 xstrdup(u->write ? "the PostgreSQL connection was closed before the commit was "
                                    "confirmed: the write may or may not have committed"
                                  : "the PostgreSQL connection was closed during the statement"));
      append(&h, &t, b);
    }
    free_unit(u);
  }
  p->u_head = p->u_tail = NULL;
  pg_batch *queues[2] = {p->wq_head, p->rq_head};
  p->wq_head = p->wq_tail = p->rq_head = p->rq_tail = NULL;
  for (int q = 0; q < 2; q++) {
    for (pg_batch *b = queues[q], *bn; b; b = bn) {
      bn = b->next;
      set_failed(b, STORE_EIO, NULL,
                 xstrdup("the PostgreSQL connection was closed before this was sent: not written"));
      append(&h, &t, b);
    }
  }
  call_waiters(p, STORE_EIO, "the PostgreSQL connection was closed");
  pg_batch_free(p->prelude);
  p->prelude = NULL;
  call_all(h);
}

void pg_set_prelude(pg *p, pg_batch *b) {
  if (p->state == ST_CLOSED) {
    pg_batch_free(b);
    return;
  }
  pg_batch_free(p->prelude);
  p->prelude = b;
}

static int queue(pg *p, pg_batch *b, pg_done_fn done, void *cookie, int read) {
  if (p->state == ST_CLOSED) {
    pg_batch_free(b);
    return -1;
  }
  b->done = done;
  b->cookie = cookie;
  b->read = read;
  if (read) {
    append(&p->rq_head, &p->rq_tail, b);
  } else {
    append(&p->wq_head, &p->wq_tail, b);
  }
  if (p->state == ST_READY) kick(p);
  update_ref(p);
  return 0;
}

int pg_submit(pg *p, pg_batch *b, pg_done_fn done, void *cookie) {
  return queue(p, b, done, cookie, 0);
}

int pg_read(pg *p, pg_batch *b, pg_done_fn done, void *cookie) {
  return queue(p, b, done, cookie, 1);
}

int pg_read_prepared(pg *p, pg_batch *b, pg_done_fn done, void *cookie) {
  b->prepare = 1;
  return queue(p, b, done, cookie, 1);
}

void pg_get_stats(const pg *p, pg_stats *out) {
  *out = p->stats;
  out->connected = p->state == ST_READY;
}
