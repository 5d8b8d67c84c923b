/* lua_events.c - the floor of `read` into Lua: building the pages of event tables that
 * read returns (DESIGN: events are {id, type, stream, ts, data}), and nothing else: no
 * store, no decoding, no copy. Same Lua 5.4 (Debian's liblua5.4, its allocator and
 * incremental collector at their defaults) as sluice.
 *
 * usage: lua_events [EVENTS=1000000] [PAGE=1000]
 *   Each event: a table made with room for its 5 fields, a fresh 16-hex-digit id string,
 *   type, stream and time text shared with the event before (as sluice's read shares
 *   them), and a fresh 100-byte data string; each page a sequence of PAGE events that the
 *   caller drops when it asks for the next page (as bench/stream.lua's reader does).
 * Prints events/s and us per event (wall), and the process's CPU us per event.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* page(first, n) -> {event, ...} */
static int page(lua_State *L) {
    lua_Integer first = luaL_checkinteger(L, 1), n = luaL_checkinteger(L, 2);
    char data[100];
    memset(data, 'x', sizeof data);
    static const char *const names[] = {"id", "type", "stream", "ts", "data"};
    for (int i = 0; i < 5; i++) lua_pushstring(L, names[i]);
    int k = lua_gettop(L) - 4;
    lua_pushstring(L, "ev");
    lua_pushstring(L, "k:1");
    lua_pushstring(L, "2026-12-01T00:00:00.000Z");
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 0; i < n; i++) {
        lua_createtable(L, 0, 5);
        char id[16];
        unsigned long long s = (unsigned long long)(first + i);
        for (int j = 15; j >= 0; j--, s >>= 4) id[j] = "0123456789abcdef"[s & 15];
        lua_pushvalue(L, k);
        lua_pushlstring(L, id, 16);
        lua_rawset(L, -3);
        for (int f = 1; f <= 3; f++) {
            lua_pushvalue(L, k + f);
            lua_pushvalue(L, k + 4 + f);
            lua_rawset(L, -3);
        }
        lua_pushvalue(L, k + 4);
        lua_pushlstring(L, data, sizeof data);
        lua_rawset(L, -3);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

int main(int argc, char **argv) {
    long events = argc > 1 ? atol(argv[1]) : 1000000, per = argc > 2 ? atol(argv[2]) : 1000;
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_register(L, "page", page);
    char chunk[256];
    snprintf(chunk, sizeof chunk,
             "local got = 0 for first = 1, %ld, %ld do local evs = page(first, %ld) got = got + #evs end return got",
             events, per, per);
    double t0 = now();
    clock_t c0 = clock();
    if (luaL_dostring(L, chunk) != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        return 1;
    }
    double el = now() - t0, cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
    long got = (long)lua_tointeger(L, -1);
    printf("lua_events events=%ld page=%ld secs=%.3f events_per_s=%.0f us_per_event=%.3f cpu_us_per_event=%.3f\n",
           got, per, el, got / el, el * 1e6 / got, cpu * 1e6 / got);
    lua_close(L);
    return 0;
}
