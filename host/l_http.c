/* l_http.c: "sluice._http", the C core of sluice.http (stdlib/sluice/http.lua
 * is the API and checks the options): libcurl's multi interface on the
 * host's libuv loop, as curl's docs/examples/multi-uv.c does it: one
 * uv_poll_t per socket curl asks us to watch, one uv_timer_t for curl's
 * timeout, and one multi handle for the process, whose connection cache and
 * DNS cache every request shares (keep-alive, HTTP/2 multiplexing).
 *
 * request(spec) suspends the calling coroutine; the loop goes on with other
 * work, and when the transfer ends the coroutine is resumed with
 *   {status=, headers={lower-case name = value}, body=, url=, time_ms=}
 * or nil, "CODE: message (METHOD url)", "CODE". spec fields:
 *   method, url             strings (file:// reads a local file, status 200)
 *   headers                 array of "Name: value" lines
 *   body                    string to send, or nil
 *   timeout_ms              total time limit; 0: none, but a transfer that
 *                           moves no byte for 60 s fails (ETIMEDOUT)
 *   connect_timeout_ms      0: curl's default (300 s)
 *   follow                  maximum redirects to follow (0: none)
 *   max_bytes               body size limit (ETOOBIG), or nil
 *   path                    download: the body goes to a temporary file
 *                           beside path, fsync'ed on a worker thread and
 *                           renamed into place; the result has bytes and
 *                           path instead of body; a status >= 400 fails
 *                           (EHTTP) and leaves no file
 * Download chunks are written with write(2) on the loop thread (page cache;
 * the fsync is what takes time, and it is off the loop).
 *
 * Depends on: libcurl (7.88, async DNS built in), libuv, vm.h (resuming
 * coroutines), sbuf.h. Shut down by http_shutdown (modules.h) before the
 * loop's last run. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>
#include <uv.h>

#include "modules.h"
#include "sbuf.h"
#include "vm.h"


/* a socket curl watches */
typedef struct sock_ctx {
  uv_poll_t poll;
  curl_socket_t fd;
  struct sock_ctx *prev, *next;
} sock_ctx;

/* one transfer, from request() to the resume of its coroutine */
typedef struct xfer {
  CURL *easy;
  lua_State *co;
  int co_ref;
  struct curl_slist *headers;
  sbuf body;
  sbuf hdrs; /* header lines of the latest response (a redirect resets it) */
  curl_off_t max_bytes; /* -1: no limit */
  curl_off_t received;
  int too_big;
  int fd; /* download: the temporary file, or -1 */
  char *path, *tmp;
  int io_errno; /* download: errno of a failed write, fsync or rename */
  const char *io_what;
  uint64_t started_ns;
  CURLcode result;
  uv_work_t work;
  char method[16];
  char errbuf[CURL_ERROR_SIZE];
  struct xfer *prev, *next;
} xfer;

static struct {
  CURLM *multi;
  uv_loop_t *loop;
  uv_timer_t timer;
  int ready;   /* multi and timer made */
  int closing; /* http_shutdown ran: resume nothing */
  sock_ctx *socks;
  xfer *xfers; /* in flight, for http_shutdown */
  int finishing; /* downloads whose fsync/rename runs on a worker */
} HT;

#define LIST_ADD(head, x) \
  do {                    \
    (x)->prev = NULL;     \
    (x)->next = (head);   \
    if (head) (head)->prev = (x); \
    (head) = (x);         \
  } while (0)
#define LIST_DEL(head, x)                            \
  do {                                               \
    if ((x)->prev) (x)->prev->next = (x)->next;      \
    else (head) = (x)->next;                         \
    if ((x)->next) (x)->next->prev = (x)->prev;      \
    (x)->prev = (x)->next = NULL;                    \
  } while (0)

static void check_done(void);

static void free_sock(uv_handle_t *h) { free(h->data); }

static void on_poll(uv_poll_t *h, int status, int events) {
  sock_ctx *c = h->data;
  int flags = 0;
  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  int running;
  curl_multi_socket_action(HT.multi, c->fd, flags, &running);
  check_done();
}

static void on_timer(uv_timer_t *t) {
  (void)t;
  int running;
  curl_multi_socket_action(HT.multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done();
}

/* CURLMOPT_SOCKETFUNCTION: start, change or stop watching a socket */
static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp) {
  (void)e;
  (void)userp;
  sock_ctx *c = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (c) {
      curl_multi_assign(HT.multi, s, NULL);
      LIST_DEL(HT.socks, c);
      uv_poll_stop(&c->poll);
      uv_close((uv_handle_t *)&c->poll, free_sock);
    }
    return 0;
  }
  if (!c) {
    c = calloc(1, sizeof *c);
    if (!c) return -1;
    if (uv_poll_init_socket(HT.loop, &c->poll, s) != 0) {
      free(c);
      return -1;
    }
    c->fd = s;
    c->poll.data = c;
    LIST_ADD(HT.socks, c);
    curl_multi_assign(HT.multi, s, c);
  }
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  return uv_poll_start(&c->poll, events, on_poll) == 0 ? 0 : -1;
}

/* CURLMOPT_TIMERFUNCTION. A 0 ms timer fires on the next loop iteration:
 * socket_action must not run inside this callback. */
static int on_timeout(CURLM *m, long timeout_ms, void *userp) {
  (void)m;
  (void)userp;
  if (timeout_ms < 0) {
    uv_timer_stop(&HT.timer);
  } else {
    uv_timer_start(&HT.timer, on_timer, (uint64_t)timeout_ms, 0);
  }
  return 0;
}

static int ensure_ready(lua_State *L, char *err, size_t errsz) {
  if (HT.ready) return 0;
  if (HT.closing) {
    snprintf(err, errsz, "the host is shutting down");
    return -1;
  }
  HT.multi = curl_multi_init();
  if (!HT.multi) {
    snprintf(err, errsz, "curl_multi_init failed");
    return -1;
  }
  HT.loop = &vm_of(L)->loop;
  if (uv_timer_init(HT.loop, &HT.timer) != 0) {
    curl_multi_cleanup(HT.multi);
    HT.multi = NULL;
    snprintf(err, errsz, "cannot create a loop timer");
    return -1;
  }
  curl_multi_setopt(HT.multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(HT.multi, CURLMOPT_TIMERFUNCTION, on_timeout);
  curl_multi_setopt(HT.multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  HT.ready = 1;
  return 0;
}

static void xfer_free(xfer *x) {
  if (x->easy) curl_easy_cleanup(x->easy);
  curl_slist_free_all(x->headers);
  sbuf_free(&x->body);
  sbuf_free(&x->hdrs);
  if (x->fd >= 0) close(x->fd);
  if (x->tmp) unlink(x->tmp);
  free(x->tmp);
  free(x->path);
  free(x);
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  xfer *x = ud;
  size_t len = size * n;
  if (x->max_bytes >= 0 && x->received + (curl_off_t)len > x->max_bytes) {
    x->too_big = 1;
    return 0; /* fails the transfer with CURLE_WRITE_ERROR */
  }
  x->received += (curl_off_t)len;
  if (x->fd < 0) {
    sbuf_add(&x->body, p, len);
    return len;
  }
  size_t off = 0;
  while (off < len) {
    ssize_t w = write(x->fd, p + off, len - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      x->io_errno = errno;
      x->io_what = "write";
      return 0;
    }
    off += (size_t)w;
  }
  return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  xfer *x = ud;
  size_t len = size * n;
  /* a status line starts a new response (after a redirect or a 100) */
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) sbuf_reset(&x->hdrs);
  sbuf_add(&x->hdrs, p, len);
  return len;
}

/* Pushes the header lines of x as a table: lower-case names; a repeated
 * header's values joined with ", ". */
static void push_headers(lua_State *co, xfer *x) {
  lua_newtable(co);
  const char *p = x->hdrs.data, *end = p + x->hdrs.len;
  while (p && p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *next = eol ? eol + 1 : end;
    if (!eol) eol = end;
    const char *colon = memchr(p, ':', (size_t)(eol - p));
    if (colon && colon > p && *p != ' ' && *p != '\t') {
      luaL_Buffer b;
      luaL_buffinit(co, &b);
      for (const char *q = p; q < colon; q++) luaL_addchar(&b, (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q));
      luaL_pushresult(&b);
      const char *v = colon + 1, *ve = eol;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      lua_pushvalue(co, -1);
      if (lua_rawget(co, -3) == LUA_TSTRING) {
        lua_pushliteral(co, ", ");
        lua_pushlstring(co, v, (size_t)(ve - v));
        lua_concat(co, 3);
      } else {
        lua_pop(co, 1);
        lua_pushlstring(co, v, (size_t)(ve - v));
      }
      lua_rawset(co, -3);
    }
    p = next;
  }
}

static const char *code_of(xfer *x, CURLcode rc, long os_errno) {
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: return "ETIMEDOUT";
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return "EDNS";
    case CURLE_COULDNT_CONNECT:
      if (os_errno > 0 && os_errno != ECONNREFUSED) return uv_err_name(-(int)os_errno);
      return "ECONNREFUSED";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED: return "ETLS";
    case CURLE_FILESIZE_EXCEEDED: return "ETOOBIG";
    case CURLE_TOO_MANY_REDIRECTS: return "EREDIRECT";
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT: return "EURL";
    case CURLE_FILE_COULDNT_READ_FILE: return "ENOENT";
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR: return "ECONNRESET";
    case CURLE_PARTIAL_FILE: return "EPARTIAL";
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_BAD_CONTENT_ENCODING: return "EPROTO";
    case CURLE_HTTP_RETURNED_ERROR: return "EHTTP";
    case CURLE_OUT_OF_MEMORY: return "ENOMEM";
    case CURLE_WRITE_ERROR:
      if (x->too_big) return "ETOOBIG";
      if (x->io_errno) return uv_err_name(-x->io_errno);
      return "EIO";
    default: return "EIO";
  }
}

/* Resumes x's coroutine with the nargs values on its stack, then frees x. */
static void resume(xfer *x, int nargs) {
  lua_State *co = x->co;
  lua_State *L = vm_of(co)->L;
  int ref = x->co_ref;
  xfer_free(x);
  if (lua_status(co) != LUA_YIELD) {
    fprintf(stderr, "sluice: a coroutine waiting for an HTTP reply was resumed elsewhere; "
                    "reply dropped\n");
    lua_pop(co, nargs);
  } else {
    vm_resume(co, NULL, nargs);
  }
  /* drop the anchor only now: the coroutine may have finished above */
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

static void resume_error(xfer *x, const char *code, const char *msg) {
  lua_State *co = x->co;
  luaL_checkstack(co, 4, "resuming an HTTP request");
  const char *url = NULL;
  curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &url);
  lua_pushnil(co);
  lua_pushfstring(co, "%s: %s (%s %s)", code, msg, x->method, url ? url : "?");
  lua_pushstring(co, code);
  resume(x, 3);
}

static void resume_response(xfer *x) {
  lua_State *co = x->co;
  long status = 0;
  const char *url = NULL, *scheme = NULL;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &url);
  curl_easy_getinfo(x->easy, CURLINFO_SCHEME, &scheme);
  if (status == 0 && scheme && strcasecmp(scheme, "file") == 0) status = 200;
  luaL_checkstack(co, 8, "resuming an HTTP request");
  lua_createtable(co, 0, 6);
  lua_pushinteger(co, status);
  lua_setfield(co, -2, "status");
  push_headers(co, x);
  lua_setfield(co, -2, "headers");
  if (x->path) {
    lua_pushinteger(co, (lua_Integer)x->received);
    lua_setfield(co, -2, "bytes");
    lua_pushstring(co, x->path);
    lua_setfield(co, -2, "path");
  } else {
    lua_pushlstring(co, x->body.data ? x->body.data : "", x->body.len);
    lua_setfield(co, -2, "body");
  }
  lua_pushstring(co, url ? url : "");
  lua_setfield(co, -2, "url");
  lua_pushnumber(co, (double)((uv_hrtime() - x->started_ns) / 1000) / 1000.0);
  lua_setfield(co, -2, "time_ms");
  resume(x, 1);
}

/* download: fsync the temporary file, rename it into place, fsync the
 * directory; on a worker thread, since fsync may take long */
static void finish_work(uv_work_t *w) {
  xfer *x = w->data;
  if (fsync(x->fd) != 0) {
    x->io_errno = errno;
    x->io_what = "fsync";
    return;
  }
  if (close(x->fd) != 0) {
    x->fd = -1;
    x->io_errno = errno;
    x->io_what = "close";
    return;
  }
  x->fd = -1;
  if (rename(x->tmp, x->path) != 0) {
    x->io_errno = errno;
    x->io_what = "rename";
    return;
  }
  free(x->tmp);
  x->tmp = NULL;
  char *copy = strdup(x->path);
  if (!copy) return;
  int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(copy);
  if (dfd >= 0) {
    if (fsync(dfd) != 0) {
      x->io_errno = errno;
      x->io_what = "fsync of the directory";
    }
    close(dfd);
  }
}

static void finish_done(uv_work_t *w, int status) {
  xfer *x = w->data;
  HT.finishing--;
  if (HT.closing) {
    luaL_unref(vm_of(x->co)->L, LUA_REGISTRYINDEX, x->co_ref);
    xfer_free(x);
    return;
  }
  if (status != 0 || x->io_errno) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s %s: %s", x->io_what ? x->io_what : "finishing", x->path,
             status != 0 ? uv_strerror(status) : strerror(x->io_errno));
    resume_error(x, status != 0 ? "EIO" : uv_err_name(-x->io_errno), msg);
    return;
  }
  resume_response(x);
}

static void finish(xfer *x, CURLcode rc) {
  LIST_DEL(HT.xfers, x);
  if (rc == CURLE_OK) {
    if (x->path) {
      x->work.data = x;
      if (uv_queue_work(HT.loop, &x->work, finish_work, finish_done) == 0) {
        HT.finishing++;
        return;
      }
      resume_error(x, "EIO", "cannot queue the download's fsync");
      return;
    }
    resume_response(x);
    return;
  }
  long os_errno = 0;
  curl_easy_getinfo(x->easy, CURLINFO_OS_ERRNO, &os_errno);
  const char *code = code_of(x, rc, os_errno);
  char msg[CURL_ERROR_SIZE + 128];
  if (x->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
    snprintf(msg, sizeof msg, "the response body is larger than max_bytes (%lld)",
             (long long)x->max_bytes);
  } else if (rc == CURLE_HTTP_RETURNED_ERROR) {
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    snprintf(msg, sizeof msg, "the server answered %ld", status);
  } else if (rc == CURLE_WRITE_ERROR && x->io_errno) {
    snprintf(msg, sizeof msg, "%s %s: %s", x->io_what, x->tmp, strerror(x->io_errno));
  } else {
    snprintf(msg, sizeof msg, "%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
  }
  resume_error(x, code, msg);
}

static void check_done(void) {
  CURLMsg *m;
  int left;
  while (HT.multi && (m = curl_multi_info_read(HT.multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    CURL *e = m->easy_handle;
    CURLcode rc = m->data.result; /* m is invalid after remove_handle */
    xfer *x = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
    curl_multi_remove_handle(HT.multi, e);
    finish(x, rc);
  }
}

static lua_Integer opt_int(lua_State *L, const char *field, lua_Integer dflt) {
  lua_getfield(L, 1, field);
  lua_Integer v = lua_isnil(L, -1) ? dflt : luaL_checkinteger(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Makes the temporary file beside x->path. Returns 0 or an errno. */
static int open_tmp(xfer *x) {
  unsigned char r[6];
  if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) return EIO;
  size_t n = strlen(x->path) + 32;
  x->tmp = malloc(n);
  if (!x->tmp) return ENOMEM;
  snprintf(x->tmp, n, "%s.%02x%02x%02x%02x%02x%02x.part", x->path, r[0], r[1], r[2], r[3],
           r[4], r[5]);
  x->fd = open(x->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (x->fd < 0) {
    int e = errno;
    free(x->tmp);
    x->tmp = NULL;
    return e;
  }
  return 0;
}

#define SETOPT(opt, val)                                                   \
  do {                                                                     \
    if (curl_easy_setopt(x->easy, opt, val) != CURLE_OK) goto setopt_fail; \
  } while (0)

/* request(spec): see the header. Raises on misuse; returns nil, msg, code
 * for what fails before the transfer starts (a file that cannot be made). */
static int l_request(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isyieldable(L)) {
    return modules_error(L, "sluice.http: a request waits for its reply, so it must run in a "
                         "coroutine the host resumes (a run, a step, a task, or the main chunk "
                         "of a script), not in a callback or a C function");
  }
  lua_getfield(L, 1, "url");
  const char *url = luaL_checkstring(L, -1);
  lua_getfield(L, 1, "method");
  const char *method = luaL_optstring(L, -1, "GET");
  luaL_argcheck(L, strlen(method) < sizeof(((xfer *)0)->method), 1, "method name too long");
  lua_getfield(L, 1, "body");
  size_t body_len = 0;
  const char *body = luaL_optlstring(L, -1, NULL, &body_len);
  lua_getfield(L, 1, "path");
  const char *path = luaL_optstring(L, -1, NULL);
  lua_Integer timeout_ms = opt_int(L, "timeout_ms", 0);
  lua_Integer connect_ms = opt_int(L, "connect_timeout_ms", 0);
  lua_Integer follow = opt_int(L, "follow", 0);
  lua_Integer max_bytes = opt_int(L, "max_bytes", -1);

  char err[256];
  if (ensure_ready(L, err, sizeof err) != 0) return modules_error(L, "sluice.http: %s", err);

  xfer *x = calloc(1, sizeof *x);
  if (!x) return modules_error(L, "sluice.http: out of memory");
  x->fd = -1;
  x->max_bytes = max_bytes;
  snprintf(x->method, sizeof x->method, "%s", method);
  x->easy = curl_easy_init();
  if (!x->easy) {
    xfer_free(x);
    return modules_error(L, "sluice.http: curl_easy_init failed");
  }
  lua_getfield(L, 1, "headers");
  if (!lua_isnil(L, -1)) {
    luaL_checktype(L, -1, LUA_TTABLE);
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      const char *h = lua_tostring(L, -1);
      struct curl_slist *nl = h ? curl_slist_append(x->headers, h) : NULL;
      lua_pop(L, 1);
      if (!nl) {
        xfer_free(x);
        return modules_error(L, "sluice.http: headers[%d] is not a string", (int)i);
      }
      x->headers = nl;
    }
  }
  lua_pop(L, 1);

  SETOPT(CURLOPT_URL, url);
  SETOPT(CURLOPT_PRIVATE, (char *)x);
  SETOPT(CURLOPT_ERRORBUFFER, x->errbuf);
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https,file");
  SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  SETOPT(CURLOPT_ACCEPT_ENCODING, ""); /* every encoding curl decodes */
  SETOPT(CURLOPT_USERAGENT, "sluice");
  SETOPT(CURLOPT_WRITEFUNCTION, on_body);
  SETOPT(CURLOPT_WRITEDATA, x);
  SETOPT(CURLOPT_HEADERFUNCTION, on_header);
  SETOPT(CURLOPT_HEADERDATA, x);
  if (follow > 0) {
    SETOPT(CURLOPT_FOLLOWLOCATION, 1L);
    SETOPT(CURLOPT_MAXREDIRS, (long)follow);
  }
  if (timeout_ms > 0) {
    SETOPT(CURLOPT_TIMEOUT_MS, (long)timeout_ms);
  } else {
    SETOPT(CURLOPT_LOW_SPEED_LIMIT, 1L);
    SETOPT(CURLOPT_LOW_SPEED_TIME, 60L);
  }
  if (connect_ms > 0) SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
  if (max_bytes >= 0) SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_bytes);
  if (strcmp(method, "GET") == 0 && !body) {
    SETOPT(CURLOPT_HTTPGET, 1L);
  } else if (strcmp(method, "HEAD") == 0) {
    SETOPT(CURLOPT_NOBODY, 1L);
  } else {
    if (body || strcmp(method, "POST") == 0) {
      SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
      SETOPT(CURLOPT_COPYPOSTFIELDS, body ? body : "");
    }
    /* POST stays curl's own so a 303 after it becomes a GET */
    if (strcmp(method, "POST") != 0) SETOPT(CURLOPT_CUSTOMREQUEST, method);
  }
  {
    /* no "Expect: 100-continue" round trip before a body */
    struct curl_slist *nl = curl_slist_append(x->headers, "Expect:");
    if (!nl) goto setopt_fail;
    x->headers = nl;
    SETOPT(CURLOPT_HTTPHEADER, x->headers);
  }
  if (path) {
    SETOPT(CURLOPT_FAILONERROR, 1L);
    x->path = strdup(path);
    if (!x->path) goto setopt_fail;
    int e = open_tmp(x);
    if (e != 0) {
      char *p = x->path;
      x->path = NULL;
      xfer_free(x);
      lua_pushnil(L);
      lua_pushfstring(L, "%s: cannot create a file beside %s: %s", uv_err_name(-e), p, strerror(e));
      lua_pushstring(L, uv_err_name(-e));
      free(p);
      return 3;
    }
  }

  x->started_ns = uv_hrtime();
  CURLMcode mc = curl_multi_add_handle(HT.multi, x->easy);
  if (mc != CURLM_OK) {
    xfer_free(x);
    return modules_error(L, "sluice.http: curl_multi_add_handle: %s", curl_multi_strerror(mc));
  }
  x->co = L;
  lua_pushthread(L);
  x->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  LIST_ADD(HT.xfers, x);
  return lua_yield(L, 0);

setopt_fail:
  xfer_free(x);
  return modules_error(L, "sluice.http: libcurl refused an option (out of memory?)");
}

/* version() -> libcurl's version string with its TLS library and features */
static int l_version(lua_State *L) {
  lua_pushstring(L, curl_version());
  return 1;
}

/* in_flight() -> transfers in flight and sockets watched (for tests) */
static int l_in_flight(lua_State *L) {
  int nx = 0, ns = 0;
  for (xfer *x = HT.xfers; x; x = x->next) nx++;
  for (sock_ctx *c = HT.socks; c; c = c->next) ns++;
  lua_pushinteger(L, nx + HT.finishing);
  lua_pushinteger(L, ns);
  return 2;
}

int luaopen_sluice__http(lua_State *L) {
  static int global_done;
  if (!global_done) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      return modules_error(L, "sluice.http: curl_global_init failed");
    }
    global_done = 1;
  }
  static const luaL_Reg fns[] = {
      {"request", l_request}, {"version", l_version}, {"in_flight", l_in_flight}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}

void http_shutdown(lua_State *L) {
  HT.closing = 1;
  if (!HT.ready) return;
  while (HT.xfers) {
    xfer *x = HT.xfers;
    LIST_DEL(HT.xfers, x);
    curl_multi_remove_handle(HT.multi, x->easy);
    luaL_unref(L, LUA_REGISTRYINDEX, x->co_ref);
    xfer_free(x);
  }
  /* closes the cached connections; their sockets come back through
   * on_socket as CURL_POLL_REMOVE */
  curl_multi_cleanup(HT.multi);
  HT.multi = NULL;
  while (HT.socks) {
    sock_ctx *c = HT.socks;
    LIST_DEL(HT.socks, c);
    uv_poll_stop(&c->poll);
    uv_close((uv_handle_t *)&c->poll, free_sock);
  }
  uv_close((uv_handle_t *)&HT.timer, NULL);
  HT.ready = 0;
  /* downloads finishing on a worker are freed by finish_done, which the
   * loop's last run calls */
}
