/* test_records_events.c: unit tests of records_events.c (store.h's events,
 * sends and consumers sections) on a real LMDB store in a fresh directory:
 * appending and reading events (the log by prefix, one key through its
 * index, pages), positions and times, trimming by age and by count with its
 * marks, stream keys, sends and the dispatch cursor, consumers; the index
 * consistent with the log after a writer is killed -9 between commits; and
 * corrupt records surfacing as errors, never as "no events". */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "store.h"
#include "unit.h"
#include "writer.h"

static void on_done(void *cookie, int status, const char *errmsg) {
  int *d = cookie;
  *d = status ? status : 1;
  if (status) fprintf(stderr, "batch failed: %s\n", errmsg);
}

/* commits b through a writer and waits; returns the status */
static int commit(store *s, store_batch *b) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  writer *w;
  char err[256];
  if (writer_start(&w, s, &loop, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  int d = 0;
  CHECK(writer_submit(w, b, on_done, &d) == 0);
  while (d == 0) uv_run(&loop, UV_RUN_ONCE);
  writer_stop(w);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return d == 1 ? 0 : d;
}

static store *open_fresh(const char *name) {
  store *s = NULL;
  char err[512];
  if (store_open(&s, path(name), 0, err, sizeof err) != 0) fprintf(stderr, "%s\n", err);
  return s;
}

static void append(store_batch *b, uint64_t seq, int64_t ts, const char *type, const char *stream,
                   const char *data) {
  char err[256];
  CHECK(store_append_event(b, seq, ts, type, strlen(type), stream, strlen(stream), data,
                           strlen(data), err, sizeof err) == 0);
}

static int read_q(store *s, const char *stream, int exact, uint64_t after, size_t limit,
                  store_events *out) {
  char err[512];
  store_event_query q = {stream, strlen(stream), exact, after, limit};
  int st = store_read_events(s, &q, out, err, sizeof err);
  if (st) fprintf(stderr, "read: %s\n", err);
  return st;
}

static void test_ids(void) {
  char id[STORE_EVENT_ID_LEN + 1];
  store_event_id(255, id);
  CHECK_STR(id, "00000000000000ff");
  uint64_t seq;
  CHECK(store_event_seq(id, strlen(id), &seq) == 0 && seq == 255);
  CHECK(store_event_seq("zz", 2, &seq) == -1);
  CHECK(store_event_seq("000000000000000g", 16, &seq) == -1);
  char err[128];
  CHECK(store_event_check("", 0, "k", 1, err, sizeof err) == STORE_EINVAL);
  CHECK(strstr(err, "type must not be empty") != NULL);
  CHECK(store_event_check("t", 1, "a\0b", 3, err, sizeof err) == STORE_EINVAL);
  CHECK(strstr(err, "stream key must not contain NUL") != NULL);
}

static void test_append_read(void) {
  store *s = open_fresh("rw");
  store_batch *b = store_batch_new();
  /* keys orders:1, orders:2, other, and orders (a key that is a prefix):
   * seq i goes to keys[i % 4] */
  const char *keys[] = {"orders:1", "orders:2", "other", "orders"};
  for (uint64_t i = 1; i <= 20; i++) {
    char data[32];
    snprintf(data, sizeof data, "{\"n\":%llu}", (unsigned long long)i);
    append(b, i, 1000 + (int64_t)i, "t", keys[i % 4], data);
  }
  CHECK(commit(s, b) == 0);
  store_events ev = STORE_EVENTS_INIT;
  /* the whole log, in pages of 7 */
  CHECK(read_q(s, "", 0, 0, 7, &ev) == 0);
  CHECK(ev.n == 7 && ev.rows[0].seq == 1 && ev.rows[6].seq == 7 && ev.last == 7);
  CHECK(ev.rows[0].ts_us == 1001 && ev.rows[0].streamn == 8 &&
        memcmp(ev.rows[0].stream, "orders:2", 8) == 0);
  CHECK(ev.rows[2].datan == 7 && memcmp(ev.rows[2].data, "{\"n\":3}", 7) == 0);
  CHECK(read_q(s, "", 0, 7, 100, &ev) == 0);
  CHECK(ev.n == 13 && ev.rows[0].seq == 8 && ev.last == 20);
  /* a prefix: orders:1, orders:2 and orders (every 4th is "other") */
  CHECK(read_q(s, "orders", 0, 0, 100, &ev) == 0);
  CHECK(ev.n == 15);
  CHECK(read_q(s, "orders:", 0, 0, 100, &ev) == 0);
  CHECK(ev.n == 10);
  /* one key through its index: only that key, not keys it prefixes */
  CHECK(read_q(s, "orders", 1, 0, 100, &ev) == 0);
  CHECK(ev.n == 5 && ev.rows[0].seq == 3 && ev.rows[4].seq == 19);
  CHECK(read_q(s, "orders:1", 1, 5, 2, &ev) == 0);
  CHECK(ev.n == 2 && ev.rows[0].seq == 8 && ev.rows[1].seq == 12 && ev.last == 12);
  CHECK(read_q(s, "nothing", 1, 0, 5, &ev) == 0);
  CHECK(ev.n == 0 && ev.last == 0);
  store_events_free(&ev);
  /* positions and times */
  char err[512];
  uint64_t last, after;
  int64_t ts;
  CHECK(store_events_last(s, &last, &ts, err, sizeof err) == 0 && last == 20 && ts == 1020);
  CHECK(store_events_after_time(s, 1010, &after, err, sizeof err) == 0 && after == 9);
  CHECK(store_events_after_time(s, 0, &after, err, sizeof err) == 0 && after == 0);
  CHECK(store_events_after_time(s, 5000, &after, err, sizeof err) == 0 && after == 20);
  /* stream keys */
  store_keys k = STORE_KEYS_INIT;
  CHECK(store_stream_keys(s, "orders", 6, NULL, 0, 10, &k, err, sizeof err) == 0);
  CHECK(k.n == 3 && k.keys[0].len == 6 && memcmp(k.keys[1].key, "orders:1", 8) == 0);
  CHECK(store_stream_keys(s, "orders", 6, "orders:1", 8, 10, &k, err, sizeof err) == 0);
  CHECK(k.n == 1 && memcmp(k.keys[0].key, "orders:2", 8) == 0);
  CHECK(store_stream_keys(s, "", 0, NULL, 0, 2, &k, err, sizeof err) == 0 && k.n == 2);
  store_keys_free(&k);
  store_close(s);
}

static void test_trim(void) {
  store *s = open_fresh("trim");
  store_batch *b = store_batch_new();
  for (uint64_t i = 1; i <= 30; i++) append(b, i, (int64_t)i * 100, "t", i % 2 ? "a" : "b", "1");
  CHECK(commit(s, b) == 0);
  char err[512];
  size_t n;
  uint64_t last;
  int more, trimmed;
  /* by age: of key a, the events older than ts 1000 (1, 3, 5, 7, 9),
   * examining at most 4 at a time */
  store_trim_query q = {"a", 1, 1, 0, 1000, -1, 4};
  size_t total = 0;
  do {
    b = store_batch_new();
    CHECK(store_trim_events(s, b, &q, &n, &last, &more, err, sizeof err) == 0);
    total += n;
    CHECK(commit(s, b) == 0);
    q.after = last;
  } while (more);
  CHECK(total == 5);
  store_events ev = STORE_EVENTS_INIT;
  CHECK(read_q(s, "a", 1, 0, 100, &ev) == 0 && ev.n == 10 && ev.rows[0].seq == 11);
  CHECK(read_q(s, "b", 1, 0, 100, &ev) == 0 && ev.n == 15);
  CHECK(store_events_trimmed(s, "a", 1, 1, 0, &trimmed, err, sizeof err) == 0 && trimmed);
  CHECK(store_events_trimmed(s, "a", 1, 1, 9, &trimmed, err, sizeof err) == 0 && !trimmed);
  CHECK(store_events_trimmed(s, "b", 1, 1, 0, &trimmed, err, sizeof err) == 0 && !trimmed);
  CHECK(store_events_trimmed(s, "", 0, 0, 0, &trimmed, err, sizeof err) == 0 && trimmed);
  /* by count: b keeps its newest 3, removed 5 at a time */
  store_trim_query qc = {"b", 1, 1, 0, 0, 3, 5};
  total = 0;
  do {
    b = store_batch_new();
    CHECK(store_trim_events(s, b, &qc, &n, &last, &more, err, sizeof err) == 0);
    total += n;
    CHECK(commit(s, b) == 0);
  } while (more);
  CHECK(total == 12);
  CHECK(read_q(s, "b", 1, 0, 100, &ev) == 0 && ev.n == 3 && ev.rows[0].seq == 26);
  /* trimming the newest events keeps their positions taken */
  store_trim_query qa = {"", 0, 0, 0, INT64_MAX, -1, 1000};
  b = store_batch_new();
  CHECK(store_trim_events(s, b, &qa, &n, &last, &more, err, sizeof err) == 0 && n == 13);
  CHECK(commit(s, b) == 0);
  int64_t ts;
  CHECK(store_events_last(s, &last, &ts, err, sizeof err) == 0 && last == 30 && ts == 0);
  CHECK(read_q(s, "", 0, 0, 100, &ev) == 0 && ev.n == 0);
  /* a trim that selects nothing and a query that names no kind */
  store_trim_query bad = {"b", 1, 0, 0, 0, 3, 5}; /* keep needs one key */
  b = store_batch_new();
  CHECK(store_trim_events(s, b, &bad, &n, &last, &more, err, sizeof err) == STORE_EINVAL);
  store_batch_free(b);
  store_events_free(&ev);
  store_close(s);
}

static void test_sends_consumers(void) {
  store *s = open_fresh("sends");
  char err[512];
  uint64_t seq;
  CHECK(store_sends_last(s, &seq, err, sizeof err) == 0 && seq == 0);
  CHECK(store_dispatch_cursor(s, &seq, err, sizeof err) == 0 && seq == 0);
  store_batch *b = store_batch_new();
  store_put_send(b, 1, "{\"name\":\"a\"}", 12);
  store_put_send(b, 2, "{\"name\":\"b\"}", 12);
  store_put_send(b, 3, "{\"name\":\"c\"}", 12);
  store_set_dispatch_cursor(b, 1);
  store_put_consumer(b, "c2", 2, "{\"after\":2}", 11);
  store_put_consumer(b, "c1", 2, "{\"after\":1}", 11);
  CHECK(commit(s, b) == 0);
  CHECK(store_sends_last(s, &seq, err, sizeof err) == 0 && seq == 3);
  CHECK(store_dispatch_cursor(s, &seq, err, sizeof err) == 0 && seq == 1);
  store_blob_rows r = STORE_BLOB_ROWS_INIT;
  CHECK(store_sends(s, 1, 1, &r, err, sizeof err) == 0);
  CHECK(r.n == 1 && r.rows[0].seq == 2 && r.rows[0].jsonn == 12 &&
        memcmp(r.rows[0].json, "{\"name\":\"b\"}", 12) == 0);
  CHECK(store_sends(s, 3, 10, &r, err, sizeof err) == 0 && r.n == 0);
  CHECK(store_consumers(s, &r, err, sizeof err) == 0);
  CHECK(r.n == 2 && r.rows[0].namen == 2 && memcmp(r.rows[0].name, "c1", 2) == 0);
  int found;
  CHECK(store_get_consumer(s, "c2", 2, &r, &found, err, sizeof err) == 0 && found);
  CHECK(r.n == 1 && memcmp(r.rows[0].json, "{\"after\":2}", 11) == 0);
  CHECK(store_get_consumer(s, "none", 4, &r, &found, err, sizeof err) == 0 && !found);
  store_blob_rows_free(&r);
  store_close(s);
}

/* A corrupt record is an error naming it; never fewer rows. */
static void test_corrupt_is_an_error(void) {
  store *s = open_fresh("corrupt");
  store_batch *b = store_batch_new();
  append(b, 1, 1, "t", "k", "1");
  unsigned char k2[8] = {0, 0, 0, 0, 0, 0, 0, 2};
  wbatch_put(b, DB_EVENTS, k2, 8, "short", 5); /* shorter than a header */
  wbatch_put(b, DB_STREAMS, "k\0\0\0\0\0\0\0\0\2", 10, "", 0);
  wbatch_put(b, DB_SENDS, "bad", 3, "{}", 2); /* not a position */
  wbatch_put(b, DB_META, "sends_dispatched", 16, "x1", 2);
  CHECK(commit(s, b) == 0);
  store_events ev = STORE_EVENTS_INIT;
  char err[512];
  store_event_query q = {"", 0, 0, 0, 100};
  CHECK(store_read_events(s, &q, &ev, err, sizeof err) == STORE_EBADSTORE);
  CHECK(strstr(err, "0000000000000002 is corrupt") != NULL);
  CHECK(ev.n == 0);
  store_event_query qk = {"k", 1, 1, 0, 100};
  CHECK(store_read_events(s, &qk, &ev, err, sizeof err) == STORE_EBADSTORE && ev.n == 0);
  uint64_t seq;
  int64_t ts;
  CHECK(store_events_last(s, &seq, &ts, err, sizeof err) == STORE_EBADSTORE);
  store_blob_rows r = STORE_BLOB_ROWS_INIT;
  CHECK(store_sends(s, 0, 10, &r, err, sizeof err) == STORE_EBADSTORE && r.n == 0);
  CHECK(strstr(err, "sends") != NULL);
  CHECK(store_sends_last(s, &seq, err, sizeof err) == STORE_EBADSTORE);
  CHECK(store_dispatch_cursor(s, &seq, err, sizeof err) == STORE_EBADSTORE);
  CHECK(strstr(err, "not a number") != NULL);
  store_blob_rows_free(&r);
  store_events_free(&ev);
  store_close(s);
}

/* A writer appending and trimming is killed -9 between commits, many
 * times; after each kill every index entry has its event and every event
 * its index entry. */
typedef struct {
  store *s;
  size_t entries, dangling;
} index_check;

/* each index entry names an event of its key */
static int check_entry(void *ud, const void *key, size_t klen, const void *val, size_t vlen) {
  (void)val;
  (void)vlen;
  index_check *c = ud;
  c->entries++;
  const char *k = key;
  size_t sn = klen - 9;
  store_events ev = STORE_EVENTS_INIT;
  uint64_t seq = sbuf_read_be64(k + sn + 1);
  char err[512];
  store_event_query q = {k, sn, 0, seq - 1, 1};
  if (store_read_events(c->s, &q, &ev, err, sizeof err) != 0 || ev.n != 1 || ev.rows[0].seq != seq) {
    c->dangling++;
  }
  store_events_free(&ev);
  return 0;
}

static void test_index_consistent_after_kill(void) {
  const char *dir = path("kill");
  for (int round = 0; round < 4; round++) {
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(p[0]);
      store *s;
      char err[512];
      if (store_open(&s, dir, 0, err, sizeof err) != 0) _exit(3);
      uint64_t last;
      int64_t ts;
      if (store_events_last(s, &last, &ts, err, sizeof err) != 0) _exit(4);
      for (int i = 0;; i++) {
        store_batch *b = store_batch_new();
        for (int j = 0; j < 50; j++) {
          char key[16];
          snprintf(key, sizeof key, "k:%d", j % 7);
          ++last;
          append(b, last, (int64_t)last, "t", key, "{\"x\":1}");
        }
        if (i % 3 == 2) {
          store_trim_query q = {"k:3", 3, 1, 0, 0, 10, 1000};
          size_t n;
          uint64_t l;
          int more;
          if (store_trim_events(s, b, &q, &n, &l, &more, err, sizeof err) != 0) _exit(5);
        }
        if (commit(s, b) != 0) _exit(6);
        char c = 'c';
        if (write(p[1], &c, 1) != 1) _exit(7);
      }
    }
    close(p[1]);
    char c;
    for (int i = 0; i < 5 + round * 3; i++) CHECK(read(p[0], &c, 1) == 1);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status));
    close(p[0]);
    /* reopen and compare the log with every key's index */
    store *s;
    char err[512];
    CHECK(store_open(&s, dir, 0, err, sizeof err) == 0);
    store_events all = STORE_EVENTS_INIT;
    CHECK(read_q(s, "", 0, 0, 1000000, &all) == 0);
    CHECK(all.n > 0);
    index_check ic = {s, 0, 0};
    CHECK(store_scan(s, DB_STREAMS, "", 0, 0, check_entry, &ic, err, sizeof err) == 0);
    CHECK(ic.dangling == 0);
    CHECK(ic.entries == all.n);
    /* positions are never reused: the next append goes after the trimmed */
    uint64_t last;
    int64_t ts;
    CHECK(store_events_last(s, &last, &ts, err, sizeof err) == 0);
    CHECK(last >= all.rows[all.n - 1].seq);
    store_events_free(&all);
    store_close(s);
  }
}

int main(void) {
  if (unit_tmpdir("records-events") != 0) return 1;
  RUN(test_ids);
  RUN(test_append_read);
  RUN(test_trim);
  RUN(test_sends_consumers);
  RUN(test_corrupt_is_an_error);
  RUN(test_index_consistent_after_kill);
  unit_rmtree();
  return UNIT_DONE();
}
