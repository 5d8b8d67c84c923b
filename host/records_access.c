/* records_access.c: store.h's API keys, namespaces and quota counters on
 * LMDB (layouts in store_lmdb.h):
 *   api_keys    id -> JSON key record
 *   meta        "key_used\0" id -> time of last use (text)
 *               "api_keys" -> number of keys (decimal): kept for binaries
 *               before the record layer, which read it; this one counts
 *               the api_keys database itself (mdb_stat: exact, one lookup)
 *   namespaces  namespace -> JSON namespace record
 *   quotas      namespace "\0" YYYY-MM-DD -> runs counted (decimal), moved
 *               by the writer's counter add inside the commit */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "writer.h"

#define USED_PREFIX META_KEY_USED
#define COUNT_KEY "api_keys"

static int bad_name(const char *name, size_t nlen) {
  return nlen == 0 || nlen > STORE_NAME_MAX || memchr(name, '\0', nlen) != NULL;
}

/* "key_used\0" id into k */
static void used_key(sbuf *k, const char *id, size_t idlen) {
  sbuf_reset(k);
  sbuf_add(k, USED_PREFIX, sizeof USED_PREFIX); /* with its NUL */
  sbuf_add(k, id, idlen);
}

/* ---- API keys --------------------------------------------------------- */

int store_add_key(store_batch *b, const char *id, size_t idlen, const char *rec, size_t rlen) {
  if (bad_name(id, idlen) || rlen == 0) return STORE_EINVAL;
  wbatch_put(b, DB_API_KEYS, id, idlen, rec, rlen);
  wbatch_add(b, DB_META, COUNT_KEY, strlen(COUNT_KEY), 1);
  return 0;
}

int store_revoke_key(store_batch *b, const char *id, size_t idlen) {
  if (bad_name(id, idlen)) return STORE_EINVAL;
  sbuf k = SBUF_INIT;
  used_key(&k, id, idlen);
  wbatch_del(b, DB_API_KEYS, id, idlen);
  wbatch_del(b, DB_META, k.data, k.len);
  wbatch_add(b, DB_META, COUNT_KEY, strlen(COUNT_KEY), -1);
  sbuf_free(&k);
  return 0;
}

int store_touch_key(store_batch *b, const char *id, size_t idlen, const char *when, size_t wlen) {
  if (bad_name(id, idlen) || wlen == 0) return STORE_EINVAL;
  sbuf k = SBUF_INIT;
  used_key(&k, id, idlen);
  wbatch_put(b, DB_META, k.data, k.len, when, wlen);
  sbuf_free(&k);
  return 0;
}

int store_get_key(store *s, const char *id, size_t idlen, sbuf *rec, int *found, char *err,
                  size_t errsz) {
  return store_get(s, DB_API_KEYS, id, idlen, rec, found, err, errsz);
}

int store_key_count(store *s, int64_t *n, char *err, size_t errsz) {
  *n = 0;
  MDB_dbi dbi = store_dbi(s, DB_API_KEYS);
  if (dbi == 0) return 0; /* a read-only store from before API keys: none */
  MDB_txn *txn;
  int st = store_read_begin(s, &txn, err, errsz);
  if (st) return st;
  MDB_stat ms;
  int rc = mdb_stat(txn, dbi, &ms);
  store_read_end(s, txn);
  if (rc) {
    snprintf(err, errsz, "counting API keys in store %s: %s", store_dir(s), mdb_strerror(rc));
    return store_status(rc);
  }
  *n = (int64_t)ms.ms_entries;
  return 0;
}

int store_list_keys(store *s, store_named_rows *out, char *err, size_t errsz) {
  named_rows_reset(out);
  MDB_dbi keys = store_dbi(s, DB_API_KEYS), meta = store_dbi(s, DB_META);
  if (keys == 0) return 0;
  MDB_txn *txn;
  int st = store_read_begin(s, &txn, err, errsz);
  if (st) return st;
  MDB_cursor *c;
  sbuf uk = SBUF_INIT;
  int rc = mdb_cursor_open(txn, keys, &c);
  if (rc == 0) {
    MDB_val k, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      used_key(&uk, k.mv_data, k.mv_size);
      MDB_val mk = {uk.len, uk.data}, mv;
      int mrc = mdb_get(txn, meta, &mk, &mv);
      if (mrc && mrc != MDB_NOTFOUND) {
        rc = mrc;
        break;
      }
      named_rows_add(out, k.mv_data, k.mv_size, v.mv_data, v.mv_size, mrc ? NULL : mv.mv_data,
                     mrc ? 0 : mv.mv_size);
    }
    mdb_cursor_close(c);
  }
  store_read_end(s, txn);
  sbuf_free(&uk);
  named_rows_done(out);
  if (rc && rc != MDB_NOTFOUND) {
    snprintf(err, errsz, "reading API keys in store %s: %s", store_dir(s), mdb_strerror(rc));
    return store_status(rc);
  }
  return 0;
}

/* ---- namespaces --------------------------------------------------------- */

int store_put_namespace(store_batch *b, const char *ns, size_t nslen, const char *rec,
                        size_t rlen) {
  if (bad_name(ns, nslen) || rlen == 0) return STORE_EINVAL;
  wbatch_put(b, DB_NAMESPACES, ns, nslen, rec, rlen);
  return 0;
}

int store_get_namespace(store *s, const char *ns, size_t nslen, sbuf *rec, int *found,
                        char *err, size_t errsz) {
  return store_get(s, DB_NAMESPACES, ns, nslen, rec, found, err, errsz);
}

static int all_cb(void *ud, const void *k, size_t kn, const void *v, size_t vn) {
  named_rows_add(ud, k, kn, v, vn, NULL, 0);
  return 0;
}

int store_list_namespaces(store *s, store_named_rows *out, char *err, size_t errsz) {
  named_rows_reset(out);
  int rc = store_scan(s, DB_NAMESPACES, "", 0, 0, all_cb, out, err, errsz);
  named_rows_done(out);
  return rc < 0 ? rc : 0;
}

/* ---- quota counters ----------------------------------------------------- */

/* ns "\0" day into k; STORE_EINVAL unless day is YYYY-MM-DD */
static int quota_key(sbuf *k, const char *ns, size_t nslen, const char *day, size_t dlen) {
  if (bad_name(ns, nslen) || dlen != 10) return STORE_EINVAL;
  for (size_t i = 0; i < dlen; i++) {
    int dash = i == 4 || i == 7;
    if (dash ? day[i] != '-' : (day[i] < '0' || day[i] > '9')) return STORE_EINVAL;
  }
  sbuf_add(k, ns, nslen);
  sbuf_addc(k, '\0');
  sbuf_add(k, day, dlen);
  return 0;
}

int store_count_run(store_batch *b, const char *ns, size_t nslen, const char *day, size_t dlen) {
  sbuf k = SBUF_INIT;
  int rc = quota_key(&k, ns, nslen, day, dlen);
  if (rc == 0) wbatch_add(b, DB_QUOTAS, k.data, k.len, 1);
  sbuf_free(&k);
  return rc;
}

int store_quota_used(store *s, const char *ns, size_t nslen, const char *day, size_t dlen,
                     int64_t *n, char *err, size_t errsz) {
  *n = 0;
  sbuf k = SBUF_INIT, v = SBUF_INIT;
  int found = 0;
  int rc = quota_key(&k, ns, nslen, day, dlen);
  if (rc) {
    snprintf(err, errsz, "quota counter of namespace %.*s: day must be YYYY-MM-DD", (int)nslen, ns);
  } else {
    rc = store_get(s, DB_QUOTAS, k.data, k.len, &v, &found, err, errsz);
  }
  if (rc == 0 && found) {
    sbuf_addc(&v, '\0');
    char *end;
    errno = 0;
    long long c = strtoll(v.data, &end, 10);
    if (errno || end == v.data || *end || c < 0) {
      snprintf(err, errsz, "the quota counter of namespace %.*s on %.*s in store %s is not a count",
               (int)nslen, ns, (int)dlen, day, store_dir(s));
      rc = STORE_EBADSTORE;
    } else {
      *n = c;
    }
  }
  sbuf_free(&k);
  sbuf_free(&v);
  return rc;
}

/* ---- for store copy ------------------------------------------------------ */

int store_list_quotas(store *s, const char *after, size_t alen, size_t limit,
                      store_named_rows *out, char *err, size_t errsz) {
  return store_page(s, DB_QUOTAS, "", 0, after, alen, limit, out, err, errsz);
}

int store_put_quota(store_batch *b, const char *ns, size_t nslen, const char *day, size_t dlen,
                    int64_t n) {
  sbuf k = SBUF_INIT;
  int rc = n < 0 ? STORE_EINVAL : quota_key(&k, ns, nslen, day, dlen);
  if (rc == 0) {
    char num[32];
    int len = snprintf(num, sizeof num, "%lld", (long long)n);
    wbatch_put(b, DB_QUOTAS, k.data, k.len, num, (size_t)len);
  }
  sbuf_free(&k);
  return rc;
}
