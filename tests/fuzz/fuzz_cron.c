// fuzz_cron.c: libFuzzer target for the cron engine (host/cron.c). Input:
// 8 bytes of start instant, 1 byte choosing a time zone, then the text,
// which is fed to cron_parse (and cron_parse_iso8601). Beyond "no crash, no
// hang, no sanitizer report" it checks properties: parse(format(e)) == e;
// cron_next is strictly after its start, increasing when chained, and in UTC
// matches the expression (by glibc's gmtime_r) with no match in between.
// Built and run by tests/fuzz/run.sh.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cron.h"

#define REQUIRE(c)                                                           \
  do {                                                                       \
    if (!(c)) {                                                              \
      fprintf(stderr, "fuzz_cron: property failed: %s (line %d)\n", #c, __LINE__); \
      abort();                                                               \
    }                                                                        \
  } while (0)

static const char *const ZONES[] = {
    NULL, "UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Pacific/Apia",
    "Africa/Casablanca", "Antarctica/Troll", "+05:45", "-09:30", "Nowhere/Atlantis",
};

static int matches(const cron_expr *e, int64_t t) {
  time_t tt = (time_t)t;
  struct tm tm;
  if (!gmtime_r(&tt, &tm)) return 0;
  if (!(e->minute >> tm.tm_min & 1) || !(e->hour >> tm.tm_hour & 1) ||
      !(e->month >> (tm.tm_mon + 1) & 1))
    return 0;
  int dom = e->dom >> tm.tm_mday & 1, dow = e->dow >> tm.tm_wday & 1;
  return (e->flags & (CRON_DOM_STAR | CRON_DOW_STAR)) ? dom && dow : dom || dow;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int64_t after = 0;
  unsigned zsel = 0;
  if (size >= 9) {
    uint64_t u = 0;
    for (int i = 0; i < 8; i++) u = u << 8 | data[i];
    zsel = data[8];
    data += 9;
    size -= 9;
    // mostly 1900-2200, sometimes any int64 at all
    if (zsel & 0x80)
      after = (int64_t)u;
    else
      after = -2208988800LL + (int64_t)(u % (300ull * 366 * 86400));
  }
  const char *tz = ZONES[(zsel & 0x7F) % (sizeof ZONES / sizeof ZONES[0])];
  char *text = malloc(size + 1);
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = 0;

  char err[CRON_ERRSZ];
  int64_t t;
  err[0] = 1;
  if (cron_parse_iso8601(text, &t, err, sizeof err) == 0) {
    char iso[21];
    int64_t back;
    cron_format_utc(t, iso);
    if (t >= -62167219200LL && t <= 253402300799LL) {
      REQUIRE(cron_parse_iso8601(iso, &back, NULL, 0) == 0 && back == t);
    }
  } else {
    REQUIRE(memchr(err, 0, sizeof err) && err[0]);
  }

  cron_expr e, e2;
  err[0] = 1;
  if (cron_parse(&e, text, err, sizeof err)) {
    REQUIRE(memchr(err, 0, sizeof err) && err[0]);
    free(text);
    return 0;
  }
  free(text);

  char f1[CRON_FORMAT_MAX], f2[CRON_FORMAT_MAX];
  int n1 = cron_format(&e, f1, sizeof f1);
  REQUIRE(n1 > 0 && n1 < CRON_FORMAT_MAX && (size_t)n1 == strlen(f1));
  REQUIRE(cron_parse(&e2, f1, NULL, 0) == 0);
  REQUIRE(memcmp(&e, &e2, sizeof e) == 0);
  cron_format(&e2, f2, sizeof f2);
  REQUIRE(strcmp(f1, f2) == 0);

  int64_t out = 0, prev = after;
  for (int k = 0; k < 3; k++) {
    int r = cron_next(&e, prev, tz, &out, err, sizeof err);
    REQUIRE(r >= -1 && r <= 1);
    if (r == -1) {
      REQUIRE(tz && strstr(err, tz));
      break;
    }
    if (r == 1) {
      // none: at least nothing in the next two days (UTC, where we can tell)
      if ((!tz || !strcmp(tz, "UTC")) && prev > -62135596800LL && prev < 253402000000LL)
        for (int64_t m = (prev / 60 + 1) * 60; m < prev + 2 * 86400; m += 60)
          REQUIRE(!matches(&e, m));
      break;
    }
    REQUIRE(out > prev);
    if (!tz || !strcmp(tz, "UTC")) {
      REQUIRE(out % 60 == 0);
      REQUIRE(matches(&e, out));
      if (out - prev <= 2 * 86400 && prev > -62135596800LL)
        for (int64_t m = (prev >= 0 ? prev / 60 + 1 : (prev - 59) / 60 + 1) * 60; m < out; m += 60)
          REQUIRE(!matches(&e, m));
    }
    prev = out;
  }
  return 0;
}
