/* test_csv.c: the chunked CSV reader (host/csv.c): every way of splitting
 * an input in two chunks, and one byte at a time, gives the same records;
 * the errors name the right line and column; the writer quotes only what
 * needs it. */
#include "csv.h"
#include "unit.h"

/* Parses s fed in chunks of `chunk` bytes (0: a first chunk of `split`
 * bytes, then the rest) and writes the records as "f|f|f\n" lines into out,
 * or "ERROR line:col" on error. */
static void parse(const char *s, size_t n, size_t chunk, size_t split, sbuf *out) {
  csv_reader r;
  csv_init(&r, ',');
  sbuf_reset(out);
  size_t pos = 0;
  for (;;) {
    size_t end = chunk ? pos + chunk : (pos < split ? split : n);
    if (end > n) end = n;
    int rc;
    size_t used = 0;
    if (pos < n) {
      rc = csv_feed(&r, s + pos, end - pos, &used);
      pos += used;
      if (rc == CSV_MORE) continue;
    } else {
      rc = csv_finish(&r);
      if (rc == CSV_MORE) break;
    }
    if (rc == CSV_ERROR) {
      sbuf_printf(out, "ERROR %llu:%llu", (unsigned long long)r.err_line,
                  (unsigned long long)r.err_col);
      break;
    }
    for (size_t i = 0; i < csv_nfields(&r); i++) {
      size_t len;
      const char *f = csv_field(&r, i, &len);
      if (i) sbuf_addc(out, '|');
      sbuf_add(out, f, len);
    }
    sbuf_printf(out, "@%llu\n", (unsigned long long)r.rec_line);
  }
  sbuf_addc(out, '\0');
  csv_free(&r);
}

static void check_all_splits(const char *s, const char *want) {
  size_t n = strlen(s);
  sbuf out = SBUF_INIT;
  for (size_t split = 0; split <= n; split++) {
    parse(s, n, 0, split, &out);
    if (strcmp(out.data, want) != 0) {
      fprintf(stderr, "split at %zu:\n%s\nwanted:\n%s\n", split, out.data, want);
      unit_failed_checks++;
      break;
    }
  }
  parse(s, n, 1, 0, &out);
  CHECK_STR(out.data, want);
  sbuf_free(&out);
}

static void test_records(void) {
  check_all_splits("a,b,c\r\n1,\"x,y\",\"he said \"\"hi\"\"\"\n\n2,\"multi\r\nline\",\n3",
                   "a|b|c@1\n1|x,y|he said \"hi\"@2\n2|multi\r\nline|@4\n3@6\n");
  /* lone CR ends a record; a trailing line break adds no record */
  check_all_splits("a\rb\r\n", "a@1\nb@2\n");
  /* empty quoted field, empty fields, a quote inside an unquoted field */
  check_all_splits("\"\",,x\"y\n", "||x\"y@1\n");
  /* the byte order mark goes, once */
  check_all_splits("\xEF\xBB\xBFid\n1\n", "id@1\n1@2\n");
  check_all_splits("\xEF\xBBx\n", "\xEF\xBBx@1\n");
  check_all_splits("\xEF\xBB", "\xEF\xBB@1\n");
  check_all_splits("", "");
  check_all_splits("\n\n", "");
}

static void test_errors(void) {
  /* the unterminated quote is named where it opens */
  check_all_splits("a,b\n1,\"open\n2,3\n", "a|b@1\nERROR 2:3");
  /* a character after a closing quote, named where it is */
  check_all_splits("a\n\"x\"y,1\n", "a@1\nERROR 2:4");
  /* columns count bytes after an embedded line break */
  check_all_splits("\"a\nbc\"d\n", "ERROR 2:4");
}

static void test_put_field(void) {
  sbuf out = SBUF_INIT;
  const char *cases[][2] = {
      {"plain", "plain"},   {"a,b", "\"a,b\""},     {"say \"hi\"", "\"say \"\"hi\"\"\""},
      {"two\nlines", "\"two\nlines\""}, {" pad", "\" pad\""}, {"", ""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    sbuf_reset(&out);
    csv_put_field(&out, cases[i][0], strlen(cases[i][0]), ',');
    sbuf_addc(&out, '\0');
    CHECK_STR(out.data, cases[i][1]);
  }
  sbuf_reset(&out);
  csv_put_field(&out, "a,b", 3, ';');
  sbuf_addc(&out, '\0');
  CHECK_STR(out.data, "a,b");
  sbuf_free(&out);
}

int main(void) {
  RUN(test_records);
  RUN(test_errors);
  RUN(test_put_field);
  return UNIT_DONE();
}
