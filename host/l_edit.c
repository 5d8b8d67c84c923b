/* l_edit.c: "sluice._edit", line editing and history for sluice repl, over
 * libedit (BSD-licensed; its readline interface). The callback form is
 * used, not readline(): the REPL's loop keeps running while a line is typed
 * (it notices at once that its host went away, and Ctrl-C reaches it as a
 * signal handle), and polls stdin itself, calling feed when it is readable.
 *
 *   edit.start(prompt)         shows the prompt; the terminal goes into edit mode
 *   edit.feed() -> "more" | "line", text | "eof"
 *                              handles what stdin holds: a line is not finished
 *                              yet, is finished, or Ctrl-D on an empty line (or
 *                              the terminal went away) ended the input
 *   edit.stop()                leaves edit mode (a partial line is dropped)
 *   edit.add_history(line)
 *   edit.read_history(path) -> true | nil, message
 *   edit.write_history(path) -> true | nil, message   (mode 0600: it may hold secrets)
 *   edit.set_words(list)       the words Tab completes (names and table.field)
 *   edit.resize()              the terminal changed size (SIGWINCH)
 *   edit.isatty(fd) -> boolean
 *   edit.columns() -> the width of the terminal on stdout, or nil
 *
 * libedit keeps its state in globals: one editor per process. Its own
 * signal handling is off (rl_catch_signals = 0): SIGINT and SIGWINCH are
 * the loop's (luv signal handles). Depends on libedit (editline/readline.h). */
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* editline/readline.h uses FILE without including stdio.h */
#include <editline/readline.h>

#include <uv.h>

#include "modules.h"

#define HISTORY_MAX 1000

enum { NONE, LINE, END };

static int inited;
static int active;       /* a handler is installed: the terminal is in edit mode */
static int got;          /* what the handler saw: NONE, LINE, END */
static char *got_line;   /* LINE: malloc'ed by libedit, ours to free */
static char **words;     /* completion words, NULL-terminated */
static size_t nwords;

static void on_line(char *line) {
  free(got_line);
  got_line = line;
  got = line ? LINE : END;
}

/* completion generator: the words that start with text, one per call */
static char *complete(const char *text, int state) {
  static size_t i, len;
  if (!state) {
    i = 0;
    len = strlen(text);
  }
  while (words && i < nwords) {
    const char *w = words[i++];
    if (strncmp(w, text, len) == 0) return strdup(w);
  }
  return NULL;
}

static void init(void) {
  if (inited) return;
  inited = 1;
  rl_readline_name = "sluice";
  rl_catch_signals = 0;
  rl_catch_sigwinch = 0;
  /* no '.' nor ':' among them: "string.fo" completes as one word */
  rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(,)[]+-*/%^~#!";
  rl_completion_entry_function = complete;
  rl_completion_append_character = '\0';
  using_history();
  stifle_history(HISTORY_MAX);
}

static void remove_handler(void) {
  if (!active) return;
  active = 0;
  rl_callback_handler_remove();
}

static int l_start(lua_State *L) {
  const char *prompt = luaL_checkstring(L, 1);
  init();
  fflush(stdout);
  /* after a finished line libedit leaves edit mode: install anew each time */
  remove_handler();
  got = NONE;
  rl_callback_handler_install(prompt, on_line);
  active = 1;
  return 0;
}

static int l_feed(lua_State *L) {
  if (!active) return luaL_error(L, "edit.feed: no prompt is shown (call edit.start first)");
  /* readable with nothing to read: the terminal hung up; libedit would
   * return without a word, and the caller would be told "readable" again */
  int avail = 0;
  if (ioctl(STDIN_FILENO, FIONREAD, &avail) == 0 && avail == 0) {
    remove_handler();
    lua_pushliteral(L, "eof");
    return 1;
  }
  rl_callback_read_char();
  int what = got;
  got = NONE;
  if (what == NONE) {
    lua_pushliteral(L, "more");
    return 1;
  }
  remove_handler();
  if (what == END) {
    lua_pushliteral(L, "eof");
    return 1;
  }
  lua_pushliteral(L, "line");
  lua_pushstring(L, got_line);
  free(got_line);
  got_line = NULL;
  return 2;
}

static int l_stop(lua_State *L) {
  (void)L;
  remove_handler();
  free(got_line);
  got_line = NULL;
  got = NONE;
  return 0;
}

static int l_add_history(lua_State *L) {
  const char *line = luaL_checkstring(L, 1);
  init();
  add_history(line);
  return 0;
}

/* nil, "CODE: what path: strerror", "CODE" */
static int fail_errno(lua_State *L, int e, const char *what, const char *path) {
  return modules_fail(L, uv_err_name(-e), lua_pushfstring(L, "%s %s: %s", what, path, strerror(e)));
}

static int l_read_history(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  init();
  if (access(path, F_OK) != 0) {
    lua_pushboolean(L, 1); /* no history yet */
    return 1;
  }
  int rc = read_history(path);
  if (rc != 0) return fail_errno(L, rc > 0 ? rc : errno, "cannot read", path);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_write_history(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  init();
  /* created owner-only before libedit writes it */
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return fail_errno(L, errno, "cannot write", path);
  close(fd);
  int rc = write_history(path);
  if (rc != 0) return fail_errno(L, rc > 0 ? rc : errno, "cannot write", path);
  if (chmod(path, 0600) != 0) return fail_errno(L, errno, "cannot make owner-only", path);
  lua_pushboolean(L, 1);
  return 1;
}

static void free_words(void) {
  for (size_t i = 0; i < nwords; i++) free(words[i]);
  free(words);
  words = NULL;
  nwords = 0;
}

static int l_set_words(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  size_t n = (size_t)lua_rawlen(L, 1);
  char **w = calloc(n + 1, sizeof *w);
  if (!w) return luaL_error(L, "edit.set_words: out of memory");
  size_t k = 0;
  for (size_t i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 1, (lua_Integer)i) == LUA_TSTRING) {
      w[k] = strdup(lua_tostring(L, -1));
      if (!w[k]) {
        lua_pop(L, 1);
        for (size_t j = 0; j < k; j++) free(w[j]);
        free(w);
        return luaL_error(L, "edit.set_words: out of memory");
      }
      k++;
    }
    lua_pop(L, 1);
  }
  free_words();
  words = w;
  nwords = k;
  return 0;
}

static int l_resize(lua_State *L) {
  (void)L;
  if (active) rl_resize_terminal();
  return 0;
}

static int l_columns(lua_State *L) {
  struct winsize ws;
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0) return 0;
  lua_pushinteger(L, ws.ws_col);
  return 1;
}

static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* the module's table is collected at lua_close: the editor leaves edit
 * mode and the words go */
static int l_gc(lua_State *L) {
  (void)L;
  remove_handler();
  free(got_line);
  got_line = NULL;
  free_words();
  return 0;
}

int luaopen_sluice__edit(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"start", l_start},           {"feed", l_feed},
      {"stop", l_stop},             {"add_history", l_add_history},
      {"read_history", l_read_history}, {"write_history", l_write_history},
      {"set_words", l_set_words},   {"resize", l_resize},
      {"isatty", l_isatty},         {"columns", l_columns},
      {NULL, NULL}};
  luaL_newlib(L, fns);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  return 1;
}
