/* fuzz_http.c: libFuzzer target for the HTTP request-parsing path
 * (host/http_parse.c on libhttp-parser), the bytes a client controls.
 *
 * Input: one byte that chooses how the rest is cut into reads, then the
 * bytes of a connection. Properties checked, beyond "no crash, no
 * sanitizer report":
 *   - a parse read by read gives the same requests (method, target,
 *     headers, body, keep-alive), and fails if and only if a parse of the
 *     whole input at once fails: split URL and header callbacks are
 *     accumulated, and counted once against the limit;
 *   - every accepted request stays within the limits (headers, body), and
 *     every header name is lowercased and found by http_request_header;
 *   - an error is one of the statuses the server answers with. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"
#include "sbuf.h"

#define MAX_HEAD 2048
#define MAX_BODY 4096

static void fail(const char *what) {
  fprintf(stderr, "property failed: %s\n", what);
  abort();
}

/* Appends a summary of r to out, checking its invariants. */
static void summarize(sbuf *out, http_request *r) {
  if (r->head.len + r->target.len > MAX_HEAD) fail("headers beyond the limit");
  if (r->body.len > MAX_BODY) fail("body beyond the limit");
  const char *s = r->head.data ? r->head.data : "", *end = s + r->head.len;
  size_t n = 0;
  while (s < end) {
    size_t nn = strlen(s);
    for (size_t i = 0; i < nn; i++) {
      if (s[i] >= 'A' && s[i] <= 'Z') fail("a header name is not lowercased");
    }
    size_t vlen;
    if (!http_request_header(r, s, &vlen)) fail("a header cannot be found by its name");
    const char *v = s + nn + 1;
    s = v + strlen(v) + 1;
    n++;
  }
  if (n != r->nheaders) fail("header count");
  sbuf_printf(out, "%s %d.%d ka=%d cl=%lld ch=%d ex=%d|", r->method, r->http_major, r->http_minor,
              r->keep_alive, (long long)r->content_length, r->chunked, r->expect_continue);
  sbuf_add(out, r->target.data ? r->target.data : "", r->target.len);
  sbuf_addc(out, '|');
  sbuf_add(out, r->head.data ? r->head.data : "", r->head.len);
  sbuf_addc(out, '|');
  sbuf_add(out, r->body.data ? r->body.data : "", r->body.len);
  sbuf_addc(out, '\n');
}

/* Parses data in reads of the sizes step() gives; writes the requests and
 * the outcome to out. */
static void parse(const uint8_t *data, size_t size, unsigned seed, sbuf *out) {
  http_parse *p = hp_new(MAX_HEAD, MAX_BODY);
  if (!p) abort();
  size_t off = 0;
  unsigned x = seed * 2654435761u + 1;
  sbuf pending = SBUF_INIT; /* bytes of this read not consumed yet */
  while (off < size || pending.len > 0) {
    if (pending.len == 0) {
      size_t n = size - off;
      if (seed) {
        x = x * 1103515245u + 12345u;
        size_t cut = 1 + (x >> 16) % 16;
        if (cut < n) n = cut;
      }
      sbuf_add(&pending, data + off, n);
      off += n;
    }
    size_t used = 0;
    int rc = hp_feed(p, pending.data, pending.len, &used);
    if (used > pending.len) fail("consumed more than given");
    if (rc == HP_ERROR) {
      int st = hp_error_status(p);
      if (st != 400 && st != 413 && st != 431 && st != 501) fail("unexpected error status");
      if (!hp_error_message(p)[0]) fail("an error without a message");
      /* which error comes first may depend on the reads (a header is
       * counted against the limit when its bytes are handed over, an
       * invalid byte is found when it is reached), that there is one may not */
      sbuf_adds(out, "error\n");
      break;
    }
    memmove(pending.data, pending.data + used, pending.len - used);
    pending.len -= used;
    if (rc == HP_REQUEST) {
      summarize(out, hp_request(p));
      hp_next(p);
    } else if (pending.len > 0) {
      fail("HP_MORE left bytes unconsumed");
    }
  }
  if (hp_started(p) && !hp_headers_done(p)) sbuf_adds(out, "incomplete headers\n");
  sbuf_free(&pending);
  hp_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  unsigned seed = data[0];
  data++;
  size--;
  sbuf whole = SBUF_INIT, split = SBUF_INIT;
  parse(data, size, 0, &whole);
  parse(data, size, seed ? seed : 1, &split);
  if (whole.len != split.len || (whole.len && memcmp(whole.data, split.data, whole.len) != 0)) {
    fprintf(stderr, "whole:\n%.*s\nsplit:\n%.*s\n", (int)whole.len, whole.data, (int)split.len,
            split.data);
    fail("a parse read by read differs from a parse at once");
  }
  sbuf_free(&whole);
  sbuf_free(&split);
  return 0;
}
