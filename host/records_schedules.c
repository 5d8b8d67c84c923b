/* records_schedules.c: store.h's schedule records on LMDB. The database
 * "schedules" maps a schedule's name to its JSON record, nothing else. */
#include <string.h>

#include "writer.h"

static int bad_name(size_t nlen) { return nlen == 0 || nlen > STORE_NAME_MAX; }

int store_put_schedule(store_batch *b, const char *name, size_t nlen, const char *rec,
                       size_t rlen) {
  if (bad_name(nlen) || rlen == 0) return STORE_EINVAL;
  wbatch_put(b, DB_SCHEDULES, name, nlen, rec, rlen);
  return 0;
}

int store_delete_schedule(store_batch *b, const char *name, size_t nlen) {
  if (bad_name(nlen)) return STORE_EINVAL;
  wbatch_del(b, DB_SCHEDULES, name, nlen);
  return 0;
}

int store_get_schedule(store *s, const char *name, size_t nlen, sbuf *rec, int *found, char *err,
                       size_t errsz) {
  return store_get(s, DB_SCHEDULES, name, nlen, rec, found, err, errsz);
}

typedef struct {
  store_named_rows *out;
  const char *after;
  size_t alen, limit;
} list_ctx;

static int list_cb(void *ud, const void *k, size_t kn, const void *v, size_t vn) {
  list_ctx *c = ud;
  /* the scan starts at the first key >= after: skip after itself */
  if (c->alen && kn == c->alen && memcmp(k, c->after, kn) == 0) return 0;
  named_rows_add(c->out, k, kn, v, vn, NULL, 0);
  return c->limit && c->out->n >= c->limit;
}

int store_list_schedules(store *s, const char *after, size_t alen, size_t limit,
                         store_named_rows *out, char *err, size_t errsz) {
  named_rows_reset(out);
  list_ctx c = {out, after, alen, limit};
  int rc = store_scan_from(s, DB_SCHEDULES, "", 0, alen ? after : NULL, alen, 0, list_cb, &c, err,
                           errsz);
  named_rows_done(out);
  return rc < 0 ? rc : 0;
}
