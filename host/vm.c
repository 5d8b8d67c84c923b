/* vm.c: the Lua state on the host's loop (see vm.h).
 *
 * Depends on luv: luv_set_loop and luv_set_callback must precede
 * luaopen_luv, or luv makes its own loop and exits the process on the first
 * error in a callback (INTEGRATION.md). */
#include "vm.h"

#include <lauxlib.h>
#include <luv/luv.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embedded.h"
#include "guard.h"
#include "lua_alloc.h"
#include "modules.h"

vm *vm_of(lua_State *L) { return *(vm **)lua_getextraspace(L); }

void vm_push_traceback(lua_State *L, lua_State *co, int level) {
  const char *msg;
  if (lua_type(L, -1) == LUA_TSTRING) {
    msg = lua_tostring(L, -1);
  } else if (luaL_callmeta(L, -1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) {
    msg = lua_tostring(L, -1);
  } else {
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, -1));
  }
  luaL_traceback(L, co, msg, level);
}

/* message handler of vm_pcall: any error value becomes its message (or a
 * description of it) with a traceback */
static int msgh(lua_State *L) {
  vm_push_traceback(L, L, 1);
  return 1;
}

int vm_pcall(lua_State *L, int nargs, int nresults, int flags) {
  (void)flags;
  int top = lua_gettop(L) - nargs - 1;
  lua_pushcfunction(L, msgh);
  lua_insert(L, top + 1);
  int rc = lua_pcall(L, nargs, nresults, top + 1);
  lua_remove(L, top + 1);
  if (rc != LUA_OK) {
    fprintf(stderr, "sluice: %s\n", lua_tostring(L, -1));
    fflush(stderr);
    lua_pop(L, 1);
    return -rc;
  }
  return lua_gettop(L) - top;
}

int vm_resume(lua_State *co, lua_State *from, int nargs) {
  vm *v = vm_of(co);
  int nres = 0;
  /* what the guards' hook needs to know: which coroutine the host runs
   * (only it may be preempted) and since when */
  lua_State *prev = v->running;
  uint64_t prev_start = v->slice_start;
  v->running = co;
  if (v->guards > 0) v->slice_start = uv_hrtime();
  int rc = lua_resume(co, from, nargs, &nres);
  v->running = prev;
  v->slice_start = prev_start;
  if (rc == LUA_YIELD) {
    lua_pop(co, nres);
    if (v->preempted == co) {
      v->preempted = NULL;
      guard_requeue(co);
    }
    return rc;
  }
  if (rc == LUA_OK) {
    lua_pop(co, nres);
    if (co == v->main_co && v->stop_with_main) uv_stop(&v->loop);
    return rc;
  }
  /* the coroutine died: report it with its own traceback */
  vm_push_traceback(co, co, 0);
  fprintf(stderr, "sluice: %s\n", lua_tostring(co, -1));
  fflush(stderr);
  if (co == v->main_co) {
    v->main_failed = 1;
    if (v->stop_with_main) uv_stop(&v->loop);
  }
  lua_resetthread(co);
  return rc;
}

int vm_start_main(vm *v, int nargs) {
  lua_State *L = v->L;
  lua_State *co = lua_newthread(L);
  /* anchor the main coroutine for the life of the state */
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, "sluice.main_co");
  lua_pop(L, 1);
  lua_xmove(L, co, nargs + 1);
  v->main_co = co;
  v->main_failed = 0;
  int rc = vm_resume(co, NULL, nargs);
  return (rc == LUA_OK || rc == LUA_YIELD) ? 0 : -1;
}

/* Loads the file at path as a chunk named chunk; pushes the function or the
 * error message. */
static int load_from_disk(lua_State *L, const char *path, const char *chunk) {
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    lua_pushfstring(L, "cannot open %s", path);
    return LUA_ERRFILE;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  char buf[8192];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, fp)) > 0) luaL_addlstring(&b, buf, n);
  int bad = ferror(fp);
  fclose(fp);
  luaL_pushresult(&b);
  if (bad) {
    lua_pop(L, 1);
    lua_pushfstring(L, "cannot read %s", path);
    return LUA_ERRFILE;
  }
  size_t len;
  const char *src = lua_tolstring(L, -1, &len);
  int rc = luaL_loadbufferx(L, src, len, chunk, "t");
  lua_remove(L, -2);
  return rc;
}

/* package.searchers entry for lua/ and stdlib/. With SLUICE_LUA_ROOT set, the
 * files are read from that checkout instead, so a developer need not rebuild
 * to try a change in Lua. */
static int search_embedded(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  for (const embedded_file *f = embedded_files; f->module; f++) {
    if (strcmp(f->module, name) != 0) continue;
    const char *root = getenv("SLUICE_LUA_ROOT");
    int rc;
    if (root && *root) {
      /* the embedded chunk name even so: the guards' hook tells the host's
       * own code from the user's by it (guard.h) */
      const char *path = lua_pushfstring(L, "%s/%s", root, f->chunk + 1);
      rc = load_from_disk(L, path, f->chunk);
    } else {
      rc = luaL_loadbufferx(L, f->src, f->len, f->chunk, "t");
    }
    if (rc != LUA_OK) return lua_error(L);
    lua_pushstring(L, f->chunk + 1);
    return 2;
  }
  lua_pushfstring(L, "\n\tno embedded module '%s'", name);
  return 1;
}

static int refuse_uv_run(lua_State *L) {
  return luaL_error(L, "uv.run: the sluice host runs the loop; do not call uv.run from Lua");
}

static int refuse_uv_walk(lua_State *L) {
  return luaL_error(L, "uv.walk: not available in sluice (the loop also holds the host's own handles)");
}

int vm_open(vm *v, char *err, size_t errsz) {
  memset(v, 0, sizeof *v);
  int rc = uv_loop_init(&v->loop);
  if (rc != 0) {
    snprintf(err, errsz, "cannot create the event loop: %s", uv_strerror(rc));
    return -1;
  }
  lua_State *L = luaL_newstate();
  if (!L) {
    snprintf(err, errsz, "cannot create the Lua state: out of memory");
    uv_loop_close(&v->loop);
    return -1;
  }
  /* luaL_newstate's panic and warning functions, with our allocator: the
   * few blocks allocated before are handed to free (lua_alloc.h) */
  lua_alloc_init(&v->alloc, LUA_ALLOC_CACHE);
  lua_setallocf(L, lua_alloc_fn, &v->alloc);
  /* The generational collector: most of what a run allocates (a replayed
   * step's result, its id, a closure) is garbage within a few steps, and a
   * minor collection visits only the young objects, where an incremental
   * cycle marks and sweeps the engine's whole heap every time the heap has
   * doubled. It also collects sooner (at +20 %): less CPU per step (~5 % of
   * a replay's) and a smaller anonymous RSS under the 64-run load. */
  lua_gc(L, LUA_GCGEN, 0, 0);
  v->L = L;
  *(vm **)lua_getextraspace(L) = v;
  luaL_openlibs(L);

  /* embedded Lua modules, searched right after package.preload */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchers");
  for (int i = (int)luaL_len(L, -1); i >= 2; i--) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushcfunction(L, search_embedded);
  lua_rawseti(L, -2, 2);
  lua_pop(L, 1);

  /* C modules */
  lua_getfield(L, -1, "preload");
  modules_preload(L);
  lua_pop(L, 1);

  /* luv on our loop, with our error handler */
  luv_set_loop(L, &v->loop);
  luv_set_callback(L, vm_pcall);
  lua_getfield(L, -1, "loaded");
  luaopen_luv(L);
  lua_getfield(L, -1, "walk");
  lua_setfield(L, LUA_REGISTRYINDEX, "sluice.uv_walk");
  lua_pushcfunction(L, refuse_uv_run);
  lua_setfield(L, -2, "run");
  lua_pushcfunction(L, refuse_uv_walk);
  lua_setfield(L, -2, "walk");
  lua_setfield(L, -2, "luv");
  lua_pop(L, 2); /* loaded, package */
  v->open = 1;

  /* the pipeline API as globals, for pipeline files and scripts alike */
  if (luaL_dostring(L, "require('sluice.engine').install(_G)") != LUA_OK) {
    snprintf(err, errsz, "loading the engine: %s", lua_tostring(L, -1));
    vm_close(v);
    return -1;
  }
  return 0;
}

void vm_close(vm *v) {
  if (!v->open) return;
  lua_State *L = v->L;
  modules_shutdown(L); /* C handles, the writer, curl, SQLite: closed by the uv_run below */
  uv_run(&v->loop, UV_RUN_NOWAIT);
  /* luv's own handles: close them through luv so its references go too */
  lua_getfield(L, LUA_REGISTRYINDEX, "sluice.uv_walk");
  if (luaL_dostring(L, "return function(h) if not h:is_closing() then h:close() end end") == LUA_OK) {
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      fprintf(stderr, "sluice: closing handles: %s\n", lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  } else {
    lua_pop(L, 2);
  }
  uv_run(&v->loop, UV_RUN_DEFAULT);
  lua_close(L);
  lua_alloc_release(&v->alloc);
  v->L = NULL;
  if (uv_loop_close(&v->loop) != 0) {
    fprintf(stderr, "sluice: warning: the event loop still had open handles at exit\n");
  }
  v->open = 0;
}
