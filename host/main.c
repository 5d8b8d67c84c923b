/* main.c: the sluice command line. Dispatches to the Lua interpreter mode
 * (sluice FILE.lua ARGS: behaves like the lua executable, so busted can run
 * inside the host), to the commands written in Lua (lua/cli.lua: run, runs,
 * status) and to the ones written in C (cron). Exit codes: 0 success,
 * 1 a pipeline or script failed, 2 bad usage or bad input. */
#include <lauxlib.h>
#include <lua.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cron.h"
#include "vm.h"

static const char usage[] =
    "usage: sluice COMMAND [ARGS]    durable data pipelines in Lua\n"
    "\n"
    "commands:\n"
    "  run FILE [--pipeline NAME] [--input JSON] [--id RUN_ID] [--store DIR]\n"
    "                          run one pipeline to completion, print its result as JSON\n"
    "  runs [--pipeline NAME] [--status S] [--limit N] [--store DIR] [--json]\n"
    "                          list runs, newest first\n"
    "  status RUN_ID [--store DIR] [--json]\n"
    "                          one run with its steps\n"
    "  serve [DIR] [--store DIR] [--grace DURATION] [--listen HOST:PORT] [--no-http]\n"
    "                          the long-lived host: loads DIR (default pipelines/), resumes\n"
    "                          unfinished runs, fires schedules, serves the HTTP API\n"
    "  schedules [--store DIR] [--json]\n"
    "                          schedules with their canonical spec and next fires\n"
    "  events STREAM [--after ID | --from POS] [--limit N] [--follow] [--json]\n"
    "                          the events of a stream key or prefix (orders:*)\n"
    "  consumers [--store DIR] [--json]\n"
    "                          stream consumers with their checkpoint and lag\n"
    "  cancel RUN_ID [--wait DURATION] [--store DIR]\n"
    "                          stop a run at its next step boundary, sleep or wait\n"
    "  rerun RUN_ID --from STEP_ID [--id NEW_ID] [--store DIR]\n"
    "                          a new run reusing the steps before STEP_ID\n"
    "  trigger SCHEDULE [--input JSON] [--wait] [--store DIR]\n"
    "                          start a run of a schedule now, in the serve that owns the store\n"
    "  reload [--store DIR] [--json]\n"
    "                          the serve that owns the store loads its pipeline files again\n"
    "  keys add NAME [--namespace NS] [--role admin|runner|reader] | keys list | keys revoke NAME\n"
    "                          API keys of the HTTP API (the key is printed once)\n"
    "  namespaces set NS [--runs-per-day N] [--concurrent-runs N] [--status S] | namespaces list\n"
    "                          namespaces of the HTTP API and their quotas\n"
    "  repl [--store DIR] [-e CHUNK] [--json] [--eval-timeout D]\n"
    "                          Lua inside the serve that owns the store (read-only without one)\n"
    "  pipelines [FILE|DIR] [--json]\n"
    "                          the pipelines of a file or directory, with their parameters\n"
    "  types DIR               write the LuaCATS stubs (for lua-language-server) into DIR\n"
    "  store migrate --store postgres://USER@HOST:PORT/DB\n"
    "                          create or upgrade the schema of a PostgreSQL store\n"
    "  store copy --from SRC --to DST [--page N] [--batch N]\n"
    "                          every record of a store into an empty one (LMDB <-> PostgreSQL)\n"
    "  store check [--store S]\n"
    "                          whether a store's indexes agree with its records\n"
    "  hosts [--store postgres://...] [--json]\n"
    "                          the serve hosts sharing a PostgreSQL store, with their leases\n"
    "  cron next \"EXPR\" [--from ISO8601] [-n N] [--tz ZONE]\n"
    "                          the next fire times of a cron expression, in UTC\n"
    "  FILE.lua [ARGS...]      run a Lua script inside the host (like the lua executable)\n"
    "\n"
    "Every command takes --help. The default store is ./.sluice; --store\n"
    "postgres://USER@HOST:PORT/DB (or SLUICE_STORE) selects PostgreSQL.\n";

/* The vm lives as long as the process: os.exit from a script leaves it
 * reachable, not leaked. */
static vm V;

static int lua_commands(char **argv) {
  static const char *const names[] = {"run",    "runs",   "status",    "serve",
                                      "schedules", "events", "consumers", "cancel",
                                      "rerun", "trigger", "reload", "keys", "namespaces", "repl", "pipelines", "types", "store",
                                      "hosts", NULL};
  for (int i = 0; names[i]; i++) {
    if (strcmp(argv[1], names[i]) == 0) return 1;
  }
  return 0;
}

/* Runs fn (on the stack with nargs arguments) as the main coroutine, then
 * the loop. */
static void run_main(int nargs) {
  if (vm_start_main(&V, nargs) != 0) return;
  uv_run(&V.loop, UV_RUN_DEFAULT);
  if (lua_status(V.main_co) == LUA_YIELD && !V.main_failed) {
    if (V.stop_with_main) {
      fprintf(stderr, "sluice: internal error: the command is suspended but nothing is "
                      "pending on the loop\n");
      V.main_failed = 1;
    }
  }
}

static int command(int argc, char **argv) {
  lua_State *L = V.L;
  V.stop_with_main = 1;
  const char *boot =
      "local code = require('sluice.cli').main(...)\n"
      "debug.getregistry()['sluice.exit_code'] = code\n";
  if (luaL_loadbuffer(L, boot, strlen(boot), "=sluice") != LUA_OK) {
    fprintf(stderr, "sluice: %s\n", lua_tostring(L, -1));
    return 1;
  }
  for (int i = 1; i < argc; i++) lua_pushstring(L, argv[i]);
  run_main(argc - 1);
  if (V.main_failed) return 1;
  lua_getfield(L, LUA_REGISTRYINDEX, "sluice.exit_code");
  int code = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 1;
  lua_pop(L, 1);
  return code;
}

/* sluice FILE [ARGS]: global arg as lua.c makes it, the chunk gets ARGS as
 * varargs and runs in a coroutine so it may wait; the loop runs until
 * nothing is pending, like luvit or node. */
static int script(int argc, char **argv) {
  lua_State *L = V.L;
  lua_createtable(L, argc, 2);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  lua_setglobal(L, "arg");
  if (luaL_loadfilex(L, argv[1], "bt") != LUA_OK) {
    fprintf(stderr, "sluice: %s\n", lua_tostring(L, -1));
    return 2;
  }
  for (int i = 2; i < argc; i++) lua_pushstring(L, argv[i]);
  run_main(argc - 2);
  return V.main_failed ? 1 : 0;
}

/* Blocks up to 4 MiB (a resumed run's stored steps and their replay
 * index, ~2 MB for 10,000 steps; a page of events) come from the heap and
 * stay there between uses, up to 8 MiB free at its top: by default glibc
 * maps each such block afresh and faults its pages in, half the time of
 * loading a run's steps for its replay (bench/RESULTS.md, issue 14). */
static void tune_malloc(void) {
#if defined(__SANITIZE_ADDRESS__)
  /* AddressSanitizer's allocator replaces glibc's: it has no such thresholds
   * and its mallopt refuses them */
#else
  if (!mallopt(M_MMAP_THRESHOLD, 4 << 20) || !mallopt(M_TRIM_THRESHOLD, 8 << 20))
    fputs("sluice: warning: mallopt refused the heap's thresholds (large blocks are mapped afresh)\n",
          stderr);
#endif
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  tune_malloc();
  if (argc < 2) {
    fputs(usage, stderr);
    return 2;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    fputs(usage, stdout);
    return 0;
  }
  if (!strcmp(argv[1], "cron")) return cron_cli(argc - 1, argv + 1);

  int is_command = lua_commands(argv);
  struct stat st;
  if (!is_command && stat(argv[1], &st) != 0) {
    fprintf(stderr, "sluice: '%s' is neither a command nor a file\n\n%s", argv[1], usage);
    return 2;
  }
  char err[256];
  if (vm_open(&V, err, sizeof err) != 0) {
    fprintf(stderr, "sluice: %s\n", err);
    return 1;
  }
  int code = is_command ? command(argc, argv) : script(argc, argv);
  fflush(stdout);
  vm_close(&V);
  return code;
}
