/* http_server.h: the HTTP/1.1 server of `sluice serve`, on the host's
 * libuv loop. Sockets, connection state, timeouts and limits; requests are
 * parsed by http_parse.h and handed to a callback; knows nothing of Lua
 * (l_http_server.c is the binding).
 *
 * One request per connection is handled at a time: after a request is
 * complete the connection parses nothing more until its response ends, so
 * pipelined requests are answered in order. Bytes that arrive meanwhile are
 * kept (up to limits.max_buffered, then reading pauses). Keep-alive,
 * Content-Length and chunked bodies, "Expect: 100-continue" (answered when
 * the headers are accepted), HEAD (the body is not sent). Limits answered
 * by the server itself, with a JSON error and an X-Request-Id like every
 * response: a body over max_body is a 413 before it is read, headers over
 * max_head a 431, malformed requests a 400, connections beyond
 * max_connections a 503; a request whose headers do not complete within
 * header_timeout_ms, or whose body stalls for body_timeout_ms, gets a 408
 * and the connection closes; a keep-alive connection idle for
 * idle_timeout_ms closes. After a final response the server shuts down its
 * side and reads what the client still sends for a moment before closing,
 * so the client sees the response rather than a reset.
 *
 * Everything runs on the loop thread. */
#ifndef SLUICE_HTTP_SERVER_H
#define SLUICE_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http_parse.h"

typedef struct http_server http_server;
typedef struct http_conn http_conn;

typedef struct {
  size_t max_head;            /* request line and headers, bytes */
  size_t max_body;            /* request body, bytes */
  int max_connections;        /* open connections served */
  uint64_t header_timeout_ms; /* a started request must have its headers by then */
  uint64_t body_timeout_ms;   /* the longest pause between body bytes */
  uint64_t idle_timeout_ms;   /* a keep-alive connection without a request */
  size_t max_buffered;        /* bytes kept from a client while its request is handled */
} http_limits;

/* Defaults: 16 KiB, 1 MiB, 1024, 10 s, 10 s, 60 s, 64 KiB. */
void http_limits_default(http_limits *l);

typedef struct {
  /* A complete request on c (valid until the response ends). The handler
   * answers with http_respond, or http_stream_start/write/end, now or
   * later. */
  void (*request)(void *ud, http_conn *c, http_request *req);
  /* c closed (client gone, write error, server closing) before its
   * response ended: c is freed right after this returns. */
  void (*closed)(void *ud, http_conn *c);
} http_callbacks;

typedef struct {
  uint64_t accepted;  /* connections accepted */
  uint64_t requests;  /* complete requests handed to the callback */
  uint64_t rejected;  /* connections answered 503 (max_connections) */
  uint64_t errors;    /* requests answered by the server itself (400, 408, 413, 431, 501) */
  int connections;    /* open now */
} http_stats;

/* Returns 0, or -1 with err (out of memory). */
int http_server_new(http_server **out, uv_loop_t *loop, const http_limits *limits,
                    const http_callbacks *cb, void *ud, char *err, size_t errsz);

/* Listens on host (an IPv4 or IPv6 literal) and port (0: a free one).
 * Writes the bound address ("127.0.0.1:40123", "[::1]:40123") to bound.
 * Returns 0, or a libuv error code (negative) with err naming the address. */
int http_server_listen(http_server *s, const char *host, int port, char *bound, size_t boundsz,
                       char *err, size_t errsz);

/* Closes the listeners and every connection at once (the closed callback
 * runs for requests in flight, unless quiet); the server frees itself once
 * every handle has closed (the loop must run). s is invalid afterwards. */
void http_server_close(http_server *s, int quiet);

void http_server_stats(const http_server *s, http_stats *out);

/* The whole response: status line, Content-Length (of body, also for HEAD,
 * whose body is not sent), Connection, the caller's header lines (each
 * "Name: value\r\n"; hdrs may be empty) and the body. Ends the request.
 * Returns 0, or -1 if the response cannot be sent (c was closed). */
int http_respond(http_conn *c, int status, const char *hdrs, size_t hlen, const char *body,
                 size_t blen);

/* A response of unknown length (Server-Sent Events): headers now, data as
 * it comes; the connection closes when it ends. write returns -1 once c
 * cannot send any more. end ends the request. */
int http_stream_start(http_conn *c, int status, const char *hdrs, size_t hlen);
int http_stream_write(http_conn *c, const char *data, size_t n);
void http_stream_end(http_conn *c);

/* Bytes handed to the socket layer but not yet written (a slow reader). */
size_t http_conn_queued(const http_conn *c);
/* The X-Request-Id of the request being handled. */
const char *http_conn_request_id(const http_conn *c);
void http_conn_set_data(http_conn *c, void *data);
void *http_conn_get_data(const http_conn *c);
/* The peer address as "ip:port" ("?" if unknown). */
const char *http_conn_peer(http_conn *c);

#endif
