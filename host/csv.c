/* csv.c: the chunked RFC 4180 reader and the field writer (see csv.h).
 * A state machine whose state survives between chunks, so a record or a
 * field may be split anywhere; the inner loops scan runs of plain bytes
 * and copy them in one go. */
#include "csv.h"

#include <stdlib.h>
#include <string.h>

enum {
  S_FIELD,  /* at the start of a field */
  S_PLAIN,  /* inside an unquoted field */
  S_QUOTED, /* inside a quoted field */
  S_QUOTE,  /* just after a quote inside a quoted field: "" or the end */
  S_CR      /* just after a CR that ended a record: swallow one LF */
};

void csv_init(csv_reader *r, char delim) {
  memset(r, 0, sizeof *r);
  r->delim = delim;
  r->ends_plain[(unsigned char)delim] = 1;
  r->ends_plain['\n'] = 1;
  r->ends_plain['\r'] = 1;
  r->state = S_FIELD;
  r->line = r->col = 1;
}

void csv_free(csv_reader *r) {
  sbuf_free(&r->rec);
  free(r->ends);
  r->ends = NULL;
  r->nf = r->cap = 0;
}

static void end_field(csv_reader *r) {
  if (r->nf == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 16;
    size_t *e = realloc(r->ends, cap * sizeof *e);
    if (!e) abort(); /* as sbuf: no sensible way on without memory */
    r->ends = e;
    r->cap = cap;
  }
  r->ends[r->nf++] = r->rec.len;
}

/* counts the line breaks of a quoted run for line and column numbers */
static void advance(csv_reader *r, const char *s, size_t n) {
  const char *p = s, *end = s + n, *nl;
  while ((nl = memchr(p, '\n', (size_t)(end - p)))) {
    r->line++;
    r->col = 1;
    p = nl + 1;
  }
  r->col += (uint64_t)(end - p);
}

int csv_feed(csv_reader *r, const char *s, size_t n, size_t *used) {
  if (r->done) {
    r->rec.len = 0;
    r->nf = 0;
    r->in_record = 0;
    r->done = 0;
  }
  size_t i = 0;
  static const char bom[] = "\xEF\xBB\xBF";
  while (r->started < 3 && i < n) { /* started: bytes of a byte order mark seen */
    if (s[i] == bom[r->started]) {
      r->started++;
      i++;
      continue;
    }
    /* not a byte order mark: what matched of it was data */
    int seen = r->started;
    r->started = 3;
    size_t u;
    if (seen > 0) csv_feed(r, bom, (size_t)seen, &u);
  }
  const char delim = r->delim;
  while (i < n) {
    switch (r->state) {
      case S_CR:
        r->state = S_FIELD;
        if (s[i] == '\n') i++;
        continue;
      case S_FIELD:
        if (!r->in_record) r->rec_line = r->line;
        if (s[i] == '"') {
          r->state = S_QUOTED;
          r->in_record = 1;
          r->q_line = r->line;
          r->q_col = r->col;
          i++;
          r->col++;
          continue;
        }
        r->state = S_PLAIN;
        /* fall through */
      case S_PLAIN: {
        const unsigned char *u = (const unsigned char *)s, *stop = r->ends_plain;
        size_t j = i;
        while (j < n && !stop[u[j]]) j++;
        if (j > i) {
          sbuf_add(&r->rec, s + i, j - i);
          r->in_record = 1;
          r->col += j - i;
          i = j;
        }
        if (i == n) continue;
        char c = s[i++];
        if (c == delim) {
          end_field(r);
          r->in_record = 1;
          r->state = S_FIELD;
          r->col++;
          continue;
        }
        r->state = c == '\r' ? S_CR : S_FIELD;
        r->line++;
        r->col = 1;
        if (!r->in_record) continue; /* a blank line */
        end_field(r);
        r->done = 1;
        *used = i;
        return CSV_RECORD;
      }
      case S_QUOTED: {
        const char *q = memchr(s + i, '"', n - i);
        size_t j = q ? (size_t)(q - s) : n;
        sbuf_add(&r->rec, s + i, j - i);
        advance(r, s + i, j - i);
        i = j;
        if (i == n) continue;
        i++;
        r->col++;
        r->state = S_QUOTE;
        continue;
      }
      case S_QUOTE: {
        char c = s[i];
        if (c == '"') {
          sbuf_addc(&r->rec, '"');
          r->state = S_QUOTED;
          i++;
          r->col++;
          continue;
        }
        if (c == delim) {
          end_field(r);
          r->state = S_FIELD;
          i++;
          r->col++;
          continue;
        }
        if (c == '\n' || c == '\r') {
          i++;
          r->state = c == '\r' ? S_CR : S_FIELD;
          r->line++;
          r->col = 1;
          end_field(r);
          r->done = 1;
          *used = i;
          return CSV_RECORD;
        }
        r->err = "unexpected character after a closing quote (write a quote inside a quoted "
                 "field twice)";
        r->err_line = r->line;
        r->err_col = r->col;
        return CSV_ERROR;
      }
    }
  }
  *used = n;
  return CSV_MORE;
}

int csv_finish(csv_reader *r) {
  if (r->started > 0 && r->started < 3) {
    /* the input was a part of a byte order mark: that was data */
    int seen = r->started;
    r->started = 3;
    size_t u;
    csv_feed(r, "\xEF\xBB", (size_t)seen, &u);
  }
  if (r->done) {
    r->rec.len = 0;
    r->nf = 0;
    r->in_record = 0;
    r->done = 0;
  }
  if (r->state == S_QUOTED) {
    r->err = "unterminated quoted field (its closing quote is missing)";
    r->err_line = r->q_line;
    r->err_col = r->q_col;
    return CSV_ERROR;
  }
  if (!r->in_record) return CSV_MORE;
  end_field(r);
  r->state = S_FIELD;
  r->done = 1;
  return CSV_RECORD;
}

void csv_put_field(sbuf *out, const char *s, size_t n, char delim) {
  int quote = n > 0 && (s[0] == ' ' || s[n - 1] == ' ');
  for (size_t i = 0; i < n && !quote; i++) {
    char c = s[i];
    quote = c == delim || c == '"' || c == '\n' || c == '\r';
  }
  if (!quote) {
    sbuf_add(out, s, n);
    return;
  }
  sbuf_addc(out, '"');
  const char *p = s, *end = s + n, *q;
  while ((q = memchr(p, '"', (size_t)(end - p)))) {
    sbuf_add(out, p, (size_t)(q - p) + 1);
    sbuf_addc(out, '"');
    p = q + 1;
  }
  sbuf_add(out, p, (size_t)(end - p));
  sbuf_addc(out, '"');
}
