/* http_server.c: http_server.h on libuv.
 *
 * A connection is in one of these states:
 *   READING   parsing requests (timers: idle, headers, body stall)
 *   HANDLING  a complete request is with the callback; input is kept aside
 *   STREAMING a response of unknown length is being sent
 *   DRAINING  the last response is queued: shut down our side, discard what
 *             the client still sends until it closes or a short timer ends
 * Bytes left after a pipelined request, or received while HANDLING, wait
 * in c->in; once the response ends the connection goes on the server's
 * ready list and is parsed again from an idle callback, never from inside
 * http_respond: a handler that answers at once would otherwise recurse
 * once per pipelined request. Reads share one buffer per server (they are
 * parsed or copied before the callback returns), so an idle connection
 * holds no read buffer.
 *
 * Handles are freed in close callbacks only; a connection owns two (its
 * socket and its timer) and is freed when both have closed. The server
 * counts its open handles (listeners, connections, the idle handle) and
 * frees itself when the last one closes (libuv runs close callbacks in
 * reverse order, INTEGRATION.md). */
#include "http_server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define MAX_LISTENERS 16
#define READ_BUF (64 * 1024)
#define DRAIN_MS 2000

enum { C_READING, C_HANDLING, C_STREAMING, C_DRAINING };
enum { T_NONE, T_IDLE, T_HEAD, T_BODY, T_DRAIN };

struct http_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shut;
  http_server *srv;
  http_parse *hp;
  sbuf in;            /* unparsed input, from in_off */
  size_t in_off;
  int state, phase;   /* C_*, T_* */
  int reading, closing, eof, served, continue_sent, head_only, keep_alive, ready;
  int handles;        /* open libuv handles of this connection */
  size_t queued;      /* bytes in uv_write requests not yet done */
  void *data;
  char reqid[40];
  char peer[64];
  http_conn *prev, *next;       /* the server's connections */
  http_conn *ready_next;        /* the server's ready list */
};

struct http_server {
  uv_loop_t *loop;
  http_limits lim;
  http_callbacks cb;
  void *ud;
  uv_tcp_t *listeners[MAX_LISTENERS];
  int nlisteners;
  uv_idle_t idle;
  int idle_active;
  int handles; /* open handles: listeners, connections, the idle handle */
  int closing, quiet;
  http_conn *conns;
  http_conn *ready, *ready_tail;
  http_stats stats;
  uint32_t id_prefix;
  uint64_t id_seq;
  char rbuf[READ_BUF];
  int rbuf_busy;
};

typedef struct {
  uv_write_t req;
  http_conn *c;
  size_t n;
  char data[];
} write_req;

static void conn_close(http_conn *c);
static void server_unref(http_server *s);

void http_limits_default(http_limits *l) {
  l->max_head = 16 * 1024;
  l->max_body = 1024 * 1024;
  l->max_connections = 1024;
  l->header_timeout_ms = 10000;
  l->body_timeout_ms = 10000;
  l->idle_timeout_ms = 60000;
  l->max_buffered = 64 * 1024;
}

static const char *reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
  }
}

static void new_request_id(http_conn *c) {
  http_server *s = c->srv;
  snprintf(c->reqid, sizeof c->reqid, "%08x-%llx", s->id_prefix,
           (unsigned long long)++s->id_seq);
}

/* ---- handles and closing ---------------------------------------------- */

static void server_unref(http_server *s) {
  if (--s->handles == 0 && s->closing) free(s);
}

static void conn_free(http_conn *c) {
  http_server *s = c->srv;
  hp_free(c->hp);
  sbuf_free(&c->in);
  free(c);
  server_unref(s);
}

static void on_conn_handle_closed(uv_handle_t *h) {
  http_conn *c = h->data;
  if (--c->handles == 0) conn_free(c);
}

static void ready_remove(http_conn *c) {
  if (!c->ready) return;
  http_server *s = c->srv;
  http_conn **pp = &s->ready;
  http_conn *prev = NULL;
  while (*pp && *pp != c) {
    prev = *pp;
    pp = &(*pp)->ready_next;
  }
  if (*pp) {
    *pp = c->ready_next;
    if (s->ready_tail == c) s->ready_tail = prev;
  }
  c->ready = 0;
  c->ready_next = NULL;
}

/* Closes at once; the callback hears of a request in flight. */
static void conn_close(http_conn *c) {
  if (c->closing) return;
  c->closing = 1;
  http_server *s = c->srv;
  ready_remove(c);
  if (c->prev) c->prev->next = c->next; else s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  s->stats.connections--;
  if ((c->state == C_HANDLING || c->state == C_STREAMING) && !s->quiet && s->cb.closed) {
    c->state = C_DRAINING;
    s->cb.closed(s->ud, c);
  }
  c->state = C_DRAINING;
  uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

/* ---- timers ------------------------------------------------------------ */

static void on_timer(uv_timer_t *t);

static void set_phase(http_conn *c, int phase, uint64_t ms) {
  if (c->closing) return;
  if (phase == T_NONE) {
    if (c->phase != T_NONE) uv_timer_stop(&c->timer);
  } else if (phase != c->phase || phase == T_BODY) {
    /* the body timer restarts on every read: it measures a stall */
    uv_timer_start(&c->timer, on_timer, ms, 0);
  }
  c->phase = phase;
}

/* The timer a reading connection needs now. */
static void arm_reading(http_conn *c) {
  const http_limits *l = &c->srv->lim;
  if (!hp_started(c->hp)) {
    set_phase(c, T_IDLE, c->served ? l->idle_timeout_ms : l->header_timeout_ms);
  } else if (!hp_headers_done(c->hp)) {
    set_phase(c, T_HEAD, l->header_timeout_ms);
  } else {
    set_phase(c, T_BODY, l->body_timeout_ms);
  }
}

/* ---- writing ----------------------------------------------------------- */

static void on_write(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  http_conn *c = w->c;
  c->queued -= w->n;
  free(w);
  if (status < 0 && !c->closing) conn_close(c);
}

/* Queues n bytes (copied). Returns 0, or -1 if the connection is gone. */
static int conn_write(http_conn *c, const char *data, size_t n) {
  if (c->closing) return -1;
  if (n == 0) return 0;
  if (c->queued == 0) {
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == (int)n) return 0;
    if (r > 0) {
      data += r;
      n -= (size_t)r;
    } else if (r != UV_EAGAIN && r != UV_ENOSYS) {
      conn_close(c);
      return -1;
    }
  }
  write_req *w = malloc(sizeof *w + n);
  if (!w) {
    conn_close(c);
    return -1;
  }
  w->c = c;
  w->n = n;
  memcpy(w->data, data, n);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
  int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
  if (rc < 0) {
    free(w);
    conn_close(c);
    return -1;
  }
  c->queued += n;
  return 0;
}

static void on_drain_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf);

static void on_shutdown(uv_shutdown_t *req, int status) {
  http_conn *c = req->data;
  if (c->closing) return;
  if (status < 0 || c->eof) {
    conn_close(c);
    return;
  }
  /* read and discard what the client still sends, so that closing with
   * unread input does not reset the connection under our response */
  if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 1;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_drain_read) != 0) {
    conn_close(c);
    return;
  }
  set_phase(c, T_DRAIN, DRAIN_MS);
}

/* After the last response: flush, shut down our side, drain, close. */
static void conn_finish(http_conn *c) {
  if (c->closing || c->state == C_DRAINING) return;
  c->state = C_DRAINING;
  ready_remove(c);
  set_phase(c, T_NONE, 0);
  c->shut.data = c;
  if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0) conn_close(c);
}

static void json_escape_into(sbuf *b, const char *s) {
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') {
      sbuf_addc(b, '\\');
      sbuf_addc(b, (char)ch);
    } else if (ch < 0x20) {
      sbuf_printf(b, "\\u%04x", ch);
    } else {
      sbuf_addc(b, (char)ch);
    }
  }
}

/* A response the server gives itself, then the connection ends. */
static void respond_error(http_conn *c, int status, const char *code, const char *msg) {
  sbuf body = SBUF_INIT;
  sbuf_adds(&body, "{\"error\":\"");
  json_escape_into(&body, msg);
  sbuf_printf(&body, "\",\"code\":\"%s\",\"request_id\":\"%s\"}\n", code, c->reqid);
  sbuf out = SBUF_INIT;
  sbuf_printf(&out,
              "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
              "Connection: close\r\nX-Request-Id: %s\r\n\r\n",
              status, reason(status), body.len, c->reqid);
  sbuf_add(&out, body.data, body.len);
  int rc = conn_write(c, out.data, out.len);
  sbuf_free(&out);
  sbuf_free(&body);
  if (rc == 0) conn_finish(c);
}

/* ---- reading ----------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  (void)size;
  http_conn *c = h->data;
  http_server *s = c->srv;
  if (s->rbuf_busy) {
    /* cannot happen on one thread, but never hand out the buffer twice */
    buf->base = NULL;
    buf->len = 0;
    return;
  }
  s->rbuf_busy = 1;
  buf->base = s->rbuf;
  buf->len = sizeof s->rbuf;
}

static void release_rbuf(http_conn *c, const uv_buf_t *buf) {
  if (buf->base == c->srv->rbuf) c->srv->rbuf_busy = 0;
}

static void on_drain_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  http_conn *c = st->data;
  release_rbuf(c, buf);
  if (nread < 0) conn_close(c);
}

static void stop_reading(http_conn *c) {
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void start_reading(http_conn *c) {
  if (c->reading || c->closing || c->eof) return;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
    conn_close(c);
    return;
  }
  c->reading = 1;
}

/* Feeds data to the parser. from_in: data is c->in from c->in_off (so
 * what is left after a request stays there); else it is the read buffer
 * and what is left is copied into c->in. */
static void feed(http_conn *c, const char *data, size_t len, int from_in) {
  http_server *s = c->srv;
  while (!c->closing && c->state == C_READING) {
    size_t used = 0;
    int rc = hp_feed(c->hp, data, len, &used);
    if (rc == HP_ERROR) {
      int st = hp_error_status(c->hp);
      const char *code = st == 413 ? "body_too_large" : st == 431 ? "headers_too_large"
                       : st == 501 ? "not_implemented" : "bad_request";
      s->stats.errors++;
      respond_error(c, st, code, hp_error_message(c->hp));
      return;
    }
    data += used;
    len -= used;
    if (from_in) c->in_off += used;
    if (rc == HP_MORE) {
      http_request *r = hp_request(c->hp);
      if (hp_headers_done(c->hp) && r->expect_continue && !c->continue_sent) {
        c->continue_sent = 1;
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (conn_write(c, cont, sizeof cont - 1) != 0) return;
      }
      arm_reading(c);
      if (from_in) {
        sbuf_reset(&c->in);
        c->in_off = 0;
      }
      return;
    }
    /* a whole request */
    if (!from_in && len > 0) {
      sbuf_reset(&c->in);
      c->in_off = 0;
      sbuf_add(&c->in, data, len);
    }
    http_request *r = hp_request(c->hp);
    c->state = C_HANDLING;
    c->keep_alive = r->keep_alive && !c->eof;
    c->head_only = strcmp(r->method, "HEAD") == 0;
    set_phase(c, T_NONE, 0);
    if (c->in.len - c->in_off > s->lim.max_buffered) stop_reading(c);
    s->stats.requests++;
    s->cb.request(s->ud, c, r);
    return;
  }
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  http_conn *c = st->data;
  http_server *s = c->srv;
  if (nread == 0) {
    release_rbuf(c, buf);
    return;
  }
  if (nread < 0) {
    release_rbuf(c, buf);
    c->eof = 1;
    stop_reading(c);
    if (nread != UV_EOF || c->state == C_READING || c->state == C_STREAMING) {
      /* an unfinished request, a reset, or an event-stream client gone */
      conn_close(c);
    }
    /* HANDLING: the client shut its side after the request; the response
     * is still sent, then the connection closes (keep_alive is off) */
    c->keep_alive = 0;
    return;
  }
  if (c->state == C_DRAINING) {
    release_rbuf(c, buf); /* an error answered: what follows is not read */
    return;
  }
  if (c->state == C_READING && c->in.len == c->in_off) {
    feed(c, buf->base, (size_t)nread, 0);
  } else {
    /* input kept aside while a request is handled, or not yet parsed */
    if (c->in_off > 0 && c->in_off == c->in.len) {
      sbuf_reset(&c->in);
      c->in_off = 0;
    }
    sbuf_add(&c->in, buf->base, (size_t)nread);
    if (c->state == C_READING) {
      feed(c, c->in.data + c->in_off, c->in.len - c->in_off, 1);
    } else if (c->in.len - c->in_off > s->lim.max_buffered) {
      stop_reading(c);
    }
  }
  release_rbuf(c, buf);
}

static void on_idle(uv_idle_t *h) {
  http_server *s = h->data;
  /* only the connections ready now: those that become ready while these
   * are parsed wait for the next turn of the loop */
  http_conn *list = s->ready;
  s->ready = s->ready_tail = NULL;
  while (list) {
    http_conn *c = list;
    list = c->ready_next;
    c->ready_next = NULL;
    c->ready = 0;
    if (c->closing || c->state != C_READING) continue;
    feed(c, c->in.data + c->in_off, c->in.len - c->in_off, 1);
    if (!c->closing && c->state == C_READING) start_reading(c);
  }
  if (!s->ready && s->idle_active) {
    uv_idle_stop(&s->idle);
    s->idle_active = 0;
  }
}

static void make_ready(http_conn *c) {
  http_server *s = c->srv;
  if (c->ready) return;
  c->ready = 1;
  c->ready_next = NULL;
  if (s->ready_tail) s->ready_tail->ready_next = c; else s->ready = c;
  s->ready_tail = c;
  if (!s->idle_active) {
    uv_idle_start(&s->idle, on_idle);
    s->idle_active = 1;
  }
}

/* The response to the current request has been queued. */
static void request_done(http_conn *c) {
  if (c->closing) return;
  if (!c->keep_alive || c->eof || c->srv->closing) {
    conn_finish(c);
    return;
  }
  hp_next(c->hp);
  c->state = C_READING;
  c->served = 1;
  c->continue_sent = 0;
  new_request_id(c);
  if (c->in.len > c->in_off) {
    make_ready(c); /* pipelined input: parsed from the idle callback */
  } else {
    sbuf_reset(&c->in);
    c->in_off = 0;
    arm_reading(c);
    start_reading(c);
  }
}

static void on_timer(uv_timer_t *t) {
  http_conn *c = t->data;
  int phase = c->phase;
  c->phase = T_NONE;
  if (c->closing) return;
  if (phase == T_HEAD || phase == T_BODY) {
    c->srv->stats.errors++;
    respond_error(c, 408, "request_timeout",
                  phase == T_HEAD ? "the request headers did not arrive in time"
                                  : "the request body stalled");
  } else {
    conn_close(c);
  }
}

/* ---- responses --------------------------------------------------------- */

static int head_into(sbuf *out, http_conn *c, int status, const char *hdrs, size_t hlen,
                     int64_t length, int keep) {
  sbuf_printf(out, "HTTP/1.1 %d %s\r\n", status, reason(status));
  if (length >= 0) sbuf_printf(out, "Content-Length: %lld\r\n", (long long)length);
  sbuf_adds(out, keep ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
  sbuf_printf(out, "X-Request-Id: %s\r\n", c->reqid);
  if (hlen) sbuf_add(out, hdrs, hlen);
  sbuf_adds(out, "\r\n");
  return 0;
}

int http_respond(http_conn *c, int status, const char *hdrs, size_t hlen, const char *body,
                 size_t blen) {
  if (c->closing || c->state != C_HANDLING) return -1;
  if (c->srv->closing) c->keep_alive = 0;
  sbuf out = SBUF_INIT;
  head_into(&out, c, status, hdrs, hlen, (int64_t)blen, c->keep_alive);
  if (!c->head_only && blen) sbuf_add(&out, body, blen);
  int rc = conn_write(c, out.data, out.len);
  sbuf_free(&out);
  if (rc != 0) return -1;
  request_done(c);
  return 0;
}

int http_stream_start(http_conn *c, int status, const char *hdrs, size_t hlen) {
  if (c->closing || c->state != C_HANDLING) return -1;
  c->keep_alive = 0;
  sbuf out = SBUF_INIT;
  head_into(&out, c, status, hdrs, hlen, -1, 0);
  int rc = conn_write(c, out.data, out.len);
  sbuf_free(&out);
  if (rc != 0) return -1;
  c->state = C_STREAMING;
  /* an event-stream client sends nothing more; reading tells when it goes */
  start_reading(c);
  return 0;
}

int http_stream_write(http_conn *c, const char *data, size_t n) {
  if (c->closing || c->state != C_STREAMING) return -1;
  if (c->head_only) return 0;
  return conn_write(c, data, n);
}

void http_stream_end(http_conn *c) {
  if (c->closing || c->state != C_STREAMING) return;
  c->state = C_HANDLING;
  conn_finish(c);
}

size_t http_conn_queued(const http_conn *c) { return c->queued; }
const char *http_conn_request_id(const http_conn *c) { return c->reqid; }
void http_conn_set_data(http_conn *c, void *data) { c->data = data; }
void *http_conn_get_data(const http_conn *c) { return c->data; }
const char *http_conn_peer(http_conn *c) { return c->peer; }

/* ---- accepting --------------------------------------------------------- */

static void peer_name(http_conn *c) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  snprintf(c->peer, sizeof c->peer, "?");
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0) return;
  char ip[48] = "?";
  int port = 0;
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    uv_ip4_name(a, ip, sizeof ip);
    port = ntohs(a->sin_port);
    snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
  } else if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    uv_ip6_name(a, ip, sizeof ip);
    port = ntohs(a->sin6_port);
    snprintf(c->peer, sizeof c->peer, "[%s]:%d", ip, port);
  }
}

static void on_connection(uv_stream_t *server, int status) {
  http_server *s = server->data;
  if (status < 0 || s->closing) return;
  http_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->srv = s;
  c->hp = hp_new(s->lim.max_head, s->lim.max_body);
  if (!c->hp || uv_tcp_init(s->loop, &c->tcp) != 0) {
    hp_free(c->hp);
    free(c);
    return;
  }
  c->tcp.data = c;
  c->handles = 1;
  s->handles++;
  if (uv_timer_init(s->loop, &c->timer) != 0) {
    /* the connection closes with one handle */
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    return;
  }
  c->timer.data = c;
  c->handles = 2;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->stats.connections++;
  new_request_id(c);
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  s->stats.accepted++;
  uv_tcp_nodelay(&c->tcp, 1);
  peer_name(c);
  if (s->stats.connections > s->lim.max_connections) {
    s->stats.rejected++;
    char msg[96];
    snprintf(msg, sizeof msg, "too many connections (the server takes %d at a time)",
             s->lim.max_connections);
    respond_error(c, 503, "too_many_connections", msg);
    return;
  }
  arm_reading(c);
  start_reading(c);
}

/* ---- the server -------------------------------------------------------- */

int http_server_new(http_server **out, uv_loop_t *loop, const http_limits *limits,
                    const http_callbacks *cb, void *ud, char *err, size_t errsz) {
  http_server *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errsz, "out of memory");
    return -1;
  }
  s->loop = loop;
  s->lim = *limits;
  s->cb = *cb;
  s->ud = ud;
  if (getrandom(&s->id_prefix, sizeof s->id_prefix, 0) != (ssize_t)sizeof s->id_prefix) {
    s->id_prefix = (uint32_t)uv_hrtime();
  }
  int rc = uv_idle_init(loop, &s->idle);
  if (rc != 0) {
    snprintf(err, errsz, "http server: %s", uv_strerror(rc));
    free(s);
    return -1;
  }
  s->idle.data = s;
  s->handles = 1;
  *out = s;
  return 0;
}

static void on_listener_closed(uv_handle_t *h) {
  http_server *s = h->data;
  free(h);
  server_unref(s);
}

int http_server_listen(http_server *s, const char *host, int port, char *bound, size_t boundsz,
                       char *err, size_t errsz) {
  if (s->nlisteners >= MAX_LISTENERS) {
    snprintf(err, errsz, "at most %d listen addresses", MAX_LISTENERS);
    return UV_EINVAL;
  }
  struct sockaddr_storage ss;
  int v6 = strchr(host, ':') != NULL;
  int rc = v6 ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)
              : uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
  if (rc != 0) {
    snprintf(err, errsz, "%s is not an IP address (use a literal such as 127.0.0.1 or ::1)", host);
    return rc;
  }
  uv_tcp_t *t = malloc(sizeof *t);
  if (!t) {
    snprintf(err, errsz, "out of memory");
    return UV_ENOMEM;
  }
  rc = uv_tcp_init(s->loop, t);
  if (rc != 0) {
    free(t);
    snprintf(err, errsz, "listening on %s:%d: %s", host, port, uv_strerror(rc));
    return rc;
  }
  t->data = s;
  s->handles++;
  rc = uv_tcp_bind(t, (struct sockaddr *)&ss, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)t, 1024, on_connection);
  if (rc != 0) {
    snprintf(err, errsz, "cannot listen on %s%s%s:%d: %s", v6 ? "[" : "", host, v6 ? "]" : "",
             port, uv_strerror(rc));
    uv_close((uv_handle_t *)t, on_listener_closed);
    return rc;
  }
  int len = sizeof ss;
  uv_tcp_getsockname(t, (struct sockaddr *)&ss, &len);
  int bport = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  snprintf(bound, boundsz, "%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", bport);
  s->listeners[s->nlisteners++] = t;
  return 0;
}

static void on_idle_closed(uv_handle_t *h) { server_unref(h->data); }

void http_server_close(http_server *s, int quiet) {
  if (s->closing) return;
  s->closing = 1;
  s->quiet = quiet;
  for (int i = 0; i < s->nlisteners; i++) {
    uv_close((uv_handle_t *)s->listeners[i], on_listener_closed);
  }
  s->nlisteners = 0;
  while (s->conns) conn_close(s->conns);
  s->ready = s->ready_tail = NULL;
  uv_close((uv_handle_t *)&s->idle, on_idle_closed);
}

void http_server_stats(const http_server *s, http_stats *out) { *out = s->stats; }
