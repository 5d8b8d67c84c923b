/* step_pages.c: bytes written (wchar, /proc/self/io: data.mdb and the
 * write-ahead log) per durable step through the real writer, by layout, with
 * no Lua in between: 64 runs taking turns, G batches of one step submitted
 * at a time, 64 x STEPS steps; the second half is measured.
 *
 *   build/bench_step_pages MODE G [STEPS=2000]
 *   MODE 0  store_put_step: the step log and its moves (records_steps.c)
 *   MODE 1  run \0 step_id -> 56-byte value in `steps`: the layout before
 *   MODE 2  be64(seq) -> 80-byte value appended to one database: what any
 *           layout costs at least (one record per step, no index)
 *
 * Prints one line: mode, G, bytes per step, steps per commit. */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "store.h"
#include "store_lmdb.h"
#include "writer.h"

static uv_loop_t loop;
static writer *w;
static int pending;

static void on_done(void *c, int st, const char *m) {
  (void)c;
  if (st) {
    fprintf(stderr, "step_pages: a batch failed: %s\n", m);
    exit(1);
  }
  pending--;
}

static int fill(void *ud, sbuf *out, char *e, size_t n) {
  (void)e, (void)n;
  sbuf_adds(out, ud);
  return 0;
}

static long long wchar(void) {
  FILE *f = fopen("/proc/self/io", "r");
  char l[128];
  long long v = 0;
  while (f && fgets(l, sizeof l, f)) {
    if (!strncmp(l, "wchar:", 6)) v = atoll(l + 6);
  }
  if (f) fclose(f);
  return v;
}

static uint64_t seq;

static void put(store_batch *b, int mode, int r, int i) {
  char run[32], id[16], key[64], err[128];
  snprintf(run, sizeof run, "conc-64-%05d", r);
  snprintf(id, sizeof id, "s%d", i);
  if (mode == 0) {
    store_step st = {id, strlen(id), "", 0, STORE_STEP_COMPLETED, 1, (uint32_t)i, 1, 1, 0, NULL, 0};
    if (store_put_step(b, run, strlen(run), &st, fill, "{\"i\":1234,\"ok\":true}", err, sizeof err)) {
      fprintf(stderr, "step_pages: %s\n", err);
      exit(1);
    }
  } else if (mode == 1) {
    int n = snprintf(key, sizeof key, "%s%c%s", run, 0, id);
    char v[56];
    memset(v, 'x', sizeof v);
    wbatch_put(b, DB_STEPS, key, (size_t)n, v, sizeof v);
  } else {
    unsigned char k[8];
    uint64_t s = ++seq;
    for (int j = 0; j < 8; j++) k[j] = (unsigned char)(s >> (56 - 8 * j));
    char v[80];
    memset(v, 'x', sizeof v);
    wbatch_put(b, DB_EVENTS, k, 8, v, sizeof v);
  }
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: bench_step_pages MODE(0|1|2) G [STEPS]\n");
    return 2;
  }
  int mode = atoi(argv[1]), g = atoi(argv[2]), per = argc > 3 ? atoi(argv[3]) : 2000;
  char dir[] = "/tmp/sluice-step-pages-XXXXXX", err[256];
  if (!mkdtemp(dir) || g < 1 || per < 2) return 2;
  store *s;
  if (store_open(&s, dir, 0, err, sizeof err)) {
    fprintf(stderr, "step_pages: %s\n", err);
    return 1;
  }
  uv_loop_init(&loop);
  if (writer_start(&w, s, &loop, err, sizeof err)) return 1;
  int step[64] = {0}, total = 64 * per, done = 0, r = 0;
  long long w0 = 0;
  writer_stats s0, s1;
  memset(&s0, 0, sizeof s0);
  while (done < total) {
    for (int k = 0; k < g && done < total; k++, r = (r + 1) % 64, done++) {
      store_batch *b = store_batch_new();
      put(b, mode, r, ++step[r]);
      pending++;
      if (writer_submit(w, b, on_done, NULL)) return 1;
    }
    while (pending) uv_run(&loop, UV_RUN_ONCE);
    if (done >= total / 2 && !w0) {
      w0 = wchar();
      writer_get_stats(w, &s0);
      done = total / 2; /* the measured half starts here */
    }
  }
  long long dw = wchar() - w0;
  writer_get_stats(w, &s1);
  size_t n = (size_t)total - (size_t)total / 2;
  printf("mode %d G %d: %lld B per step, %.1f steps per commit\n", mode, g, dw / (long long)n,
         (double)n / (double)(s1.commits - s0.commits));
  writer_stop(w);
  uv_run(&loop, UV_RUN_DEFAULT);
  store_close(s);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : 1;
}
