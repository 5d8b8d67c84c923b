// cron.c: the cron engine (see cron.h): Vixie cron parsing into bitmasks,
// next-fire search over civil dates (Howard Hinnant's days_from_civil, int64,
// no mktime/timegm), a TZif + POSIX TZ reader with a per-name cache, the
// canonical formatter, ISO 8601 helpers and `sluice cron next`.
#include "cron.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MIN_MASK 0x0FFFFFFFFFFFFFFFull // bits 0-59
#define HOUR_MASK 0x00FFFFFFu           // bits 0-23
#define DOM_MASK 0xFFFFFFFEu            // bits 1-31
#define MON_MASK 0x1FFEu                // bits 1-12
#define DOW_MASK 0x7Fu                  // bits 0-6

#define T_MIN (-62135596800LL) // 0001-01-01T00:00:00Z
#define T_MAX 253402300799LL   // 9999-12-31T23:59:59Z

static void seterr(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errsz, const char *fmt, ...) {
  if (!err || !errsz) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errsz, fmt, ap);
  va_end(ap);
}

// Writes s[0..n) to buf as a double-quoted string for messages: '"' and '\\'
// escaped, other bytes outside printable ASCII as \xNN, at most 40 bytes of
// s (then "..."). bufsz >= QUOTE_SZ always fits.
#define QUOTE_SZ 176
static const char *quote(char *buf, size_t bufsz, const char *s, size_t n) {
  size_t o = 0, i;
  if (bufsz < QUOTE_SZ) return "\"\"";
  buf[o++] = '"';
  for (i = 0; i < n && i < 40; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      buf[o++] = '\\';
      buf[o++] = (char)c;
    } else if (c < 0x20 || c >= 0x7f) {
      static const char hex[] = "0123456789abcdef";
      buf[o++] = '\\';
      buf[o++] = 'x';
      buf[o++] = hex[c >> 4];
      buf[o++] = hex[c & 15];
    } else {
      buf[o++] = (char)c;
    }
  }
  if (i < n) {
    memcpy(buf + o, "...", 3);
    o += 3;
  }
  buf[o++] = '"';
  buf[o] = 0;
  return buf;
}

static int is_space(int c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int ieq(const char *a, size_t n, const char *b) { // a[0..n) == b, any case
  size_t i;
  for (i = 0; i < n; i++)
    if (!b[i] || lower((unsigned char)a[i]) != b[i]) return 0;
  return b[n] == 0;
}

static int ctz64(uint64_t v) { return __builtin_ctzll(v); }

// ---------------------------------------------------------------- civil time

static int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b) != 0 && ((a < 0) != (b < 0))) q--;
  return q;
}

static int is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static unsigned month_len(int64_t y, unsigned m) {
  static const unsigned char len[13] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 ? 28u + (unsigned)is_leap(y) : len[m];
}

// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant).
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  unsigned doe = (unsigned)(z - era * 146097);
  unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int weekday(int64_t days) { // 0 = Sunday; 1970-01-01 was a Thursday
  int64_t w = (days + 4) % 7;
  return (int)(w < 0 ? w + 7 : w);
}

// ------------------------------------------------------------------- parsing

enum { F_MIN, F_HOUR, F_DOM, F_MON, F_DOW };
static const struct {
  const char *name;
  int lo, hi, span; // span: the largest step
} FIELDS[5] = {
    {"minute", 0, 59, 60}, {"hour", 0, 23, 24}, {"day-of-month", 1, 31, 31},
    {"month", 1, 12, 12},  {"day-of-week", 0, 7, 7},
};

static const char *const MONTHS[12][2] = {
    {"jan", "january"}, {"feb", "february"}, {"mar", "march"},     {"apr", "april"},
    {"may", "may"},     {"jun", "june"},     {"jul", "july"},      {"aug", "august"},
    {"sep", "september"}, {"oct", "october"}, {"nov", "november"}, {"dec", "december"},
};
static const char *const DAYS[7][2] = {
    {"sun", "sunday"},   {"mon", "monday"}, {"tue", "tuesday"}, {"wed", "wednesday"},
    {"thu", "thursday"}, {"fri", "friday"}, {"sat", "saturday"},
};

// One value (number or name) of field f, the text s[0..n), n > 0.
static int parse_value(int f, const char *s, size_t n, int *v, char *err, size_t errsz) {
  char q[QUOTE_SZ];
  size_t i;
  int all_digits = 1;
  for (i = 0; i < n; i++)
    if (!is_digit((unsigned char)s[i])) all_digits = 0;
  if (all_digits) {
    size_t k = 0;
    while (k + 1 < n && s[k] == '0') k++; // leading zeros
    long x = 0;
    if (n - k <= 4)
      for (i = k; i < n; i++) x = x * 10 + (s[i] - '0');
    if (n - k > 4 || x < FIELDS[f].lo || x > FIELDS[f].hi) {
      seterr(err, errsz, "%s field: %.*s is out of range %d-%d", FIELDS[f].name,
             (int)(n > 20 ? 20 : n), s, FIELDS[f].lo, FIELDS[f].hi);
      return -1;
    }
    *v = (int)x;
    return 0;
  }
  // Vixie cron and the common cron libraries take the three-letter names
  // only: a full name is refused with the form that works, not given a
  // meaning other crons would not give it.
  const char *const(*names)[2] = f == F_MON ? MONTHS : f == F_DOW ? DAYS : NULL;
  size_t count = f == F_MON ? 12 : 7;
  for (i = 0; names && i < count; i++) {
    int num = f == F_MON ? (int)i + 1 : (int)i;
    if (ieq(s, n, names[i][0])) {
      *v = num;
      return 0;
    }
    if (ieq(s, n, names[i][1])) {
      seterr(err, errsz, "%s field: %s: use the three-letter name \"%s\" or %d", FIELDS[f].name,
             quote(q, sizeof q, s, n), names[i][0], num);
      return -1;
    }
  }
  seterr(err, errsz, "%s field: %s is not a %s", FIELDS[f].name, quote(q, sizeof q, s, n),
         f == F_MON ? "month name or number" : f == F_DOW ? "day name or number" : "number");
  return -1;
}

static int parse_step(int f, const char *s, size_t n, int *step, char *err, size_t errsz) {
  char q[QUOTE_SZ];
  size_t i, k = 0;
  for (i = 0; i < n; i++)
    if (!is_digit((unsigned char)s[i])) {
      seterr(err, errsz, "%s field: step %s is not a number", FIELDS[f].name,
             quote(q, sizeof q, s, n));
      return -1;
    }
  while (k + 1 < n && s[k] == '0') k++;
  long x = 0;
  if (n - k <= 4)
    for (i = k; i < n; i++) x = x * 10 + (s[i] - '0');
  if (x == 0) {
    seterr(err, errsz, "%s field: step %.*s is not allowed", FIELDS[f].name, (int)n, s);
    return -1;
  }
  if (n - k > 4 || x > FIELDS[f].span) {
    seterr(err, errsz, "%s field: step %.*s is out of range 1-%d", FIELDS[f].name,
           (int)(n > 20 ? 20 : n), s, FIELDS[f].span);
    return -1;
  }
  *step = (int)x;
  return 0;
}

static int bad_item(int f, const char *s, size_t n, char *err, size_t errsz) {
  char q[QUOTE_SZ];
  seterr(err, errsz, "%s field: bad item %s (expected *, N, N-M, */S, N-M/S or N/S)",
         FIELDS[f].name, quote(q, sizeof q, s, n));
  return -1;
}

static const char *find(const char *s, const char *end, const char *chars) {
  for (; s < end; s++)
    if (strchr(chars, *s)) return s;
  return end;
}

// A range a-b with a > b, s[0..n): Vixie cron has no wrapping range, so
// say how to write what was probably meant (fri-mon: 5-7,1; 22-2: 22-23,0-2).
static int backwards(int f, const char *s, size_t n, int a, int b, int stepped, char *err,
                     size_t errsz) {
  char q[QUOTE_SZ], fix[32];
  int hi = FIELDS[f].hi, lo = f == F_DOW ? 1 : FIELDS[f].lo; // 7 is Sunday
  quote(q, sizeof q, s, n);
  if (stepped) {
    seterr(err, errsz, "%s field: range %s is backwards: write the low end first",
           FIELDS[f].name, q);
    return -1;
  }
  int o = a == hi ? snprintf(fix, sizeof fix, "%d", a) : snprintf(fix, sizeof fix, "%d-%d", a, hi);
  if (b >= lo)
    snprintf(fix + o, sizeof fix - (size_t)o, b == lo ? ",%d" : ",%d-%d", lo, b);
  seterr(err, errsz, "%s field: range %s is backwards (a range cannot wrap around): write %s",
         FIELDS[f].name, q, fix);
  return -1;
}

// One list item s[0..n): *, */S, N, N-M, N-M/S, N/S.
static int parse_item(int f, const char *s, size_t n, uint64_t *bits, char *err,
                      size_t errsz) {
  const char *end = s + n, *rest;
  int a, b, step = 1;
  if (*s == '*') {
    a = FIELDS[f].lo;
    b = FIELDS[f].hi;
    rest = s + 1;
    if (rest < end && *rest != '/') return bad_item(f, s, n, err, errsz);
  } else {
    const char *t1 = find(s, end, "-/");
    if (t1 == s) return bad_item(f, s, n, err, errsz);
    if (parse_value(f, s, (size_t)(t1 - s), &a, err, errsz)) return -1;
    if (t1 < end && *t1 == '-') {
      const char *t2 = find(t1 + 1, end, "-/");
      if (t2 == t1 + 1 || (t2 < end && *t2 == '-')) return bad_item(f, s, n, err, errsz);
      if (parse_value(f, t1 + 1, (size_t)(t2 - t1 - 1), &b, err, errsz)) return -1;
      if (a > b) return backwards(f, s, (size_t)(t2 - s), a, b, t2 < end, err, errsz);
      rest = t2;
    } else {
      b = t1 < end ? FIELDS[f].hi : a; // N/S runs to the field's end
      rest = t1;
    }
  }
  if (rest < end) { // '/' STEP
    if (rest + 1 == end) return bad_item(f, s, n, err, errsz);
    if (parse_step(f, rest + 1, (size_t)(end - rest - 1), &step, err, errsz)) return -1;
  }
  for (int v = a; v <= b; v += step) *bits |= 1ull << v;
  return 0;
}

static int parse_field(int f, const char *s, size_t n, uint64_t *bits, char *err,
                       size_t errsz) {
  const char *end = s + n, *p = s;
  *bits = 0;
  for (;;) {
    const char *ie = find(p, end, ",");
    if (ie == p) {
      char q[QUOTE_SZ];
      seterr(err, errsz, "%s field: empty item in %s", FIELDS[f].name, quote(q, sizeof q, s, n));
      return -1;
    }
    if (parse_item(f, p, (size_t)(ie - p), bits, err, errsz)) return -1;
    if (ie == end) break;
    p = ie + 1;
  }
  if (f == F_DOW && (*bits & 0x80)) *bits = (*bits | 1) & DOW_MASK;
  return 0;
}

static const struct {
  const char *name, *text;
} MACROS[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

int cron_parse(cron_expr *out, const char *text, char *err, size_t errsz) {
  const char *start[5], *p = text ? text : "";
  size_t len[5];
  int nf = 0;
  char q[QUOTE_SZ];
  while (is_space((unsigned char)*p)) p++;
  if (*p == '@') {
    const char *m = p;
    while (*p && !is_space((unsigned char)*p)) p++;
    size_t mn = (size_t)(p - m);
    while (is_space((unsigned char)*p)) p++;
    if (ieq(m, mn, "@reboot")) {
      seterr(err, errsz, "@reboot is not supported: it names an event (start-up), not a time");
      return -1;
    }
    for (size_t i = 0; i < sizeof MACROS / sizeof MACROS[0]; i++)
      if (ieq(m, mn, MACROS[i].name)) {
        if (*p) {
          char q2[QUOTE_SZ];
          seterr(err, errsz, "unexpected text after %s: %s", quote(q2, sizeof q2, m, mn),
                 quote(q, sizeof q, p, strlen(p)));
          return -1;
        }
        return cron_parse(out, MACROS[i].text, err, errsz);
      }
    seterr(err, errsz,
           "unknown macro %s (expected @yearly, @annually, @monthly, @weekly, @daily, "
           "@midnight or @hourly)",
           quote(q, sizeof q, m, mn));
    return -1;
  }
  while (*p) {
    const char *s = p;
    while (*p && !is_space((unsigned char)*p)) p++;
    if (nf < 5) {
      start[nf] = s;
      len[nf] = (size_t)(p - s);
    }
    nf++;
    while (is_space((unsigned char)*p)) p++;
  }
  if (nf != 5) {
    seterr(err, errsz,
           "expected 5 fields (minute hour day-of-month month day-of-week), got %d", nf);
    return -1;
  }
  uint64_t bits[5];
  for (int f = 0; f < 5; f++)
    if (parse_field(f, start[f], len[f], &bits[f], err, errsz)) return -1;
  cron_expr e;
  memset(&e, 0, sizeof e);
  e.minute = bits[F_MIN];
  e.hour = (uint32_t)bits[F_HOUR];
  e.dom = (uint32_t)bits[F_DOM];
  e.month = (uint16_t)bits[F_MON];
  e.dow = (uint8_t)bits[F_DOW];
  e.flags = (uint8_t)((start[F_MIN][0] == '*' ? CRON_MIN_STAR : 0) |
                      (start[F_HOUR][0] == '*' ? CRON_HOUR_STAR : 0) |
                      (start[F_DOM][0] == '*' ? CRON_DOM_STAR : 0) |
                      (start[F_DOW][0] == '*' ? CRON_DOW_STAR : 0));
  *out = e;
  return 0;
}

// ---------------------------------------------------------------- formatting

typedef struct {
  char *p;
  size_t len;
} wbuf; // writes into a CRON_FORMAT_MAX buffer (never overflows by design)

static void wc(wbuf *w, char c) {
  if (w->len + 1 < CRON_FORMAT_MAX) w->p[w->len++] = c;
}
static void wnum(wbuf *w, int v) {
  if (v >= 10) wnum(w, v / 10);
  wc(w, (char)('0' + v % 10));
}

static uint64_t progression(int f, int step) {
  uint64_t b = 0;
  for (int v = FIELDS[f].lo; v <= FIELDS[f].hi; v += step) b |= 1ull << v;
  if (f == F_DOW && (b & 0x80)) b = (b | 1) & DOW_MASK;
  return b;
}

// A set as a list: "a-b/s" for an arithmetic run of 5+, else ranges of 3+
// consecutive values and single values.
static void wlist(wbuf *w, uint64_t set) {
  int v[64], n = 0, i, j;
  for (i = 0; i < 64; i++)
    if (set >> i & 1) v[n++] = i;
  if (n >= 5 && v[1] - v[0] >= 2) {
    int s = v[1] - v[0];
    for (i = 2; i < n && v[i] - v[i - 1] == s; i++) {}
    if (i == n) {
      wnum(w, v[0]);
      wc(w, '-');
      wnum(w, v[n - 1]);
      wc(w, '/');
      wnum(w, s);
      return;
    }
  }
  for (i = 0; i < n; i = j + 1) {
    for (j = i; j + 1 < n && v[j + 1] == v[j] + 1; j++) {}
    if (i) wc(w, ',');
    if (j - i >= 2) {
      wnum(w, v[i]);
      wc(w, '-');
      wnum(w, v[j]);
    } else {
      wnum(w, v[i]);
      if (j > i) {
        wc(w, ',');
        wnum(w, v[j]);
      }
    }
  }
}

static void wfield(wbuf *w, int f, uint64_t set, int star) {
  if (f == F_MON) {
    if (set == progression(f, 1)) {
      wc(w, '*');
      return;
    }
    for (int s = 2; s <= FIELDS[f].span; s++)
      if (set == progression(f, s) && __builtin_popcountll(set) >= 3) {
        wc(w, '*');
        wc(w, '/');
        wnum(w, s);
        return;
      }
    wlist(w, set);
    return;
  }
  if (!star || !set) {
    wlist(w, set);
    return;
  }
  int s = 1;
  uint64_t prog = progression(f, 1);
  while ((prog & ~set) && s < FIELDS[f].span) prog = progression(f, ++s);
  wc(w, '*');
  if (s > 1) {
    wc(w, '/');
    wnum(w, s);
  }
  if (set & ~prog) {
    wc(w, ',');
    wlist(w, set & ~prog);
  }
}

int cron_format(const cron_expr *e, char *buf, size_t n) {
  char tmp[CRON_FORMAT_MAX];
  wbuf w = {tmp, 0};
  wfield(&w, F_MIN, e->minute & MIN_MASK, e->flags & CRON_MIN_STAR);
  wc(&w, ' ');
  wfield(&w, F_HOUR, e->hour & HOUR_MASK, e->flags & CRON_HOUR_STAR);
  wc(&w, ' ');
  wfield(&w, F_DOM, e->dom & DOM_MASK, e->flags & CRON_DOM_STAR);
  wc(&w, ' ');
  wfield(&w, F_MON, e->month & MON_MASK, 0);
  wc(&w, ' ');
  wfield(&w, F_DOW, e->dow & DOW_MASK, e->flags & CRON_DOW_STAR);
  tmp[w.len] = 0;
  if (n) {
    size_t k = w.len < n - 1 ? w.len : n - 1;
    memcpy(buf, tmp, k);
    buf[k] = 0;
  }
  return (int)w.len;
}

// ---------------------------------------------------------------- time zones

typedef struct {
  char kind; // 'M' month.week.day, 'J' Julian 1-365 without Feb 29, 'N' 0-365
  int m, w, d, n;
  int32_t time; // seconds after local midnight, may be negative or > 24h
} rule_date;

typedef struct {
  int has_dst;
  int32_t std_off, dst_off; // seconds east of UTC
  rule_date start, end;     // start: std -> dst (std time); end: dst -> std (dst time)
} posix_rule;

typedef struct zone {
  struct zone *next;
  uint32_t hash;
  size_t n;      // transitions where the offset changes
  int64_t *at;   // their instants, ascending
  int32_t *off;  // the offset from each on
  int32_t off0;  // the offset before the first
  int has_rule;  // the POSIX footer applies from rule_from on
  int64_t rule_from;
  posix_rule rule;
  char name[];
} zone;

typedef struct {
  int64_t start, end; // [start, end), INT64_MIN / INT64_MAX when unbounded
  int32_t off, prev_off;
  int has_prev;
} period;

static int64_t rule_instant(const rule_date *r, int64_t y, int32_t off) {
  int64_t day;
  if (r->kind == 'M') {
    int64_t first = days_from_civil(y, (unsigned)r->m, 1);
    int dd = (r->d - weekday(first) + 7) % 7 + 7 * (r->w - 1);
    if (dd >= (int)month_len(y, (unsigned)r->m)) dd -= 7;
    day = first + dd;
  } else if (r->kind == 'J') {
    day = days_from_civil(y, 1, 1) + r->n - 1 + (is_leap(y) && r->n >= 60);
  } else {
    day = days_from_civil(y, 1, 1) + r->n;
  }
  return day * 86400 + r->time - off;
}

static void rule_period(const posix_rule *r, int64_t t, period *p) {
  p->start = INT64_MIN;
  p->end = INT64_MAX;
  p->off = p->prev_off = r->std_off;
  p->has_prev = 0;
  if (!r->has_dst) return;
  int64_t y;
  unsigned m, d;
  civil_from_days(floordiv(t + r->std_off, 86400), &y, &m, &d);
  for (int span = 1; span <= 3; span += 2) {
    struct {
      int64_t at;
      int32_t off;
    } tr[14], x;
    int k = 0, i, j;
    for (int64_t yy = y - span; yy <= y + span; yy++) {
      tr[k].at = rule_instant(&r->start, yy, r->std_off);
      tr[k++].off = r->dst_off;
      tr[k].at = rule_instant(&r->end, yy, r->dst_off);
      tr[k++].off = r->std_off;
    }
    for (i = 1; i < k; i++) { // insertion sort, stable
      x = tr[i];
      for (j = i; j > 0 && tr[j - 1].at > x.at; j--) tr[j] = tr[j - 1];
      tr[j] = x;
    }
    for (i = k - 1; i >= 0 && tr[i].at > t; i--) {}
    if (i < 0 || i == k - 1) continue; // not bracketed: look wider
    p->start = tr[i].at;
    p->end = tr[i + 1].at;
    p->off = tr[i].off;
    p->prev_off = i > 0 ? tr[i - 1].off : (p->off == r->dst_off ? r->std_off : r->dst_off);
    p->has_prev = 1;
    return;
  }
  p->off = r->std_off; // a rule this odd is not bracketed by 3 years: stay standard
}

static void zone_table_period(const zone *z, int64_t t, period *p) {
  size_t lo = 0, hi = z->n; // count of transitions <= t
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (z->at[mid] <= t)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0) {
    p->start = INT64_MIN;
    p->off = p->prev_off = z->off0;
    p->has_prev = 0;
  } else {
    p->start = z->at[lo - 1];
    p->off = z->off[lo - 1];
    p->prev_off = lo >= 2 ? z->off[lo - 2] : z->off0;
    p->has_prev = 1;
  }
  p->end = lo < z->n ? z->at[lo] : z->has_rule ? z->rule_from : INT64_MAX;
}

// The period of constant UTC offset that holds instant t.
static void zone_period(const zone *z, int64_t t, period *p) {
  if (!z->has_rule || t < z->rule_from) {
    zone_table_period(z, t, p);
    return;
  }
  rule_period(&z->rule, t, p);
  if (p->start < z->rule_from && z->rule_from != INT64_MIN) {
    period before;
    zone_table_period(z, z->rule_from - 1, &before);
    p->start = z->rule_from;
    p->prev_off = before.off;
    p->has_prev = 1;
  }
}

// POSIX TZ strings (the TZif footer), e.g. "CET-1CEST,M3.5.0,M10.5.0/3".
static int tz_name(const char **pp) {
  const char *p = *pp, *s;
  if (*p == '<') {
    for (s = ++p; is_alpha((unsigned char)*p) || is_digit((unsigned char)*p) || *p == '+' ||
                  *p == '-';
         p++) {}
    if (*p != '>' || p - s < 1) return -1;
    p++;
  } else {
    for (s = p; is_alpha((unsigned char)*p); p++) {}
    if (p - s < 3) return -1;
  }
  *pp = p;
  return 0;
}

static int tz_hms(const char **pp, int maxh, int32_t *v) {
  const char *p = *pp;
  int sign = 1, h = 0, m = 0, s = 0, k;
  if (*p == '+' || *p == '-') sign = *p++ == '-' ? -1 : 1;
  for (k = 0; is_digit((unsigned char)*p) && k < 3; k++) h = h * 10 + (*p++ - '0');
  if (!k || h > maxh) return -1;
  if (*p == ':') {
    p++;
    if (!is_digit((unsigned char)p[0]) || !is_digit((unsigned char)p[1])) return -1;
    m = (p[0] - '0') * 10 + (p[1] - '0');
    p += 2;
    if (*p == ':') {
      p++;
      if (!is_digit((unsigned char)p[0]) || !is_digit((unsigned char)p[1])) return -1;
      s = (p[0] - '0') * 10 + (p[1] - '0');
      p += 2;
    }
    if (m > 59 || s > 59) return -1;
  }
  *v = sign * (h * 3600 + m * 60 + s);
  *pp = p;
  return 0;
}

static int tz_num(const char **pp, int lo, int hi, int *v) {
  const char *p = *pp;
  int x = 0, k;
  for (k = 0; is_digit((unsigned char)*p) && k < 3; k++) x = x * 10 + (*p++ - '0');
  if (!k || x < lo || x > hi) return -1;
  *v = x;
  *pp = p;
  return 0;
}

static int tz_date(const char **pp, rule_date *r) {
  const char *p = *pp;
  memset(r, 0, sizeof *r);
  if (*p == 'M') {
    p++;
    r->kind = 'M';
    if (tz_num(&p, 1, 12, &r->m) || *p++ != '.' || tz_num(&p, 1, 5, &r->w) || *p++ != '.' ||
        tz_num(&p, 0, 6, &r->d))
      return -1;
  } else if (*p == 'J') {
    p++;
    r->kind = 'J';
    if (tz_num(&p, 1, 365, &r->n)) return -1;
  } else {
    r->kind = 'N';
    if (tz_num(&p, 0, 365, &r->n)) return -1;
  }
  r->time = 7200;
  if (*p == '/') {
    p++;
    if (tz_hms(&p, 167, &r->time)) return -1;
  }
  *pp = p;
  return 0;
}

static int parse_posix_tz(const char *p, posix_rule *r) {
  int32_t v;
  memset(r, 0, sizeof *r);
  if (tz_name(&p) || tz_hms(&p, 24, &v)) return -1;
  r->std_off = r->dst_off = -v;
  if (!*p) return 0;
  if (tz_name(&p)) return -1;
  r->dst_off = r->std_off + 3600;
  if (*p && *p != ',') {
    if (tz_hms(&p, 24, &v)) return -1;
    r->dst_off = -v;
  }
  if (*p++ != ',' || tz_date(&p, &r->start) || *p++ != ',' || tz_date(&p, &r->end) || *p)
    return -1;
  r->has_dst = r->dst_off != r->std_off;
  return 0;
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static int64_t be64(const unsigned char *p) {
  return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

typedef struct {
  uint64_t isut, isstd, leap, time, type, chars;
} tzif_counts;

static int tzif_header(const unsigned char *p, size_t avail, tzif_counts *c) {
  if (avail < 44 || memcmp(p, "TZif", 4)) return -1;
  c->isut = be32(p + 20);
  c->isstd = be32(p + 24);
  c->leap = be32(p + 28);
  c->time = be32(p + 32);
  c->type = be32(p + 36);
  c->chars = be32(p + 40);
  return 0;
}

static uint64_t tzif_block(const tzif_counts *c, int tsize) {
  return c->time * (uint64_t)tsize + c->time + c->type * 6 + c->chars +
         c->leap * (uint64_t)(tsize + 4) + c->isstd + c->isut;
}

// Parses a TZif file (RFC 8536) into z (allocated). Returns NULL with err.
static zone *parse_tzif(const char *name, const unsigned char *buf, size_t len, char *err,
                        size_t errsz) {
  tzif_counts c;
  const unsigned char *p = buf, *end = buf + len;
  int tsize = 4;
  char q[QUOTE_SZ];
  quote(q, sizeof q, name, strlen(name));
  if (tzif_header(p, len, &c)) {
    seterr(err, errsz, "unknown time zone %s (not a TZif zone file)", q);
    return NULL;
  }
  if (buf[4] >= '2') { // skip the 32-bit data to the 64-bit header
    uint64_t skip = 44 + tzif_block(&c, 4);
    if (skip > len || tzif_header(p + skip, len - skip, &c)) goto corrupt;
    p += skip;
    tsize = 8;
  }
  if (c.leap) {
    seterr(err, errsz, "time zone %s counts leap seconds, which sluice does not support", q);
    return NULL;
  }
  if (c.type < 1 || c.type > 256 || c.time > 1000000 ||
      (uint64_t)(end - p) < 44 + tzif_block(&c, tsize))
    goto corrupt;
  p += 44;
  const unsigned char *times = p, *idx = p + c.time * tsize, *types = idx + c.time;
  int32_t offs[256];
  for (uint64_t i = 0; i < c.type; i++) {
    offs[i] = (int32_t)be32(types + 6 * i);
    if (offs[i] < -26 * 3600 || offs[i] > 26 * 3600) goto corrupt;
  }
  zone *z = calloc(1, sizeof *z + strlen(name) + 1);
  if (!z) goto nomem;
  strcpy(z->name, name);
  z->at = malloc((c.time + 1) * sizeof *z->at);
  z->off = malloc((c.time + 1) * sizeof *z->off);
  if (!z->at || !z->off) goto nomem_z;
  z->off0 = offs[0];
  z->rule_from = INT64_MIN;
  int32_t prev = z->off0;
  for (uint64_t i = 0; i < c.time; i++) {
    int64_t t = tsize == 8 ? be64(times + 8 * i) : (int32_t)be32(times + 4 * i);
    if (idx[i] >= c.type || (i && t <= z->rule_from)) goto corrupt_z;
    z->rule_from = t;
    if (offs[idx[i]] != prev) {
      z->at[z->n] = t;
      z->off[z->n++] = prev = offs[idx[i]];
    }
  }
  if (tsize == 8) { // footer: "\n" POSIX-TZ "\n"
    p += tzif_block(&c, 8);
    const unsigned char *nl = p < end && *p == '\n' ? memchr(p + 1, '\n', (size_t)(end - p - 1)) : NULL;
    if (!nl) goto corrupt_z;
    if (nl > p + 1) {
      char tzs[128];
      size_t n = (size_t)(nl - p - 1);
      int ok = n < sizeof tzs && !memchr(p + 1, 0, n);
      if (ok) {
        memcpy(tzs, p + 1, n);
        tzs[n] = 0;
        ok = parse_posix_tz(tzs, &z->rule) == 0;
      }
      if (!ok) {
        char q2[QUOTE_SZ];
        seterr(err, errsz, "time zone %s: unsupported TZ rule %s", q,
               quote(q2, sizeof q2, (const char *)p + 1, (size_t)(nl - p - 1)));
        goto fail_z;
      }
      z->has_rule = 1;
    }
  }
  return z;
corrupt_z:
  seterr(err, errsz, "time zone %s: corrupt TZif file", q);
fail_z:
  free(z->at);
  free(z->off);
  free(z);
  return NULL;
nomem_z:
  free(z->at);
  free(z->off);
  free(z);
nomem:
  seterr(err, errsz, "time zone %s: out of memory", q);
  return NULL;
corrupt:
  seterr(err, errsz, "time zone %s: corrupt TZif file", q);
  return NULL;
}

static zone *fixed_zone(const char *name, int32_t off) {
  zone *z = calloc(1, sizeof *z + strlen(name) + 1);
  if (!z) return NULL;
  strcpy(z->name, name);
  z->off0 = off;
  z->rule_from = INT64_MIN;
  return z;
}

static zone *zone_load(const char *name, char *err, size_t errsz) {
  char q[QUOTE_SZ];
  quote(q, sizeof q, name, strlen(name));
  if (name[0] == '+' || name[0] == '-') { // a fixed offset: +HH:MM, +HHMM, +HH
    const char *p = name + 1;
    int h = 0, m = 0, ok = is_digit((unsigned char)p[0]) && is_digit((unsigned char)p[1]);
    if (ok) {
      h = (p[0] - '0') * 10 + (p[1] - '0');
      p += 2;
      if (*p == ':') p++;
      if (*p) {
        ok = is_digit((unsigned char)p[0]) && is_digit((unsigned char)p[1]) && !p[2] &&
             (p[-1] == ':' || p == name + 3);
        if (ok) m = (p[0] - '0') * 10 + (p[1] - '0');
      } else {
        ok = p == name + 3;
      }
    }
    if (!ok || h > 23 || m > 59) {
      seterr(err, errsz, "unknown time zone %s (a fixed offset is written +HH:MM or -HH:MM)", q);
      return NULL;
    }
    zone *z = fixed_zone(name, (name[0] == '-' ? -1 : 1) * (h * 3600 + m * 60));
    if (!z) seterr(err, errsz, "time zone %s: out of memory", q);
    return z;
  }
  const char *dir = getenv("TZDIR");
  if (!dir || !*dir) dir = "/usr/share/zoneinfo";
  // IANA names: letters, digits, '_', '-', '+', '.', '/' between them; no "." or "..".
  size_t n = strlen(name);
  int ok = n > 0 && n < 200 && name[0] != '/' && name[n - 1] != '/';
  for (size_t i = 0; ok && i < n; i++) {
    char ch = name[i];
    if (!(is_alpha((unsigned char)ch) || is_digit((unsigned char)ch) || ch == '_' || ch == '-' ||
          ch == '+' || ch == '.' || ch == '/'))
      ok = 0;
    if (ch == '/' && name[i + 1] == '/') ok = 0;
    if (ch == '.' && (i == 0 || name[i - 1] == '/')) ok = 0; // no hidden files, no ..
  }
  if (!ok) {
    seterr(err, errsz, "unknown time zone %s (not a valid zone name)", q);
    return NULL;
  }
  char path[4096];
  if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
    seterr(err, errsz, "unknown time zone %s (path too long)", q);
    return NULL;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
    int e = errno;
    if (fd >= 0) close(fd);
    if (fd < 0 && e != ENOENT && e != ENOTDIR) {
      char eb[128];
      seterr(err, errsz, "time zone %s: cannot read %s: %s", q, path, strerror_r(e, eb, sizeof eb));
    } else {
      seterr(err, errsz, "unknown time zone %s (not in %s)", q, dir);
    }
    return NULL;
  }
  if (st.st_size > (4 << 20)) {
    close(fd);
    seterr(err, errsz, "unknown time zone %s (not a TZif zone file)", q);
    return NULL;
  }
  size_t size = (size_t)st.st_size, got = 0;
  unsigned char *buf = malloc(size + 1);
  if (!buf) {
    close(fd);
    seterr(err, errsz, "time zone %s: out of memory", q);
    return NULL;
  }
  while (got < size) {
    ssize_t r = read(fd, buf + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  zone *z = parse_tzif(name, buf, got, err, errsz);
  free(buf);
  return z;
}

#define ZBUCKETS 256
static pthread_mutex_t zone_mu = PTHREAD_MUTEX_INITIALIZER;
static zone *zone_tab[ZBUCKETS];

// The zone named tz (loaded once, kept for the life of the process), or NULL
// for UTC, or (zone *)-1 with err.
static const zone *zone_get(const char *tz, char *err, size_t errsz) {
  if (!tz || !strcmp(tz, "UTC")) return NULL;
  uint32_t h = 2166136261u;
  for (const char *p = tz; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
  pthread_mutex_lock(&zone_mu);
  zone *z;
  for (z = zone_tab[h % ZBUCKETS]; z; z = z->next)
    if (z->hash == h && !strcmp(z->name, tz)) break;
  if (!z) {
    z = zone_load(tz, err, errsz);
    if (z) {
      z->hash = h;
      z->next = zone_tab[h % ZBUCKETS];
      zone_tab[h % ZBUCKETS] = z;
    }
  }
  pthread_mutex_unlock(&zone_mu);
  return z ? z : (const zone *)-1;
}

int cron_tz_check(const char *tz, char *err, size_t errsz) {
  return zone_get(tz, err, errsz) == (const zone *)-1 ? -1 : 0;
}

int cron_tz_offset(const char *tz, int64_t t, int32_t *offset, char *err, size_t errsz) {
  const zone *z = zone_get(tz, err, errsz);
  if (z == (const zone *)-1) return -1;
  if (!z) {
    *offset = 0;
    return 0;
  }
  period p;
  zone_period(z, t, &p);
  *offset = p.off;
  return 0;
}

// ---------------------------------------------------------------- next fire

// The days of month m of year y that match (bits 1-31); first = its day 1.
static uint32_t day_mask(const cron_expr *e, int64_t y, unsigned m, int64_t first) {
  unsigned len = month_len(y, m);
  uint64_t dow = e->dow & DOW_MASK;
  uint64_t rep = dow | dow << 7 | dow << 14 | dow << 21 | dow << 28 | dow << 35;
  // bit d of dowm: weekday (weekday(first) + d - 1) % 7 is in dow
  uint32_t dowm = (uint32_t)(((rep << 1) >> weekday(first)) & DOM_MASK);
  uint32_t dom = e->dom & DOM_MASK;
  uint32_t r = (e->flags & (CRON_DOM_STAR | CRON_DOW_STAR)) ? (dom & dowm) : (dom | dowm);
  return r & (uint32_t)(((2ull << len) - 1) & DOM_MASK);
}

// The first local time L (seconds, minute-aligned) with lo < L < hi that
// matches e, read as a UTC civil time. Returns 1 and *out, or 0.
static int search_local(const cron_expr *e, int64_t lo, int64_t hi, int64_t *out) {
  int64_t t = floordiv(lo, 60) * 60 + 60;
  if (t >= hi) return 0;
  int64_t days = floordiv(t, 86400), y;
  int secs = (int)(t - days * 86400);
  unsigned m, d, hh = (unsigned)secs / 3600, mm = (unsigned)secs % 3600 / 60;
  uint64_t minutes = e->minute & MIN_MASK, months = e->month & MON_MASK;
  uint32_t hours = e->hour & HOUR_MASK;
  civil_from_days(days, &y, &m, &d);
  for (;;) {
    if (!(months >> m & 1)) { // to the first day of the next matching month
      uint64_t later = months & (~0ull << (m + 1));
      if (later) {
        m = (unsigned)ctz64(later);
      } else {
        y++;
        m = (unsigned)ctz64(months);
      }
      d = 1;
      hh = mm = 0;
    }
    int64_t first = days_from_civil(y, m, 1);
    if ((first + d - 1) * 86400 + hh * 3600 + mm * 60 >= hi) return 0;
    uint32_t cand = d <= 31 ? day_mask(e, y, m, first) & (~0u << d) : 0;
    if (cand) {
      unsigned nd = (unsigned)__builtin_ctz(cand);
      if (nd != d) {
        d = nd;
        hh = mm = 0;
      }
      uint32_t hc = hours & (~0u << hh);
      while (hc) {
        unsigned h = (unsigned)__builtin_ctz(hc);
        if (h != hh) mm = 0;
        uint64_t mc = minutes & (~0ull << mm);
        if (mc) {
          int64_t L = (first + d - 1) * 86400 + h * 3600 + (unsigned)ctz64(mc) * 60;
          if (L >= hi) return 0;
          *out = L;
          return 1;
        }
        hc &= hc - 1;
        hh = h + 1;
        mm = 0;
      }
      d++; // no hour left today
      hh = mm = 0;
      if (d <= month_len(y, m)) continue;
    }
    if (++m > 12) { // no day left this month
      m = 1;
      y++;
    }
    d = 1;
    hh = mm = 0;
  }
}

// 1 if no day, hour or minute can ever match: answered without a search.
static int never_fires(const cron_expr *e) {
  uint32_t months = e->month & MON_MASK, dom = e->dom & DOM_MASK, possible;
  int dow = e->dow & DOW_MASK;
  if (!(e->minute & MIN_MASK) || !(e->hour & HOUR_MASK) || !months) return 1;
  if (!(e->flags & (CRON_DOM_STAR | CRON_DOW_STAR))) { // either day field
    if (dow) return 0;
  } else if (!dow) {
    return 1;
  }
  if (months & 0x15AA) // Jan Mar May Jul Aug Oct Dec
    possible = DOM_MASK;
  else if (months & 0xA50) // Apr Jun Sep Nov
    possible = 0x7FFFFFFE;
  else
    possible = 0x3FFFFFFE; // Feb, 29 days in leap years
  return !(dom & possible);
}

int cron_next(const cron_expr *e, int64_t after, const char *tz, int64_t *out, char *err,
              size_t errsz) {
  const zone *z = zone_get(tz, err, errsz);
  int64_t L;
  if (z == (const zone *)-1) return -1;
  if (never_fires(e) || after >= T_MAX) return 1;
  if (after < T_MIN - 1) after = T_MIN - 1;
  int64_t limit = after + (int64_t)CRON_SEARCH_YEARS * 366 * 86400; // fires < limit
  if (limit > T_MAX + 1) limit = T_MAX + 1;
  if (!z) {
    if (!search_local(e, after, limit, &L)) return 1;
    *out = L;
    return 0;
  }
  int fixed = !(e->flags & (CRON_MIN_STAR | CRON_HOUR_STAR));
  int64_t t = after; // find a fire > t
  for (int guard = 0; guard < 100000; guard++) {
    period p;
    zone_period(z, t + 1, &p);
    int64_t lo = t + p.off, end = p.end < limit ? p.end : limit;
    // fixed-time: a local time repeated after a fall-back fired the first time
    if (fixed && p.has_prev && p.prev_off > p.off && p.start + p.prev_off - 1 > lo)
      lo = p.start + p.prev_off - 1;
    if (search_local(e, lo, end + p.off, &L)) {
      *out = L - p.off;
      return 0;
    }
    if (p.end >= limit) return 1;
    if (fixed) { // a fixed time skipped by a spring-forward gap fires at its end
      period q;
      zone_period(z, p.end, &q);
      if (q.off > p.off && search_local(e, p.end + p.off - 1, p.end + q.off, &L)) {
        *out = p.end;
        return 0;
      }
    }
    t = p.end - 1;
  }
  return 1;
}

// ------------------------------------------------------------------ ISO 8601

static void put_digits(char *p, int64_t v, int n) {
  for (int i = n - 1; i >= 0; i--, v /= 10) p[i] = (char)('0' + v % 10);
}

void cron_format_utc(int64_t t, char buf[21]) {
  const int64_t lo = -62167219200LL; // 0000-01-01T00:00:00Z
  if (t < lo) t = lo;
  if (t > T_MAX) t = T_MAX;
  int64_t days = floordiv(t, 86400), y;
  int64_t secs = t - days * 86400;
  unsigned m, d;
  civil_from_days(days, &y, &m, &d);
  memcpy(buf, "0000-00-00T00:00:00Z", 21);
  put_digits(buf, y, 4);
  put_digits(buf + 5, m, 2);
  put_digits(buf + 8, d, 2);
  put_digits(buf + 11, secs / 3600, 2);
  put_digits(buf + 14, secs % 3600 / 60, 2);
  put_digits(buf + 17, secs % 60, 2);
}

static int digits(const char **pp, int n, int *v) {
  const char *p = *pp;
  int x = 0;
  for (int i = 0; i < n; i++) {
    if (!is_digit((unsigned char)p[i])) return -1;
    x = x * 10 + (p[i] - '0');
  }
  *v = x;
  *pp = p + n;
  return 0;
}

int cron_parse_iso8601(const char *s, int64_t *out, char *err, size_t errsz) {
  const char *p = s ? s : "";
  char q[QUOTE_SZ];
  int Y, M, D, h = 0, mi = 0, sec = 0, oh = 0, om = 0, sign = 0;
  quote(q, sizeof q, p, strlen(p));
  if (digits(&p, 4, &Y) || *p++ != '-' || digits(&p, 2, &M) || *p++ != '-' ||
      digits(&p, 2, &D))
    goto bad;
  if (*p == 'T' || *p == 't' || *p == ' ') {
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi)) goto bad;
    if (*p == ':') {
      p++;
      if (digits(&p, 2, &sec)) goto bad;
      if (*p == '.' || *p == ',') {
        p++;
        if (!is_digit((unsigned char)*p)) goto bad;
        while (is_digit((unsigned char)*p)) p++;
      }
    }
    if (*p == 'Z' || *p == 'z') {
      p++;
    } else if (*p == '+' || *p == '-') {
      sign = *p++ == '-' ? -1 : 1;
      if (digits(&p, 2, &oh)) goto bad;
      if (*p == ':') p++;
      if (is_digit((unsigned char)*p) && digits(&p, 2, &om)) goto bad;
    }
  }
  if (*p) goto bad;
  const char *what = NULL;
  int v = 0, lo = 0, hi = 0;
  if (M < 1 || M > 12)
    what = "month", v = M, lo = 1, hi = 12;
  else if (D < 1 || D > (int)month_len(Y, (unsigned)M))
    what = "day", v = D, lo = 1, hi = (int)month_len(Y, (unsigned)M);
  else if (h > 23)
    what = "hour", v = h, hi = 23;
  else if (mi > 59)
    what = "minute", v = mi, hi = 59;
  else if (sec > 59)
    what = "second", v = sec, hi = 59;
  else if (oh > 23)
    what = "UTC offset hour", v = oh, hi = 23;
  else if (om > 59)
    what = "UTC offset minute", v = om, hi = 59;
  if (what) {
    seterr(err, errsz, "bad ISO 8601 time %s: %s %d is out of range %d-%d", q, what, v, lo, hi);
    return -1;
  }
  *out = days_from_civil(Y, (unsigned)M, (unsigned)D) * 86400 + h * 3600 + mi * 60 + sec -
         sign * (oh * 3600 + om * 60);
  return 0;
bad:
  seterr(err, errsz, "bad ISO 8601 time %s (expected e.g. 2026-01-05T09:00:00Z)", q);
  return -1;
}

// ----------------------------------------------------------------------- CLI

static void cli_usage(FILE *f) {
  fputs("usage: sluice cron next \"EXPR\" [--from ISO8601] [-n N] [--tz ZONE]\n"
        "\n"
        "Prints the next N fire times of a cron expression in UTC, one per line,\n"
        "strictly after --from.\n"
        "\n"
        "  EXPR       5-field Vixie cron: minute hour day-of-month month day-of-week\n"
        "             (\"0 */6 * * *\", \"30 9 * * mon-fri\"), or @yearly @monthly @weekly\n"
        "             @daily @hourly\n"
        "  --from T   start instant, ISO 8601: 2026-01-05T09:00:00Z, 2026-01-05T09:00+02:00,\n"
        "             2026-01-05 (midnight UTC); default: now\n"
        "  -n N       how many fire times, 1-100000 (default 5)\n"
        "  --tz ZONE  read EXPR in an IANA time zone (Europe/Berlin) or a fixed offset\n"
        "             (+05:30); default UTC\n"
        "\n"
        "Exit status: 0; 1 when the expression never fires or stdout cannot be\n"
        "written; 2 bad usage or input.\n",
        f);
}

static int is_help(const char *a) {
  return !strcmp(a, "--help") || !strcmp(a, "-h") || !strcmp(a, "help");
}

// Matches option `name` in argv[*i] as "name VALUE" or "name=VALUE" (and
// "-nVALUE" for short names). Returns 1 matched, 0 not, -1 missing value.
static int cli_opt(const char *name, int argc, char **argv, int *i, const char **val) {
  const char *a = argv[*i];
  size_t n = strlen(name);
  if (strncmp(a, name, n)) return 0;
  if (a[n] == '=') {
    *val = a + n + 1;
    return 1;
  }
  if (a[n] && name[1] != '-') { // -n5
    *val = a + n;
    return 1;
  }
  if (a[n]) return 0;
  if (*i + 1 >= argc) return -1;
  *val = argv[++*i];
  return 1;
}

// The end of a command that printed: 0, or 1 with a message when stdout did
// not take it all (a full disk, a closed pipe).
static int stdout_done(void) {
  if (fflush(stdout) == 0 && !ferror(stdout)) return 0;
  fprintf(stderr, "sluice: cannot write the result to stdout: %s\n", strerror(errno));
  return 1;
}

int cron_cli(int argc, char **argv) {
  const char *from = NULL, *count = NULL, *tz = NULL;
  char err[CRON_ERRSZ];
  if (argc < 2) {
    cli_usage(stderr);
    return 2;
  }
  if (is_help(argv[1])) {
    cli_usage(stdout);
    return stdout_done();
  }
  if (strcmp(argv[1], "next")) {
    char q[QUOTE_SZ];
    fprintf(stderr, "sluice cron: unknown command %s (expected next)\n",
            quote(q, sizeof q, argv[1], strlen(argv[1])));
    cli_usage(stderr);
    return 2;
  }
  size_t exprlen = 1;
  for (int i = 2; i < argc; i++) exprlen += strlen(argv[i]) + 1;
  char *expr = calloc(1, exprlen);
  if (!expr) {
    fprintf(stderr, "sluice cron: out of memory\n");
    return 2;
  }
  int npos = 0, rest = 0, rc = 2;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *opt = NULL;
    if (!rest && a[0] == '-' && a[1]) {
      int r = 0;
      if (!strcmp(a, "--")) {
        rest = 1;
        continue;
      }
      if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
        cli_usage(stdout);
        rc = 0;
        goto out;
      }
      if ((r = cli_opt("--from", argc, argv, &i, &from)) != 0)
        opt = "--from";
      else if ((r = cli_opt("-n", argc, argv, &i, &count)) != 0)
        opt = "-n";
      else if ((r = cli_opt("--tz", argc, argv, &i, &tz)) != 0)
        opt = "--tz";
      if (r < 0) {
        fprintf(stderr, "sluice cron: %s needs a value\n", opt);
        goto out;
      }
      if (!opt) {
        char q[QUOTE_SZ];
        fprintf(stderr, "sluice cron: unknown option %s\n", quote(q, sizeof q, a, strlen(a)));
        cli_usage(stderr);
        goto out;
      }
      continue;
    }
    if (npos++) strcat(expr, " "); // unquoted fields are joined: cron next 0 9 '*' '*' 1
    strcat(expr, a);
  }
  if (!npos) {
    fprintf(stderr, "sluice cron: next needs a cron expression\n");
    cli_usage(stderr);
    goto out;
  }
  long n = 5;
  if (count) {
    char *endp;
    errno = 0;
    n = strtol(count, &endp, 10);
    if (!is_digit((unsigned char)count[0]) || *endp || errno || n < 1 || n > 100000) {
      char q[QUOTE_SZ];
      fprintf(stderr, "sluice cron: -n: %s is not a count from 1 to 100000\n",
              quote(q, sizeof q, count, strlen(count)));
      goto out;
    }
  }
  int64_t t;
  if (from) {
    if (cron_parse_iso8601(from, &t, err, sizeof err)) {
      fprintf(stderr, "sluice cron: --from: %s\n", err);
      goto out;
    }
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    t = (int64_t)ts.tv_sec;
  }
  cron_expr e;
  if (cron_parse(&e, expr, err, sizeof err)) {
    fprintf(stderr, "sluice cron: %s\n", err);
    goto out;
  }
  if (tz && cron_tz_check(tz, err, sizeof err)) {
    fprintf(stderr, "sluice cron: --tz: %s\n", err);
    goto out;
  }
  for (long k = 0; k < n; k++) {
    char line[21];
    int64_t after = t;
    int r = cron_next(&e, t, tz, &t, err, sizeof err);
    if (r == 1) {
      /* nothing printed is no answer: say why, and fail when nothing came */
      char q[QUOTE_SZ];
      cron_format_utc(after, line);
      fprintf(stderr, "sluice cron: %s %s after %s%s%s (no date before year 10000 matches it)\n",
              quote(q, sizeof q, expr, strlen(expr)), k ? "fires no more" : "never fires", line,
              tz ? " in " : "", tz ? tz : "");
      if (!k) rc = 1;
      if (!k) goto out;
      break;
    }
    if (r < 0) {
      fprintf(stderr, "sluice cron: %s\n", err);
      goto out;
    }
    cron_format_utc(t, line);
    puts(line);
  }
  rc = stdout_done();
out:
  free(expr);
  return rc;
}
