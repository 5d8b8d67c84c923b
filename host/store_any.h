/* store_any.h: a store of either backend for the store tools (store_copy.h,
 * store_check.h): opened by a directory (LMDB, store.h) or a postgres://
 * URL (store_pg.h), with the reads the tools page through and the batch
 * they write, each completing through one callback shape: at once on LMDB
 * (done runs before the call returns), later on PostgreSQL. The tools are
 * written once over it; each operation here is the store.h operation of the
 * same name, or its pgstore_ twin (run records by id: pgstore_run_records). */
#ifndef SLUICE_STORE_ANY_H
#define SLUICE_STORE_ANY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store.h"
#include "store_pg.h"

struct writer; /* writer.h: LMDB's commits */

typedef struct {
  store *st;     /* LMDB, or */
  struct writer *w; /* (LMDB opened for writing) */
  pgstore *pg;   /* PostgreSQL */
  char name[512]; /* the directory, or the URL without its password */
} store_any;

typedef void (*store_any_fn)(void *cookie, int status, const char *err);

/* 1 if where names a PostgreSQL store (postgres:// or postgresql://). */
int store_any_is_url(const char *where);

/* Opens where: an LMDB store read-only unless writable (then created if
 * needed, with its writer), or a PostgreSQL store (connects in the
 * background; the first read fails if the schema is not this binary's).
 * Returns 0 or a status with err. */
int store_any_open(store_any *a, uv_loop_t *loop, const char *where, int writable, char *err,
                   size_t errsz);
/* Closes (the loop must run once more for an LMDB writer's handle). */
void store_any_close(store_any *a);

/* ---- reads ---- */
void store_any_census(store_any *a, store_census *out, store_any_fn done, void *cookie);
/* A page of named records of kind: STORE_K_NAMESPACES and STORE_K_KEYS
 * (every one at once: after and limit are ignored; keys' extra is the last
 * use), STORE_K_SCHEDULES, STORE_K_QUOTAS, STORE_K_TRIMS,
 * STORE_K_IDEMPOTENCY (pages of at most limit after `after`, as store.h
 * names their rows). */
void store_any_named(store_any *a, int kind, const char *after, size_t alen, size_t limit,
                     store_named_rows *out, store_any_fn done, void *cookie);
void store_any_consumers(store_any *a, store_blob_rows *out, store_any_fn done, void *cookie);
void store_any_sends(store_any *a, uint64_t after, size_t limit, store_blob_rows *out,
                     store_any_fn done, void *cookie);
/* the log in order: at most limit events after position `after` */
void store_any_events(store_any *a, uint64_t after, size_t limit, store_events *out,
                      store_any_fn done, void *cookie);
/* run records in id order after the id `after` (NULL: from the first) */
void store_any_runs(store_any *a, const char *after, size_t limit, store_rows *out,
                    store_any_fn done, void *cookie);
void store_any_steps(store_any *a, const char *run, size_t run_len, store_steps *out,
                     store_any_fn done, void *cookie);
void store_any_logs(store_any *a, const char *run, size_t run_len, store_rows *rows, int64_t **ids,
                    store_any_fn done, void *cookie);

/* ---- a walk through one kind's records, page by page ---- */
/* What store copy and store check go through: the page read last of one
 * kind and where the next starts. Pages of runs are store_rows (run records
 * by id), or with run_columns on PostgreSQL named rows whose extra holds the
 * columns the runs' listings index (pgstore_run_columns; set run_columns
 * only on PostgreSQL). */
typedef struct {
  int kind;
  int run_columns;
  sbuf after;         /* the next page starts after this name, or */
  uint64_t after_seq; /* after this position (sends, events) */
  store_named_rows named; /* the page, in the one of these its kind uses */
  store_blob_rows blobs;
  store_events ev;
  store_rows runs;
} store_any_pages;
void store_any_pages_init(store_any_pages *p);
void store_any_pages_free(store_any_pages *p);
/* the walk of kind, from its first record (-1: none, the page's place
 * forgotten) */
void store_any_pages_start(store_any_pages *p, int kind);
/* reads the page of at most limit rows where the walk stands */
void store_any_pages_read(store_any *a, store_any_pages *p, size_t limit, store_any_fn done,
                          void *cookie);
size_t store_any_pages_rows(const store_any_pages *p);
/* moves on to the page after the one read (limit as read); 0 if that one
 * was the last */
int store_any_pages_next(store_any_pages *p, size_t limit);

/* ---- writes ---- */
typedef struct {
  store_batch *b;    /* LMDB, or */
  pgstore_batch *pb; /* PostgreSQL */
} store_any_batch;
store_any_batch store_any_batch_new(const store_any *a);
void store_any_batch_free(store_any_batch *b);
size_t store_any_batch_count(const store_any_batch *b);
/* Commits b (spent from here, *b emptied); done runs once, later. Returns -1
 * if the store is closing (done not called). */
int store_any_commit(store_any *a, store_any_batch *b, store_any_fn done, void *cookie);

#endif
