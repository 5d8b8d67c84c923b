/* records_census.c: store.h's census on LMDB (the tools section): how many
 * records of each type a store holds, counted in one read transaction by
 * mdb_stat of each database (exact, one lookup each), except steps (those
 * of `steps` plus the step log's ids not there yet: records_steps.c) and the marks kept
 * in meta under a prefix (store_lmdb.h: META_TRIM_MARK, META_KEY_USED),
 * which are counted by a scan of that prefix; then the store's positions.
 * In the process of a writer with lazily committed events, it counts every
 * event acknowledged before the call, as reads of events do. */
#include <stdio.h>
#include <string.h>

#include "store.h"
#include "store_lmdb.h"
#include "writer.h"

const char *const store_kind_names[STORE_KINDS] = {
    "runs",   "steps", "logs",      "idempotency", "events",   "trims",  "sends",
    "consumers", "schedules", "keys", "key_uses", "namespaces", "quotas"};

static const int KIND_DB[STORE_KINDS] = {DB_RUNS,    -1,           DB_LOGS,      DB_IDEMPOTENCY,
                                         DB_EVENTS,  -1,           DB_SENDS,     DB_CONSUMERS,
                                         DB_SCHEDULES, DB_API_KEYS, -1,          DB_NAMESPACES,
                                         DB_QUOTAS};

/* entries of meta whose key starts with prefix (plen bytes, with its NUL) */
static int count_prefix(store *s, MDB_txn *txn, const char *prefix, size_t plen, int64_t *n) {
  *n = 0;
  MDB_dbi meta = store_dbi(s, DB_META);
  if (!meta) return 0;
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, meta, &c);
  if (rc) return rc;
  MDB_val k = {plen, (void *)prefix}, v;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0) break;
    (*n)++;
  }
  mdb_cursor_close(c);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

int store_census_of(store *s, store_census *out, char *err, size_t errsz) {
  memset(out, 0, sizeof *out);
  writer_sync_reads(s); /* lazily committed events (writer.c) */
  MDB_txn *txn;
  int st = store_read_begin(s, &txn, err, errsz);
  if (st) return st;
  int rc = 0;
  for (int k = 0; k < STORE_KINDS && rc == 0; k++) {
    if (KIND_DB[k] < 0) continue;
    MDB_dbi dbi = store_dbi(s, KIND_DB[k]);
    if (!dbi) continue; /* a read-only store from before this database: none */
    MDB_stat ms;
    rc = mdb_stat(txn, dbi, &ms);
    if (rc == 0) out->n[k] = (int64_t)ms.ms_entries;
  }
  if (rc == 0) rc = records_steps_census(txn, s, &out->n[STORE_K_STEPS]);
  if (rc == 0) rc = count_prefix(s, txn, META_TRIM_MARK, sizeof META_TRIM_MARK, &out->n[STORE_K_TRIMS]);
  if (rc == 0) rc = count_prefix(s, txn, META_KEY_USED, sizeof META_KEY_USED, &out->n[STORE_K_KEY_USES]);
  store_read_end(s, txn);
  if (rc) {
    snprintf(err, errsz, "counting the records of store %s: %s", store_dir(s), mdb_strerror(rc));
    return store_status(rc);
  }
  if ((st = store_events_last(s, &out->events_last, &out->events_ts, err, errsz)) ||
      (st = store_sends_last(s, &out->sends_last, err, errsz)) ||
      (st = store_dispatch_cursor(s, &out->dispatched, err, errsz)))
    return st;
  return 0;
}
