/* csv.h: an RFC 4180 reader that takes its input in chunks of any size and
 * hands back one record at a time, and the quoting rule of the writer.
 * Pure C (no Lua); l_csv.c binds it as sluice._csv.
 *
 * What it reads: fields separated by one delimiter byte; a field that begins
 * with '"' is quoted and may hold the delimiter, line breaks and doubled
 * quotes ("" -> "); records end with CRLF, LF or a lone CR; the last record
 * may lack a line break. Blank lines (nothing at all between two line
 * breaks) are skipped. A UTF-8 byte order mark at the very start is dropped.
 * A quote inside an unquoted field is kept as a byte (as Python's csv does).
 * Errors: a quoted field still open at the end of the input, and anything
 * but a delimiter or a line break right after a closing quote.
 *
 * Lines and columns are counted from 1, columns in bytes; a line break
 * inside a quoted field starts a new line, as in an editor. */
#ifndef SLUICE_CSV_H
#define SLUICE_CSV_H

#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

enum { CSV_MORE = 0, CSV_RECORD = 1, CSV_ERROR = -1 };

typedef struct {
  char delim;
  unsigned char ends_plain[256]; /* bytes that end a run of an unquoted field */
  int state;
  int in_record; /* a byte of the current record was seen */
  int done;      /* the record was handed out: reset at the next feed */
  int started;   /* bytes of a leading byte order mark seen; 3: past it */
  sbuf rec;      /* the fields' bytes, concatenated */
  size_t *ends;  /* ends[i]: end of field i in rec */
  size_t nf, cap;
  uint64_t line, col;         /* of the next byte */
  uint64_t rec_line;          /* where the current record began */
  uint64_t q_line, q_col;     /* where the open quoted field began */
  const char *err;            /* CSV_ERROR: what is wrong ... */
  uint64_t err_line, err_col; /* ... and where */
} csv_reader;

void csv_init(csv_reader *r, char delim);
void csv_free(csv_reader *r);

/* Consumes bytes of s[0..n) until a record is complete. Returns CSV_RECORD
 * with *used = the bytes consumed (the record stays readable through
 * csv_nfields/csv_field until the next call); CSV_MORE when all n bytes were
 * consumed without completing one (*used = n); CSV_ERROR with err, err_line
 * and err_col set (the reader is then unusable). */
int csv_feed(csv_reader *r, const char *s, size_t n, size_t *used);

/* The end of the input: CSV_RECORD when a last record without a line break
 * is pending, CSV_MORE when there is nothing left, CSV_ERROR for a quoted
 * field never closed (err_line and err_col name its opening quote). */
int csv_finish(csv_reader *r);

static inline size_t csv_nfields(const csv_reader *r) { return r->nf; }
static inline const char *csv_field(const csv_reader *r, size_t i, size_t *len) {
  size_t start = i == 0 ? 0 : r->ends[i - 1];
  *len = r->ends[i] - start;
  return r->rec.data ? r->rec.data + start : "";
}

/* Appends s as one field: quoted (quotes doubled) when it holds the
 * delimiter, a quote, CR or LF, or begins or ends with a space; as is
 * otherwise. */
void csv_put_field(sbuf *out, const char *s, size_t n, char delim);

#endif
