/* l_csv.c: "sluice._csv", the Lua binding of csv.c under stdlib/sluice/csv.lua
 * (which is the documented API).
 *
 *   parse(text [, opts])        -> rows
 *   read(path [, opts])         -> rows
 *   rows(path [, opts])         -> iterator for a generic for: each step gives
 *                                  row, line; closes the file when the loop
 *                                  ends, breaks or raises (a to-be-closed value)
 *   encode(rows [, opts])       -> text
 * opts: delimiter (one byte, default ","); header = true (the first record
 * names the fields: rows become records) or an array of names (every record
 * is data); ragged = true lets a record have fewer fields than the header
 * (the missing ones are absent) or more (the extra ones are dropped);
 * encode: header = array of names (rows are records) or true (the sorted
 * names of every row's keys), eol (default "\n").
 *
 * Errors raise a table {code, message, path, line, column} whose __tostring
 * is the message: code "ECSV" for malformed input ("data.csv: line 3,
 * column 7: unterminated quoted field ..."), an errno name for a file that
 * cannot be read.
 *
 * Files are read with read(2) in 64 KiB chunks on the loop thread: a chunk
 * from the page cache takes microseconds, and the loop waits for each one
 * (for files on a slow network mount, copy them locally first). Memory stays
 * that chunk plus the current record, whatever the file's size.
 * Depends on: csv.h, sbuf.h. */
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "csv.h"
#include "modules.h"

#define CHUNK (64 * 1024)
#define ERROR_MT "sluice.csv.error"
#define FILE_MT "sluice.csv.file"

typedef struct {
  char delim;
  int header; /* 0: rows are arrays; 1: the first record names the fields; 2: names given */
  int ragged;
} csv_opts;

static int error_tostring(lua_State *L) {
  lua_getfield(L, 1, "message");
  return 1;
}

/* Raises {code, message, path, line, column}. line 0: no position; col 0:
 * the line only. */
static int csv_raise(lua_State *L, const char *code, const char *path, uint64_t line, uint64_t col,
                 const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lua_createtable(L, 0, 5);
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
  if (line > 0 && col > 0) {
    lua_pushfstring(L, "%s: line %I, column %I: %s", path, (lua_Integer)line, (lua_Integer)col, msg);
    lua_setfield(L, -2, "message");
    lua_pushinteger(L, (lua_Integer)col);
    lua_setfield(L, -2, "column");
  } else if (line > 0) {
    lua_pushfstring(L, "%s: line %I: %s", path, (lua_Integer)line, msg);
    lua_setfield(L, -2, "message");
  } else {
    lua_pushfstring(L, "%s: %s", path, msg);
    lua_setfield(L, -2, "message");
  }
  if (line > 0) {
    lua_pushinteger(L, (lua_Integer)line);
    lua_setfield(L, -2, "line");
  }
  lua_pushstring(L, path);
  lua_setfield(L, -2, "path");
  luaL_getmetatable(L, ERROR_MT);
  lua_setmetatable(L, -2);
  return lua_error(L);
}

static void check_opts(lua_State *L, int idx, csv_opts *o, int names_slot) {
  o->delim = ',';
  o->header = 0;
  o->ragged = 0;
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_getfield(L, idx, "delimiter");
  if (!lua_isnil(L, -1)) {
    size_t n;
    const char *d = lua_tolstring(L, -1, &n);
    if (!d || n != 1 || *d == '"' || *d == '\n' || *d == '\r') {
      luaL_error(L, "sluice.csv: delimiter must be one byte other than a quote or a line break");
    }
    o->delim = *d;
  }
  lua_pop(L, 1);
  lua_getfield(L, idx, "ragged");
  o->ragged = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, idx, "header");
  if (lua_istable(L, -1)) {
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      if (lua_rawgeti(L, -1, i) != LUA_TSTRING) {
        luaL_error(L, "sluice.csv: header[%d] must be a string", (int)i);
      }
      lua_pop(L, 1);
    }
    o->header = 2;
    lua_replace(L, names_slot);
    return;
  }
  o->header = lua_toboolean(L, -1) ? 1 : 0;
  lua_pop(L, 1);
}

/* Makes the names table at names_slot from the record in r (header = true). */
static void take_names(lua_State *L, csv_reader *r, int names_slot, const char *path) {
  size_t nf = csv_nfields(r);
  lua_createtable(L, (int)nf, 0);
  lua_createtable(L, 0, (int)nf); /* name -> column, for duplicates */
  for (size_t i = 0; i < nf; i++) {
    size_t len;
    const char *f = csv_field(r, i, &len);
    lua_pushlstring(L, f, len);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) != LUA_TNIL) {
      csv_raise(L, "ECSV", path, r->rec_line, 0, "the header names '%s' twice (columns %d and %d)",
                lua_tostring(L, -2), (int)lua_tointeger(L, -1), (int)i + 1);
    }
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushinteger(L, (lua_Integer)i + 1);
    lua_rawset(L, -4);
    lua_rawseti(L, -3, (lua_Integer)i + 1);
  }
  lua_pop(L, 1);
  lua_replace(L, names_slot);
}

/* Pushes the record in r: an array of strings, or with names at names_slot
 * a table name -> string. */
static void push_record(lua_State *L, csv_reader *r, const csv_opts *o, int names_slot,
                        const char *path) {
  size_t nf = csv_nfields(r);
  size_t len;
  if (!o->header) {
    lua_createtable(L, (int)nf, 0);
    for (size_t i = 0; i < nf; i++) {
      const char *f = csv_field(r, i, &len);
      lua_pushlstring(L, f, len);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return;
  }
  size_t nn = (size_t)lua_rawlen(L, names_slot);
  if (nf != nn && !o->ragged) {
    csv_raise(L, "ECSV", path, r->rec_line, 0, "%d fields, the header has %d (ragged = true allows it)",
          (int)nf, (int)nn);
  }
  size_t n = nf < nn ? nf : nn;
  lua_createtable(L, 0, (int)n);
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, names_slot, (lua_Integer)i + 1);
    const char *f = csv_field(r, i, &len);
    lua_pushlstring(L, f, len);
    lua_rawset(L, -3);
  }
}

/* a file being read: the reader, the chunk, the file descriptor */
typedef struct {
  csv_reader r;
  csv_opts o;
  int fd;
  int eof;  /* read(2) returned 0: the file is closed, the reader finishing */
  int done; /* the last record was handed out, or an error raised */
  char *buf;
  size_t pos, len;
} csv_file;

static void file_close(csv_file *f) {
  if (f->fd >= 0) close(f->fd);
  f->fd = -1;
  f->done = 1;
  free(f->buf);
  f->buf = NULL;
  csv_free(&f->r);
}

static int file_gc(lua_State *L) {
  file_close(luaL_checkudata(L, 1, FILE_MT));
  return 0;
}

/* Pushes the next record of f (uservalue 1: path, 2: names), or nothing at
 * the end. Returns 1 or 0. */
static int file_next_record(lua_State *L, csv_file *f, int ud) {
  if (f->done) return 0;
  lua_getiuservalue(L, ud, 1);
  const char *path = lua_tostring(L, -1);
  lua_getiuservalue(L, ud, 2);
  int names_slot = lua_gettop(L);
  for (;;) {
    int rc;
    if (f->pos < f->len) {
      size_t used;
      rc = csv_feed(&f->r, f->buf + f->pos, f->len - f->pos, &used);
      f->pos += used;
    } else if (!f->eof) {
      ssize_t n;
      do {
        n = read(f->fd, f->buf, CHUNK);
      } while (n < 0 && errno == EINTR);
      if (n < 0) {
        int e = errno;
        file_close(f);
        return csv_raise(L, uv_err_name(-e), path, 0, 0, "cannot read: %s", strerror(e));
      }
      f->pos = 0;
      f->len = (size_t)n;
      if (n == 0) {
        f->eof = 1;
        close(f->fd);
        f->fd = -1;
      }
      continue;
    } else {
      rc = csv_finish(&f->r);
      if (rc == CSV_MORE) {
        file_close(f);
        return 0;
      }
    }
    if (rc == CSV_ERROR) {
      uint64_t line = f->r.err_line, col = f->r.err_col;
      const char *err = f->r.err;
      file_close(f);
      return csv_raise(L, "ECSV", path, line, col, "%s", err);
    }
    if (rc == CSV_RECORD) {
      if (f->o.header == 1 && lua_isnil(L, names_slot)) {
        take_names(L, &f->r, names_slot, path);
        lua_pushvalue(L, names_slot);
        lua_setiuservalue(L, ud, 2);
        continue;
      }
      push_record(L, &f->r, &f->o, names_slot, path);
      return 1;
    }
  }
}

static int open_file(lua_State *L, const char *path, const csv_opts *o, int names_slot) {
  csv_file *f = lua_newuserdatauv(L, sizeof *f, 2);
  memset(f, 0, sizeof *f);
  f->fd = -1;
  luaL_setmetatable(L, FILE_MT);
  f->o = *o;
  csv_init(&f->r, o->delim);
  lua_pushstring(L, path);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, names_slot);
  lua_setiuservalue(L, -2, 2);
  f->buf = malloc(CHUNK);
  if (!f->buf) return luaL_error(L, "sluice.csv: out of memory");
  f->fd = open(path, O_RDONLY | O_CLOEXEC);
  if (f->fd < 0) {
    int e = errno;
    f->done = 1;
    return csv_raise(L, uv_err_name(-e), path, 0, 0, "cannot open: %s", strerror(e));
  }
  return lua_gettop(L);
}

/* parse(text [, opts]) */
static int l_parse(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_settop(L, 2);
  lua_pushnil(L); /* 3: names */
  csv_opts o;
  check_opts(L, 2, &o, 3);
  csv_reader *r = lua_newuserdatauv(L, sizeof *r, 0); /* 4: freed by __gc on error */
  csv_init(r, o.delim);
  luaL_setmetatable(L, "sluice.csv.reader");
  lua_newtable(L); /* 5: rows */
  lua_Integer count = 0;
  size_t pos = 0;
  for (;;) {
    int rc;
    if (pos < n) {
      size_t used;
      rc = csv_feed(r, s + pos, n - pos, &used);
      pos += used;
      if (rc == CSV_MORE) continue;
    } else {
      rc = csv_finish(r);
      if (rc == CSV_MORE) break;
    }
    if (rc == CSV_ERROR) return csv_raise(L, "ECSV", "<string>", r->err_line, r->err_col, "%s", r->err);
    if (o.header == 1 && lua_isnil(L, 3)) {
      take_names(L, r, 3, "<string>");
      continue;
    }
    push_record(L, r, &o, 3, "<string>");
    lua_rawseti(L, 5, ++count);
  }
  csv_free(r);
  lua_settop(L, 5);
  return 1;
}

static int reader_gc(lua_State *L) {
  csv_free(lua_touserdata(L, 1));
  return 0;
}

/* read(path [, opts]) */
static int l_read(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_settop(L, 2);
  lua_pushnil(L); /* 3: names */
  csv_opts o;
  check_opts(L, 2, &o, 3);
  int ud = open_file(L, path, &o, 3);
  lua_toclose(L, ud); /* closes the file however read ends */
  csv_file *f = lua_touserdata(L, ud);
  lua_newtable(L);
  int rows = lua_gettop(L);
  lua_Integer count = 0;
  for (;;) {
    int top = lua_gettop(L);
    if (!file_next_record(L, f, ud)) break;
    lua_rawseti(L, rows, ++count);
    lua_settop(L, top);
  }
  lua_settop(L, rows);
  return 1;
}

static int file_iter(lua_State *L) {
  csv_file *f = luaL_checkudata(L, 1, FILE_MT);
  if (!file_next_record(L, f, 1)) return 0;
  lua_pushinteger(L, (lua_Integer)f->r.rec_line);
  return 2;
}

/* rows(path [, opts]) -> iter, file, nil, file (the file closes with the loop) */
static int l_rows(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_settop(L, 2);
  lua_pushnil(L);
  csv_opts o;
  check_opts(L, 2, &o, 3);
  int ud = open_file(L, path, &o, 3);
  lua_pushcfunction(L, file_iter);
  lua_pushvalue(L, ud);
  lua_pushnil(L);
  lua_pushvalue(L, ud);
  return 4;
}

/* Appends the CSV text of the value at idx as one field; raises naming
 * rows[i] and the column for what has no text. */
static void put_value(lua_State *L, sbuf *out, int idx, char delim, lua_Integer row,
                      const char *col_name, lua_Integer col) {
  char num[64];
  switch (lua_type(L, idx)) {
    case LUA_TNIL: return;
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      csv_put_field(out, s, n, delim);
      return;
    }
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, idx));
      } else {
        double d = lua_tonumber(L, idx);
        if (!isfinite(d)) {
          snprintf(num, sizeof num, "%s", isnan(d) ? "nan" : d > 0 ? "inf" : "-inf");
        } else {
          /* the shortest text that reads back to the same double */
          for (int prec = 15; prec <= 17; prec++) {
            snprintf(num, sizeof num, "%.*g", prec, d);
            if (strtod(num, NULL) == d) break;
          }
        }
      }
      sbuf_adds(out, num);
      return;
    case LUA_TBOOLEAN: sbuf_adds(out, lua_toboolean(L, idx) ? "true" : "false"); return;
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return; /* json.null */
      /* fall through */
    default:
      if (col_name) {
        luaL_error(L, "sluice.csv.encode: rows[%d].%s: cannot write a %s", (int)row, col_name,
                   luaL_typename(L, idx));
      }
      luaL_error(L, "sluice.csv.encode: rows[%d][%d]: cannot write a %s", (int)row, (int)col,
                 luaL_typename(L, idx));
  }
}

static int sort_names(lua_State *L, int rows_idx) {
  /* header = true: the sorted union of every row's string keys */
  lua_newtable(L);
  int set = lua_gettop(L);
  lua_Integer n = luaL_len(L, rows_idx);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, rows_idx, i) != LUA_TTABLE) {
      return luaL_error(L, "sluice.csv.encode: rows[%d] is a %s, not a table", (int)i,
                        luaL_typename(L, -1));
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pop(L, 1);
      if (lua_type(L, -1) == LUA_TSTRING) {
        lua_pushvalue(L, -1);
        lua_pushboolean(L, 1);
        lua_rawset(L, set);
      }
    }
    lua_pop(L, 1);
  }
  lua_newtable(L);
  int names = lua_gettop(L);
  lua_Integer k = 0;
  lua_pushnil(L);
  while (lua_next(L, set)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_rawseti(L, names, ++k);
  }
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "sort");
  lua_pushvalue(L, names);
  lua_call(L, 1, 0); /* table.sort(names) */
  lua_pop(L, 1);
  lua_pushvalue(L, names);
  lua_replace(L, set);
  lua_settop(L, set);
  return set;
}

/* encode(rows [, opts]) */
static int l_encode(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  char delim = ',';
  const char *eol = "\n";
  int names = 0;
  if (!lua_isnil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "delimiter");
    if (!lua_isnil(L, -1)) {
      size_t n;
      const char *d = lua_tolstring(L, -1, &n);
      if (!d || n != 1 || *d == '"' || *d == '\n' || *d == '\r') {
        return luaL_error(L, "sluice.csv: delimiter must be one byte other than a quote or a line break");
      }
      delim = *d;
    }
    lua_getfield(L, 2, "eol");
    if (!lua_isnil(L, -1)) {
      eol = lua_tostring(L, -1);
      if (!eol || (strcmp(eol, "\n") != 0 && strcmp(eol, "\r\n") != 0)) {
        return luaL_error(L, "sluice.csv.encode: eol must be \"\\n\" or \"\\r\\n\"");
      }
    }
    lua_getfield(L, 2, "header");
    if (lua_istable(L, -1)) {
      names = lua_gettop(L);
    } else if (lua_toboolean(L, -1)) {
      names = sort_names(L, 1);
    }
  }
  /* the output, freed by the userdata's __gc if a value raises */
  sbuf *held = lua_newuserdatauv(L, sizeof *held, 0);
  *held = (sbuf)SBUF_INIT;
  luaL_setmetatable(L, "sluice.csv.sbuf");
  lua_Integer nn = names ? (lua_Integer)lua_rawlen(L, names) : 0;
  if (names) {
    for (lua_Integer j = 1; j <= nn; j++) {
      if (lua_rawgeti(L, names, j) != LUA_TSTRING) {
        return luaL_error(L, "sluice.csv.encode: header[%d] must be a string", (int)j);
      }
      size_t len;
      const char *s = lua_tolstring(L, -1, &len);
      if (j > 1) sbuf_addc(held, delim);
      csv_put_field(held, s, len, delim);
      lua_pop(L, 1);
    }
    sbuf_adds(held, eol);
  }
  lua_Integer n = luaL_len(L, 1);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 1, i) != LUA_TTABLE) {
      return luaL_error(L, "sluice.csv.encode: rows[%d] is a %s, not a table", (int)i,
                        luaL_typename(L, -1));
    }
    int row = lua_gettop(L);
    if (names) {
      for (lua_Integer j = 1; j <= nn; j++) {
        if (j > 1) sbuf_addc(held, delim);
        lua_rawgeti(L, names, j);
        const char *name = lua_tostring(L, -1);
        lua_rawget(L, row);
        put_value(L, held, -1, delim, i, name, j);
        lua_pop(L, 1);
      }
    } else {
      lua_Integer m = (lua_Integer)lua_rawlen(L, row);
      for (lua_Integer j = 1; j <= m; j++) {
        if (j > 1) sbuf_addc(held, delim);
        lua_rawgeti(L, row, j);
        put_value(L, held, -1, delim, i, NULL, j);
        lua_pop(L, 1);
      }
    }
    sbuf_adds(held, eol);
    lua_pop(L, 1);
  }
  lua_pushlstring(L, held->data ? held->data : "", held->len);
  return 1;
}

static int sbuf_gc(lua_State *L) {
  sbuf_free(lua_touserdata(L, 1));
  return 0;
}

int luaopen_sluice__csv(lua_State *L) {
  luaL_newmetatable(L, ERROR_MT);
  lua_pushcfunction(L, error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  modules_class(L, FILE_MT, NULL, file_gc, 1);
  modules_class(L, "sluice.csv.reader", NULL, reader_gc, 0);
  modules_class(L, "sluice.csv.sbuf", NULL, sbuf_gc, 0);
  static const luaL_Reg fns[] = {{"parse", l_parse},
                                 {"read", l_read},
                                 {"rows", l_rows},
                                 {"encode", l_encode},
                                 {NULL, NULL}};
  luaL_newlib(L, fns);
  luaL_getmetatable(L, ERROR_MT);
  lua_setfield(L, -2, "Error");
  return 1;
}
