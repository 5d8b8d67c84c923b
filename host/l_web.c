/* l_web.c: "sluice._web", the dashboard's files for lua/api/web.lua: the copy
 * of web/ embedded at build time (web_assets.h), or, with SLUICE_WEB_ROOT set
 * to a checkout's web/ folder, the files on disk, read at each request so a
 * developer sees an edit on reload without rebuilding (like
 * SLUICE_LUA_ROOT). Internal, not for pipeline authors.
 *
 *   get(path) -> body, content_type, etag | nil, message
 *       path is relative to web/ ("index.html", "js/app.js"): segments of
 *       letters, digits, '.', '_' and '-', none starting with '.', so no
 *       path can leave the folder. etag is quoted, ready for the header.
 *   root() -> the folder files are read from, or nil when embedded
 *
 * Reading from disk happens on the loop thread; it is a development mode
 * for files of a few hundred kilobytes, not for serving in production. */
#include <errno.h>
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <uv.h>

#include "modules.h"
#include "web_assets.h"

#define MAX_DISK_FILE (16 * 1024 * 1024)

static const struct {
  const char *ext;
  const char *type;
} types[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".json", "application/json"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
    {".txt", "text/plain; charset=utf-8"},
    {".md", "text/plain; charset=utf-8"},
};

/* The content type of path, from its extension; a name without one (LICENSE)
 * is plain text. NULL for an extension not listed. */
static const char *type_of(const char *path) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  const char *dot = strrchr(base, '.');
  if (!dot) return "text/plain; charset=utf-8";
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    if (strcmp(dot, types[i].ext) == 0) return types[i].type;
  }
  return NULL;
}

/* 1 when path is a safe relative path below web/ */
static int safe_path(const char *p, size_t n) {
  if (n == 0 || n > 512) return 0;
  int seg_start = 1;
  for (size_t i = 0; i < n; i++) {
    char c = p[i];
    if (c == '/') {
      if (seg_start) return 0; /* empty segment or leading '/' */
      seg_start = 1;
      continue;
    }
    if (seg_start && c == '.') return 0; /* "..", ".git", hidden files */
    seg_start = 0;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-'))
      return 0;
  }
  return !seg_start;
}

static const char *disk_root(void) {
  const char *root = getenv("SLUICE_WEB_ROOT");
  return root && *root ? root : NULL;
}

/* pushes body, type, etag of a file on disk, or nil, "CODE: message", "CODE" */
static int get_disk(lua_State *L, const char *root, const char *path, const char *type) {
  const char *full = lua_pushfstring(L, "%s/%s", root, path);
  FILE *f = fopen(full, "rb");
  if (!f) {
    int e = errno;
    return modules_fail(L, uv_err_name(-e), lua_pushfstring(L, "%s: %s", full, strerror(e)));
  }
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_DISK_FILE) {
    fclose(f);
    return modules_fail(L, "EINVAL", lua_pushfstring(L, "%s: not a regular file of at most 16 MiB", full));
  }
  luaL_Buffer b;
  char *dst = luaL_buffinitsize(L, &b, (size_t)st.st_size);
  size_t got = fread(dst, 1, (size_t)st.st_size, f);
  int bad = ferror(f);
  fclose(f);
  if (bad || got != (size_t)st.st_size) return modules_fail(L, "EIO", lua_pushfstring(L, "%s: read error", full));
  /* FNV-1a 64: tells one version of a file from the next, nothing more;
   * computed before pushresult, which may free dst */
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < got; i++) {
    h ^= (unsigned char)dst[i];
    h *= 1099511628211ULL;
  }
  luaL_pushresultsize(&b, got);
  lua_pushstring(L, type);
  char etag[24];
  snprintf(etag, sizeof etag, "\"%016llx\"", (unsigned long long)h);
  lua_pushstring(L, etag);
  return 3;
}

static int l_get(lua_State *L) {
  size_t n;
  const char *path = luaL_checklstring(L, 1, &n);
  if (!safe_path(path, n)) return modules_fail(L, "EINVAL", "not a path below web/");
  const char *type = type_of(path);
  if (!type) {
    return modules_fail(L, "EINVAL", lua_pushfstring(L, "%s: no content type for this extension "
                                                        "(host/l_web.c lists them)", path));
  }
  const char *root = disk_root();
  if (root) return get_disk(L, root, path, type);
  for (const web_file *f = web_files; f->path; f++) {
    if (strcmp(f->path, path) != 0) continue;
    lua_pushlstring(L, f->data, f->len);
    lua_pushstring(L, type);
    lua_pushstring(L, f->etag);
    return 3;
  }
  return modules_fail(L, "ENOENT", lua_pushfstring(L, "%s: no such file in the embedded web/", path));
}

static int l_root(lua_State *L) {
  const char *root = disk_root();
  if (root) {
    lua_pushstring(L, root);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

int luaopen_sluice__web(lua_State *L) {
  static const luaL_Reg fns[] = {{"get", l_get}, {"root", l_root}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
