/* steps.h: the step record codec and the replay loader (l_steps.c), added
 * to the "sluice.host" module table. */
#ifndef SLUICE_STEPS_H
#define SLUICE_STEPS_H
#include <lua.h>

#include "store.h"

/* Adds step_record, step_fields and load_steps to the table on top of L. */
void steps_register(lua_State *L);

/* The process's open store; raises if none (l_host.c). */
store *host_store(lua_State *L);

#endif
