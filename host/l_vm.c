/* l_vm.c: "sluice._vm", the host's Lua state and loop (vm.c) for the
 * engine's Lua code:
 *
 *   resume(co, ...) -> "yield" | "ok" | "error": resumes a suspended
 *       coroutine as the host does (errors reported with a traceback, the
 *       main coroutine's end noted)
 *   stop(): stops the loop (a command is done; user handles left open do
 *       not keep the process alive)
 *   embedded(prefix) -> {path = source} of the files compiled into the
 *       binary whose repository path starts with prefix ("types/"): what
 *       `sluice types DIR` writes out
 *   trim(): a full collection, then the memory malloc keeps free given
 *       back to the system (malloc_trim): after a load that left much
 *       garbage (100,000 schedules), so that what follows is not counted
 *       on top of pages freed but kept (the allocator's cached blocks
 *       too, lua_alloc.h) */
#include <lauxlib.h>
#include <malloc.h>
#include <string.h>

#include "embedded.h"
#include "modules.h"
#include "vm.h"

static int l_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argcheck(L, co != NULL, 1, "expected a coroutine");
  int st = lua_status(co);
  if (co == L || (st != LUA_YIELD && !(st == LUA_OK && lua_gettop(co) > 0))) {
    return luaL_error(L, "sluice._vm.resume: the coroutine is not suspended");
  }
  int nargs = lua_gettop(L) - 1;
  if (!lua_checkstack(co, nargs + 1)) return luaL_error(L, "stack overflow");
  lua_xmove(L, co, nargs);
  int rc = vm_resume(co, L, nargs);
  lua_pushstring(L, rc == LUA_YIELD ? "yield" : rc == LUA_OK ? "ok" : "error");
  return 1;
}

static int l_stop(lua_State *L) {
  uv_stop(&vm_of(L)->loop);
  return 0;
}

static int l_embedded(lua_State *L) {
  size_t plen;
  const char *prefix = luaL_checklstring(L, 1, &plen);
  lua_newtable(L);
  for (const embedded_file *f = embedded_files; f->module; f++) {
    if (strncmp(f->chunk + 1, prefix, plen) != 0) continue;
    lua_pushlstring(L, f->src, f->len);
    lua_setfield(L, -2, f->chunk + 1);
  }
  return 1;
}

static int l_trim(lua_State *L) {
  lua_gc(L, LUA_GCCOLLECT);
  lua_alloc_release(&vm_of(L)->alloc);
  malloc_trim(0);
  return 0;
}

int luaopen_sluice__vm(lua_State *L) {
  static const luaL_Reg fns[] = {{"resume", l_resume},
                                 {"stop", l_stop},
                                 {"embedded", l_embedded},
                                 {"trim", l_trim},
                                 {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
