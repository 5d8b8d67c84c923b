/* codec.c: the value codec of sluice (see codec.h for the contract).
 *
 * Encoding walks the Lua value with raw access and writes JSON text straight
 * into an sbuf: no intermediate tree, and no Lua allocation, so nothing can
 * raise (longjmp) while the encoder holds C memory, and no finalizer can run
 * and change a table half-way through.
 *
 * Decoding uses our own strict JSON parser, not json_loadb: jansson 2.14
 * refuses NUL bytes in object keys ("NUL byte in object key not supported"),
 * and every tag of this codec is such a key. The parser pushes Lua values
 * directly, with no intermediate tree.
 * Depends on: Lua 5.4, sbuf.
 */
#include "codec.h"

#include <errno.h>
#include <lauxlib.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Shared helpers                                                           */

/* Number text is always read in the C locale, whatever os.setlocale did. */
static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void c_locale_init(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

static double strtod_c(const char *s, char **end) {
  pthread_once(&c_locale_once, c_locale_init);
  return c_locale ? strtod_l(s, end, c_locale) : strtod(s, end);
}

/* Length of the valid UTF-8 sequence at p (Unicode table 3-7: no overlongs,
 * no surrogates, nothing above U+10FFFF), or 0. */
static int utf8_seq(const unsigned char *p, size_t avail) {
  unsigned c = p[0];
  unsigned lo = 0x80, hi = 0xBF;
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0;
  if (c < 0xE0) return (avail >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
  if (c < 0xF0) {
    if (avail < 3) return 0;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
    return (p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80) ? 3 : 0;
  }
  if (c < 0xF5) {
    if (avail < 4) return 0;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
    return (p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 &&
            (p[3] & 0xC0) == 0x80) ? 4 : 0;
  }
  return 0;
}

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_encode(sbuf *out, const unsigned char *s, size_t n) {
  sbuf_reserve(out, (n + 2) / 3 * 4);
  char *d = out->data + out->len;
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
    *d++ = b64chars[v >> 18];
    *d++ = b64chars[(v >> 12) & 63];
    *d++ = b64chars[(v >> 6) & 63];
    *d++ = b64chars[v & 63];
  }
  if (i < n) {
    uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
    *d++ = b64chars[v >> 18];
    *d++ = b64chars[(v >> 12) & 63];
    *d++ = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
    *d++ = '=';
  }
  out->len = (size_t)(d - out->data);
  out->data[out->len] = '\0';
}

static int b64_val(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Strict: padded, canonical (unused bits zero), so each byte string has one
 * text. dst needs n / 4 * 3 bytes. Returns the decoded length or -1. */
static long b64_decode(const char *src, size_t n, char *dst) {
  const unsigned char *s = (const unsigned char *)src;
  if (n % 4) return -1;
  size_t o = 0;
  for (size_t i = 0; i < n; i += 4) {
    int a = b64_val(s[i]), b = b64_val(s[i + 1]);
    int c = b64_val(s[i + 2]), d = b64_val(s[i + 3]);
    int last = i + 4 == n;
    if (a < 0 || b < 0) return -1;
    if (c < 0 || d < 0) {
      if (!last) return -1;
      if (c < 0 && (s[i + 2] != '=' || s[i + 3] != '=' || (b & 15))) return -1;
      if (c >= 0 && (s[i + 3] != '=' || (c & 3))) return -1;
    }
    uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 |
                 (uint32_t)(c < 0 ? 0 : c) << 6 | (uint32_t)(d < 0 ? 0 : d);
    dst[o++] = (char)(v >> 16);
    if (c >= 0) dst[o++] = (char)(v >> 8);
    if (d >= 0) dst[o++] = (char)v;
  }
  return (long)o;
}

/* Pushes the base64-decoded bytes of s, or returns -1 with nothing pushed. */
static int push_b64(lua_State *L, const char *s, size_t n) {
  luaL_Buffer b;
  char *d = luaL_buffinitsize(L, &b, n / 4 * 3 + 1);
  long m = b64_decode(s, n, d);
  if (m < 0) {
    luaL_pushresultsize(&b, 0);
    lua_pop(L, 1);
    return -1;
  }
  luaL_pushresultsize(&b, (size_t)m);
  return 0;
}

void codec_push_null(lua_State *L) { lua_pushlightuserdata(L, NULL); }

/* Pushes the array metatable, creating it on first use. */
static void push_array_mt(lua_State *L) { luaL_newmetatable(L, CODEC_ARRAY_MT); }

/* ------------------------------------------------------------------------ */
/* Encoder                                                                  */

/* The encoder's writes: inline when the space is there, which is almost
 * always (sbuf_add is in another file and shows in profiles). */
static inline void put_n(sbuf *b, const void *p, size_t n) {
  if (b->len + n < b->cap) {
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
  } else {
    sbuf_add(b, p, n);
  }
}

static inline void put_c(sbuf *b, char c) {
  if (b->len + 1 < b->cap) {
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
  } else {
    sbuf_addc(b, c);
  }
}

static void sbuf_truncate(sbuf *b, size_t len) {
  b->len = len;
  if (b->data) b->data[len] = '\0';
}

/* 1: copy as is; 0: escape (control, '"', '\\'); 2: start of a multibyte
 * sequence to validate. */
static const unsigned char str_class[256] = {
#define C16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
    C16(0), C16(0),
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20: '"' */
    C16(1), C16(1),
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x50: '\\' */
    C16(1), C16(1),
    C16(2), C16(2), C16(2), C16(2), C16(2), C16(2), C16(2), C16(2)
#undef C16
};

/* Appends the escaped body of s (no quotes). Returns 0 if s is not valid
 * UTF-8; out is then back to its length on entry. */
static int put_string_body(sbuf *out, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t start = out->len;
  const unsigned char *p = (const unsigned char *)s, *end = p + n, *run = p;
  while (p < end) {
    unsigned char cls = str_class[*p];
    if (cls == 1) {
      p++;
    } else if (cls == 2) {
      int k = utf8_seq(p, (size_t)(end - p));
      if (!k) {
        sbuf_truncate(out, start);
        return 0;
      }
      p += k;
    } else {
      char e[6] = {'\\', 0, 0, 0, 0, 0};
      size_t el = 2;
      put_n(out, run, (size_t)(p - run));
      switch (*p) {
      case '"': e[1] = '"'; break;
      case '\\': e[1] = '\\'; break;
      case '\b': e[1] = 'b'; break;
      case '\f': e[1] = 'f'; break;
      case '\n': e[1] = 'n'; break;
      case '\r': e[1] = 'r'; break;
      case '\t': e[1] = 't'; break;
      default:
        memcpy(e, "\\u00", 4);
        e[4] = hex[*p >> 4];
        e[5] = hex[*p & 15];
        el = 6;
      }
      put_n(out, e, el);
      run = ++p;
    }
  }
  put_n(out, run, (size_t)(p - run));
  return 1;
}

void codec_encode_string(sbuf *out, const char *s, size_t n) {
  size_t start = out->len;
  put_c(out, '"');
  if (put_string_body(out, s, n)) {
    put_c(out, '"');
    return;
  }
  sbuf_truncate(out, start);
  put_n(out, "{\"\\u0000b\":\"", 12);
  b64_encode(out, (const unsigned char *)s, n);
  put_n(out, "\"}", 2);
}

static void put_key(sbuf *out, const char *k, size_t n) {
  put_c(out, '"');
  size_t mark = out->len;
  if (n && k[0] == '\0') put_n(out, "\\u0000", 6);
  if (!put_string_body(out, k, n)) {
    sbuf_truncate(out, mark);
    put_n(out, "\\u0000k", 7);
    b64_encode(out, (const unsigned char *)k, n);
  }
  put_c(out, '"');
}

static void put_int(sbuf *out, lua_Integer v) {
  char buf[24], *e = buf + sizeof buf, *p = e;
  uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0) *--p = '-';
  put_n(out, p, (size_t)(e - p));
}

static const double pow10_tab[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,
                                   1e7,  1e8,  1e9,  1e10, 1e11, 1e12, 1e13,
                                   1e14, 1e15, 1e16, 1e17, 1e18, 1e19};

/* Fast path of fmt_double for |d| in [1e-4, 1e15) with at most 15
 * significant digits: d == m / 10^k for an integer m < 1e15 and the smallest
 * such k. Both m and 10^k are exact doubles, so m / 10^k is the correctly
 * rounded value of the decimal m*10^-k, which is what strtod would return:
 * no round trip to check. The text is the one %.15g prints (fixed notation
 * in that range, no trailing zeros). Returns 0 when it does not apply. */
static size_t fmt_double_fast(char *buf, double d) {
  double a = fabs(d);
  if (!(a >= 1e-4 && a < 1e15)) return 0;
  for (int k = 0; k < 20; k++) {
    double m = nearbyint(a * pow10_tab[k]);
    if (m >= 1e15) return 0;
    if (m / pow10_tab[k] != a) continue;
    char digits[24], *e = digits + sizeof digits, *p = e;
    uint64_t u = (uint64_t)m;
    do {
      *--p = (char)('0' + u % 10);
      u /= 10;
    } while (u);
    int nd = (int)(e - p);
    char *o = buf;
    if (signbit(d)) *o++ = '-';
    if (nd <= k) { /* 0.000ddd */
      *o++ = '0';
      *o++ = '.';
      for (int z = 0; z < k - nd; z++) *o++ = '0';
      memcpy(o, p, (size_t)nd);
      o += nd;
    } else {
      memcpy(o, p, (size_t)(nd - k));
      o += nd - k;
      *o++ = '.';
      if (k) {
        memcpy(o, p + nd - k, (size_t)k);
        o += k;
      } else {
        *o++ = '0';
      }
    }
    *o = '\0';
    return (size_t)(o - buf);
  }
  return 0;
}

/* Shortest of %.15g/%.16g/%.17g that reads back to the same bits, with a
 * '.' or an 'e' so it decodes as a float. buf needs 40 bytes. */
static size_t fmt_double(char *buf, double d) {
  size_t fast = fmt_double_fast(buf, d);
  if (fast) return fast;
  int len = 0;
  for (int prec = 15; prec <= 17; prec++) {
    len = snprintf(buf, 40, "%.*g", prec, d);
    /* snprintf follows LC_NUMERIC: turn a locale decimal point back into '.' */
    int w = 0, dot = 0;
    for (int r = 0; r < len; r++) {
      char c = buf[r];
      if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == 'e') {
        buf[w++] = c;
      } else if (!dot) {
        buf[w++] = '.';
        dot = 1;
      }
    }
    buf[w] = '\0';
    len = w;
    if (prec == 17) break;
    double back = strtod_c(buf, NULL);
    if (memcmp(&back, &d, sizeof d) == 0) break;
  }
  if (!memchr(buf, '.', (size_t)len) && !memchr(buf, 'e', (size_t)len)) {
    memcpy(buf + len, ".0", 3);
    len += 2;
  }
  return (size_t)len;
}

static void put_double(sbuf *out, double d) {
  if (isnan(d)) {
    put_n(out, "{\"\\u0000f\":\"nan\"}", 17);
  } else if (isinf(d)) {
    if (d > 0)
      put_n(out, "{\"\\u0000f\":\"inf\"}", 17);
    else
      put_n(out, "{\"\\u0000f\":\"-inf\"}", 18);
  } else {
    char buf[40];
    put_n(out, buf, fmt_double(buf, d));
  }
}

/* Where a value sits in the value being encoded: a linked list on the C
 * stack, walked for cycle checks and to name the path in errors. */
typedef struct frame {
  struct frame *up;
  const void *tbl; /* the table at this place, once entered */
  const char *key; /* object member, or NULL */
  size_t keylen;
  lua_Integer index; /* array item (1-based), when key is NULL */
} frame;

typedef struct {
  const char *p;
  size_t n;
  int slot; /* stack slot holding the key string */
} keyent;

#define ENC_INLINE_KEYS 64

typedef struct {
  lua_State *L;
  sbuf *out;
  int pretty;
  int edge;      /* CODEC_EDGE: non-finite floats as null, noted in rep */
  int max_depth; /* containers nested deeper than this are refused */
  codec_report *rep;
  int mt_slot; /* stack slot of the array metatable, 0 if none exists yet */
  const char *root;
  char *err;
  size_t errsz;
  /* keys of the objects being written, a stack shared by all levels */
  keyent *keys;
  size_t nkeys, capkeys;
  keyent inline_keys[ENC_INLINE_KEYS];
} enc;

typedef struct {
  char *p;
  size_t left;
} errbuf;

static void eb_add(errbuf *b, const char *s, size_t n) {
  if (b->left <= 1) return;
  if (n > b->left - 1) n = b->left - 1;
  memcpy(b->p, s, n);
  b->p += n;
  b->left -= n;
  *b->p = '\0';
}

static void eb_adds(errbuf *b, const char *s) { eb_add(b, s, strlen(s)); }

static int is_ident(const char *k, size_t n) {
  if (!n || !((k[0] >= 'a' && k[0] <= 'z') || (k[0] >= 'A' && k[0] <= 'Z') || k[0] == '_'))
    return 0;
  for (size_t i = 1; i < n; i++) {
    char c = k[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_'))
      return 0;
  }
  return 1;
}

static void eb_component(errbuf *b, const frame *f) {
  char tmp[32];
  if (!f->key) {
    snprintf(tmp, sizeof tmp, "[%lld]", (long long)f->index);
    eb_adds(b, tmp);
    return;
  }
  if (is_ident(f->key, f->keylen)) {
    eb_add(b, ".", 1);
    eb_add(b, f->key, f->keylen);
    return;
  }
  /* Lua-style quoted key; invalid UTF-8 and control bytes as \xNN */
  eb_add(b, "[\"", 2);
  const unsigned char *p = (const unsigned char *)f->key, *end = p + f->keylen;
  size_t shown = 0;
  while (p < end) {
    if (shown >= 60) {
      eb_add(b, "...", 3);
      break;
    }
    int k = *p >= 0x80 ? utf8_seq(p, (size_t)(end - p)) : 1;
    if (*p == '"' || *p == '\\') {
      tmp[0] = '\\';
      tmp[1] = (char)*p;
      eb_add(b, tmp, 2);
    } else if (*p < 0x20 || *p == 0x7f || k == 0) {
      snprintf(tmp, sizeof tmp, "\\x%02x", *p);
      eb_adds(b, tmp);
      k = 1;
    } else {
      eb_add(b, (const char *)p, (size_t)k);
    }
    p += k;
    shown++;
  }
  eb_add(b, "\"]", 2);
}

/* Writes "root.path" of f (long paths keep their two ends). */
static void eb_path(errbuf *b, const enc *E, const frame *f) {
  const frame *chain[CODEC_RECORD_DEPTH + 3];
  size_t n = 0;
  for (const frame *a = f; a && n < sizeof chain / sizeof chain[0]; a = a->up) chain[n++] = a;
  eb_adds(b, E->root);
  /* chain[n-1] is the root itself; its components follow, innermost last */
  size_t ncomp = n ? n - 1 : 0;
  for (size_t i = 0; i < ncomp; i++) {
    size_t pos = i; /* 0 = outermost component */
    if (ncomp > 16 && pos == 8) {
      char tmp[48];
      snprintf(tmp, sizeof tmp, "...(%zu more)...", ncomp - 16);
      eb_adds(b, tmp);
      i = ncomp - 8 - 1;
      continue;
    }
    eb_component(b, chain[ncomp - 1 - i]);
  }
}

/* Sets "root.path: message". Returns -1. */
static int enc_error(enc *E, const frame *f, const char *fmt, ...) {
  errbuf b = {E->err, E->errsz};
  if (b.left) *b.p = '\0';
  eb_path(&b, E, f);
  eb_add(&b, ": ", 2);
  char msg[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  eb_adds(&b, msg);
  return -1;
}

static int keys_push(enc *E, const char *p, size_t n, int slot) {
  if (E->nkeys == E->capkeys) {
    size_t cap = E->capkeys * 2;
    keyent *k;
    if (E->keys == E->inline_keys) {
      k = malloc(cap * sizeof *k);
      if (k) memcpy(k, E->keys, E->nkeys * sizeof *k);
    } else {
      k = realloc(E->keys, cap * sizeof *k);
    }
    if (!k) return -1;
    E->keys = k;
    E->capkeys = cap;
  }
  E->keys[E->nkeys++] = (keyent){p, n, slot};
  return 0;
}

static int keycmp(const keyent *a, const keyent *b) {
  size_t m = a->n < b->n ? a->n : b->n;
  int c = memcmp(a->p, b->p, m);
  if (c) return c;
  return (a->n > b->n) - (a->n < b->n);
}

static int keycmp_q(const void *a, const void *b) { return keycmp(a, b); }

static void keys_sort(keyent *k, size_t n) {
  if (n > 16) {
    qsort(k, n, sizeof *k, keycmp_q);
    return;
  }
  for (size_t i = 1; i < n; i++) {
    keyent x = k[i];
    size_t j = i;
    for (; j > 0 && keycmp(&k[j - 1], &x) > 0; j--) k[j] = k[j - 1];
    k[j] = x;
  }
}

static void put_indent(enc *E, int depth) {
  sbuf_reserve(E->out, (size_t)depth * 2 + 1);
  char *d = E->out->data + E->out->len;
  *d++ = '\n';
  memset(d, ' ', (size_t)depth * 2);
  E->out->len += (size_t)depth * 2 + 1;
  E->out->data[E->out->len] = '\0';
}

static int enc_value(enc *E, int idx, frame *f, int depth);

/* Edge encoding of NaN or an infinity: null, noted in E->rep. */
static int enc_nonfinite(enc *E, const frame *f, double d) {
  put_n(E->out, "null", 4);
  codec_report *r = E->rep;
  if (r && r->nonfinite++ == 0) {
    errbuf b = {r->first, sizeof r->first};
    *b.p = '\0';
    eb_path(&b, E, f);
    eb_adds(&b, isnan(d) ? " is NaN" : d > 0 ? " is Infinity" : " is -Infinity");
  }
  return 0;
}

/* After the key scan found integer keys that are not 1..n: names, for a
 * message that does not depend on iteration order, the smallest integer key
 * that is out of place (below 1, or after the first missing index). */
static int enc_sequence_error(enc *E, int idx, frame *f) {
  lua_State *L = E->L;
  lua_Integer missing = 1;
  for (;; missing++) {
    int t = lua_rawgeti(L, idx, missing);
    lua_pop(L, 1);
    if (t == LUA_TNIL) break;
  }
  lua_Integer worst = 0;
  int found = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_isinteger(L, -1)) {
      lua_Integer k = lua_tointeger(L, -1);
      if ((k < 1 || k > missing) && (!found || k < worst)) {
        worst = k;
        found = 1;
      }
    }
  }
  return enc_error(E, f, "table has integer keys that are not a sequence 1..n (key %lld)",
                   (long long)worst);
}

/* Writes an object in table order: for objects with more keys than the Lua
 * stack holds (about a million, less what enclosing objects use). The text
 * is still exact; only the byte order of keys is lost. */
static int enc_unsorted(enc *E, int idx, frame *f, int depth, int marked, int top, size_t base) {
  lua_State *L = E->L;
  sbuf *out = E->out;
  E->nkeys = base;
  lua_settop(L, top);
  if (marked) return enc_error(E, f, "table marked as an array (json.array) has string keys");
  put_c(out, '{');
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int kt = lua_type(L, -2);
    if (kt != LUA_TSTRING) {
      if (kt == LUA_TNUMBER && lua_isinteger(L, -2))
        return enc_error(E, f, "table mixes array items and string keys");
      if (kt == LUA_TNUMBER)
        return enc_error(E, f, "cannot store a table with a float key (%.17g)",
                         lua_tonumber(L, -2));
      return enc_error(E, f, "cannot store a table with a %s key", lua_typename(L, kt));
    }
    size_t kl;
    const char *k = lua_tolstring(L, -2, &kl);
    if (n++) put_c(out, ',');
    if (E->pretty) put_indent(E, depth + 1);
    put_key(out, k, kl);
    if (E->pretty)
      put_n(out, ": ", 2);
    else
      put_c(out, ':');
    frame c = {f, NULL, k, kl, 0};
    if (enc_value(E, lua_gettop(L), &c, depth + 1) != 0) return -1;
    lua_pop(L, 1);
  }
  if (E->pretty && n) put_indent(E, depth);
  put_c(out, '}');
  return 0;
}

static int enc_table(enc *E, int idx, frame *f, int depth) {
  lua_State *L = E->L;
  if (depth >= E->max_depth) return enc_error(E, f, "nesting deeper than %d", E->max_depth);
  const void *me = lua_topointer(L, idx);
  for (const frame *a = f->up; a; a = a->up)
    if (a->tbl == me) return enc_error(E, f, "cycle (this table contains itself)");
  f->tbl = me;
  if (!lua_checkstack(L, 4)) return enc_error(E, f, "out of memory (Lua stack)");

  int marked = 0;
  if (E->mt_slot && lua_getmetatable(L, idx)) {
    marked = lua_rawequal(L, -1, E->mt_slot);
    lua_pop(L, 1);
  }

  /* One pass over the keys: string keys stay on the stack (for sorting and
   * rawget), integer keys are counted; 1..n iff count == max. */
  int top = lua_gettop(L);
  size_t base = E->nkeys;
  lua_Integer nint = 0, maxk = 0;
  int badint = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    int kt = lua_type(L, -1);
    if (kt == LUA_TSTRING) {
      if (!lua_checkstack(L, 3)) return enc_unsorted(E, idx, f, depth, marked, top, base);
      size_t kl;
      const char *k = lua_tolstring(L, -1, &kl);
      if (keys_push(E, k, kl, lua_gettop(L)) != 0) return enc_error(E, f, "out of memory");
      lua_pushvalue(L, -1);
    } else if (kt == LUA_TNUMBER && lua_isinteger(L, -1)) {
      lua_Integer k = lua_tointeger(L, -1);
      if (k < 1) {
        badint = 1;
      } else {
        nint++;
        if (k > maxk) maxk = k;
      }
    } else if (kt == LUA_TNUMBER) {
      return enc_error(E, f, "cannot store a table with a float key (%.17g)", lua_tonumber(L, -1));
    } else {
      return enc_error(E, f, "cannot store a table with a %s key", lua_typename(L, kt));
    }
  }
  size_t nstr = E->nkeys - base;
  if (nstr && (nint || badint)) return enc_error(E, f, "table mixes array items and string keys");
  if (nstr && marked)
    return enc_error(E, f, "table marked as an array (json.array) has string keys");
  if (badint || nint != maxk) return enc_sequence_error(E, idx, f);

  sbuf *out = E->out;
  if (nint || (marked && !nstr)) {
    put_c(out, '[');
    for (lua_Integer i = 1; i <= nint; i++) {
      if (i > 1) put_c(out, ',');
      if (E->pretty) put_indent(E, depth + 1);
      lua_rawgeti(L, idx, i);
      frame c = {f, NULL, NULL, 0, i};
      if (enc_value(E, lua_gettop(L), &c, depth + 1) != 0) return -1;
      lua_pop(L, 1);
    }
    if (E->pretty && nint) put_indent(E, depth);
    put_c(out, ']');
    return 0;
  }

  keys_sort(E->keys + base, nstr);
  put_c(out, '{');
  for (size_t i = 0; i < nstr; i++) {
    keyent k = E->keys[base + i]; /* copy: children may move the array */
    if (i) put_c(out, ',');
    if (E->pretty) put_indent(E, depth + 1);
    put_key(out, k.p, k.n);
    if (E->pretty)
      put_n(out, ": ", 2);
    else
      put_c(out, ':');
    lua_pushvalue(L, k.slot);
    lua_rawget(L, idx);
    frame c = {f, NULL, k.p, k.n, 0};
    if (enc_value(E, lua_gettop(L), &c, depth + 1) != 0) return -1;
    lua_pop(L, 1);
  }
  if (E->pretty && nstr) put_indent(E, depth);
  put_c(out, '}');
  E->nkeys = base;
  lua_settop(L, top);
  return 0;
}

static int enc_value(enc *E, int idx, frame *f, int depth) {
  lua_State *L = E->L;
  sbuf *out = E->out;
  int t = lua_type(L, idx);
  switch (t) {
  case LUA_TNIL:
    put_n(out, "null", 4);
    return 0;
  case LUA_TBOOLEAN:
    if (lua_toboolean(L, idx))
      put_n(out, "true", 4);
    else
      put_n(out, "false", 5);
    return 0;
  case LUA_TNUMBER: {
    if (lua_isinteger(L, idx)) {
      put_int(out, lua_tointeger(L, idx));
      return 0;
    }
    double d = lua_tonumber(L, idx);
    if (!isfinite(d)) {
      if (E->edge) return enc_nonfinite(E, f, d);
      /* its tag is an object: one level more */
      if (depth >= E->max_depth) return enc_error(E, f, "nesting deeper than %d", E->max_depth);
    }
    put_double(out, d);
    return 0;
  }
  case LUA_TSTRING: {
    size_t n, at = out->len;
    const char *s = lua_tolstring(L, idx, &n);
    codec_encode_string(out, s, n);
    /* the tag of a string that is not UTF-8 is an object: one level more */
    if (depth >= E->max_depth && out->data[at] == '{')
      return enc_error(E, f, "nesting deeper than %d", E->max_depth);
    return 0;
  }
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) {
      put_n(out, "null", 4);
      return 0;
    }
    return enc_error(E, f, "cannot store a userdata");
  case LUA_TTABLE:
    return enc_table(E, idx, f, depth);
  default:
    return enc_error(E, f, "cannot store a %s", lua_typename(L, t));
  }
}

int codec_encode(lua_State *L, int idx, const char *root, int flags, sbuf *out,
                 char *err, size_t errsz) {
  return codec_encode_ex(L, idx, root, flags, out, err, errsz, NULL);
}

int codec_encode_ex(lua_State *L, int idx, const char *root, int flags, sbuf *out,
                    char *err, size_t errsz, codec_report *rep) {
  idx = lua_absindex(L, idx);
  int top = lua_gettop(L);
  enc E;
  E.L = L;
  E.out = out;
  E.pretty = (flags & CODEC_PRETTY) != 0;
  E.edge = (flags & CODEC_EDGE) != 0;
  E.max_depth = (flags & CODEC_RECORD) ? CODEC_RECORD_DEPTH : CODEC_MAX_DEPTH;
  E.rep = rep;
  if (rep) {
    rep->nonfinite = 0;
    rep->first[0] = '\0';
  }
  E.mt_slot = 0;
  E.root = root ? root : "value";
  E.err = err;
  E.errsz = errsz;
  E.keys = E.inline_keys;
  E.nkeys = 0;
  E.capkeys = ENC_INLINE_KEYS;
  frame f = {NULL, NULL, NULL, 0, 0};
  if (!lua_checkstack(L, 8)) return enc_error(&E, &f, "out of memory (Lua stack)");
  if (lua_type(L, idx) == LUA_TTABLE) {
    /* the only call that may allocate (the key string); nothing held yet */
    if (lua_getfield(L, LUA_REGISTRYINDEX, CODEC_ARRAY_MT) == LUA_TTABLE)
      E.mt_slot = lua_gettop(L);
  }
  int rc = enc_value(&E, idx, &f, 0);
  if (E.keys != E.inline_keys) free(E.keys);
  lua_settop(L, top);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Tags (shared by the parser and codec_push)                               */

/* Pushes the value of a tag object {"\0<kind>": v}; -1 with err otherwise. */
static int push_tag(lua_State *L, char kind, const char *v, size_t n, int is_string, char *err,
                    size_t errsz) {
  if (!is_string) {
    snprintf(err, errsz, "malformed tag \"\\u0000%c\": value is not a string", kind);
    return -1;
  }
  if (kind == 'b') {
    if (push_b64(L, v, n) == 0) return 0;
    snprintf(err, errsz, "malformed tag \"\\u0000b\": invalid base64");
    return -1;
  }
  if (n == 3 && memcmp(v, "inf", 3) == 0) {
    lua_pushnumber(L, HUGE_VAL);
  } else if (n == 4 && memcmp(v, "-inf", 4) == 0) {
    lua_pushnumber(L, -HUGE_VAL);
  } else if (n == 3 && memcmp(v, "nan", 3) == 0) {
    lua_pushnumber(L, NAN);
  } else {
    snprintf(err, errsz, "malformed tag \"\\u0000f\": expected \"inf\", \"-inf\" or \"nan\"");
    return -1;
  }
  return 0;
}

static int is_value_tag(const char *k, size_t n) {
  return n == 2 && k[0] == '\0' && (k[1] == 'b' || k[1] == 'f');
}

/* Pushes the Lua key of a JSON object key: "\0k<base64>" -> raw bytes, any
 * other leading NUL -> one NUL less. -1 with err (nothing pushed). */
static int push_key(lua_State *L, const char *k, size_t n, char *err, size_t errsz) {
  if (n && k[0] == '\0') {
    if (n >= 2 && k[1] == 'k') {
      if (push_b64(L, k + 2, n - 2) == 0) return 0;
      snprintf(err, errsz, "malformed key tag \"\\u0000k\": invalid base64");
      return -1;
    }
    lua_pushlstring(L, k + 1, n - 1);
    return 0;
  }
  lua_pushlstring(L, k, n);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Parser                                                                   */

typedef struct {
  const char *s, *p, *end;
  lua_State *L;
  int depth;
  char *err;
  size_t errsz;
  int max_depth;
} parser;

static int perr(parser *P, const char *at, const char *fmt, ...) {
  int line = 1, col = 1;
  for (const char *q = P->s; q < at; q++) {
    if (*q == '\n') {
      line++;
      col = 1;
    } else if (((unsigned char)*q & 0xC0) != 0x80) {
      col++;
    }
  }
  char msg[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(P->err, P->errsz, "line %d, column %d (byte %zu): %s", line, col,
           (size_t)(at - P->s), msg);
  return -1;
}

static void skip_ws(parser *P) {
  const char *p = P->p;
  while (p < P->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  P->p = p;
}

/* The value of four hex digits at p, or -1 if one is not a hex digit. A
 * return value, not an out parameter, so that no caller can read a value
 * that was never written. */
static long hex4(const char *p) {
  long v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= c - '0';
    else if (c >= 'a' && c <= 'f')
      v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      v |= c - 'A' + 10;
    else
      return -1;
  }
  return v;
}

/* 1 for bytes that need no attention inside a string */
static const unsigned char plain_class[256] = {
#define C16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
    C16(0), C16(0),
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    C16(1), C16(1),
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    C16(1), C16(1),
    C16(0), C16(0), C16(0), C16(0), C16(0), C16(0), C16(0), C16(0)
#undef C16
};

/* The first byte at or after p (before end) that is not plain_class:
 * eight at a time while they are plain ASCII (no '"', '\\', control byte
 * or byte >= 0x80 in a word), then one at a time. */
static const unsigned char *skip_plain(const unsigned char *p, const unsigned char *end) {
  const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
  while (end - p >= 8) {
    uint64_t x;
    memcpy(&x, p, 8);
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
    uint64_t stop = ((q - ones) & ~q) | ((b - ones) & ~b) | ((x - ones * 0x20) & ~x) | x;
    if (stop & high) break;
    p += 8;
  }
  while (p < end && plain_class[*p]) p++;
  return p;
}

/* Validates the string at P->p (a '"'): its raw body is [*body, *body+*n).
 * Leaves P->p after the closing quote. */
static int lex_string(parser *P, const char **body, size_t *n, int *escaped) {
  const char *open = P->p;
  const unsigned char *p = (const unsigned char *)open + 1;
  const unsigned char *end = (const unsigned char *)P->end;
  int esc = 0;
  for (;;) {
    p = skip_plain(p, end);
    if (p >= end) return perr(P, open, "premature end of input in string");
    unsigned c = *p;
    if (c == '"') break;
    if (c == '\\') {
      esc = 1;
      if (p + 1 >= end) return perr(P, open, "premature end of input in string");
      switch (p[1]) {
      case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        p += 2;
        break;
      case 'u': {
        long u = end - p < 6 ? -1 : hex4((const char *)p + 2);
        long u2;
        if (u < 0) return perr(P, (const char *)p, "invalid \\u escape");
        if (u >= 0xDC00 && u <= 0xDFFF)
          return perr(P, (const char *)p, "invalid Unicode '\\u%04lX' (lone low surrogate)", u);
        if (u >= 0xD800 && u <= 0xDBFF) {
          if (end - p < 12 || p[6] != '\\' || p[7] != 'u' ||
              (u2 = hex4((const char *)p + 8)) < 0xDC00 || u2 > 0xDFFF)
            return perr(P, (const char *)p, "invalid Unicode '\\u%04lX' (lone high surrogate)", u);
          p += 12;
        } else {
          p += 6;
        }
        break;
      }
      default:
        return perr(P, (const char *)p, "invalid escape");
      }
    } else if (c < 0x20) {
      return perr(P, (const char *)p, "control character 0x%02x in string", c);
    } else {
      int k = utf8_seq(p, (size_t)(end - p));
      if (!k) return perr(P, (const char *)p, "invalid UTF-8 byte 0x%02x", c);
      p += k;
    }
  }
  *body = open + 1;
  *n = (size_t)((const char *)p - *body);
  *escaped = esc;
  P->p = (const char *)p + 1;
  return 0;
}

/* Unescapes a body lex_string validated; dst needs n bytes. */
static size_t unescape(const char *s, size_t n, char *dst) {
  const char *end = s + n;
  char *d = dst;
  while (s < end) {
    if (*s != '\\') {
      *d++ = *s++;
      continue;
    }
    char c = s[1];
    s += 2;
    switch (c) {
    case 'b': *d++ = '\b'; break;
    case 'f': *d++ = '\f'; break;
    case 'n': *d++ = '\n'; break;
    case 'r': *d++ = '\r'; break;
    case 't': *d++ = '\t'; break;
    case 'u': {
      /* lex_string checked the digits and the surrogate pair */
      unsigned u = (unsigned)hex4(s);
      s += 4;
      if (u >= 0xD800 && u <= 0xDBFF) {
        unsigned lo = (unsigned)hex4(s + 2);
        s += 6;
        u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
      }
      if (u < 0x80) {
        *d++ = (char)u;
      } else if (u < 0x800) {
        *d++ = (char)(0xC0 | u >> 6);
        *d++ = (char)(0x80 | (u & 63));
      } else if (u < 0x10000) {
        *d++ = (char)(0xE0 | u >> 12);
        *d++ = (char)(0x80 | ((u >> 6) & 63));
        *d++ = (char)(0x80 | (u & 63));
      } else {
        *d++ = (char)(0xF0 | u >> 18);
        *d++ = (char)(0x80 | ((u >> 12) & 63));
        *d++ = (char)(0x80 | ((u >> 6) & 63));
        *d++ = (char)(0x80 | (u & 63));
      }
      break;
    }
    default: *d++ = c; /* '"', '\\', '/' */
    }
  }
  return (size_t)(d - dst);
}

/* Pushes the string at P->p as is (keys are mapped later); *escaped (if
 * not NULL) tells whether it had escapes: only then can it start with NUL. */
static int plua_string_ex(parser *P, int *escaped) {
  const char *body = NULL; /* set by lex_string on success */
  size_t n = 0;
  int esc = 0;
  if (lex_string(P, &body, &n, &esc) != 0) return -1;
  if (escaped) *escaped = esc;
  if (!esc) {
    lua_pushlstring(P->L, body, n);
  } else {
    luaL_Buffer b;
    char *d = luaL_buffinitsize(P->L, &b, n);
    luaL_pushresultsize(&b, unescape(body, n, d));
  }
  return 0;
}

static int plua_string(parser *P) { return plua_string_ex(P, NULL); }

typedef struct {
  int is_int;
  lua_Integer i;
  double d;
} number;

static int lex_number(parser *P, number *num) {
  const char *start = P->p, *p = start, *end = P->end;
  int neg = 0, real = 0;
  if (p < end && *p == '-') {
    neg = 1;
    p++;
  }
  if (p >= end || *p < '0' || *p > '9') return perr(P, start, "invalid number");
  if (*p == '0') {
    p++;
    if (p < end && *p >= '0' && *p <= '9') return perr(P, start, "invalid number (leading zero)");
  } else {
    while (p < end && *p >= '0' && *p <= '9') p++;
  }
  if (p < end && *p == '.') {
    p++;
    if (p >= end || *p < '0' || *p > '9') return perr(P, start, "invalid number");
    while (p < end && *p >= '0' && *p <= '9') p++;
    real = 1;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (p >= end || *p < '0' || *p > '9') return perr(P, start, "invalid number");
    while (p < end && *p >= '0' && *p <= '9') p++;
    real = 1;
  }
  P->p = p;
  if (!real) {
    uint64_t limit = neg ? (uint64_t)1 << 63 : ((uint64_t)1 << 63) - 1, v = 0;
    for (const char *q = start + neg; q < p; q++) {
      unsigned dgt = (unsigned)(*q - '0');
      if (v > (limit - dgt) / 10)
        return perr(P, start, neg ? "too big negative integer" : "too big integer");
      v = v * 10 + dgt;
    }
    num->is_int = 1;
    num->i = neg ? (lua_Integer)(0 - v) : (lua_Integer)v;
    return 0;
  }
  /* strtod needs a terminated copy: the input is not NUL-terminated */
  char local[64], *buf = local;
  size_t len = (size_t)(p - start);
  if (len >= sizeof local && !(buf = malloc(len + 1))) return perr(P, start, "out of memory");
  memcpy(buf, start, len);
  buf[len] = '\0';
  errno = 0;
  double d = strtod_c(buf, NULL);
  int overflow = errno == ERANGE && isinf(d);
  if (buf != local) free(buf);
  if (overflow) return perr(P, start, "real number overflow");
  num->is_int = 0;
  num->d = d;
  return 0;
}

/* Matches true/false/null; returns 1, 2, 3 (in that order) or 0. */
static int lex_literal(parser *P) {
  size_t left = (size_t)(P->end - P->p);
  if (left >= 4 && memcmp(P->p, "true", 4) == 0) return P->p += 4, 1;
  if (left >= 5 && memcmp(P->p, "false", 5) == 0) return P->p += 5, 2;
  if (left >= 4 && memcmp(P->p, "null", 4) == 0) return P->p += 4, 3;
  return 0;
}

static int unexpected(parser *P) {
  if (P->p >= P->end) return perr(P, P->p, "premature end of input");
  return perr(P, P->p, "unexpected token");
}

/* After an array item or an object member (white space skipped): consumes
 * ',' and the white space after it (0: another item follows) or the closing
 * bracket (1: done); else -1 with the error. */
static int next_item(parser *P, char close) {
  if (P->p < P->end && *P->p == ',') {
    P->p++;
    skip_ws(P);
    return 0;
  }
  if (P->p < P->end && *P->p == close) {
    P->p++;
    return 1;
  }
  if (P->p >= P->end) return unexpected(P);
  return perr(P, P->p, close == ']' ? "',' or ']' expected" : "',' or '}' expected");
}

static int plua_value(parser *P);

/* Decoded members wait on the stack (values, or key/value pairs) until
 * their container closes, up to BATCH of them, so that its table is made
 * at its size: a table grown one key at a time rehashes at 1, 2, 4, 8, ...
 * entries, most of the cost of decoding a small object. Past BATCH the
 * table is made for twice as many and grows as usual. The container's stack
 * slot holds nil until then. */
#define BATCH 16

/* the n values above slot t into the array at t, as items last - n + 1 ..
 * last (popped) */
static void flush_items(lua_State *L, int t, int n, lua_Integer last) {
  for (int i = 0; i < n; i++) lua_rawseti(L, t, last - i);
}

/* the n key/value pairs above slot t into the table at t in order (a
 * repeated key keeps its last value), popped */
static void flush_pairs(lua_State *L, int t, int n) {
  for (int i = 0; i < n; i++) {
    lua_pushvalue(L, t + 1 + 2 * i);
    lua_pushvalue(L, t + 2 + 2 * i);
    lua_rawset(L, t);
  }
  lua_settop(L, t);
}

static int plua_array(parser *P) {
  lua_State *L = P->L;
  const char *open = P->p++;
  if (++P->depth > P->max_depth)
    return perr(P, open, "nesting deeper than %d", P->max_depth);
  if (!lua_checkstack(L, BATCH + 8)) return perr(P, open, "out of memory (Lua stack)");
  lua_pushnil(L);
  int t = lua_gettop(L), made = 0, n = 0;
  skip_ws(P);
  lua_Integer total = 0;
  if (P->p < P->end && *P->p == ']') {
    P->p++;
    lua_createtable(L, 0, 0);
    push_array_mt(L);
    lua_setmetatable(L, -2);
    lua_replace(L, t);
  } else {
    for (;;) {
      if (plua_value(P) != 0) return -1;
      total++;
      if (++n == BATCH) {
        if (!made) {
          lua_createtable(L, 2 * BATCH, 0);
          lua_replace(L, t);
          made = 1;
        }
        flush_items(L, t, n, total);
        n = 0;
      }
      skip_ws(P);
      int r = next_item(P, ']');
      if (r < 0) return -1;
      if (r == 1) break;
    }
    if (!made) {
      lua_createtable(L, n, 0);
      lua_replace(L, t);
    }
    flush_items(L, t, n, total);
  }
  P->depth--;
  return 0;
}

static int plua_object(parser *P) {
  lua_State *L = P->L;
  const char *open = P->p++;
  if (++P->depth > P->max_depth)
    return perr(P, open, "nesting deeper than %d", P->max_depth);
  if (!lua_checkstack(L, 2 * BATCH + 8)) return perr(P, open, "out of memory (Lua stack)");
  lua_pushnil(L);
  int t = lua_gettop(L), made = 0, n = 0;
  skip_ws(P);
  if (P->p < P->end && *P->p == '}') {
    P->p++;
    lua_createtable(L, 0, 0);
    lua_replace(L, t);
    P->depth--;
    return 0;
  }
  for (int first = 1;; first = 0) {
    if (P->p >= P->end) return unexpected(P);
    if (*P->p != '"') return perr(P, P->p, "string or '}' expected");
    const char *kat = P->p;
    int kesc;
    if (plua_string_ex(P, &kesc) != 0) return -1;
    size_t kl = 0;
    const char *k = kesc ? lua_tolstring(L, -1, &kl) : NULL;
    char tag = 0;
    if (kl && k[0] == '\0') {
      if (first && is_value_tag(k, kl)) {
        tag = k[1]; /* decided after the value: a tag only if alone */
      } else {
        if (push_key(L, k, kl, P->err, P->errsz) != 0) {
          char msg[160];
          snprintf(msg, sizeof msg, "%s", P->err);
          return perr(P, kat, "%s", msg);
        }
        lua_remove(L, -2);
      }
    }
    skip_ws(P);
    if (P->p >= P->end) return unexpected(P);
    if (*P->p != ':') return perr(P, P->p, "':' expected");
    P->p++;
    skip_ws(P);
    if (plua_value(P) != 0) return -1;
    skip_ws(P);
    if (tag) {
      if (P->p < P->end && *P->p == '}') {
        /* stack: table, key, value -> the tagged value */
        P->p++;
        size_t vn = 0;
        int is_str = lua_type(L, -1) == LUA_TSTRING;
        const char *v = is_str ? lua_tolstring(L, -1, &vn) : NULL;
        if (push_tag(L, tag, v, vn, is_str, P->err, P->errsz) != 0) {
          char msg[160];
          snprintf(msg, sizeof msg, "%s", P->err);
          return perr(P, open, "%s", msg);
        }
        lua_replace(L, -4);
        lua_pop(L, 2);
        P->depth--;
        return 0;
      }
      lua_pushlstring(L, &tag, 1); /* not alone: the key loses its NUL */
      lua_replace(L, -3);
    }
    if (++n == BATCH) {
      if (!made) {
        lua_createtable(L, 0, 2 * BATCH);
        lua_replace(L, t);
        made = 1;
      }
      flush_pairs(L, t, n);
      n = 0;
    }
    int r = next_item(P, '}');
    if (r < 0) return -1;
    if (r == 1) break;
  }
  if (!made) {
    lua_createtable(L, 0, n);
    lua_replace(L, t);
  }
  flush_pairs(L, t, n);
  P->depth--;
  return 0;
}

static int plua_value(parser *P) {
  lua_State *L = P->L;
  if (P->p >= P->end) return unexpected(P);
  switch (*P->p) {
  case '{': return plua_object(P);
  case '[': return plua_array(P);
  case '"': return plua_string(P);
  case '-': case '0': case '1': case '2': case '3': case '4':
  case '5': case '6': case '7': case '8': case '9': {
    number num = {0, 0, 0}; /* set by lex_number on success */
    if (lex_number(P, &num) != 0) return -1;
    if (num.is_int)
      lua_pushinteger(L, num.i);
    else
      lua_pushnumber(L, num.d);
    return 0;
  }
  default:
    switch (lex_literal(P)) {
    case 1: lua_pushboolean(L, 1); return 0;
    case 2: lua_pushboolean(L, 0); return 0;
    case 3: codec_push_null(L); return 0;
    }
    return unexpected(P);
  }
}

/* Skips the JSON value at P->p, validating it as plua_value would, without
 * making a Lua value. */
static int skip_value(parser *P) {
  if (P->p >= P->end) return unexpected(P);
  const char *open = P->p;
  char c = *P->p;
  if (c == '"') {
    const char *body;
    size_t n;
    int esc;
    return lex_string(P, &body, &n, &esc);
  }
  if (c == '-' || (c >= '0' && c <= '9')) {
    number num = {0, 0, 0};
    return lex_number(P, &num);
  }
  if (c != '{' && c != '[') return lex_literal(P) ? 0 : unexpected(P);
  if (++P->depth > P->max_depth) return perr(P, open, "nesting deeper than %d", P->max_depth);
  char close = c == '{' ? '}' : ']';
  P->p++;
  skip_ws(P);
  if (P->p < P->end && *P->p == close) {
    P->p++;
  } else {
    for (;;) {
      if (close == '}') {
        if (P->p >= P->end) return unexpected(P);
        if (*P->p != '"') return perr(P, P->p, "string or '}' expected");
        if (skip_value(P) != 0) return -1;
        skip_ws(P);
        if (P->p >= P->end) return unexpected(P);
        if (*P->p != ':') return perr(P, P->p, "':' expected");
        P->p++;
        skip_ws(P);
      }
      if (skip_value(P) != 0) return -1;
      skip_ws(P);
      int r = next_item(P, close);
      if (r < 0) return -1;
      if (r == 1) break;
    }
  }
  P->depth--;
  return 0;
}

int codec_members(const char *s, size_t n, const char *const *names, codec_span *spans, char *err,
                  size_t errsz) {
  parser P = {s, s, s + n, NULL, 1, err, errsz, CODEC_RECORD_DEPTH}; /* the object is level 1 */
  size_t count = 0;
  while (names[count]) spans[count++] = (codec_span){NULL, 0};
  skip_ws(&P);
  if (P.p >= P.end || *P.p != '{') return perr(&P, P.p, "an object expected");
  P.p++;
  skip_ws(&P);
  if (P.p < P.end && *P.p == '}') {
    P.p++;
  } else {
    for (;;) {
      if (P.p >= P.end) return unexpected(&P);
      if (*P.p != '"') return perr(&P, P.p, "string or '}' expected");
      const char *key;
      size_t kn;
      int esc;
      if (lex_string(&P, &key, &kn, &esc) != 0) return -1;
      skip_ws(&P);
      if (P.p >= P.end) return unexpected(&P);
      if (*P.p != ':') return perr(&P, P.p, "':' expected");
      P.p++;
      skip_ws(&P);
      const char *v = P.p;
      if (skip_value(&P) != 0) return -1;
      /* a key with escapes is none of names (plain ASCII field names) */
      for (size_t i = 0; !esc && i < count; i++) {
        if (strlen(names[i]) == kn && memcmp(names[i], key, kn) == 0) {
          spans[i] = (codec_span){v, (size_t)(P.p - v)};
        }
      }
      skip_ws(&P);
      int r = next_item(&P, '}');
      if (r < 0) return -1;
      if (r == 1) break;
    }
  }
  skip_ws(&P);
  if (P.p != P.end) return perr(&P, P.p, "end of input expected");
  return 0;
}

int codec_decode(lua_State *L, const char *s, size_t n, char *err, size_t errsz) {
  return codec_decode_ex(L, s, n, 0, err, errsz);
}

int codec_decode_ex(lua_State *L, const char *s, size_t n, int flags, char *err, size_t errsz) {
  parser P = {s, s, s + n, L, 0, err, errsz,
              (flags & CODEC_RECORD) ? CODEC_RECORD_DEPTH : CODEC_MAX_DEPTH};
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 8)) {
    snprintf(err, errsz, "out of memory (Lua stack)");
    return -1;
  }
  skip_ws(&P);
  if (plua_value(&P) == 0) {
    skip_ws(&P);
    if (P.p == P.end) return 0;
    perr(&P, P.p, "end of input expected");
  }
  lua_settop(L, top);
  return -1;
}
