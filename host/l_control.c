/* l_control.c: "sluice._control", the store's control socket
 * (control.c) on the host's libuv loop, for lua/control.lua. In luv's style:
 *
 *   listen(dir, on_conn) -> server | nil, "CODE: msg", "CODE"   on_conn(conn) per peer
 *   connect(dir) -> conn | nil, "CODE: msg", "CODE"             ENOENT, ECONNREFUSED, EAGAIN, ...
 *   conn:read_start(on_frame)   on_frame(payload) per frame; once at the end
 *                               on_frame(nil, "CODE: msg", "CODE") (EOF, ECONNRESET, EMSGSIZE)
 *   conn:write(payload) -> true | nil, "CODE: msg", "CODE"      queued, never blocks
 *   conn:close([on_closed])     after the queued writes are flushed
 *   server:close([on_closed])   removes the socket file if it is still ours
 *
 * Callbacks run on the main thread under vm_pcall. A peer of another user is
 * refused on accept with an EPERM frame and never reaches Lua. Handles stay
 * anchored in the registry until closed; control_close_all() closes what is
 * left at exit, before luv walks the loop (luv's walk takes every handle for
 * its own). Written in C rather than on luv's pipes for what luv cannot do:
 * bind owner-only with no window, peer credentials, paths longer than
 * sockaddr_un allows (libuv 1.44 truncates them silently). */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "control.h"
#include "modules.h"
#include "vm.h"

#define SERVER_MT "sluice.control.server"
#define CONN_MT "sluice.control.conn"
#define READ_CHUNK 65536

typedef struct ctl ctl;
struct ctl {
  uv_pipe_t pipe;
  lua_State *L; /* the main thread; NULL once Lua may no longer be called */
  int self_ref; /* the userdata, anchored until closed */
  int cb_ref;   /* on_conn (server) or on_frame (connection) */
  int close_ref;
  int closing;
  int ended; /* the stream's end was reported to on_frame */
  control_reader rd;
  uv_shutdown_t shut;
  char *dir; /* server: where its socket is, to remove it */
  ino_t ino;
  ctl *prev, *next;
};

static ctl *all; /* every handle not yet closed */
static int shutting_down;

static int fail_uv(lua_State *L, int rc) {
  char name[64];
  uv_err_name_r(rc, name, sizeof name);
  return modules_fail(L, name, uv_strerror(rc));
}

/* Allocation failure aborts, as sbuf does: a callback has no caller to
 * return it to. uv_pipe_init only fills the struct on Unix: it cannot fail. */
static ctl *new_ctl(lua_State *L) {
  ctl *c = calloc(1, sizeof *c);
  if (!c) abort();
  c->L = vm_of(L)->L;
  c->self_ref = c->cb_ref = c->close_ref = LUA_NOREF;
  if (uv_pipe_init(&vm_of(L)->loop, &c->pipe, 0) != 0) abort();
  c->pipe.data = c;
  c->next = all;
  if (all) all->prev = c;
  all = c;
  return c;
}

static void push_box(lua_State *L, ctl *c, const char *mt) {
  ctl **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = c;
  luaL_setmetatable(L, mt);
  lua_pushvalue(L, -1);
  c->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void on_closed(uv_handle_t *h) {
  ctl *c = h->data;
  if (c->prev) c->prev->next = c->next;
  else all = c->next;
  if (c->next) c->next->prev = c->prev;
  lua_State *L = c->L;
  int close_ref = c->close_ref;
  if (L) {
    if (c->self_ref != LUA_NOREF) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, c->self_ref);
      ctl **box = lua_touserdata(L, -1);
      if (box) *box = NULL;
      lua_pop(L, 1);
      luaL_unref(L, LUA_REGISTRYINDEX, c->self_ref);
    }
    luaL_unref(L, LUA_REGISTRYINDEX, c->cb_ref);
  }
  control_reader_free(&c->rd);
  free(c->dir);
  free(c);
  if (L && close_ref != LUA_NOREF) {
    if (!shutting_down) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, close_ref);
      vm_pcall(L, 0, 0, 0);
    }
    luaL_unref(L, LUA_REGISTRYINDEX, close_ref);
  }
}

static void close_now(ctl *c) {
  c->closing = 1;
  if (!uv_is_closing((uv_handle_t *)&c->pipe)) uv_close((uv_handle_t *)&c->pipe, on_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status; /* closing either way; a reset peer shows in its reads */
  close_now(req->data);
}

/* Closes after the queued writes went out (a reply before a hang-up). */
static void close_gracefully(ctl *c) {
  if (c->closing) return;
  c->closing = 1;
  uv_read_stop((uv_stream_t *)&c->pipe);
  c->shut.data = c;
  if (uv_shutdown(&c->shut, (uv_stream_t *)&c->pipe, on_shutdown) != 0) close_now(c);
}

/* on_frame(nil, msg, code), once */
static void report_end(ctl *c, const char *msg, const char *code) {
  if (c->ended || c->cb_ref == LUA_NOREF || !c->L || shutting_down) return;
  c->ended = 1;
  lua_State *L = c->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->cb_ref);
  vm_pcall(L, modules_fail(L, code, msg), 0, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h, (void)suggested;
  buf->base = malloc(READ_CHUNK);
  buf->len = buf->base ? READ_CHUNK : 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  ctl *c = s->data;
  if (n > 0) control_reader_feed(&c->rd, buf->base, (size_t)n);
  free(buf->base);
  if (n == 0) return;
  if (n < 0) {
    char name[64];
    uv_err_name_r((int)n, name, sizeof name);
    report_end(c, n == UV_EOF ? "the other end closed the connection" : uv_strerror((int)n), name);
    close_now(c);
    return;
  }
  const char *p;
  uint32_t len;
  int rc = 0;
  while (!c->closing && c->L && (rc = control_reader_next(&c->rd, &p, &len)) == 1) {
    lua_State *L = c->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->cb_ref);
    lua_pushlstring(L, p, len);
    vm_pcall(L, 1, 0, 0); /* may close c: its memory stays until on_closed */
  }
  if (rc < 0 && !c->closing) {
    report_end(c, "the other end sent a frame larger than 256 MiB", "EMSGSIZE");
    close_now(c);
  }
}

typedef struct {
  uv_write_t req;
  char data[];
} wreq;

static void on_written(uv_write_t *req, int status) {
  (void)status; /* a failed write shows as the end of the stream in on_read */
  free(req);
}

/* Queues one frame. Returns 0 or a libuv error. */
static int write_frame(ctl *c, const char *p, size_t n) {
  wreq *w = malloc(sizeof *w + 4 + n);
  if (!w) abort();
  control_frame_header((uint32_t)n, (unsigned char *)w->data);
  memcpy(w->data + 4, p, n);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)(4 + n));
  int rc = uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_written);
  if (rc != 0) free(w);
  return rc;
}

static void on_connection(uv_stream_t *server, int status) {
  ctl *s = server->data;
  if (status < 0) {
    fprintf(stderr, "sluice: control socket: accepting a connection: %s\n", uv_strerror(status));
    return;
  }
  if (s->closing || !s->L) return;
  ctl *c = new_ctl(s->L);
  if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
    close_now(c);
    return;
  }
  uv_os_fd_t fd;
  uid_t uid = (uid_t)-1;
  if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0 || control_peer_uid(fd, &uid) != 0 ||
      uid != geteuid()) {
    char msg[256];
    int n = snprintf(msg, sizeof msg,
                     "{\"ok\":false,\"code\":\"EPERM\",\"message\":\"this control socket is for uid "
                     "%ld only; the connection came from uid %ld\"}",
                     (long)geteuid(), (long)uid);
    (void)write_frame(c, msg, (size_t)n);
    close_gracefully(c);
    return;
  }
  lua_State *L = s->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->cb_ref);
  push_box(L, c, CONN_MT);
  vm_pcall(L, 1, 0, 0);
}

/* listen(dir, on_conn) -> server | nil, msg, code. The caller holds the
 * store's writer lock. */
static int l_listen(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int fd;
  ino_t ino;
  char err[600];
  int e = control_listen(dir, &fd, &ino, err, sizeof err);
  if (e != 0) {
    char name[64];
    uv_err_name_r(-e, name, sizeof name);
    return modules_fail(L, name, err);
  }
  char *dcopy = strdup(dir);
  if (!dcopy) abort();
  ctl *c = new_ctl(L);
  c->dir = dcopy;
  c->ino = ino;
  int rc = uv_pipe_open(&c->pipe, fd);
  if (rc != 0) close(fd);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&c->pipe, 128, on_connection);
  if (rc != 0) {
    (void)control_unlink(dir, ino);
    close_now(c);
    return fail_uv(L, rc);
  }
  lua_pushvalue(L, 2);
  c->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  push_box(L, c, SERVER_MT);
  return 1;
}

/* connect(dir) -> conn | nil, msg, code */
static int l_connect(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  int fd;
  char err[600];
  int e = control_connect(dir, &fd, err, sizeof err);
  if (e != 0) {
    char name[64];
    uv_err_name_r(-e, name, sizeof name);
    return modules_fail(L, name, err);
  }
  ctl *c = new_ctl(L);
  int rc = uv_pipe_open(&c->pipe, fd);
  if (rc != 0) {
    close(fd);
    close_now(c);
    return fail_uv(L, rc);
  }
  push_box(L, c, CONN_MT);
  return 1;
}

static ctl *box_of(lua_State *L, const char *mt) {
  ctl **box = luaL_checkudata(L, 1, mt);
  return *box;
}

static int l_read_start(lua_State *L) {
  ctl *c = box_of(L, CONN_MT);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (!c || c->closing) return modules_fail(L, "EPIPE", "the connection is closed");
  if (c->cb_ref != LUA_NOREF) return luaL_error(L, "read_start: the connection is read already");
  lua_pushvalue(L, 2);
  c->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  int rc = uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
  if (rc != 0) return fail_uv(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_write(lua_State *L) {
  ctl *c = box_of(L, CONN_MT);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  if (!c || c->closing) return modules_fail(L, "EPIPE", "the connection is closed");
  if (n > CONTROL_FRAME_MAX) return modules_fail(L, "EMSGSIZE", "a frame is at most 256 MiB");
  int rc = write_frame(c, p, n);
  if (rc != 0) return fail_uv(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}

/* close([on_closed]) -> true while on_closed is still to come, false when
 * the handle was closed already (on_closed is not called then) */
static int close_common(lua_State *L, const char *mt) {
  ctl *c = box_of(L, mt);
  if (!c) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (lua_isfunction(L, 2) && c->close_ref == LUA_NOREF) {
    lua_pushvalue(L, 2);
    c->close_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  if (!c->closing) {
    if (c->dir) {
      (void)control_unlink(c->dir, c->ino);
      close_now(c);
    } else {
      close_gracefully(c);
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_conn_close(lua_State *L) { return close_common(L, CONN_MT); }
static int l_server_close(lua_State *L) { return close_common(L, SERVER_MT); }

/* collected only when the state closes (handles are anchored until closed):
 * the loop must not call into Lua afterwards */
static int l_gc(lua_State *L) {
  ctl **box = lua_touserdata(L, 1);
  if (box && *box) {
    (*box)->L = NULL;
    (*box)->self_ref = LUA_NOREF;
    *box = NULL;
  }
  return 0;
}

void control_close_all(void) {
  shutting_down = 1;
  for (ctl *c = all; c; c = c->next) {
    if (c->dir) (void)control_unlink(c->dir, c->ino);
    close_now(c);
  }
}

int luaopen_sluice__control(lua_State *L) {
  static const luaL_Reg conn_methods[] = {
      {"read_start", l_read_start}, {"write", l_write}, {"close", l_conn_close}, {NULL, NULL}};
  static const luaL_Reg server_methods[] = {{"close", l_server_close}, {NULL, NULL}};
  modules_class(L, CONN_MT, conn_methods, l_gc, 0);
  modules_class(L, SERVER_MT, server_methods, l_gc, 0);
  static const luaL_Reg fns[] = {{"listen", l_listen}, {"connect", l_connect}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
