/* http_parse.c: http_parse.h on Debian's libhttp-parser 2.9 (the only file
 * that includes its header). Its callbacks may deliver a URL, a header name
 * or a header value in several pieces when they span reads: they are
 * accumulated here. The parser is paused at the end of every request
 * (INTEGRATION.md), so pipelined bytes after it stay unparsed until
 * hp_next. */
#include "http_parse.h"

#include <ctype.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct http_parse {
  http_parser parser;
  http_parser_settings settings;
  size_t max_head, max_body;
  size_t head_bytes;   /* request line and headers so far */
  int in_value;        /* the last header callback was a value */
  sbuf name, value;    /* the header being accumulated */
  int started, headers_done, complete, failed;
  int status;          /* after HP_ERROR */
  char msg[160];
  http_request req;
};

static http_parse *of(http_parser *hp) { return hp->data; }

static int fail(http_parse *p, int status, const char *fmt, const char *arg) {
  p->failed = 1;
  p->status = status;
  snprintf(p->msg, sizeof p->msg, fmt, arg ? arg : "");
  return -1;
}

static int count_head(http_parse *p, size_t n) {
  p->head_bytes += n;
  if (p->head_bytes > p->max_head) {
    char lim[32];
    snprintf(lim, sizeof lim, "%zu", p->max_head);
    return fail(p, 431, "the request line and headers are larger than %s bytes", lim);
  }
  return 0;
}

/* Moves the accumulated header into req.head as name \0 value \0. */
static void flush_header(http_parse *p) {
  if (p->name.len == 0 && p->value.len == 0) return;
  for (size_t i = 0; i < p->name.len; i++) {
    p->name.data[i] = (char)tolower((unsigned char)p->name.data[i]);
  }
  sbuf_add(&p->req.head, p->name.data ? p->name.data : "", p->name.len);
  sbuf_addc(&p->req.head, '\0');
  sbuf_add(&p->req.head, p->value.data ? p->value.data : "", p->value.len);
  sbuf_addc(&p->req.head, '\0');
  p->req.nheaders++;
  sbuf_reset(&p->name);
  sbuf_reset(&p->value);
}

static int on_begin(http_parser *hp) {
  of(hp)->started = 1;
  return 0;
}

/* NUL is never valid in a request line or header (RFC 9110 5.5), and
 * req.head separates names and values with NUL: refuse it. */
static int has_nul(http_parse *p, const char *at, size_t n) {
  if (!memchr(at, '\0', n)) return 0;
  return fail(p, 400, "malformed request: a NUL byte in the request line or a header%s", NULL);
}

static int on_url(http_parser *hp, const char *at, size_t n) {
  http_parse *p = of(hp);
  if (count_head(p, n) || has_nul(p, at, n)) return -1;
  sbuf_add(&p->req.target, at, n);
  return 0;
}

static int on_field(http_parser *hp, const char *at, size_t n) {
  http_parse *p = of(hp);
  if (p->in_value) flush_header(p);
  p->in_value = 0;
  /* a new header also costs its ": " and CRLF; a name split across reads
   * comes in several calls */
  size_t extra = p->name.len == 0 ? 4 : 0;
  if (count_head(p, n + extra) || has_nul(p, at, n)) return -1;
  sbuf_add(&p->name, at, n);
  return 0;
}

static int on_value(http_parser *hp, const char *at, size_t n) {
  http_parse *p = of(hp);
  if (count_head(p, n) || has_nul(p, at, n)) return -1;
  p->in_value = 1;
  sbuf_add(&p->value, at, n);
  return 0;
}

static int on_headers(http_parser *hp) {
  http_parse *p = of(hp);
  flush_header(p);
  http_request *r = &p->req;
  snprintf(r->method, sizeof r->method, "%s", http_method_str((enum http_method)hp->method));
  r->http_major = hp->http_major;
  r->http_minor = hp->http_minor;
  r->chunked = (hp->flags & F_CHUNKED) != 0;
  r->content_length = (hp->flags & F_CONTENTLENGTH) ? (int64_t)hp->content_length : -1;
  size_t n;
  const char *expect = http_request_header(r, "expect", &n);
  r->expect_continue = expect && n == 12 && strncasecmp(expect, "100-continue", 12) == 0;
  p->headers_done = 1;
  if (r->content_length > 0 && (uint64_t)r->content_length > p->max_body) {
    char lim[32];
    snprintf(lim, sizeof lim, "%zu", p->max_body);
    return fail(p, 413, "the request body is larger than %s bytes", lim);
  }
  return 0;
}

static int on_body(http_parser *hp, const char *at, size_t n) {
  http_parse *p = of(hp);
  if (p->req.body.len + n > p->max_body) {
    char lim[32];
    snprintf(lim, sizeof lim, "%zu", p->max_body);
    return fail(p, 413, "the request body is larger than %s bytes", lim);
  }
  sbuf_add(&p->req.body, at, n);
  return 0;
}

static int on_complete(http_parser *hp) {
  http_parse *p = of(hp);
  p->complete = 1;
  p->req.keep_alive = http_should_keep_alive(hp) && !hp->upgrade;
  http_parser_pause(hp, 1);
  return 0;
}

http_parse *hp_new(size_t max_head, size_t max_body) {
  http_parse *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->max_head = max_head;
  p->max_body = max_body;
  http_parser_settings_init(&p->settings);
  p->settings.on_message_begin = on_begin;
  p->settings.on_url = on_url;
  p->settings.on_header_field = on_field;
  p->settings.on_header_value = on_value;
  p->settings.on_headers_complete = on_headers;
  p->settings.on_body = on_body;
  p->settings.on_message_complete = on_complete;
  http_parser_init(&p->parser, HTTP_REQUEST);
  p->parser.data = p;
  p->req.content_length = -1;
  return p;
}

void hp_free(http_parse *p) {
  if (!p) return;
  sbuf_free(&p->name);
  sbuf_free(&p->value);
  sbuf_free(&p->req.target);
  sbuf_free(&p->req.head);
  sbuf_free(&p->req.body);
  free(p);
}

void hp_next(http_parse *p) {
  http_request *r = &p->req;
  sbuf_reset(&r->target);
  sbuf_reset(&r->head);
  /* an idle keep-alive connection keeps no large buffer */
  if (r->body.cap > 64 * 1024) sbuf_free(&r->body); else sbuf_reset(&r->body);
  r->nheaders = 0;
  r->method[0] = '\0';
  r->keep_alive = r->expect_continue = r->chunked = 0;
  r->content_length = -1;
  sbuf_reset(&p->name);
  sbuf_reset(&p->value);
  p->head_bytes = 0;
  p->in_value = p->started = p->headers_done = p->complete = 0;
  http_parser_pause(&p->parser, 0);
}

int hp_feed(http_parse *p, const char *data, size_t len, size_t *used) {
  *used = 0;
  if (p->failed) return HP_ERROR;
  if (p->complete) return HP_REQUEST;
  if (len == 0) return HP_MORE; /* 0 would mean end of input to http_parser */
  p->started = 1;
  size_t n = http_parser_execute(&p->parser, &p->settings, data, len);
  *used = n;
  if (p->failed) return HP_ERROR;
  if (p->complete) return HP_REQUEST;
  enum http_errno e = HTTP_PARSER_ERRNO(&p->parser);
  if (e != HPE_OK) {
    p->failed = 1;
    p->status = e == HPE_INVALID_METHOD ? 501 : e == HPE_HEADER_OVERFLOW ? 431 : 400;
    snprintf(p->msg, sizeof p->msg, "malformed request: %s", http_errno_description(e));
    return HP_ERROR;
  }
  if (n < len) {
    /* http_parser stops early only with an error or an upgrade */
    p->failed = 1;
    p->status = 400;
    snprintf(p->msg, sizeof p->msg, "malformed request: unexpected data after the request");
    return HP_ERROR;
  }
  return HP_MORE;
}

http_request *hp_request(http_parse *p) { return &p->req; }
int hp_started(const http_parse *p) { return p->started; }
int hp_headers_done(const http_parse *p) { return p->headers_done; }
int hp_error_status(const http_parse *p) { return p->status; }
const char *hp_error_message(const http_parse *p) { return p->msg; }

const char *http_request_header(const http_request *r, const char *lname, size_t *len) {
  if (!r->head.data) return NULL;
  const char *s = r->head.data, *end = s + r->head.len;
  size_t want = strlen(lname);
  while (s < end) {
    size_t nn = strlen(s);
    const char *v = s + nn + 1;
    size_t vn = strlen(v);
    if (nn == want && memcmp(s, lname, nn) == 0) {
      if (len) *len = vn;
      return v;
    }
    s = v + vn + 1;
  }
  return NULL;
}
