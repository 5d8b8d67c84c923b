/* codec.h: the one value codec of sluice: Lua values <-> JSON text.
 *
 * Shared by the store (step results, run inputs and results), the command
 * line (--input, printed results), the HTTP API and the sluice.json module.
 * Encoding writes JSON text directly from the Lua stack; decoding parses it
 * with the codec's own strict parser straight into Lua values (64-bit
 * integers exact; Debian's lua-cjson does not keep them).
 *
 * What round-trips exactly (Lua -> JSON -> Lua):
 *  - integers: all 64 bits, written as JSON integers;
 *  - floats: shortest text that reads back to the same double (at most 17
 *    significant digits), always with a '.', 'e' so they stay floats
 *    (1.0 -> "1.0"); -0.0 -> "-0.0";
 *  - inf, -inf, nan: tagged {"\u0000f":"inf"|"-inf"|"nan"} (in the store; at the
 *    edges, CODEC_EDGE, JSON null: see below);
 *  - strings: UTF-8 strings as JSON strings (NUL as \u0000); a string that is
 *    not valid UTF-8 is tagged {"\u0000b":"<base64>"};
 *  - booleans; json.null (a light userdata NULL, as lua-cjson) <-> null;
 *  - tables: a sequence 1..n -> array; string keys -> object. An empty table
 *    -> {} unless it carries the array metatable (json.array), then [];
 *    decoding [] gives a table with the array metatable so it round-trips.
 *    Object keys beginning with NUL are escaped with one more leading NUL;
 *    a key that is not valid UTF-8 is written "\u0000k<base64>".
 *  A JSON object with exactly one key that is a tag ("\u0000b", "\u0000f")
 *  decodes to the tagged value; any other key beginning with NUL loses one
 *  leading NUL.
 *
 * What cannot be stored is an error naming the path inside the value, with
 * `root` as its first component: "result.rows[3].fn: cannot store a function".
 * Cannot store: functions, userdata (other than json.null), threads, cycles,
 * tables mixing array items and string keys, tables with keys that are not
 * strings or a sequence 1..n, nesting deeper than CODEC_MAX_DEPTH.
 *
 * Depth: one limit, counted the same way by the encoder and the parser, as
 * JSON containers nested in the text: a table is one level, and so is the
 * tag object of a float that is not finite or of a string that is not UTF-8.
 * A value (a step result, an input, event data, what sluice.json handles)
 * nests at most CODEC_MAX_DEPTH; a store record or a printed document that
 * wraps values in a few levels of its own (CODEC_RECORD) at most
 * CODEC_RECORD_DEPTH, so every value fits in its record.
 *
 * Edges (CODEC_EDGE: what the command line prints, sluice.json, the HTTP
 * API): JSON has no NaN or infinity, so they are written as null (what
 * JavaScript's JSON.stringify does) and reported (codec_report) for a
 * warning; nothing else differs. The store keeps them exactly (the tag).
 *
 * Object keys are written sorted by bytes, so a value has one text.
 */
#ifndef SLUICE_CODEC_H
#define SLUICE_CODEC_H

#include <lua.h>
#include <stddef.h>

#include "sbuf.h"

#define CODEC_MAX_DEPTH 1000
#define CODEC_RECORD_DEPTH (CODEC_MAX_DEPTH + 8)

/* flags of codec_encode and codec_decode_ex */
#define CODEC_PRETTY 1 /* encode: indent with two spaces */
#define CODEC_EDGE 2   /* encode: NaN and infinities as null (see above) */
#define CODEC_RECORD 4 /* a record wrapping values: CODEC_RECORD_DEPTH */

/* What an edge encoding changed: how many non-finite floats became null, and
 * "root.path is NaN" (or "is Infinity", "is -Infinity") of the first. */
typedef struct {
  size_t nonfinite;
  char first[256];
} codec_report;
/* registry key of the metatable that marks a table as a JSON array */
#define CODEC_ARRAY_MT "sluice.json.array"

/* Appends the JSON text of the Lua value at stack index idx to out.
 * Returns 0, or -1 with a message in err (out is then unspecified).
 * flags: CODEC_PRETTY, CODEC_EDGE, CODEC_RECORD (0: a value for the store).
 * The Lua stack is left as it was. */
int codec_encode(lua_State *L, int idx, const char *root, int flags, sbuf *out,
                 char *err, size_t errsz);

/* codec_encode, filling *rep (if not NULL) with what CODEC_EDGE changed. */
int codec_encode_ex(lua_State *L, int idx, const char *root, int flags, sbuf *out,
                    char *err, size_t errsz, codec_report *rep);

/* Appends s as a JSON string literal (with the non-UTF-8 tag if needed). */
void codec_encode_string(sbuf *out, const char *s, size_t n);

/* Parses JSON text (any value at top level, NUL allowed in strings) and
 * pushes its Lua value. Returns 0, or -1 with err naming where the text is
 * wrong: "line 1, column 7 (byte 6): ..." and nothing pushed. */
int codec_decode(lua_State *L, const char *s, size_t n, char *err, size_t errsz);

/* Where the values of some members of the JSON object s[0..n) are,
 * without decoding it: spans[i] is the text of the value under names[i]
 * (names ends with NULL; p NULL when absent; the last one when repeated).
 * The whole text is validated as codec_decode would (nesting up to
 * CODEC_RECORD_DEPTH); a member's value is decoded on its own with
 * codec_decode(L, span.p, span.n, ...). Returns 0, or -1 with err. */
typedef struct {
  const char *p;
  size_t n;
} codec_span;
int codec_members(const char *s, size_t n, const char *const *names, codec_span *spans, char *err,
                  size_t errsz);

/* codec_decode with flags: CODEC_RECORD allows CODEC_RECORD_DEPTH. */
int codec_decode_ex(lua_State *L, const char *s, size_t n, int flags, char *err, size_t errsz);

/* Pushes json.null. */
void codec_push_null(lua_State *L);

#endif
