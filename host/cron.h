// cron.h: the cron engine behind sluice's schedules (every.cron and the
// canonical form of every other `every` spec): 5-field Vixie cron parsed to
// bitmasks, the next fire time after an instant in UTC or in an IANA time
// zone, canonical text for explainable schedules, ISO 8601 helpers and the
// `sluice cron` command. Pure C: no Lua, no libuv.
//
// Syntax (cron_parse), Vixie cron with the usual extensions:
//   minute hour day-of-month month day-of-week, separated by spaces or tabs
//   (any ASCII white space). Each field is a comma list of items:
//     *          every value            N       one value
//     N-M        a range                 */S     every S-th value from the first
//     N-M/S      every S-th value of N-M N/S     N to the field's end, step S
//   ranges   minute 0-59, hour 0-23, day-of-month 1-31, month 1-12,
//            day-of-week 0-7 (0 and 7 are both Sunday; `5-7` is Fri-Sun).
//            A range runs from low to high: one written backwards (`5-1`,
//            `22-2`, `fri-sun`, which is 5-0) is an error whose message gives
//            the working form (`5-7,1`, `22-23,0-2`, `5-7`), as Vixie cron
//            and the common cron libraries refuse it too.
//   names    month jan..dec, day-of-week sun..sat, the 3-letter names only
//            (any case), usable wherever a number is (`mon-fri`, `jan-mar/2`).
//            A full name (`monday`, `january`) is an error naming the
//            3-letter one. every.monday and the other `every` day names are
//            the DSL's (lua/every.lua), which writes cron numbers.
//   steps    1 up to the number of values of the field (60, 24, 31, 12, 7);
//            step 0 is an error, and so is `*/90` in the minute field.
//   macros   @yearly = @annually = `0 0 1 1 *`, @monthly = `0 0 1 * *`,
//            @weekly = `0 0 * * 0`, @daily = @midnight = `0 0 * * *`,
//            @hourly = `0 * * * *` (any case). @reboot is rejected: it names
//            an event, not a time.
//
// Day rule (Vixie): if both day-of-month and day-of-week are restricted, a day
// matches when EITHER matches (`0 0 13 * 5`: every 13th and every Friday).
// A field counts as unrestricted when its text starts with '*', exactly as
// Vixie cron decides it, so `*` AND `*/2` both count as unrestricted: then a
// day must match both fields (`0 0 */2 * 1` is odd days that are Mondays).
//
// Time zones (cron_next, cron_tz_*): tz NULL or "UTC" is UTC; "+HH:MM" or
// "-HH:MM" is a fixed offset; anything else is an IANA name read from the
// system tzdata ($TZDIR, default /usr/share/zoneinfo), parsed here (TZif
// version 1-4 and the POSIX TZ footer for times after the last transition,
// with Mm.w.d, Jn and n rules), cached by name for the life of the process.
// No TZ environment variable, no tzset, no global state but the cache. Zones
// with leap seconds (right/...) are refused.
//
// Daylight saving time, as Vixie cron does it. An expression is a "wildcard"
// one when its minute or hour field starts with '*' (`*/15 * * * *`,
// `0 * * * *`, `* 2 * * *`), else "fixed-time" (`30 2 * * *`, `0 9,17 * * 1-5`).
//   - Spring forward (local times skipped): a fixed-time expression whose
//     local time falls in the gap fires once, at the first instant after the
//     gap (Berlin 2026-03-29 `30 2 * * *` fires at 03:00 CEST = 01:00Z); a
//     wildcard expression simply has no fires inside the gap (an hourly job
//     keeps firing hourly in real time).
//   - Fall back (local times repeated): a fixed-time expression fires once,
//     at the first occurrence (Berlin 2026-10-25 `30 2 * * *` fires at 02:30
//     CEST = 00:30Z only); a wildcard expression fires on both passes, so
//     `*/15 * * * *` stays every 15 minutes and `0 * * * *` every hour of
//     real time.
//
// Range and bound: fire times are found in years 0001-9999. cron_parse
// cannot tell by itself whether an expression ever fires; cron_next answers
// exactly: it returns 1 when the expression never fires (`0 0 31 2 *`, known
// at once, without a search) or the next fire would be after 9999-12-31, and
// finds every other fire however far away (the Gregorian calendar repeats
// every 400 years, so the search stops after CRON_SEARCH_YEARS). After
// 2096-02-29, `0 0 29 2 *` fires next on 2104-02-29 (2100 is not a leap
// year); `0 0 29 2 */7` (a Feb 29 that is a Sunday) jumps 2088 -> 2128.
//
// Threads: every function may be called from any thread; the zone cache is
// guarded by a mutex. All return codes are LMDB-style: 0 success, -1 error
// with a message in err (if err is not NULL and errsz > 0; always
// NUL-terminated, truncated to errsz), 1 where documented.
#ifndef SLUICE_CRON_H
#define SLUICE_CRON_H

#include <stddef.h>
#include <stdint.h>

// cron_expr.flags: the field's text started with '*' (see the day rule and
// daylight saving time above).
#define CRON_MIN_STAR 0x01
#define CRON_HOUR_STAR 0x02
#define CRON_DOM_STAR 0x04
#define CRON_DOW_STAR 0x08

// A parsed expression: plain data, 24 bytes, copy it freely. Bit n of a mask
// set means value n matches. No padding and reserved is 0, so memcmp compares
// two expressions: texts with the same canonical form parse to equal bytes.
typedef struct cron_expr {
  uint64_t minute; // bits 0-59
  uint32_t hour;   // bits 0-23
  uint32_t dom;    // bits 1-31
  uint16_t month;  // bits 1-12
  uint8_t dow;     // bits 0-6, 0 = Sunday (7 is folded into 0)
  uint8_t flags;   // CRON_*_STAR
  uint32_t reserved; // 0
} cron_expr;

// A good size for err buffers (messages quoting long input or paths are
// truncated to the buffer, never overflow it).
#define CRON_ERRSZ 256
// cron_format never needs more than this, NUL included.
#define CRON_FORMAT_MAX 512
// How far cron_next searches; 400 years is one full Gregorian cycle.
#define CRON_SEARCH_YEARS 401

// Parses text into *out. Returns 0, or -1 with a message naming the field and
// the bad value, *out untouched. Messages, for example:
//   expected 5 fields (minute hour day-of-month month day-of-week), got 4
//   minute field: 61 is out of range 0-59
//   hour field: step 0 is not allowed
//   minute field: step 90 is out of range 1-60
//   hour field: "x" is not a number
//   month field: "foo" is not a month name or number
//   day-of-week field: "funday" is not a day name or number
//   day-of-month field: range 20-10 is backwards
//   minute field: empty item in "1,,2"
//   minute field: bad item "5-" (expected *, N, N-M, */S, N-M/S or N/S)
//   @reboot is not supported: it names an event (start-up), not a time
//   unknown macro "@often" (expected @yearly, @annually, @monthly, @weekly,
//     @daily, @midnight or @hourly)
int cron_parse(cron_expr *out, const char *text, char *err, size_t errsz);

// Writes the canonical text of e (from cron_parse) to buf (at most n bytes, NUL included, like
// snprintf) and returns its length (what it would be if n were too small).
// Canonical: macros expanded, names as numbers, Sunday as 0, each field as
// `*`, `*/S` (with ",..." for values beyond the step), `N-M/S` (an
// arithmetic run of 5 or more values), else ranges of 3+ consecutive values
// and single values. A field keeps its leading '*' if and only if it had one
// (it matters for the day rule and DST), except month, which is `*` when all
// months match. cron_parse(cron_format(e)) gives back e exactly.
//   "@daily" -> "0 0 * * *"      "*/15 9-17 * jan-mar mon-fri" -> "*/15 9-17 * 1-3 1-5"
//   "0 0 * * 5-7" -> "0 0 * * 0,5,6"   "0-59 * 1-31 * *" -> "0-59 * 1-31 * *"
int cron_format(const cron_expr *e, char *buf, size_t n);

// The first fire time of e strictly after the instant `after` (Unix seconds,
// any second of a minute), evaluated in time zone tz (see above), as Unix
// seconds in *out. Returns
//    0  found, *out set (always > after);
//    1  never fires (or not before year 10000), *out untouched;
//   -1  tz is unknown or unusable, err says why and names it:
//         unknown time zone "Europe/Berlim" (not in /usr/share/zoneinfo)
// Cost (-O2, x86-64): about 30 ns in UTC and 60 ns in Europe/Berlin for
// everyday expressions; impossible ones are answered without a search; the
// slowest case, an expression that matches only inside DST gaps and so never
// fires in that zone, searches all 401 years in about 0.1 ms.
int cron_next(const cron_expr *e, int64_t after, const char *tz, int64_t *out,
              char *err, size_t errsz);

// Loads tz (into the cache) to check that cron_next can use it, for errors at
// definition time. Returns 0, or -1 with err as cron_next.
int cron_tz_check(const char *tz, char *err, size_t errsz);

// The UTC offset (seconds east of UTC: +3600 for CET) of tz at instant t.
// Returns 0, or -1 with err as cron_next.
int cron_tz_offset(const char *tz, int64_t t, int32_t *offset, char *err,
                   size_t errsz);

// Formats t as "2026-01-05T09:00:00Z" (20 characters and a NUL). Instants
// before year 0000 or after 9999 are clamped to the ends of that range.
void cron_format_utc(int64_t t, char buf[21]);

// Parses an ISO 8601 / RFC 3339 instant into Unix seconds:
//   2026-01-05T09:00:00Z   2026-01-05T09:00Z   2026-01-05T09:00:00.250Z
//   2026-01-05T09:00:00+02:00   2026-01-05T09:00-0530   2026-01-05 (midnight UTC)
// 'T' may be 't' or a space, 'Z' may be 'z'; fractional seconds are
// truncated; a time without Z or offset is taken as UTC. Returns 0, or -1
// with err: bad ISO 8601 time "2026-02-30": day 30 is out of range 1-28
int cron_parse_iso8601(const char *s, int64_t *out, char *err, size_t errsz);

// `sluice cron ...`: argv[0] is "cron". Implements
//   cron next "EXPR" [--from ISO8601] [-n N] [--tz ZONE]
// printing the next N (default 5, at most 100000) fire times in UTC, one per
// line, strictly after --from (default: now). Returns the exit status:
// 0 (--help, or done; fewer than N fires before year 10000 are said so on
// stderr), 1 the expression never fires after --from (said so on stderr:
//   sluice cron: "* * 31 2 *" never fires after 2026-01-05T09:00:00Z (...)),
// 2 bad usage or input, with a message on stderr naming the flag or field:
//   sluice cron: minute field: 61 is out of range 0-59
int cron_cli(int argc, char **argv);

#endif
