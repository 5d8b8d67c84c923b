/* http_parse.h: HTTP/1.1 request parsing for the HTTP server, behind one
 * interface so the parser library can be swapped (http_parse.c is the only
 * file that includes libhttp-parser's header; llhttp has the same model).
 *
 * A pull interface: feed bytes as they arrive; the parser assembles one
 * request at a time (method, target, headers with lowercased names, body,
 * URL and header bytes accumulated across split reads) and stops at the end
 * of each request, so the bytes of pipelined requests that follow stay with
 * the caller until it has answered this one. Limits are checked while
 * parsing: the request line and headers together (max_head) and the body
 * (max_body: a Content-Length over it fails as soon as the headers end,
 * before any of the body is read; a chunked body fails when it grows past
 * it). Pure C, no I/O, no Lua: the fuzz target drives it directly. */
#ifndef SLUICE_HTTP_PARSE_H
#define SLUICE_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

typedef struct http_request {
  char method[24];        /* "GET", "POST", ... */
  int http_major, http_minor;
  int keep_alive;         /* the connection may serve another request after this one */
  int expect_continue;    /* "Expect: 100-continue" */
  int64_t content_length; /* -1 when the request has no Content-Length */
  int chunked;
  sbuf target;            /* the request target as sent ("/runs?limit=5") */
  sbuf head;              /* the headers: name \0 value \0 ..., names lowercased */
  size_t nheaders;
  sbuf body;
} http_request;

typedef struct http_parse http_parse;

/* results of hp_feed */
enum {
  HP_MORE = 0,    /* every byte consumed; the request is not complete yet */
  HP_REQUEST = 1, /* a whole request is in hp_request() */
  HP_ERROR = -1   /* the input is not acceptable: hp_error_status/message */
};

/* A parser with these limits (bytes). Returns NULL when out of memory. */
http_parse *hp_new(size_t max_head, size_t max_body);
void hp_free(http_parse *p);

/* Feeds len bytes. *used gets how many were consumed: all of them for
 * HP_MORE; up to the end of the request for HP_REQUEST (the rest belongs to
 * the requests after it: feed them after hp_next). After HP_ERROR the
 * parser accepts nothing more (the connection must close). */
int hp_feed(http_parse *p, const char *data, size_t len, size_t *used);

/* The request being assembled (complete after HP_REQUEST). */
http_request *hp_request(http_parse *p);

/* Forgets the request and readies the parser for the next one. */
void hp_next(http_parse *p);

/* State of the request in progress, for the server's timers and for
 * "Expect: 100-continue": whether any byte of it arrived, and whether its
 * headers are complete (its body may still be arriving). */
int hp_started(const http_parse *p);
int hp_headers_done(const http_parse *p);

/* After HP_ERROR: the HTTP status to answer with (400 malformed, 413 body
 * too large, 431 headers too large, 501 unsupported) and a message. */
int hp_error_status(const http_parse *p);
const char *hp_error_message(const http_parse *p);

/* The value of the header with this lowercased name (the first one if
 * repeated), or NULL. */
const char *http_request_header(const http_request *r, const char *lname, size_t *len);

#endif
