/* l_store_events.c: "sluice._store" operations on events of the stream with their per-key index and trim marks, sends with their dispatch cursor, consumers' checkpoints (store.h). */
#include <lauxlib.h>

#include "l_store.h"

void l_store_events(lua_State *L, int module_idx, int methods_idx) {
  static const luaL_Reg fns[] = {{NULL, NULL}};
  static const luaL_Reg methods[] = {{NULL, NULL}};
  lua_pushvalue(L, module_idx);
  luaL_setfuncs(L, fns, 0);
  lua_pushvalue(L, methods_idx);
  luaL_setfuncs(L, methods, 0);
  lua_pop(L, 2);
}
