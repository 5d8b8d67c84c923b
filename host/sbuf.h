/* sbuf.h: a growable byte buffer, the one used by the codec, the store and
 * the writer. Allocation failure aborts: there is nothing sensible a host
 * can do half-way through encoding a value without memory. */
#ifndef SLUICE_SBUF_H
#define SLUICE_SBUF_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
  char *data;
  size_t len;
  size_t cap;
} sbuf;

#define SBUF_INIT {NULL, 0, 0}

void sbuf_reserve(sbuf *b, size_t extra);
void sbuf_add(sbuf *b, const void *p, size_t n);
void sbuf_addc(sbuf *b, char c);
void sbuf_adds(sbuf *b, const char *s);
void sbuf_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* big-endian integers, for keys that sort in numeric order */
void sbuf_add_be64(sbuf *b, uint64_t v);
void sbuf_add_be32(sbuf *b, uint32_t v);
uint64_t sbuf_read_be64(const void *p);
uint32_t sbuf_read_be32(const void *p);
/* little-endian integers of n (1..8) bytes, for the fields inside record
 * values (step records, the pending set's entries): one definition here so
 * the writer of a format and its reader cannot drift apart */
static inline void sbuf_put_le(sbuf *b, uint64_t v, int n) {
  unsigned char k[8];
  for (int i = 0; i < n; i++, v >>= 8) k[i] = (unsigned char)(v & 0xff);
  sbuf_add(b, k, (size_t)n);
}
static inline uint64_t sbuf_get_le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
/* n bytes as lowercase hex, and hex text (either case) back to its bytes:
 * 0, or -1 (out unchanged) for an odd length or a character not hex */
void sbuf_add_hex(sbuf *b, const void *p, size_t n);
int sbuf_add_unhex(sbuf *b, const char *s, size_t n);
/* An array p of *cap elements of size bytes, grown (doubling, from 16) to
 * hold need; returns it, *cap updated. Aborts without memory, as above. */
void *sbuf_grow_array(void *p, size_t *cap, size_t need, size_t size);
void sbuf_reset(sbuf *b);
void sbuf_free(sbuf *b);

#endif
