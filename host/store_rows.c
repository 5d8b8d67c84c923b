/* store_rows.c: rows of named records (store.h's store_named_rows), the
 * shape in which reads hand a set of records to their caller, and the
 * builder the records_*.c files fill them with inside a read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_lmdb.h"

void store_named_rows_free(store_named_rows *r) {
  free(r->rows);
  sbuf_free(&r->buf);
  r->rows = NULL;
  r->n = r->cap = 0;
}

/* While rows are added their pointers hold offsets into buf (which may
 * move as it grows); named_rows_done turns them into pointers. */
static size_t put(sbuf *b, const void *p, size_t n) {
  size_t at = b->len;
  sbuf_add(b, p, n);
  sbuf_addc(b, '\0'); /* each part is also a C string */
  return at;
}

void named_rows_add(store_named_rows *r, const void *name, size_t nlen, const void *rec,
                    size_t rlen, const void *extra, size_t elen) {
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 16;
    store_named_row *rows = realloc(r->rows, cap * sizeof *rows);
    if (!rows) {
      fprintf(stderr, "sluice: out of memory\n");
      abort();
    }
    r->rows = rows;
    r->cap = cap;
  }
  store_named_row *row = &r->rows[r->n++];
  row->name = (const char *)(uintptr_t)put(&r->buf, name, nlen);
  row->name_len = nlen;
  row->rec = (const char *)(uintptr_t)put(&r->buf, rec, rlen);
  row->rec_len = rlen;
  row->extra = extra ? (const char *)(uintptr_t)put(&r->buf, extra, elen) : NULL;
  row->extra_len = extra ? elen : 0;
}

void named_rows_reset(store_named_rows *r) {
  r->n = 0;
  sbuf_reset(&r->buf);
}

void named_rows_done(store_named_rows *r) {
  for (size_t i = 0; i < r->n; i++) {
    store_named_row *row = &r->rows[i];
    row->name = r->buf.data + (uintptr_t)row->name;
    row->rec = r->buf.data + (uintptr_t)row->rec;
    if (row->extra) row->extra = r->buf.data + (uintptr_t)row->extra;
  }
}

typedef struct {
  store_named_rows *out;
  const char *from; /* prefix + after: skipped, the page starts after it */
  size_t flen, plen, limit;
} page_ctx;

static int page_cb(void *ud, const void *k, size_t kn, const void *v, size_t vn) {
  page_ctx *c = ud;
  if (c->flen > c->plen && kn == c->flen && memcmp(k, c->from, kn) == 0) return 0;
  named_rows_add(c->out, (const char *)k + c->plen, kn - c->plen, v, vn, NULL, 0);
  return c->out->n >= c->limit;
}

int store_page(store *s, int db, const void *prefix, size_t plen, const char *after, size_t alen,
               size_t limit, store_named_rows *out, char *err, size_t errsz) {
  named_rows_reset(out);
  sbuf from = SBUF_INIT;
  sbuf_add(&from, prefix, plen);
  sbuf_add(&from, after, alen);
  page_ctx c = {out, from.data, from.len, plen, limit ? limit : 1};
  int rc = store_scan_from(s, db, prefix, plen, alen ? from.data : NULL, alen ? from.len : 0, 0,
                           page_cb, &c, err, errsz);
  sbuf_free(&from);
  named_rows_done(out);
  return rc < 0 ? rc : 0;
}
