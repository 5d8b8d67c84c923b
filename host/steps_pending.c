/* steps_pending.c: the acknowledged step records not yet in LMDB
 * (steps_pending.h). Two buffers of entries in log order: `draining`, the
 * records the writer is applying to LMDB right now, and `cur`, those added
 * since. A reader copies its run's entries and begins its read transaction
 * before it releases the lock, and the writer frees `draining` only after
 * its transaction committed, so a reader sees every record either here or
 * in its snapshot (or both: the same record). */
#include "steps_pending.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct steps_pending {
  pthread_mutex_t mu;
  sbuf draining, cur;
  size_t n_draining, n_cur;
  uint64_t cur_since;
  size_t mark_n; /* n_cur at pending_mark */
  uint64_t gen;
};

static uint64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

steps_pending *pending_new(void) {
  steps_pending *p = calloc(1, sizeof *p);
  if (!p) abort();
  pthread_mutex_init(&p->mu, NULL);
  return p;
}

void pending_free(steps_pending *p) {
  if (!p) return;
  pthread_mutex_destroy(&p->mu);
  sbuf_free(&p->draining);
  sbuf_free(&p->cur);
  free(p);
}

void pending_lock(steps_pending *p) { pthread_mutex_lock(&p->mu); }
void pending_unlock(steps_pending *p) { pthread_mutex_unlock(&p->mu); }

static void add_entry(sbuf *b, const void *run, size_t rn, const void *rec, size_t recn) {
  sbuf_reserve(b, 6 + rn + recn);
  sbuf_put_le(b, rn, 2);
  sbuf_add(b, run, rn);
  sbuf_put_le(b, recn, 4);
  sbuf_add(b, rec, recn);
}

void pending_add(steps_pending *p, const void *run, size_t rn, const void *rec, size_t recn) {
  if (p->n_cur == 0) p->cur_since = mono_us();
  add_entry(&p->cur, run, rn, rec, recn);
  p->n_cur++;
}

int pending_next(const char *buf, size_t len, size_t *at, const char **run, size_t *rn,
                 const unsigned char **rec, size_t *recn) {
  if (*at + 2 > len) return 0;
  const unsigned char *q = (const unsigned char *)buf + *at;
  *rn = (size_t)sbuf_get_le(q, 2);
  *run = (const char *)q + 2;
  q += 2 + *rn;
  *recn = (size_t)sbuf_get_le(q, 4);
  *rec = q + 4;
  *at += 6 + *rn + *recn;
  return 1;
}

static void copy_from(const sbuf *b, const void *run, size_t rn, int all, sbuf *out) {
  size_t at = 0, n, recn;
  const char *r;
  const unsigned char *rec;
  while (pending_next(b->data, b->len, &at, &r, &n, &rec, &recn))
    if (all || (n == rn && memcmp(r, run, rn) == 0)) add_entry(out, r, n, rec, recn);
}

void pending_copy_run(steps_pending *p, const void *run, size_t rn, sbuf *out) {
  copy_from(&p->draining, run, rn, 0, out);
  copy_from(&p->cur, run, rn, 0, out);
}

void pending_copy_all(steps_pending *p, sbuf *out) {
  copy_from(&p->draining, NULL, 0, 1, out);
  copy_from(&p->cur, NULL, 0, 1, out);
}

size_t pending_count(steps_pending *p) {
  pthread_mutex_lock(&p->mu);
  size_t n = p->n_draining + p->n_cur;
  pthread_mutex_unlock(&p->mu);
  return n;
}

uint64_t pending_since_us(steps_pending *p) {
  pthread_mutex_lock(&p->mu);
  uint64_t t = p->n_cur ? p->cur_since : 0;
  pthread_mutex_unlock(&p->mu);
  return t;
}

void pending_drain_begin(steps_pending *p, const char **buf, size_t *len) {
  pthread_mutex_lock(&p->mu);
  if (p->n_draining == 0 && p->n_cur > 0) {
    sbuf t = p->draining;
    p->draining = p->cur;
    p->cur = t;
    sbuf_reset(&p->cur);
    p->n_draining = p->n_cur;
    p->n_cur = 0;
  }
  /* only the writer thread changes `draining`: the pointer stays valid */
  *buf = p->draining.data;
  *len = p->draining.len;
  pthread_mutex_unlock(&p->mu);
}

void pending_drain_end(steps_pending *p) {
  pthread_mutex_lock(&p->mu);
  sbuf_reset(&p->draining);
  p->n_draining = 0;
  pthread_mutex_unlock(&p->mu);
}

size_t pending_mark(steps_pending *p) {
  p->mark_n = p->n_cur;
  return p->cur.len;
}

void pending_truncate(steps_pending *p, size_t mark) {
  if (mark > p->cur.len) return;
  p->cur.len = mark;
  p->n_cur = p->mark_n;
}

int pending_draining(steps_pending *p) {
  pthread_mutex_lock(&p->mu);
  int d = p->n_draining > 0;
  pthread_mutex_unlock(&p->mu);
  return d;
}

void pending_gen_bump(steps_pending *p) { __atomic_add_fetch(&p->gen, 1, __ATOMIC_SEQ_CST); }
uint64_t pending_gen(steps_pending *p) { return __atomic_load_n(&p->gen, __ATOMIC_SEQ_CST); }
