/* codec.h: the one value codec of sluice: Lua values <-> JSON text.
 *
 * Shared by the store (step results, run inputs and results), the command
 * line (--input, printed results), the HTTP API and the sluice.json module.
 * Encoding writes JSON text directly from the Lua stack; decoding parses with
 * jansson (which keeps 64-bit integers exact; Debian's lua-cjson does not).
 *
 * What round-trips exactly (Lua -> JSON -> Lua):
 *  - integers: all 64 bits, written as JSON integers;
 *  - floats: shortest text that reads back to the same double (at most 17
 *    significant digits), always with a '.', 'e' so they stay floats
 *    (1.0 -> "1.0"); -0.0 -> "-0.0";
 *  - inf, -inf, nan: tagged {"\u0000f":"inf"|"-inf"|"nan"};
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
 * Note: jansson 2.14's parser refuses NUL bytes in object keys, which every
 * tag above needs, so codec.c parses JSON text with its own strict parser
 * (same grammar and verdicts as json_loadb otherwise); codec_parse still
 * returns a jansson tree, whose keys may hold NUL (json_object_*n calls).
 * Object keys are written sorted by bytes, so a value has one text.
 */
#ifndef SLUICE_CODEC_H
#define SLUICE_CODEC_H

#include <jansson.h>
#include <lua.h>
#include <stddef.h>

#include "sbuf.h"

#define CODEC_MAX_DEPTH 1000
/* registry key of the metatable that marks a table as a JSON array */
#define CODEC_ARRAY_MT "sluice.json.array"

/* Appends the JSON text of the Lua value at stack index idx to out.
 * Returns 0, or -1 with a message in err (out is then unspecified).
 * pretty != 0 indents with two spaces. The Lua stack is left as it was. */
int codec_encode(lua_State *L, int idx, const char *root, int pretty, sbuf *out,
                 char *err, size_t errsz);

/* Appends s as a JSON string literal (with the non-UTF-8 tag if needed). */
void codec_encode_string(sbuf *out, const char *s, size_t n);

/* Pushes the Lua value of a jansson node. Returns 0, or -1 with err (a bad
 * tag, say) and nothing pushed. */
int codec_push(lua_State *L, json_t *j, char *err, size_t errsz);

/* Parses JSON text (any value at top level, NUL allowed in strings) and
 * pushes its Lua value. Returns 0, or -1 with err naming where the text is
 * wrong: "line 1, column 7 (byte 6): ..." and nothing pushed. */
int codec_decode(lua_State *L, const char *s, size_t n, char *err, size_t errsz);

/* Parses JSON text into a jansson tree (caller json_decref's it), with the
 * same flags and error text as codec_decode. NULL on error. */
json_t *codec_parse(const char *s, size_t n, char *err, size_t errsz);

/* Pushes json.null. */
void codec_push_null(lua_State *L);

/* lua_CFunction opening the sluice.json module: encode(v [, {pretty=true}]),
 * decode(s), null, array(t) (marks t as an array and returns it),
 * is_array(t). encode and decode raise on error with the messages above. */
int luaopen_sluice_json(lua_State *L);

#endif
