/* l_sqlite.c: "sluice._sqlite", the C core of sluice.sqlite (the API and its
 * documentation are stdlib/sluice/sqlite.lua): SQLite databases whose every
 * statement runs on libuv's thread pool (uv_queue_work), so the loop never
 * waits for SQLite's locks or fsync; the calling coroutine suspends.
 *
 * Each database has a FIFO of operations and at most one on a worker at a
 * time, so a connection is used by one thread at a time (it is opened with
 * SQLITE_OPEN_NOMUTEX) and operations run in the order they were called.
 * Lua values are copied into C before an operation is queued and results
 * are built into Lua only back on the loop thread.
 *
 *   open(path, readonly, wal, busy_timeout_ms) -> true, db
 *   exec(db, sql [, params])        -> true, changes, last_insert_rowid
 *   rows(db, sql [, params])        -> true, {record, ...}
 *   insert_many(db, table, records, conflict_columns|nil) -> true, count
 *   close(db)                       -> true
 * Each returns nil, "SQLITE_CODE: message", "SQLITE_CODE" when SQLite
 * fails; misuse (a closed database, a value that cannot be bound, no
 * coroutine to suspend) raises.
 *
 * Values: integers and floats as they are, booleans as 1/0, strings as
 * TEXT when valid UTF-8 and as BLOB otherwise, nil and json.null as NULL,
 * tables as their JSON text (the store's codec). Read back: INTEGER as a
 * Lua integer, REAL as a float, TEXT and BLOB as strings, NULL as an
 * absent field. params: an array binds ?, ?NNN in order; a table of names
 * binds :name, @name, $name.
 *
 * insert_many copies the records in chunks (CHUNK_ROWS at a time) on the
 * loop thread, between which the worker inserts the previous chunk, all in
 * one transaction (BEGIN IMMEDIATE ... COMMIT; ROLLBACK on any error).
 *
 * Depends on: sqlite3, libuv, vm.h (resuming), codec.h (tables as JSON),
 * sbuf.h. sqlite_shutdown (modules.h) closes every database at exit. */
#include <lauxlib.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "codec.h"
#include "modules.h"
#include "sbuf.h"
#include "vm.h"


#define DB_MT "sluice.sqlite.db"
#define CHUNK_ROWS 5000

enum { OP_OPEN, OP_EXEC, OP_ROWS, OP_INSERT, OP_ROLLBACK, OP_CLOSE };

/* a value copied out of Lua; text and blob bytes live in the op's arena */
typedef struct {
  int type; /* SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB, SQLITE_NULL */
  union {
    sqlite3_int64 i;
    double d;
    struct {
      size_t off, len;
    } s;
  } u;
} sq_value;

/* values copied for one statement, or for one chunk of insert_many */
typedef struct {
  sq_value *v;
  size_t n, cap;
  sbuf arena;   /* the bytes of text and blob values */
  size_t nrows; /* insert_many: records in this chunk */
  int last;     /* insert_many: the chunk holds the last record */
  int bad;      /* insert_many: copying failed (err) */
  char err[256];
} sq_vals;

typedef struct sq_db sq_db;

typedef struct sq_op {
  uv_work_t work;
  sq_db *d;
  int kind;
  lua_State *co;
  int co_ref;
  char *sql;
  /* parameters (p[0]), or two chunks of insert_many: the worker inserts
   * p[cur] while the loop copies the next records into the other */
  sq_vals p[2];
  int cur;
  char **names; /* NULL: positional */
  /* open */
  char *path;
  int readonly, wal, busy_ms;
  /* insert_many */
  sqlite3_stmt *stmt;
  int ncols;
  lua_Integer next;   /* next record index to copy */
  lua_Integer total;  /* records */
  int records_ref; /* {records, columns} */
  int handle_ref; /* open: the database's userdata, returned on success */
  /* results */
  int rc;
  char *errmsg;
  sqlite3_int64 changes, rowid;
  int rcols;       /* rows: columns */
  char **rnames;   /* rows: column names */
  sq_value *cells; /* rows: rcols per row */
  size_t ncells, capcells;
  sbuf rbytes;
  struct sq_op *next_op;
} sq_op;

struct sq_db {
  sqlite3 *db;
  int busy;   /* an op is on a worker, or an insert_many holds the database */
  int closed; /* close() was called */
  int orphan; /* the userdata was collected while busy: free when idle */
  /* The struct is freed when both its userdata is collected (orphan) and
   * no operation runs (busy == 0): by db_gc or by after_work. */
  sq_op *head, *tail;
  sq_db *prev, *next;
};

static struct {
  sq_db *dbs;
  int closing;
} SQ;

static void run_next(sq_db *d);
static void after_work(uv_work_t *w, int status);

/* ---- worker side: no Lua here ---- */

static void set_error(sq_op *op, int rc, const char *msg) {
  op->rc = rc ? rc : SQLITE_ERROR;
  free(op->errmsg);
  op->errmsg = strdup(msg ? msg : sqlite3_errstr(op->rc));
}

static void set_db_error(sq_op *op, int rc) {
  set_error(op, rc, op->d->db ? sqlite3_errmsg(op->d->db) : sqlite3_errstr(rc));
}

static int bind_value(const sq_vals *pv, sqlite3_stmt *st, int i, const sq_value *v) {
  const char *base = pv->arena.data;
  switch (v->type) {
    case SQLITE_INTEGER: return sqlite3_bind_int64(st, i, v->u.i);
    case SQLITE_FLOAT: return sqlite3_bind_double(st, i, v->u.d);
    case SQLITE_TEXT:
      return sqlite3_bind_text64(st, i, base + v->u.s.off, v->u.s.len, SQLITE_STATIC, SQLITE_UTF8);
    case SQLITE_BLOB:
      return sqlite3_bind_blob64(st, i, v->u.s.len ? base + v->u.s.off : "", v->u.s.len, SQLITE_STATIC);
    default: return sqlite3_bind_null(st, i);
  }
}

/* binds op's parameters (one statement's worth, from vals) */
static int bind_params(sq_op *op, sqlite3_stmt *st, const sq_vals *pv) {
  const sq_value *vals = pv->v;
  size_t n = pv->n;
  int count = sqlite3_bind_parameter_count(st);
  char msg[256];
  if (!op->names) {
    if ((size_t)count != n) {
      snprintf(msg, sizeof msg, "the statement takes %d parameters, %zu given", count, n);
      set_error(op, SQLITE_RANGE, msg);
      return -1;
    }
    for (int i = 1; i <= count; i++) {
      int rc = bind_value(pv, st, i, &vals[i - 1]);
      if (rc != SQLITE_OK) {
        set_db_error(op, rc);
        return -1;
      }
    }
    return 0;
  }
  for (int i = 1; i <= count; i++) {
    const char *name = sqlite3_bind_parameter_name(st, i);
    if (!name || !name[1] || name[0] == '?') {
      snprintf(msg, sizeof msg, "parameter %d is positional (?) but params are named", i);
      set_error(op, SQLITE_RANGE, msg);
      return -1;
    }
    size_t k = 0;
    while (k < n && strcmp(op->names[k], name + 1) != 0) k++;
    if (k == n) {
      snprintf(msg, sizeof msg, "no value for parameter %s", name);
      set_error(op, SQLITE_RANGE, msg);
      return -1;
    }
    int rc = bind_value(pv, st, i, &vals[k]);
    if (rc != SQLITE_OK) {
      set_db_error(op, rc);
      return -1;
    }
  }
  return 0;
}

static int only_space(const char *s) {
  while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == ';') s++;
  return *s == '\0';
}

static void add_cell(sq_op *op, sqlite3_stmt *st, int c) {
  if (op->ncells == op->capcells) {
    size_t cap = op->capcells ? op->capcells * 2 : 64;
    sq_value *nv = realloc(op->cells, cap * sizeof *nv);
    if (!nv) abort();
    op->cells = nv;
    op->capcells = cap;
  }
  sq_value *v = &op->cells[op->ncells++];
  v->type = sqlite3_column_type(st, c);
  switch (v->type) {
    case SQLITE_INTEGER: v->u.i = sqlite3_column_int64(st, c); break;
    case SQLITE_FLOAT: v->u.d = sqlite3_column_double(st, c); break;
    case SQLITE_TEXT:
    case SQLITE_BLOB: {
      const void *p = v->type == SQLITE_TEXT ? (const void *)sqlite3_column_text(st, c)
                                             : sqlite3_column_blob(st, c);
      size_t len = (size_t)sqlite3_column_bytes(st, c);
      v->u.s.off = op->rbytes.len;
      v->u.s.len = len;
      if (len) sbuf_add(&op->rbytes, p, len);
      break;
    }
    default: v->type = SQLITE_NULL;
  }
}

static void work_exec_or_rows(sq_op *op) {
  sqlite3 *db = op->d->db;
  const char *sql = op->sql, *tail = NULL;
  int first = 1;
  while (sql && *sql) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, &tail);
    if (rc != SQLITE_OK) {
      set_db_error(op, rc);
      return;
    }
    if (!st) { /* only a comment or spaces */
      sql = tail;
      continue;
    }
    int one_only = op->kind == OP_ROWS || op->p[0].n > 0 || op->names;
    if (one_only && !only_space(tail)) {
      sqlite3_finalize(st);
      set_error(op, SQLITE_MISUSE,
                op->kind == OP_ROWS ? "rows runs one statement; use exec for several"
                                    : "exec with params runs one statement");
      return;
    }
    if (first && bind_params(op, st, &op->p[0]) != 0) {
      sqlite3_finalize(st);
      return;
    }
    first = 0;
    if (op->kind == OP_ROWS && !op->rnames) {
      op->rcols = sqlite3_column_count(st);
      op->rnames = calloc((size_t)op->rcols + 1, sizeof *op->rnames);
      if (!op->rnames) abort();
      for (int c = 0; c < op->rcols; c++) {
        const char *name = sqlite3_column_name(st, c);
        op->rnames[c] = strdup(name ? name : "?");
        if (!op->rnames[c]) abort();
      }
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      if (op->kind == OP_ROWS) {
        for (int c = 0; c < op->rcols; c++) add_cell(op, st, c);
      }
    }
    if (rc != SQLITE_DONE) {
      set_db_error(op, rc);
      sqlite3_finalize(st);
      return;
    }
    sqlite3_finalize(st);
    sql = tail;
  }
  op->changes = sqlite3_changes64(db);
  op->rowid = sqlite3_last_insert_rowid(db);
}

static int exec_simple(sq_op *op, const char *sql) {
  char *err = NULL;
  int rc = sqlite3_exec(op->d->db, sql, NULL, NULL, &err);
  if (rc != SQLITE_OK) {
    set_error(op, rc, err);
    sqlite3_free(err);
    return -1;
  }
  return 0;
}

static void work_insert(sq_op *op) {
  if (!op->stmt) {
    if (exec_simple(op, "BEGIN IMMEDIATE") != 0) return;
    int rc = sqlite3_prepare_v2(op->d->db, op->sql, -1, &op->stmt, NULL);
    if (rc != SQLITE_OK) {
      set_db_error(op, rc);
      goto rollback;
    }
  }
  const sq_vals *pv = &op->p[op->cur];
  for (size_t r = 0; r < pv->nrows; r++) {
    const sq_value *row = pv->v + r * (size_t)op->ncols;
    for (int c = 0; c < op->ncols; c++) {
      int rc = bind_value(pv, op->stmt, c + 1, &row[c]);
      if (rc != SQLITE_OK) {
        set_db_error(op, rc);
        goto rollback;
      }
    }
    int rc = sqlite3_step(op->stmt);
    if (rc != SQLITE_DONE) {
      set_db_error(op, rc);
      goto rollback;
    }
    sqlite3_reset(op->stmt);
  }
  if (pv->last) {
    sqlite3_finalize(op->stmt);
    op->stmt = NULL;
    if (exec_simple(op, "COMMIT") != 0) goto rollback;
  }
  return;
rollback:
  if (op->stmt) sqlite3_finalize(op->stmt);
  op->stmt = NULL;
  sqlite3_exec(op->d->db, "ROLLBACK", NULL, NULL, NULL);
}

static void work(uv_work_t *w) {
  sq_op *op = w->data;
  sq_db *d = op->d;
  switch (op->kind) {
    case OP_OPEN: {
      int flags = (op->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                  SQLITE_OPEN_NOMUTEX;
      int rc = sqlite3_open_v2(op->path, &d->db, flags, NULL);
      if (rc != SQLITE_OK) {
        set_error(op, rc, d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc));
        sqlite3_close_v2(d->db);
        d->db = NULL;
        return;
      }
      sqlite3_extended_result_codes(d->db, 1);
      sqlite3_busy_timeout(d->db, op->busy_ms);
      if (op->wal && exec_simple(op, "PRAGMA journal_mode=WAL") != 0) {
        sqlite3_close_v2(d->db);
        d->db = NULL;
      }
      return;
    }
    case OP_EXEC:
    case OP_ROWS: work_exec_or_rows(op); return;
    case OP_INSERT: work_insert(op); return;
    case OP_ROLLBACK:
      if (op->stmt) sqlite3_finalize(op->stmt);
      op->stmt = NULL;
      sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
      return;
    case OP_CLOSE: {
      int rc = sqlite3_close_v2(d->db);
      if (rc != SQLITE_OK) set_db_error(op, rc);
      d->db = NULL;
      return;
    }
  }
}

/* ---- loop side ---- */

static void op_free(lua_State *L, sq_op *op) {
  if (op->co_ref != LUA_NOREF && L) luaL_unref(L, LUA_REGISTRYINDEX, op->co_ref);
  if (op->records_ref != LUA_NOREF && L) luaL_unref(L, LUA_REGISTRYINDEX, op->records_ref);
  if (op->handle_ref != LUA_NOREF && L) luaL_unref(L, LUA_REGISTRYINDEX, op->handle_ref);
  if (op->stmt) sqlite3_finalize(op->stmt);
  free(op->sql);
  if (op->names) {
    for (size_t i = 0; i < op->p[0].n; i++) free(op->names[i]);
    free(op->names);
  }
  for (int i = 0; i < 2; i++) {
    free(op->p[i].v);
    sbuf_free(&op->p[i].arena);
  }
  free(op->path);
  free(op->errmsg);
  if (op->rnames) {
    for (int c = 0; c < op->rcols; c++) free(op->rnames[c]);
    free(op->rnames);
  }
  free(op->cells);
  sbuf_free(&op->rbytes);
  free(op);
}

static void db_free(sq_db *d) {
  if (d->db) sqlite3_close_v2(d->db);
  if (d->prev) d->prev->next = d->next;
  else SQ.dbs = d->next;
  if (d->next) d->next->prev = d->prev;
  free(d);
}

static const char *rc_name(int rc) {
  switch (rc & 0xff) {
    case SQLITE_ERROR: return "SQLITE_ERROR";
    case SQLITE_INTERNAL: return "SQLITE_INTERNAL";
    case SQLITE_PERM: return "SQLITE_PERM";
    case SQLITE_ABORT: return "SQLITE_ABORT";
    case SQLITE_BUSY: return "SQLITE_BUSY";
    case SQLITE_LOCKED: return "SQLITE_LOCKED";
    case SQLITE_NOMEM: return "SQLITE_NOMEM";
    case SQLITE_READONLY: return "SQLITE_READONLY";
    case SQLITE_INTERRUPT: return "SQLITE_INTERRUPT";
    case SQLITE_IOERR: return "SQLITE_IOERR";
    case SQLITE_CORRUPT: return "SQLITE_CORRUPT";
    case SQLITE_FULL: return "SQLITE_FULL";
    case SQLITE_CANTOPEN: return "SQLITE_CANTOPEN";
    case SQLITE_PROTOCOL: return "SQLITE_PROTOCOL";
    case SQLITE_SCHEMA: return "SQLITE_SCHEMA";
    case SQLITE_TOOBIG: return "SQLITE_TOOBIG";
    case SQLITE_CONSTRAINT: return "SQLITE_CONSTRAINT";
    case SQLITE_MISMATCH: return "SQLITE_MISMATCH";
    case SQLITE_MISUSE: return "SQLITE_MISUSE";
    case SQLITE_AUTH: return "SQLITE_AUTH";
    case SQLITE_RANGE: return "SQLITE_RANGE";
    case SQLITE_NOTADB: return "SQLITE_NOTADB";
    default: return "SQLITE_ERROR";
  }
}

/* resumes op's coroutine with its outcome, then frees op */
static void finish(lua_State *L, sq_op *op) {
  lua_State *co = op->co;
  int n;
  luaL_checkstack(co, 8, "sluice.sqlite");
  if (op->rc != SQLITE_OK) {
    if (op->kind == OP_OPEN) op->d->closed = 1;
    lua_pushnil(co);
    lua_pushfstring(co, "%s: %s", rc_name(op->rc), op->errmsg ? op->errmsg : sqlite3_errstr(op->rc));
    lua_pushstring(co, rc_name(op->rc));
    n = 3;
  } else {
    lua_pushboolean(co, 1);
    n = 1;
    switch (op->kind) {
      case OP_OPEN:
        lua_rawgeti(co, LUA_REGISTRYINDEX, op->handle_ref);
        n = 2;
        break;
      case OP_EXEC:
        lua_pushinteger(co, (lua_Integer)op->changes);
        lua_pushinteger(co, (lua_Integer)op->rowid);
        n = 3;
        break;
      case OP_INSERT:
        lua_pushinteger(co, op->total);
        n = 2;
        break;
      case OP_ROWS: {
        size_t nrows = op->rcols ? op->ncells / (size_t)op->rcols : 0;
        lua_createtable(co, (int)nrows, 0);
        lua_createtable(co, op->rcols, 0);
        for (int c = 0; c < op->rcols; c++) {
          lua_pushstring(co, op->rnames[c]);
          lua_rawseti(co, -2, c + 1);
        }
        const sq_value *v = op->cells;
        const char *bytes = op->rbytes.data;
        for (size_t r = 0; r < nrows; r++) {
          lua_createtable(co, 0, op->rcols);
          for (int c = 0; c < op->rcols; c++, v++) {
            if (v->type == SQLITE_NULL) continue;
            lua_rawgeti(co, -2, c + 1);
            switch (v->type) {
              case SQLITE_INTEGER: lua_pushinteger(co, (lua_Integer)v->u.i); break;
              case SQLITE_FLOAT: lua_pushnumber(co, v->u.d); break;
              default: lua_pushlstring(co, v->u.s.len ? bytes + v->u.s.off : "", v->u.s.len);
            }
            lua_rawset(co, -3);
          }
          lua_rawseti(co, -3, (lua_Integer)r + 1);
        }
        lua_pop(co, 1);
        n = 2;
        break;
      }
      default: break;
    }
  }
  int ref = op->co_ref;
  op->co_ref = LUA_NOREF;
  op_free(L, op);
  if (lua_status(co) != LUA_YIELD) {
    fprintf(stderr, "sluice: a coroutine waiting for SQLite was resumed elsewhere; result dropped\n");
    lua_pop(co, n);
  } else {
    vm_resume(co, NULL, n);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

static void queue_op(sq_op *op) {
  sq_db *d = op->d;
  op->next_op = NULL;
  if (d->tail) d->tail->next_op = op;
  else d->head = op;
  d->tail = op;
  if (!d->busy) run_next(d);
}

static void run_next(sq_db *d) {
  while (d->head && !d->busy) {
    sq_op *op = d->head;
    d->head = op->next_op;
    if (!d->head) d->tail = NULL;
    op->work.data = op;
    /* uv_queue_work fails only for a NULL work callback */
    if (uv_queue_work(&vm_of(op->co)->loop, &op->work, work, after_work) != 0) abort();
    d->busy = 1;
  }
}

static int copy_chunk(lua_State *L, sq_op *op, sq_vals *pv);

static void after_work(uv_work_t *w, int status) {
  sq_op *op = w->data;
  sq_db *d = op->d;
  lua_State *L = vm_of(op->co)->L;
  d->busy = 0;
  if (status != 0) set_error(op, SQLITE_ERROR, uv_strerror(status));
  if (SQ.closing || d->orphan) {
    /* nobody to resume: drop the op, what is queued, and the transaction */
    if (op->kind == OP_INSERT && op->stmt) {
      sqlite3_finalize(op->stmt);
      op->stmt = NULL;
      if (d->db) sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
    }
    op_free(L, op);
    if (SQ.closing) {
      while (d->head) {
        sq_op *q = d->head;
        d->head = q->next_op;
        op_free(L, q);
      }
      d->tail = NULL;
      if (d->db) sqlite3_close_v2(d->db);
      d->db = NULL;
      d->closed = 1;
    } else {
      run_next(d);
    }
    if (d->orphan && !d->busy) db_free(d);
    return;
  }
  if (op->kind == OP_INSERT && op->rc == SQLITE_OK && !op->p[op->cur].last) {
    /* the next chunk, copied while this one was inserted; the database
     * stays held by this insert */
    int done = op->cur;
    op->cur = 1 - op->cur;
    if (op->p[op->cur].bad) {
      set_error(op, SQLITE_MISUSE, op->p[op->cur].err);
      op->kind = OP_ROLLBACK;
    }
    d->busy = 1;
    if (uv_queue_work(&vm_of(op->co)->loop, &op->work, work, after_work) != 0) abort();
    if (op->kind == OP_INSERT && !op->p[op->cur].last) copy_chunk(L, op, &op->p[done]);
    return;
  }
  if (op->kind == OP_ROLLBACK) op->kind = OP_INSERT;
  /* busy pins d while the coroutine runs: it may drop the last reference
   * to the database, and a collection then must not free d under us */
  d->busy = 1;
  finish(L, op);
  d->busy = 0;
  run_next(d);
  if (d->orphan && !d->busy) db_free(d);
}

/* ---- copying Lua values ---- */

static int utf8_valid(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    int k;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) k = 1, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) k = 2, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) k = 3, cp = c & 0x07;
    else return 0;
    if (i + (size_t)k >= n) return 0;
    for (int j = 1; j <= k; j++) {
      if ((s[i + j] & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + j] & 0x3F);
    }
    if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return 0;
    }
    i += (size_t)k + 1;
  }
  return 1;
}

/* Names a value for errors, formatted only when needed (a million
 * records make five million values): prefix[index].name, prefix[index] or
 * prefix.name. */
typedef struct {
  const char *prefix;
  lua_Integer index; /* 0: none */
  const char *name;  /* NULL: none */
} sq_where;

static const char *where_str(const sq_where *w, char *buf, size_t n) {
  if (w->index > 0 && w->name) snprintf(buf, n, "%s[%lld].%s", w->prefix, (long long)w->index, w->name);
  else if (w->index > 0) snprintf(buf, n, "%s[%lld]", w->prefix, (long long)w->index);
  else snprintf(buf, n, "%s.%s", w->prefix, w->name ? w->name : "?");
  return buf;
}

static int copy_value(lua_State *L, int idx, sq_vals *pv, sq_value *v, const sq_where *w,
                      char *err, size_t errsz) {
  char what[160];
  switch (lua_type(L, idx)) {
    case LUA_TNIL: v->type = SQLITE_NULL; return 0;
    case LUA_TBOOLEAN:
      v->type = SQLITE_INTEGER;
      v->u.i = lua_toboolean(L, idx);
      return 0;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        v->type = SQLITE_INTEGER;
        v->u.i = (sqlite3_int64)lua_tointeger(L, idx);
      } else {
        v->type = SQLITE_FLOAT;
        v->u.d = lua_tonumber(L, idx);
      }
      return 0;
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      v->type = utf8_valid((const unsigned char *)s, n) ? SQLITE_TEXT : SQLITE_BLOB;
      v->u.s.off = pv->arena.len;
      v->u.s.len = n;
      sbuf_add(&pv->arena, s, n);
      return 0;
    }
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) { /* json.null */
        v->type = SQLITE_NULL;
        return 0;
      }
      break;
    case LUA_TTABLE: {
      v->type = SQLITE_TEXT;
      v->u.s.off = pv->arena.len;
      if (codec_encode(L, idx, where_str(w, what, sizeof what), 0, &pv->arena, err, errsz) != 0) {
        return -1;
      }
      v->u.s.len = pv->arena.len - v->u.s.off;
      return 0;
    }
    default: break;
  }
  snprintf(err, errsz, "%s: cannot bind a %s", where_str(w, what, sizeof what), luaL_typename(L, idx));
  return -1;
}

static sq_value *add_val(sq_vals *pv) {
  if (pv->n == pv->cap) {
    size_t cap = pv->cap ? pv->cap * 2 : 8;
    sq_value *nv = realloc(pv->v, cap * sizeof *nv);
    if (!nv) abort();
    pv->v = nv;
    pv->cap = cap;
  }
  return &pv->v[pv->n++];
}

/* Copies the params table at idx into op. Returns 0 or -1 with err. */
static int copy_params(lua_State *L, int idx, sq_op *op, char *err, size_t errsz) {
  if (lua_isnoneornil(L, idx)) return 0;
  if (!lua_istable(L, idx)) {
    snprintf(err, errsz, "params must be a table (an array, or names to values)");
    return -1;
  }
  /* positional when every key is an integer >= 1 (holes are NULL; a
   * trailing NULL must be json.null), named otherwise */
  lua_Integer count = 0, max = 0;
  int positional = 1;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    count++;
    if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
      if (lua_tointeger(L, -1) > max) max = lua_tointeger(L, -1);
    } else {
      positional = 0;
    }
  }
  if (positional) {
    for (lua_Integer i = 1; i <= max; i++) {
      lua_rawgeti(L, idx, i);
      sq_where w = {"params", i, NULL};
      int rc = copy_value(L, -1, &op->p[0], add_val(&op->p[0]), &w, err, errsz);
      lua_pop(L, 1);
      if (rc != 0) return -1;
    }
    return 0;
  }
  op->names = calloc((size_t)count, sizeof *op->names);
  if (!op->names) abort();
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING) {
      lua_pop(L, 2);
      snprintf(err, errsz, "params mixes positions and names");
      return -1;
    }
    const char *name = lua_tostring(L, -2);
    sq_where w = {"params", 0, name};
    size_t k = op->p[0].n;
    int rc = copy_value(L, -1, &op->p[0], add_val(&op->p[0]), &w, err, errsz);
    op->names[k] = strdup(name);
    if (!op->names[k]) abort();
    lua_pop(L, 1);
    if (rc != 0) {
      lua_pop(L, 1);
      return -1;
    }
  }
  return 0;
}

/* Copies the next chunk of records into pv ({records, columns} is at
 * records_ref). Returns 0, or -1 with pv->bad and pv->err set. */
static int copy_chunk(lua_State *L, sq_op *op, sq_vals *pv) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, op->records_ref);
  int pair = lua_gettop(L);
  lua_rawgeti(L, pair, 1);
  int records = lua_gettop(L);
  lua_rawgeti(L, pair, 2);
  int columns = lua_gettop(L);
  pv->n = 0;
  sbuf_reset(&pv->arena);
  pv->nrows = 0;
  pv->bad = 0;
  int rc = 0;
  while (op->next <= op->total && pv->nrows < CHUNK_ROWS && rc == 0) {
    if (lua_rawgeti(L, records, op->next) != LUA_TTABLE) {
      snprintf(pv->err, sizeof pv->err, "records[%d] is a %s, not a table", (int)op->next,
               luaL_typename(L, -1));
      rc = -1;
      lua_pop(L, 1);
      break;
    }
    int rec = lua_gettop(L);
    for (int c = 1; c <= op->ncols && rc == 0; c++) {
      lua_rawgeti(L, columns, c);
      sq_where w = {"records", op->next, lua_tostring(L, -1)};
      lua_pushvalue(L, -1);
      lua_rawget(L, rec);
      rc = copy_value(L, -1, pv, add_val(pv), &w, pv->err, sizeof pv->err);
      lua_pop(L, 2); /* the value, and the column name that w.name points into */
    }
    lua_pop(L, 1);
    op->next++;
    pv->nrows++;
  }
  pv->last = op->next > op->total;
  pv->bad = rc != 0;
  lua_settop(L, pair - 1);
  return rc;
}

/* ---- Lua functions ---- */

typedef struct {
  sq_db *d;
} db_handle;

static sq_db *check_db(lua_State *L, int idx) {
  db_handle *h = luaL_checkudata(L, idx, DB_MT);
  if (!h->d || h->d->closed) modules_error(L, "sluice.sqlite: the database is closed");
  return h->d;
}

static void check_yieldable(lua_State *L) {
  if (!lua_isyieldable(L)) {
    modules_error(L, "sluice.sqlite: a statement runs on a worker thread and its coroutine waits, "
                  "so it must run in a coroutine the host resumes (a run, a step, a task, or "
                  "the main chunk of a script), not in a callback or a C function");
  }
}

static sq_op *new_op(lua_State *L, sq_db *d, int kind) {
  sq_op *op = calloc(1, sizeof *op);
  if (!op) {
    modules_error(L, "sluice.sqlite: out of memory");
    return NULL;
  }
  op->d = d;
  op->kind = kind;
  op->co = L;
  op->co_ref = LUA_NOREF;
  op->records_ref = LUA_NOREF;
  op->handle_ref = LUA_NOREF;
  op->rc = SQLITE_OK;
  return op;
}

/* nil, "SQLITE_MISUSE: msg", "SQLITE_MISUSE": for values that cannot be
 * bound, found while copying them (the Lua side raises it like the rest) */
static int misuse(lua_State *L, const char *msg) {
  lua_pushnil(L);
  lua_pushfstring(L, "SQLITE_MISUSE: %s", msg);
  lua_pushliteral(L, "SQLITE_MISUSE");
  return 3;
}

static int submit(lua_State *L, sq_op *op) {
  lua_pushthread(L);
  op->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  queue_op(op);
  return lua_yield(L, 0);
}

static int db_gc(lua_State *L) {
  db_handle *h = luaL_checkudata(L, 1, DB_MT);
  sq_db *d = h->d;
  h->d = NULL;
  if (!d) return 0;
  d->orphan = 1;
  if (!d->busy) db_free(d); /* else after_work frees it once idle */
  return 0;
}

/* open(path, readonly, wal, busy_ms) -> db handle, then yields for the open */
static int l_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int readonly = lua_toboolean(L, 2);
  int wal = lua_toboolean(L, 3);
  lua_Integer busy_ms = luaL_optinteger(L, 4, 5000);
  check_yieldable(L);
  if (SQ.closing) return modules_error(L, "sluice.sqlite: the host is shutting down");
  sq_db *d = calloc(1, sizeof *d);
  if (!d) return modules_error(L, "sluice.sqlite: out of memory");
  d->next = SQ.dbs;
  if (SQ.dbs) SQ.dbs->prev = d;
  SQ.dbs = d;
  db_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
  h->d = d;
  luaL_setmetatable(L, DB_MT);
  sq_op *op = new_op(L, d, OP_OPEN);
  op->path = strdup(path);
  if (!op->path) abort();
  op->readonly = readonly;
  op->wal = wal;
  op->busy_ms = (int)busy_ms;
  op->handle_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* returned on success */
  return submit(L, op);
}

static int sql_op(lua_State *L, int kind) {
  sq_db *d = check_db(L, 1);
  const char *sql = luaL_checkstring(L, 2);
  check_yieldable(L);
  sq_op *op = new_op(L, d, kind);
  op->sql = strdup(sql);
  if (!op->sql) abort();
  char err[512];
  if (copy_params(L, 3, op, err, sizeof err) != 0) {
    op_free(L, op);
    return misuse(L, err);
  }
  return submit(L, op);
}

static int l_exec(lua_State *L) { return sql_op(L, OP_EXEC); }
static int l_rows(lua_State *L) { return sql_op(L, OP_ROWS); }

static void add_ident(sbuf *b, const char *s) {
  sbuf_addc(b, '"');
  for (; *s; s++) {
    if (*s == '"') sbuf_addc(b, '"');
    sbuf_addc(b, *s);
  }
  sbuf_addc(b, '"');
}

/* Replaces the nil at idx with the sorted names of every key of every
 * record; raises naming a record that is not a table or a key that is not
 * a string. */
static void columns_of(lua_State *L, int records, int idx) {
  lua_newtable(L);
  int set = lua_gettop(L);
  lua_newtable(L);
  int cols = lua_gettop(L);
  lua_Integer n = (lua_Integer)lua_rawlen(L, records), k = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, records, i) != LUA_TTABLE) {
      modules_error(L, "sluice.sqlite.insert_many: records[%d] is a %s, not a table", (int)i,
                 luaL_typename(L, -1));
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pop(L, 1);
      if (lua_type(L, -1) != LUA_TSTRING) {
        modules_error(L, "sluice.sqlite.insert_many: records[%d] has a key that is not a column name "
                      "(%s)", (int)i, luaL_tolstring(L, -1, NULL));
      }
      lua_pushvalue(L, -1);
      if (lua_rawget(L, set) == LUA_TNIL) {
        lua_pushvalue(L, -2);
        lua_pushboolean(L, 1);
        lua_rawset(L, set);
        lua_pushvalue(L, -2);
        lua_rawseti(L, cols, ++k);
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "sort");
  lua_pushvalue(L, cols);
  lua_call(L, 1, 0);
  lua_pop(L, 1);
  lua_replace(L, idx); /* cols */
  lua_pop(L, 1);       /* set */
}

/* insert_many(db, table, records, columns, conflict): columns is an array
 * of column names, or nil for every key of every record (sorted); conflict
 * an array of key columns or nil */
static int l_insert_many(lua_State *L) {
  sq_db *d = check_db(L, 1);
  const char *table = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 5);
  if (lua_isnil(L, 4)) columns_of(L, 3, 4);
  luaL_checktype(L, 4, LUA_TTABLE);
  int has_conflict = !lua_isnoneornil(L, 5);
  if (has_conflict) luaL_checktype(L, 5, LUA_TTABLE);
  check_yieldable(L);
  lua_Integer total = (lua_Integer)lua_rawlen(L, 3);
  int ncols = (int)lua_rawlen(L, 4);
  if (ncols == 0) return modules_error(L, "sluice.sqlite.insert_many: the records have no columns");
  sbuf sql = SBUF_INIT;
  sbuf_adds(&sql, "INSERT INTO ");
  add_ident(&sql, table);
  sbuf_adds(&sql, " (");
  for (int c = 1; c <= ncols; c++) {
    lua_rawgeti(L, 4, c);
    if (c > 1) sbuf_adds(&sql, ", ");
    add_ident(&sql, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  sbuf_adds(&sql, ") VALUES (");
  for (int c = 1; c <= ncols; c++) sbuf_adds(&sql, c > 1 ? ", ?" : "?");
  sbuf_adds(&sql, ")");
  if (has_conflict) {
    int nk = (int)lua_rawlen(L, 5);
    sbuf_adds(&sql, " ON CONFLICT (");
    for (int k = 1; k <= nk; k++) {
      lua_rawgeti(L, 5, k);
      if (k > 1) sbuf_adds(&sql, ", ");
      add_ident(&sql, lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    sbuf_adds(&sql, ") DO ");
    int set = 0;
    for (int c = 1; c <= ncols; c++) {
      lua_rawgeti(L, 4, c);
      const char *col = lua_tostring(L, -1);
      int is_key = 0;
      for (int k = 1; k <= nk && !is_key; k++) {
        lua_rawgeti(L, 5, k);
        is_key = strcmp(lua_tostring(L, -1), col) == 0;
        lua_pop(L, 1);
      }
      if (!is_key) {
        sbuf_adds(&sql, set++ ? ", " : "UPDATE SET ");
        add_ident(&sql, col);
        sbuf_adds(&sql, " = excluded.");
        add_ident(&sql, col);
      }
      lua_pop(L, 1);
    }
    if (!set) sbuf_adds(&sql, "NOTHING");
  }
  sbuf_addc(&sql, '\0');
  if (total == 0) {
    sbuf_free(&sql);
    lua_pushboolean(L, 1);
    lua_pushinteger(L, 0);
    return 2;
  }
  sq_op *op = new_op(L, d, OP_INSERT);
  op->sql = sql.data;
  op->ncols = ncols;
  op->total = total;
  op->next = 1;
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, 3);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, 4);
  lua_rawseti(L, -2, 2);
  op->records_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (copy_chunk(L, op, &op->p[0]) != 0) {
    int rc = misuse(L, op->p[0].err);
    op_free(L, op);
    return rc;
  }
  /* queue the first chunk, then copy the second while it is inserted */
  lua_pushthread(L);
  op->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  queue_op(op);
  if (!op->p[0].last) copy_chunk(L, op, &op->p[1]);
  return lua_yield(L, 0);
}

static int l_close(lua_State *L) {
  db_handle *h = luaL_checkudata(L, 1, DB_MT);
  if (!h->d || h->d->closed) {
    lua_pushboolean(L, 1);
    return 1;
  }
  sq_db *d = h->d;
  if (!lua_isyieldable(L)) {
    /* __close or __gc outside a coroutine: close at once if idle */
    if (d->busy || d->head) {
      return modules_error(L, "sluice.sqlite: close it from a coroutine (statements are still running)");
    }
    d->closed = 1;
    h->d = NULL;
    db_free(d);
    lua_pushboolean(L, 1);
    return 1;
  }
  d->closed = 1;
  sq_op *op = new_op(L, d, OP_CLOSE);
  return submit(L, op);
}

/* version() -> the SQLite library's version */
static int l_version(lua_State *L) {
  lua_pushstring(L, sqlite3_libversion());
  return 1;
}

int luaopen_sluice__sqlite(lua_State *L) {
  modules_class(L, DB_MT, NULL, db_gc, 0);
  static const luaL_Reg fns[] = {{"open", l_open},
                                 {"exec", l_exec},
                                 {"rows", l_rows},
                                 {"insert_many", l_insert_many},
                                 {"close", l_close},
                                 {"version", l_version},
                                 {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}

void sqlite_shutdown(lua_State *L) {
  SQ.closing = 1;
  for (sq_db *d = SQ.dbs; d; d = d->next) {
    /* operations not started are dropped; a running one finishes on its
     * worker during the loop's last run, and after_work closes then */
    while (d->head) {
      sq_op *op = d->head;
      d->head = op->next_op;
      op_free(L, op);
    }
    d->tail = NULL;
    d->closed = 1;
    if (!d->busy && d->db) {
      sqlite3_close_v2(d->db);
      d->db = NULL;
    }
  }
}
