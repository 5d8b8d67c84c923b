/* store_pg_int.h: what the files of the PostgreSQL backend (store_pg.c,
 * store_pg_runs.c, store_pg_tools.c, store_pg_hosts.c) share, and nothing else includes:
 * the store and batch
 * structs, statement parameters, and the read machinery (one statement
 * whose rows a parse callback copies into the caller's store.h structs,
 * then the caller's done runs). The interface is store_pg.h. */
#ifndef SLUICE_STORE_PG_INT_H
#define SLUICE_STORE_PG_INT_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"
#include "sbuf.h"
#include "store_pg.h"

struct pgstore {
  pg *conn;
  char name[256];
  int checked; /* the schema check answered */
  char *bad;   /* why the schema cannot be used (NULL: it can) */
};

struct pgstore_batch {
  pg_batch *pb;
  size_t ops;
  sbuf appends; /* events: le64 ts, then (u32 length, bytes) x 3: type, stream, data */
  size_t events;
  int64_t first_ts;
  sbuf sends; /* (u32 length, JSON) per send */
  size_t nsends;
  sbuf steps; /* pgstore_step_positions: (u8 kind, (u32 length, bytes) x 2: run, step) per step */
  size_t nsteps;
};

static inline void *xalloc(size_t n) {
  void *p = calloc(1, n);
  if (!p) {
    fprintf(stderr, "sluice: out of memory\n");
    abort();
  }
  return p;
}

/* Appends n bytes and a NUL to a growing byte array: their offset. */
static inline size_t keep(char **bytes, size_t *blen, size_t *bcap, const void *p, size_t n) {
  *bytes = sbuf_grow_array(*bytes, bcap, *blen + n + 1, 1);
  size_t off = *blen;
  if (n) memcpy(*bytes + off, p, n);
  *blen += n;
  (*bytes)[*blen] = '\0';
  return off;
}

/* ---- parameters: text and JSON in binary format (their bytes), numbers
 * and days as decimal text ---- */

#define MAXP 12
typedef struct {
  const char *v[MAXP];
  int len[MAXP], fmt[MAXP];
  char num[MAXP][32];
  int n;
} params;

static inline void p_str(params *p, const char *s, size_t n) {
  p->v[p->n] = s ? s : "";
  p->len[p->n] = (int)n;
  p->fmt[p->n++] = 1;
}
static inline void p_i64(params *p, int64_t x) {
  /* decimal by hand: snprintf was most of the host's cost of a step's
   * parameters (four numbers a step) */
  char tmp[24], *e = tmp + sizeof tmp, *q = e;
  uint64_t u = x < 0 ? 0 - (uint64_t)x : (uint64_t)x;
  do {
    *--q = (char)('0' + u % 10);
  } while (u /= 10);
  if (x < 0) *--q = '-';
  memcpy(p->num[p->n], q, (size_t)(e - q));
  p->num[p->n][e - q] = '\0';
  p->v[p->n] = p->num[p->n];
  p->len[p->n] = 0;
  p->fmt[p->n++] = 0;
}
static inline void p_text(params *p, const char *s, size_t n) { /* a short value sent as text */
  snprintf(p->num[p->n], sizeof p->num[0], "%.*s", (int)n, s);
  p->v[p->n] = p->num[p->n];
  p->len[p->n] = 0;
  p->fmt[p->n++] = 0;
}
static inline void add(pg_batch *b, const char *sql, params *p) {
  pg_batch_add(b, sql, p ? p->n : 0, p ? p->v : NULL, p ? p->len : NULL, p ? p->fmt : NULL);
}

static inline int has_nul(const char *s, size_t n) { return n && memchr(s, '\0', n) != NULL; }
static inline int bad_name(const char *s, size_t n) {
  return n == 0 || n > STORE_NAME_MAX || has_nul(s, n);
}

/* ---- reads ---- */

typedef struct rd rd;
/* copies the rows of r's statement into the caller's structs: 0 or a status */
typedef int (*parse_fn)(rd *r, const PGresult *res, char *err, size_t errsz);
struct rd {
  pgstore *s;
  pgstore_done_fn done;
  void *cookie;
  parse_fn parse;
  void *out, *out2;
  int *found;
  uint64_t after;
  size_t limit;
  /* trimming */
  pgstore_batch *tb;
  const store_trim_query *tq;
  char *stream; /* a copy of the trim query's key (or what else a parse needs) */
  size_t streamn;
};

/* What every write transaction of s starts with (pg.h's prelude): the
 * fence of host `fence` (NULL: none, not registered), then the schema
 * check: a schema this binary does not know fails the transaction before
 * it commits (22012; the check sent on open says why, in pgs_failed).
 * Once per transaction rather than once per batch: a group of 1,000
 * batches sent 1,000 checks. */
void pgs_set_prelude(pgstore *s, const char *fence);

/* A finished pg.h batch's failure in store.h's terms (a schema this binary
 * does not know first): status, with err set when not 0. */
int pgs_failed(pgstore *s, int status, const char *errmsg, char *err, size_t errsz);

/* A read of s whose rows parse copies out; then done(cookie, status, err). */
rd *pgs_new_rd(pgstore *s, parse_fn parse, pgstore_done_fn done, void *cookie);
/* Sends r's one statement (r is freed once done ran). */
void pgs_send_read(rd *r, const char *sql, params *p);
/* parse: the first column of the first row into the sbuf r->out, *r->found */
int pgs_parse_record(rd *r, const PGresult *res, char *err, size_t errsz);

static inline const char *val(const PGresult *res, int row, int col, size_t *n) {
  *n = (size_t)PQgetlength(res, row, col);
  return PQgetvalue(res, row, col);
}
static inline uint64_t u64(const PGresult *res, int row, int col) {
  return PQgetisnull(res, row, col) ? 0 : strtoull(PQgetvalue(res, row, col), NULL, 10);
}
static inline int64_t i64(const PGresult *res, int row, int col) {
  return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* a read refused before anything is sent (a value PostgreSQL cannot hold,
 * a bad limit): done runs at once, before the read returns */
static inline void refuse(pgstore_done_fn done, void *cookie, const char *msg) {
  done(cookie, STORE_EINVAL, msg);
}

#endif
