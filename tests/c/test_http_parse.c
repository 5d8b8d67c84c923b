/* test_http_parse.c: the HTTP request parser (host/http_parse.c): whole and
 * byte-by-byte reads, pipelined requests kept apart, chunked bodies, the
 * limits (413 as soon as the headers end, 431), NUL bytes refused, and a
 * header name split across reads counted once against the limit. */
#include <stdio.h>
#include <string.h>

#include "http_parse.h"
#include "unit.h"

/* Feeds s in reads of `step` bytes (0: at once) until a request or an
 * error; *used_total gets the bytes consumed. */
static int feed_all(http_parse *p, const char *s, size_t n, size_t step, size_t *used_total) {
  size_t off = 0;
  *used_total = 0;
  while (off < n) {
    size_t len = step && step < n - off ? step : n - off;
    size_t used;
    int rc = hp_feed(p, s + off, len, &used);
    off += used;
    *used_total = off;
    if (rc != HP_MORE) return rc;
  }
  return HP_MORE;
}

static void test_simple_and_split(void) {
  const char *req = "GET /runs?limit=5 HTTP/1.1\r\nHost: x\r\nX-Api-Key: k1\r\n\r\n";
  for (size_t step = 0; step <= 3; step++) {
    http_parse *p = hp_new(16384, 1024);
    size_t used;
    CHECK(feed_all(p, req, strlen(req), step, &used) == HP_REQUEST);
    CHECK(used == strlen(req));
    http_request *r = hp_request(p);
    CHECK_STR(r->method, "GET");
    CHECK(r->target.len == 13 && memcmp(r->target.data, "/runs?limit=5", 13) == 0);
    CHECK(r->nheaders == 2);
    CHECK_STR(http_request_header(r, "x-api-key", NULL), "k1");
    CHECK(r->keep_alive == 1 && r->content_length == -1 && r->body.len == 0);
    hp_free(p);
  }
}

static void test_pipelined(void) {
  const char *two = "POST /e HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
  http_parse *p = hp_new(16384, 1024);
  size_t used;
  CHECK(hp_feed(p, two, strlen(two), &used) == HP_REQUEST);
  http_request *r = hp_request(p);
  CHECK(r->body.len == 3 && memcmp(r->body.data, "abc", 3) == 0);
  /* stops at the end of the first: the second is left to the caller */
  CHECK(strncmp(two + used, "GET /b", 6) == 0);
  hp_next(p);
  size_t used2;
  CHECK(hp_feed(p, two + used, strlen(two) - used, &used2) == HP_REQUEST);
  CHECK_STR(hp_request(p)->method, "GET");
  CHECK(hp_request(p)->keep_alive == 0);
  CHECK(used + used2 == strlen(two));
  hp_free(p);
}

static void test_chunked_and_continue(void) {
  const char *req = "POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
                    "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n";
  http_parse *p = hp_new(16384, 1024);
  size_t used;
  CHECK(feed_all(p, req, strlen(req), 2, &used) == HP_REQUEST);
  http_request *r = hp_request(p);
  CHECK(r->chunked && r->expect_continue);
  CHECK(r->body.len == 7 && memcmp(r->body.data, "abcdefg", 7) == 0);
  hp_free(p);
}

static void test_limits(void) {
  /* a Content-Length over the limit fails at the end of the headers */
  const char *big = "POST /e HTTP/1.1\r\nContent-Length: 5000\r\n\r\n";
  http_parse *p = hp_new(16384, 1024);
  size_t used;
  CHECK(feed_all(p, big, strlen(big), 0, &used) == HP_ERROR);
  CHECK(hp_error_status(p) == 413);
  hp_free(p);
  /* a chunked body fails when it grows past it */
  char chunked[2200];
  int n = snprintf(chunked, sizeof chunked, "POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n");
  memset(chunked + n, 'a', 2048);
  p = hp_new(16384, 1024);
  CHECK(feed_all(p, chunked, (size_t)n + 2048, 0, &used) == HP_ERROR);
  CHECK(hp_error_status(p) == 413);
  hp_free(p);
  /* headers */
  char hdr[600];
  n = snprintf(hdr, sizeof hdr, "GET / HTTP/1.1\r\nX-Big: ");
  memset(hdr + n, 'b', 500);
  memcpy(hdr + n + 500, "\r\n\r\n", 4);
  p = hp_new(256, 1024);
  CHECK(feed_all(p, hdr, (size_t)n + 504, 0, &used) == HP_ERROR);
  CHECK(hp_error_status(p) == 431);
  hp_free(p);
}

static void test_nul_refused(void) {
  /* a NUL inside a value would split it into a forged header */
  const char req[] = "GET / HTTP/1.1\r\nX-A: a\0x-api-key\0forged\r\n\r\n";
  http_parse *p = hp_new(16384, 1024);
  size_t used;
  int rc = feed_all(p, req, sizeof req - 1, 0, &used);
  CHECK(rc == HP_ERROR);
  CHECK(hp_error_status(p) == 400);
  hp_free(p);
}

static void test_split_names_count_once(void) {
  /* 40 headers of 10 bytes each fit in 600 bytes however the reads fall */
  char req[1024];
  size_t n = (size_t)snprintf(req, sizeof req, "GET / HTTP/1.1\r\n");
  for (int i = 0; i < 40; i++) n += (size_t)snprintf(req + n, sizeof req - n, "Abcd%02d: v\r\n", i);
  n += (size_t)snprintf(req + n, sizeof req - n, "\r\n");
  for (size_t step = 0; step <= 3; step++) {
    http_parse *p = hp_new(600, 1024);
    size_t used;
    CHECK(feed_all(p, req, n, step, &used) == HP_REQUEST);
    CHECK(hp_request(p)->nheaders == 40);
    hp_free(p);
  }
}

int main(void) {
  RUN(test_simple_and_split);
  RUN(test_pipelined);
  RUN(test_chunked_and_continue);
  RUN(test_limits);
  RUN(test_nul_refused);
  RUN(test_split_names_count_once);
  return UNIT_DONE();
}
