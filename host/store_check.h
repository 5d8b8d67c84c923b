/* store_check.h: `sluice store check`: whether a store's indexes agree with
 * its records and its records decode, on either backend (store_any.h).
 *
 * On both backends, every record is read in pages and decoded with the
 * record codec (decode: records of runs, steps, run logs, events, sends,
 * consumers, schedules, keys and namespaces; quota counts and trim marks
 * are numbers), event times must not decrease with positions, and no
 * position stored may be beyond the last one taken (events, sends, trim
 * marks, the dispatch cursor).
 *
 * LMDB keeps its indexes as databases of their own, so each is checked
 * both ways: every run record has its entry in the history, by namespace,
 * by pipeline, by its status (and active iff not final), and every entry
 * of those listings names a run whose record says what the entry says;
 * every event has its entry in the stream index and every entry names an
 * event of that stream; every idempotency key names a run that exists. (A
 * store from before the listings by field, which sluice serve builds at
 * its next start, has only its history and active runs checked.)
 * Each finding is confirmed in one snapshot (store.h's probes), so a store
 * that a serve writes meanwhile is not reported for a record it moved
 * between two pages.
 *
 * PostgreSQL's listings are SQL indexes of its tables, kept by the server:
 * what can disagree there is checked by pgstore_check (run columns against
 * the run's record, counters, rows of runs that do not exist). */
#ifndef SLUICE_STORE_CHECK_H
#define SLUICE_STORE_CHECK_H

#include <stdio.h>
#include <uv.h>

#include "sbuf.h"
#include "store.h"

/* 0 if the JSON record decodes, else -1 with why in err */
typedef int (*store_decode_fn)(void *ud, const char *json, size_t n, char *err, size_t errsz);

typedef struct {
  size_t page;    /* records per read (0: 1000) */
  FILE *progress; /* a line every second or so once a check takes longer (NULL: none) */
  store_run_fields_fn run_fields;
  store_decode_fn decode;
  void *ud;
} store_check_opts;

#define STORE_CHECK_SHOWN 1000 /* problems kept for the report; the rest are counted */

typedef struct {
  int status;     /* 0: the check ran to its end (problems says what it found) */
  char err[1024]; /* why it could not, when status != 0 */
  store_census census;
  int64_t checked[STORE_KINDS];
  size_t problems;
  /* the first STORE_CHECK_SHOWN problems: pairs of C strings, what (the
   * record or index entry) then what is wrong with it */
  sbuf found;
} store_check_result;

typedef void (*store_check_done_fn)(void *cookie, const store_check_result *r);

/* Opens where read-only and starts the check on loop: done runs once, on
 * the loop, possibly before store_check returns. Returns 0, or a status
 * with err when the store does not open (done not called). */
int store_check(uv_loop_t *loop, const char *where, const store_check_opts *o,
                store_check_done_fn done, void *cookie, char *err, size_t errsz);

#endif
