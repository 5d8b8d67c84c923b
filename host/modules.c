/* modules.c: the one table of C modules (see modules.h). A module name
 * beginning with "sluice._" is a C core under a Lua module of stdlib/ that
 * is the API (sluice._http under stdlib/sluice/http.lua). */
#include "modules.h"

#include <lauxlib.h>

#include "codec.h"
#include "guard.h"
#include "host_lib.h"
#include "l_store.h"

static const luaL_Reg modules[] = {
    {"sluice._json", luaopen_sluice_json}, /* wrapped by stdlib/sluice/json.lua */
    {"sluice.codec", luaopen_sluice_codec},
    {"sluice.host", luaopen_sluice_host},
    {"sluice._store", luaopen_sluice__store},
    {"sluice.control_socket", luaopen_sluice_control_socket},
    {"sluice.guard", luaopen_sluice_guard},
    {"sluice._http", luaopen_sluice__http},
    {"sluice._csv", luaopen_sluice__csv},
    {"sluice._sqlite", luaopen_sluice__sqlite},
    {"sluice.http_server", luaopen_sluice_http_server},
    {"sluice.crypto", luaopen_sluice_crypto},
    {"sluice.web", luaopen_sluice_web},
    {"sluice.edit", luaopen_sluice_edit},
    {NULL, NULL},
};

void modules_preload(lua_State *L) {
  for (const luaL_Reg *m = modules; m->name; m++) {
    lua_pushcfunction(L, m->func);
    lua_setfield(L, -2, m->name);
  }
}

void modules_shutdown(lua_State *L) {
  http_shutdown(L);
  sqlite_shutdown(L);
  http_lua_shutdown(); /* the HTTP API's server and connections */
}
