/* sbuf.c: growable byte buffer (see sbuf.h). */
#include "sbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sbuf_reserve(sbuf *b, size_t extra) {
  if (b->len + extra + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < b->len + extra + 1) cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p) {
    fprintf(stderr, "sluice: out of memory (%zu bytes)\n", cap);
    abort();
  }
  b->data = p;
  b->cap = cap;
}

void sbuf_add(sbuf *b, const void *p, size_t n) {
  sbuf_reserve(b, n);
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void sbuf_addc(sbuf *b, char c) { sbuf_add(b, &c, 1); }

void sbuf_adds(sbuf *b, const char *s) { sbuf_add(b, s, strlen(s)); }

void sbuf_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) {
    va_end(ap2);
    return;
  }
  sbuf_reserve(b, (size_t)n);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
  va_end(ap2);
  b->len += (size_t)n;
}

void sbuf_add_be64(sbuf *b, uint64_t v) {
  unsigned char k[8];
  for (int i = 7; i >= 0; i--, v >>= 8) k[i] = (unsigned char)(v & 0xff);
  sbuf_add(b, k, 8);
}

void sbuf_add_be32(sbuf *b, uint32_t v) {
  unsigned char k[4];
  for (int i = 3; i >= 0; i--, v >>= 8) k[i] = (unsigned char)(v & 0xff);
  sbuf_add(b, k, 4);
}

uint64_t sbuf_read_be64(const void *p) {
  const unsigned char *k = p;
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | k[i];
  return v;
}

uint32_t sbuf_read_be32(const void *p) {
  const unsigned char *k = p;
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v = (v << 8) | k[i];
  return v;
}

void sbuf_add_hex(sbuf *b, const void *p, size_t n) {
  static const char d[] = "0123456789abcdef";
  const unsigned char *q = p;
  sbuf_reserve(b, 2 * n);
  for (size_t i = 0; i < n; i++) {
    b->data[b->len++] = d[q[i] >> 4];
    b->data[b->len++] = d[q[i] & 15];
  }
  b->data[b->len] = '\0';
}

static int hexval(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int sbuf_add_unhex(sbuf *b, const char *s, size_t n) {
  if (n % 2) return -1;
  for (size_t i = 0; i < n; i++)
    if (hexval(s[i]) < 0) return -1;
  sbuf_reserve(b, n / 2);
  for (size_t i = 0; i < n; i += 2) b->data[b->len++] = (char)(hexval(s[i]) * 16 + hexval(s[i + 1]));
  b->data[b->len] = '\0';
  return 0;
}

void sbuf_reset(sbuf *b) {
  b->len = 0;
  if (b->data) b->data[0] = '\0';
}

void sbuf_free(sbuf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

void *sbuf_grow_array(void *p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return p;
  size_t c = *cap ? *cap : 16;
  while (c < need) c *= 2;
  p = realloc(p, c * size);
  if (!p) {
    fprintf(stderr, "sluice: out of memory\n");
    abort();
  }
  *cap = c;
  return p;
}
