/* test_codec.c: unit tests of the value codec (host/codec.c) and of the
 * sluice.json module (host/l_json.c): exact round trips Lua -> JSON -> Lua,
 * the exact text of some values, and every error message with its path or
 * position. Values are built with small Lua chunks ("return ...") in a
 * lua_State that has `json` as a global. test_valid_for_python needs python3. */
#include <lauxlib.h>
#include <locale.h>
#include <lualib.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "modules.h"
#include "unit.h"

static lua_State *new_state(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "sluice.json", luaopen_sluice_json, 0);
  lua_setglobal(L, "json");
  luaL_requiref(L, "sluice._codec", luaopen_sluice__codec, 0);
  lua_setglobal(L, "codec");
  return L;
}

/* Pushes the value the chunk returns. */
static void push(lua_State *L, const char *chunk) {
  if (luaL_loadstring(L, chunk) != 0 || lua_pcall(L, 0, 1, 0) != 0) {
    fprintf(stderr, "chunk failed: %s\n", lua_tostring(L, -1));
    unit_failed_checks++;
    lua_pop(L, 1);
    lua_pushnil(L);
  }
}

static sbuf text;
static char err[512];

/* Encodes the value on top (leaving it there); NULL on error (see err). */
static const char *enc(lua_State *L, int pretty) {
  sbuf_reset(&text);
  err[0] = '\0';
  int top = lua_gettop(L);
  int rc = codec_encode(L, -1, "result", pretty, &text, err, sizeof err);
  CHECK(lua_gettop(L) == top);
  if (rc != 0) return NULL;
  return text.data ? text.data : "";
}

/* Decodes s; pushes the value or returns -1 (see err). */
static int dec(lua_State *L, const char *s, size_t n) {
  err[0] = '\0';
  int top = lua_gettop(L);
  int rc = codec_decode(L, s, n, err, sizeof err);
  CHECK(lua_gettop(L) == top + (rc == 0 ? 1 : 0));
  return rc;
}

static int deep_equal(lua_State *L, int a, int b) {
  a = lua_absindex(L, a);
  b = lua_absindex(L, b);
  int t = lua_type(L, a);
  if (t != lua_type(L, b)) return 0;
  if (t == LUA_TNUMBER) {
    if (lua_isinteger(L, a) != lua_isinteger(L, b)) return 0;
    if (lua_isinteger(L, a)) return lua_tointeger(L, a) == lua_tointeger(L, b);
    double x = lua_tonumber(L, a), y = lua_tonumber(L, b);
    if (isnan(x)) return isnan(y);
    return memcmp(&x, &y, sizeof x) == 0;
  }
  if (t != LUA_TTABLE) return lua_rawequal(L, a, b);
  /* only an empty table's metatable is data (array or object) */
  lua_pushnil(L);
  int empty = !lua_next(L, a);
  lua_settop(L, lua_gettop(L) - (empty ? 0 : 2));
  if (empty) {
    int ma = lua_getmetatable(L, a), mb = lua_getmetatable(L, b);
    int same_mt = ma == mb && (!ma || lua_rawequal(L, -1, -2));
    lua_pop(L, ma + mb);
    if (!same_mt) return 0;
  }
  int count = 0, ok = 1;
  lua_pushnil(L);
  while (lua_next(L, a)) {
    count++;
    lua_pushvalue(L, -2);
    lua_rawget(L, b);
    if (ok && !deep_equal(L, -1, -2)) ok = 0;
    lua_pop(L, 2);
  }
  lua_pushnil(L);
  while (lua_next(L, b)) {
    count--;
    lua_pop(L, 1);
  }
  return ok && count == 0;
}

/* Encodes the value on top, decodes it and checks it is the same value.
 * Pops the value; returns the text (valid until the next enc). */
static const char *roundtrip(lua_State *L) {
  const char *s = enc(L, 0);
  if (!s) {
    fprintf(stderr, "encode failed: %s\n", err);
    unit_failed_checks++;
    lua_pop(L, 1);
    return "";
  }
  if (dec(L, text.data, text.len) != 0) {
    fprintf(stderr, "decode of %s failed: %s\n", s, err);
    unit_failed_checks++;
    lua_pop(L, 1);
    return s;
  }
  if (!deep_equal(L, -1, -2)) {
    fprintf(stderr, "round trip differs for %s\n", s);
    unit_failed_checks++;
  }
  /* pretty text must decode to the same value too */
  sbuf pretty = SBUF_INIT;
  char perr[256];
  lua_pushvalue(L, -1);
  if (codec_encode(L, -1, "result", 1, &pretty, perr, sizeof perr) != 0 ||
      codec_decode(L, pretty.data, pretty.len, perr, sizeof perr) != 0) {
    fprintf(stderr, "pretty round trip failed for %s: %s\n", s, perr);
    unit_failed_checks++;
  } else {
    CHECK(deep_equal(L, -1, -3));
    lua_pop(L, 1);
  }
  lua_pop(L, 3);
  sbuf_free(&pretty);
  return s;
}

/* Encode of the chunk's value must be exactly want; then round trip. */
static void check_text(lua_State *L, const char *chunk, const char *want) {
  push(L, chunk);
  CHECK_STR(roundtrip(L), want);
}

static void check_enc_error(lua_State *L, const char *chunk, const char *want) {
  push(L, chunk);
  int top = lua_gettop(L);
  const char *s = enc(L, 0);
  CHECK(s == NULL);
  CHECK_STR(err, want);
  CHECK(lua_gettop(L) == top);
  lua_pop(L, 1);
}

static void check_dec_error(lua_State *L, const char *s, size_t n, const char *want) {
  CHECK(dec(L, s, n) == -1);
  CHECK_STR(err, want);
}

#define DEC(L, lit) dec(L, lit, sizeof(lit) - 1)
#define DEC_ERROR(L, lit, want) check_dec_error(L, lit, sizeof(lit) - 1, want)

static void test_integers(void) {
  lua_State *L = new_state();
  check_text(L, "return 0", "0");
  check_text(L, "return -1", "-1");
  check_text(L, "return 42", "42");
  check_text(L, "return math.maxinteger", "9223372036854775807");
  check_text(L, "return math.mininteger", "-9223372036854775808");
  check_text(L, "return math.mininteger + 1", "-9223372036854775807");
  CHECK(DEC(L, "-9223372036854775808") == 0);
  CHECK(lua_isinteger(L, -1) && lua_tointeger(L, -1) == INT64_MIN);
  lua_pop(L, 1);
  CHECK(DEC(L, "-0") == 0); /* JSON integer: Lua integer 0 */
  CHECK(lua_isinteger(L, -1) && lua_tointeger(L, -1) == 0);
  lua_pop(L, 1);
  lua_close(L);
}

static void test_floats(void) {
  lua_State *L = new_state();
  check_text(L, "return 0.1", "0.1");
  check_text(L, "return 1.0", "1.0");
  check_text(L, "return -0.0", "-0.0");
  check_text(L, "return 1e308", "1e+308");
  check_text(L, "return 1e300", "1e+300");
  check_text(L, "return 5e-324", "4.94065645841247e-324");
  check_text(L, "return 2^53 + 1", "9007199254740992.0");
  check_text(L, "return 123456789.123", "123456789.123");
  check_text(L, "return 1/3", "0.3333333333333333");
  check_text(L, "return 0.1 + 0.2", "0.30000000000000004");
  check_text(L, "return 1.7976931348623157e308", "1.7976931348623157e+308");
  check_text(L, "return -2.5", "-2.5");
  check_text(L, "return 2^63", "9.223372036854776e+18");
  /* both sides of the fast path's range (|d| in [1e-4, 1e15), <= 15 digits) */
  check_text(L, "return 0.0001", "0.0001");
  check_text(L, "return -0.000123", "-0.000123");
  check_text(L, "return 0.00001", "1e-05");
  check_text(L, "return 0.000123456789012345", "0.000123456789012345");
  check_text(L, "return 123456789012345.0", "123456789012345.0");
  check_text(L, "return 999999999999999.9", "999999999999999.9");
  check_text(L, "return 1e15", "1e+15");
  check_text(L, "return 100.0", "100.0");
  check_text(L, "return 98.5", "98.5");

  /* the decoded kinds */
  CHECK(DEC(L, "-0.0") == 0);
  CHECK(!lua_isinteger(L, -1) && lua_tonumber(L, -1) == 0 && signbit(lua_tonumber(L, -1)));
  lua_pop(L, 1);
  CHECK(DEC(L, "1.0") == 0);
  CHECK(lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1));
  lua_pop(L, 1);
  CHECK(DEC(L, "1e+300") == 0);
  CHECK(!lua_isinteger(L, -1) && lua_tonumber(L, -1) == 1e300);
  lua_pop(L, 1);
  CHECK(DEC(L, "1E2") == 0);
  CHECK(!lua_isinteger(L, -1) && lua_tonumber(L, -1) == 100.0);
  lua_pop(L, 1);
  CHECK(DEC(L, "1e-400") == 0); /* underflow is zero, not an error */
  CHECK(!lua_isinteger(L, -1) && lua_tonumber(L, -1) == 0);
  lua_pop(L, 1);

  /* random bit patterns round-trip exactly */
  uint64_t x = 88172645463325252ULL;
  for (int i = 0; i < 20000; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    double d;
    memcpy(&d, &x, sizeof d);
    lua_pushnumber(L, d);
    const char *s = enc(L, 0);
    CHECK(s != NULL);
    CHECK(dec(L, text.data, text.len) == 0);
    CHECK(deep_equal(L, -1, -2));
    lua_pop(L, 2);
  }
  lua_close(L);
}

static void test_nonfinite(void) {
  lua_State *L = new_state();
  check_text(L, "return math.huge", "{\"\\u0000f\":\"inf\"}");
  check_text(L, "return -math.huge", "{\"\\u0000f\":\"-inf\"}");
  check_text(L, "return 0/0", "{\"\\u0000f\":\"nan\"}");
  check_text(L, "return {x = 0/0}", "{\"x\":{\"\\u0000f\":\"nan\"}}");
  CHECK(DEC(L, "[{\"\\u0000f\":\"-inf\"}]") == 0);
  lua_rawgeti(L, -1, 1);
  CHECK(!lua_isinteger(L, -1) && isinf(lua_tonumber(L, -1)) && lua_tonumber(L, -1) < 0);
  lua_pop(L, 2);
  lua_close(L);
}

/* At the edges (CODEC_EDGE) NaN and infinities are JSON null, reported with
 * the path of the first; nothing else changes. */
static void test_edge(void) {
  lua_State *L = new_state();
  codec_report rep;
  push(L, "return {a = 0/0, b = {1, 1/0, -1/0}, c = 'x', d = 2.5}");
  sbuf_reset(&text);
  CHECK(codec_encode_ex(L, -1, "result", CODEC_EDGE, &text, err, sizeof err, &rep) == 0);
  CHECK_STR(text.data, "{\"a\":null,\"b\":[1,null,null],\"c\":\"x\",\"d\":2.5}");
  CHECK(rep.nonfinite == 3);
  CHECK_STR(rep.first, "result.a is NaN");
  lua_pop(L, 1);
  push(L, "return {x = {-1/0}}");
  sbuf_reset(&text);
  CHECK(codec_encode_ex(L, -1, "result", CODEC_EDGE, &text, err, sizeof err, &rep) == 0);
  CHECK_STR(rep.first, "result.x[1] is -Infinity");
  lua_pop(L, 1);
  /* finite values: no report; the store's encoding keeps the tag */
  push(L, "return {1.5}");
  sbuf_reset(&text);
  CHECK(codec_encode_ex(L, -1, "result", CODEC_EDGE, &text, err, sizeof err, &rep) == 0);
  CHECK(rep.nonfinite == 0 && rep.first[0] == '\0');
  lua_pop(L, 1);
  check_text(L, "return {a = 0/0}", "{\"a\":{\"\\u0000f\":\"nan\"}}");
  /* the Lua modules: sluice.json is an edge, sluice.codec the store's,
   * sluice.codec.edge the command line's */
  static const char chunk[] =
      "assert(json.encode({r = 0/0}) == '{\"r\":null}')\n"
      "assert(codec.edge.encode({r = 1/0}) == '{\"r\":null}')\n"
      "local t = codec.encode({r = 0/0, i = 1/0})\n"
      "local back = codec.decode(t)\n"
      "assert(back.r ~= back.r and back.i == math.huge, t)\n"
      "assert(json.null == codec.null and codec.edge.null == json.null)\n"
      "return true\n";
  if (luaL_dostring(L, chunk) != 0) {
    fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
    unit_failed_checks++;
  }
  lua_settop(L, 0);
  lua_close(L);
}

/* Builds "[[...[leaf]...]]" with n arrays around leaf (NUL-terminated). */
static char *nested_text(int n, const char *leaf) {
  size_t ln = strlen(leaf);
  char *s = malloc((size_t)n * 2 + ln + 1);
  memset(s, '[', (size_t)n);
  memcpy(s + n, leaf, ln);
  memset(s + n + ln, ']', (size_t)n);
  s[n * 2 + ln] = '\0';
  return s;
}

/* Pushes n tables nested as {{...{leaf}...}} (leaf: a Lua expression). */
static void push_nested(lua_State *L, int n, const char *leaf) {
  char chunk[160];
  snprintf(chunk, sizeof chunk, "local t = %s for i = 1, %d do t = {t} end return t", leaf, n);
  push(L, chunk);
}

/* The one depth limit: encode and decode agree on it, for plain values, for
 * the tags of NaN and of byte strings (one level each), and for records
 * (CODEC_RECORD) that wrap a value of the deepest kind. */
static void test_depth(void) {
  lua_State *L = new_state();
  static const struct {
    const char *lua_leaf, *json_leaf;
    int levels; /* containers the leaf adds in the text */
  } leaves[] = {{"1", "1", 0}, {"0/0", "{\"\\u0000f\":\"nan\"}", 1},
                {"'\\xff'", "{\"\\u0000b\":\"/w==\"}", 1}};
  for (size_t k = 0; k < sizeof leaves / sizeof leaves[0]; k++) {
    int fit = CODEC_MAX_DEPTH - leaves[k].levels; /* arrays around the leaf that fit */
    for (int extra = 0; extra <= 1; extra++) {
      int n = fit + extra;
      push_nested(L, n, leaves[k].lua_leaf);
      const char *t = enc(L, 0);
      char *want = nested_text(n, leaves[k].json_leaf);
      if (!extra) {
        CHECK(t != NULL);
        if (t) CHECK_STR(t, want);
        CHECK(dec(L, want, strlen(want)) == 0);
        lua_pop(L, 1);
      } else {
        CHECK(t == NULL);
        CHECK(strstr(err, ": nesting deeper than 1000") != NULL);
        CHECK(dec(L, want, strlen(want)) == -1);
        CHECK(strstr(err, "nesting deeper than 1000") != NULL);
      }
      /* at the edge a NaN is null, no level; a byte string keeps its tag */
      int edge_levels = k == 1 ? 0 : leaves[k].levels;
      sbuf_reset(&text);
      int rc = codec_encode(L, -1, "v", CODEC_EDGE, &text, err, sizeof err);
      CHECK(rc == (n + edge_levels > CODEC_MAX_DEPTH ? -1 : 0));
      free(want);
      lua_pop(L, 1);
    }
  }
  /* a record holding the deepest value: {input = <1000 levels>} */
  push(L, "local t = 1 for i = 1, 1000 do t = {t} end return {input = t}");
  CHECK(enc(L, 0) == NULL);
  sbuf_reset(&text);
  CHECK(codec_encode(L, -1, "record", CODEC_RECORD, &text, err, sizeof err) == 0);
  CHECK(codec_decode(L, text.data, text.len, err, sizeof err) == -1);
  CHECK(codec_decode_ex(L, text.data, text.len, CODEC_RECORD, err, sizeof err) == 0);
  lua_pop(L, 2);
  lua_close(L);
}

static void test_strings(void) {
  lua_State *L = new_state();
  check_text(L, "return ''", "\"\"");
  check_text(L, "return 'a\\0b'", "\"a\\u0000b\"");
  check_text(L, "return '\\0'", "\"\\u0000\"");
  check_text(L, "return '\"\\\\/\\n\\t\\r\\b\\f\\1\\31\\127'",
             "\"\\\"\\\\/\\n\\t\\r\\b\\f\\u0001\\u001f\x7f\"");
  /* valid multibyte UTF-8 is written as is, never tagged */
  check_text(L, "return 'h\\u{e9}llo \\u{20ac} \\u{1d11e} \\u{10ffff}'",
             "\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9d\x84\x9e \xf4\x8f\xbf\xbf\"");
  /* invalid UTF-8: tagged, bytes exact */
  check_text(L, "return '\\xff\\xfe'", "{\"\\u0000b\":\"//4=\"}");
  check_text(L, "return '\\xc0\\xaf'", "{\"\\u0000b\":\"wK8=\"}");         /* overlong '/' */
  check_text(L, "return '\\xe0\\x80\\xaf'", "{\"\\u0000b\":\"4ICv\"}");     /* overlong */
  check_text(L, "return '\\xed\\xa0\\x80'", "{\"\\u0000b\":\"7aCA\"}");     /* surrogate */
  check_text(L, "return '\\xf4\\x90\\x80\\x80'", "{\"\\u0000b\":\"9JCAgA==\"}"); /* > U+10FFFF */
  check_text(L, "return 'ab\\xe2\\x82'", "{\"\\u0000b\":\"YWLigg==\"}");   /* truncated */
  check_text(L, "return '\\0\\xff'", "{\"\\u0000b\":\"AP8=\"}");
  /* every byte value, and a long string */
  push(L, "local t = {} for i = 0, 255 do t[#t+1] = string.char(i) end return table.concat(t)");
  roundtrip(L);
  push(L, "return string.rep('\\u{e9}x\\0', 10000)");
  roundtrip(L);

  /* escapes jansson and others write decode to the same bytes */
  const char *esc = "\"\\u00e9\\uD834\\uDD1E\\/\\u0000\"";
  if (dec(L, esc, strlen(esc)) == 0) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    CHECK(n == 8 && memcmp(s, "\xc3\xa9\xf0\x9d\x84\x9e/\0", 8) == 0);
    lua_pop(L, 1);
  } else {
    CHECK_STR(err, "");
  }

  /* codec_encode_string directly */
  sbuf b = SBUF_INIT;
  codec_encode_string(&b, "x\"y", 3);
  codec_encode_string(&b, "\x80", 1);
  CHECK_STR(b.data, "\"x\\\"y\"{\"\\u0000b\":\"gA==\"}");
  sbuf_free(&b);
  lua_close(L);
}

static void test_keys(void) {
  lua_State *L = new_state();
  check_text(L, "return {['\\0x'] = 1}", "{\"\\u0000\\u0000x\":1}");
  check_text(L, "return {['\\0b'] = 'x'}", "{\"\\u0000\\u0000b\":\"x\"}"); /* not a tag */
  check_text(L, "return {['\\0f'] = 'inf'}", "{\"\\u0000\\u0000f\":\"inf\"}");
  check_text(L, "return {['\\0'] = 1}", "{\"\\u0000\\u0000\":1}");
  check_text(L, "return {['a\\0b'] = 1}", "{\"a\\u0000b\":1}");
  check_text(L, "return {['\\xff'] = 1}", "{\"\\u0000k/w==\":1}");
  check_text(L, "return {['\\0k'] = 1, ['\\0\\xff'] = 2}",
             "{\"\\u0000\\u0000k\":1,\"\\u0000kAP8=\":2}");
  check_text(L, "return {['caf\\u{e9}'] = true, [''] = false}", "{\"\":false,\"caf\xc3\xa9\":true}");
  /* a tag key that is not alone is an ordinary key that loses its NUL */
  CHECK(DEC(L, "{\"\\u0000b\":\"x\",\"c\":1}") == 0);
  lua_getfield(L, -1, "b");
  CHECK_STR(lua_tostring(L, -1), "x");
  lua_getfield(L, -2, "c");
  CHECK(lua_tointeger(L, -1) == 1);
  lua_pop(L, 3);
  CHECK(DEC(L, "{\"\\u0000z\":1}") == 0);
  lua_getfield(L, -1, "z");
  CHECK(lua_tointeger(L, -1) == 1);
  lua_pop(L, 2);
  /* duplicate keys: the last one wins, as in jansson */
  CHECK(DEC(L, "{\"a\":1,\"a\":2}") == 0);
  lua_getfield(L, -1, "a");
  CHECK(lua_tointeger(L, -1) == 2);
  lua_pop(L, 2);
  /* members wait on the stack in batches of 16 before the table is made:
   * sizes around the batch, a repeated key across batches, nulls, nesting */
  for (int n = 0; n <= 50; n++) {
    char chunk[600];
    snprintf(chunk, sizeof chunk,
             "local n = %d local o, a = {}, {} for i = 1, n do o['k' .. i] = {i, {x = i}} "
             "a[i] = i %% 7 == 0 and json.null or {i} end "
             "return {o = n > 0 and o or nil, a = n > 0 and a or json.array({})}",
             n);
    push(L, chunk);
    roundtrip(L);
  }
  CHECK(DEC(L, "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9,"
               "\"j\":10,\"k\":11,\"l\":12,\"m\":13,\"n\":14,\"o\":15,\"p\":16,\"q\":17,\"a\":18}") == 0);
  lua_getfield(L, -1, "a");
  CHECK(lua_tointeger(L, -1) == 18);
  lua_getfield(L, -2, "q");
  CHECK(lua_tointeger(L, -1) == 17);
  lua_pop(L, 3);
  CHECK(DEC(L, "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,null,19]") == 0);
  CHECK(luaL_len(L, -1) == 19);
  lua_rawgeti(L, -1, 17);
  CHECK(lua_tointeger(L, -1) == 17);
  lua_rawgeti(L, -2, 19);
  CHECK(lua_tointeger(L, -1) == 19);
  lua_pop(L, 3);
  lua_close(L);
}

static void test_tables(void) {
  lua_State *L = new_state();
  check_text(L, "return {a = 1, b = {1, 2.5, 'x'}}", "{\"a\":1,\"b\":[1,2.5,\"x\"]}");
  check_text(L, "return {}", "{}");
  check_text(L, "return json.array({})", "[]");
  check_text(L, "return json.array({1, 2})", "[1,2]");
  check_text(L, "return {{}, {{}}, json.array()}", "[{},[{}],[]]");
  check_text(L, "return {b = 1, a = 2, A = 3, aa = 4, ['a b'] = 5, _ = 6}",
             "{\"A\":3,\"_\":6,\"a\":2,\"a b\":5,\"aa\":4,\"b\":1}");
  check_text(L, "return {true, false, 'x', {y = {z = {1}}}}",
             "[true,false,\"x\",{\"y\":{\"z\":[1]}}]");
  /* shared (not cyclic) subtables are fine */
  check_text(L, "local s = {1} return {a = s, b = s}", "{\"a\":[1],\"b\":[1]}");
  /* other metatables are ignored: raw access only */
  check_text(L, "return setmetatable({a = 1}, {__index = function() return 9 end, __pairs = error})",
             "{\"a\":1}");
  /* many keys (sorted with qsort, key array leaves the inline space) */
  push(L, "local t = {} for i = 1, 500 do t['k' .. i] = {i, {['x' .. i] = i}} end return t");
  const char *s = roundtrip(L);
  CHECK(strncmp(s, "{\"k1\":[1,{\"x1\":1}],\"k10\":", 25) == 0);
  push(L, "local t = {} for i = 1, 1000 do t[i] = i * 1.5 end return t");
  roundtrip(L);
  /* more keys than the Lua stack can hold for sorting: written in table
   * order, still exact */
  push(L, "local t = {} for i = 1, 1100000 do t['k' .. i] = i end return t");
  CHECK(enc(L, 0) != NULL);
  CHECK(strncmp(text.data, "{\"k1\":1,\"k10\":10,", 17) != 0); /* not sorted */
  CHECK(dec(L, text.data, text.len) == 0);
  CHECK(deep_equal(L, -1, -2));
  lua_pop(L, 2);
  /* just below the limit: sorted */
  push(L, "local t = {} for i = 1, 900000 do t['k' .. i] = i end return t");
  CHECK(enc(L, 0) != NULL);
  CHECK(strncmp(text.data, "{\"k1\":1,\"k10\":10,", 17) == 0);
  lua_pop(L, 1);

  /* [] decodes to a table with the array metatable, {} to a plain one */
  CHECK(DEC(L, "[]") == 0);
  CHECK(lua_getmetatable(L, -1));
  luaL_getmetatable(L, CODEC_ARRAY_MT);
  CHECK(lua_rawequal(L, -1, -2));
  lua_pop(L, 3);
  CHECK(DEC(L, "{}") == 0);
  CHECK(!lua_getmetatable(L, -1));
  lua_pop(L, 1);
  CHECK(DEC(L, "{\"a\":[]}") == 0);
  CHECK(enc(L, 0) && strcmp(text.data, "{\"a\":[]}") == 0);
  lua_pop(L, 1);
  lua_close(L);
}

static void test_null(void) {
  lua_State *L = new_state();
  check_text(L, "return json.null", "null");
  check_text(L, "return {1, json.null, 3}", "[1,null,3]");
  check_text(L, "return {a = json.null}", "{\"a\":null}");
  lua_pushnil(L); /* nil encodes as null ... */
  CHECK_STR(enc(L, 0), "null");
  lua_pop(L, 1);
  CHECK(DEC(L, "null") == 0);           /* ... which decodes to json.null */
  CHECK(lua_type(L, -1) == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL);
  lua_pop(L, 1);
  CHECK(DEC(L, "[null,null]") == 0);
  CHECK(lua_rawlen(L, -1) == 2);
  lua_rawgeti(L, -1, 2);
  CHECK(lua_type(L, -1) == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL);
  lua_pop(L, 2);
  lua_close(L);
}

static void test_encode_errors(void) {
  lua_State *L = new_state();
  check_enc_error(L, "return {rows = {{}, {}, {fn = print}}}",
                  "result.rows[3].fn: cannot store a function");
  check_enc_error(L, "return print", "result: cannot store a function");
  check_enc_error(L, "return {1, x = 1}", "result: table mixes array items and string keys");
  check_enc_error(L, "local t = {} t.a = t return t", "result.a: cycle (this table contains itself)");
  check_enc_error(L, "local t = {x = {}} t.x[1] = {t} return {t}",
                  "result[1].x[1][1]: cycle (this table contains itself)");
  check_enc_error(L, "return {1, {[true] = 1}}",
                  "result[2]: cannot store a table with a boolean key");
  check_enc_error(L, "return {a = {[{}] = 1}}", "result.a: cannot store a table with a table key");
  check_enc_error(L, "return {[1.5] = 1}", "result: cannot store a table with a float key (1.5)");
  check_enc_error(L, "return {1, 2, 3, [5] = 5}",
                  "result: table has integer keys that are not a sequence 1..n (key 5)");
  check_enc_error(L, "return {[0] = 0, 1}",
                  "result: table has integer keys that are not a sequence 1..n (key 0)");
  check_enc_error(L, "local t = {1, 2, 3, 4, 5, 6} t[2] = nil t[5] = nil return t",
                  "result: table has integer keys that are not a sequence 1..n (key 3)");
  check_enc_error(L, "return {['odd key'] = coroutine.create(print)}",
                  "result[\"odd key\"]: cannot store a thread");
  check_enc_error(L, "return {x = {['a\"b\\n\\xff'] = {io.stdout}}}",
                  "result.x[\"a\\\"b\\x0a\\xff\"][1]: cannot store a userdata");
  check_enc_error(L, "return {[1] = {['9lives'] = {_ok = print}}}",
                  "result[1][\"9lives\"]._ok: cannot store a function");
  check_enc_error(L, "return json.array({x = 1})",
                  "result: table marked as an array (json.array) has string keys");

  /* nesting: 1000 tables are fine, 1001 are not */
  push(L, "local t = {} for i = 1, 999 do t = {x = t} end return t");
  CHECK(enc(L, 0) != NULL);
  lua_pop(L, 1);
  push(L, "local t = {} for i = 1, 1000 do t = {x = t} end return t");
  CHECK(enc(L, 0) == NULL);
  CHECK_STR(err, "result.x.x.x.x.x.x.x.x...(984 more)....x.x.x.x.x.x.x.x: nesting deeper than 1000");
  lua_pop(L, 1);
  /* the path of a short error and its ": " survive a small err buffer */
  push(L, "return {abc = print}");
  char small[8];
  CHECK(codec_encode(L, -1, "result", 0, &text, small, sizeof small) == -1);
  CHECK_STR(small, "result.");
  lua_pop(L, 1);
  lua_close(L);
}

static void test_decode_errors(void) {
  lua_State *L = new_state();
  DEC_ERROR(L, "{\"a\": x}", "line 1, column 7 (byte 6): unexpected token");
  DEC_ERROR(L, "[1,\n  2,x]", "line 2, column 5 (byte 8): unexpected token");
  DEC_ERROR(L, "[\"\xc3\xa9\", ?]", "line 1, column 7 (byte 7): unexpected token");
  DEC_ERROR(L, "9223372036854775808", "line 1, column 1 (byte 0): too big integer");
  DEC_ERROR(L, "[-9223372036854775809]", "line 1, column 2 (byte 1): too big negative integer");
  DEC_ERROR(L, "1e400", "line 1, column 1 (byte 0): real number overflow");
  DEC_ERROR(L, "", "line 1, column 1 (byte 0): premature end of input");
  DEC_ERROR(L, "  \n ", "line 2, column 2 (byte 4): premature end of input");
  DEC_ERROR(L, "[1, 2", "line 1, column 6 (byte 5): premature end of input");
  DEC_ERROR(L, "1 2", "line 1, column 3 (byte 2): end of input expected");
  DEC_ERROR(L, "[1,]", "line 1, column 4 (byte 3): unexpected token");
  DEC_ERROR(L, "[1 2]", "line 1, column 4 (byte 3): ',' or ']' expected");
  DEC_ERROR(L, "{\"a\" 1}", "line 1, column 6 (byte 5): ':' expected");
  DEC_ERROR(L, "{\"a\":1 \"b\":2}", "line 1, column 8 (byte 7): ',' or '}' expected");
  DEC_ERROR(L, "{1:2}", "line 1, column 2 (byte 1): string or '}' expected");
  DEC_ERROR(L, "01", "line 1, column 1 (byte 0): invalid number (leading zero)");
  DEC_ERROR(L, "-", "line 1, column 1 (byte 0): invalid number");
  DEC_ERROR(L, "1.", "line 1, column 1 (byte 0): invalid number");
  DEC_ERROR(L, "1e+", "line 1, column 1 (byte 0): invalid number");
  DEC_ERROR(L, "tru", "line 1, column 1 (byte 0): unexpected token");
  DEC_ERROR(L, "NaN", "line 1, column 1 (byte 0): unexpected token");
  DEC_ERROR(L, "\"abc", "line 1, column 1 (byte 0): premature end of input in string");
  DEC_ERROR(L, "\"a\x01\"", "line 1, column 3 (byte 2): control character 0x01 in string");
  DEC_ERROR(L, "\"a\xff\"", "line 1, column 3 (byte 2): invalid UTF-8 byte 0xff");
  DEC_ERROR(L, "\"\xc0\xaf\"", "line 1, column 2 (byte 1): invalid UTF-8 byte 0xc0");
  DEC_ERROR(L, "\"\\x\"", "line 1, column 2 (byte 1): invalid escape");
  DEC_ERROR(L, "\"\\u12\"", "line 1, column 2 (byte 1): invalid \\u escape");
  DEC_ERROR(L, "\"\\ud800\"", "line 1, column 2 (byte 1): invalid Unicode '\\uD800' (lone high surrogate)");
  DEC_ERROR(L, "\"\\udc00\"", "line 1, column 2 (byte 1): invalid Unicode '\\uDC00' (lone low surrogate)");
  DEC_ERROR(L, "\"\\u0000\"\x00", "line 1, column 9 (byte 8): end of input expected");
  /* strings are scanned eight bytes at a time: whatever needs attention is
   * found at every offset in a word (and past the end of the last word) */
  for (int k = 0; k < 20; k++) {
    char s[64], want[128];
    static const char *const bad[] = {"\x01", "\xff", "\x1f"};
    static const char *const why[] = {"control character 0x01 in string", "invalid UTF-8 byte 0xff",
                                      "control character 0x1f in string"};
    for (int j = 0; j < 3; j++) {
      int n = snprintf(s, sizeof s, "\"%.*s%sb\"", k, "aaaaaaaaaaaaaaaaaaaa", bad[j]);
      snprintf(want, sizeof want, "line 1, column %d (byte %d): %s", k + 2, k + 1, why[j]);
      check_dec_error(L, s, (size_t)n, want);
    }
    static const char *const good[] = {"\\n", "\\\"", "\\\\", "\xc3\xa9", "\x7f", " "};
    static const char *const value[] = {"\n", "\"", "\\", "\xc3\xa9", "\x7f", " "};
    for (int j = 0; j < 6; j++) {
      int n = snprintf(s, sizeof s, "\"%.*s%sbcdefghij\"", k, "aaaaaaaaaaaaaaaaaaaa", good[j]);
      CHECK(dec(L, s, (size_t)n) == 0);
      snprintf(want, sizeof want, "%.*s%sbcdefghij", k, "aaaaaaaaaaaaaaaaaaaa", value[j]);
      CHECK_STR(lua_tostring(L, -1), want);
      lua_pop(L, 1);
    }
    int n = snprintf(s, sizeof s, "\"%.*s", k, "aaaaaaaaaaaaaaaaaaaa");
    check_dec_error(L, s, (size_t)n, "line 1, column 1 (byte 0): premature end of input in string");
  }
  /* malformed tags: position of the tag object */
  DEC_ERROR(L, "[{\"\\u0000b\":\"!!!!\"}]",
            "line 1, column 2 (byte 1): malformed tag \"\\u0000b\": invalid base64");
  DEC_ERROR(L, "{\"\\u0000b\":\"QQ\"}",
            "line 1, column 1 (byte 0): malformed tag \"\\u0000b\": invalid base64");
  DEC_ERROR(L, "{\"\\u0000b\":\"QR==\"}", /* non-canonical padding bits */
            "line 1, column 1 (byte 0): malformed tag \"\\u0000b\": invalid base64");
  DEC_ERROR(L, "{\"\\u0000b\":1}",
            "line 1, column 1 (byte 0): malformed tag \"\\u0000b\": value is not a string");
  DEC_ERROR(L, "{\"\\u0000f\":\"Infinity\"}",
            "line 1, column 1 (byte 0): malformed tag \"\\u0000f\": expected \"inf\", \"-inf\" or \"nan\"");
  DEC_ERROR(L, "{\"x\":1,\"\\u0000k*\":1}",
            "line 1, column 8 (byte 7): malformed key tag \"\\u0000k\": invalid base64");

  /* nesting: 1000 containers are fine, 1001 are not */
  char deep[2002];
  memset(deep, '[', 1000);
  memset(deep + 1000, ']', 1000);
  CHECK(dec(L, deep, 2000) == 0);
  lua_pop(L, 1);
  memset(deep, '[', 1001);
  memset(deep + 1001, ']', 1001);
  check_dec_error(L, deep, 2002, "line 1, column 1001 (byte 1000): nesting deeper than 1000");
  lua_close(L);
}

static void test_pretty(void) {
  lua_State *L = new_state();
  push(L, "return {b = {1, {x = 2}}, a = 1, c = {}, d = json.array(), e = 1/0}");
  CHECK_STR(enc(L, 1), "{\n"
                       "  \"a\": 1,\n"
                       "  \"b\": [\n"
                       "    1,\n"
                       "    {\n"
                       "      \"x\": 2\n"
                       "    }\n"
                       "  ],\n"
                       "  \"c\": {},\n"
                       "  \"d\": [],\n"
                       "  \"e\": {\"\\u0000f\":\"inf\"}\n"
                       "}");
  lua_pop(L, 1);
  push(L, "return 'x'");
  CHECK_STR(enc(L, 1), "\"x\"");
  lua_pop(L, 1);
  lua_close(L);
}

/* Plain JSON (no tags) must be readable by another parser: Python's. */
static void test_valid_for_python(void) {
  static const char check[] =
      "python3 -c 'import json, math, sys\n"
      "j = json.load(sys.stdin)\n"
      "a = j[\"a\"]\n"
      "assert type(a[0]) is int and type(a[1]) is float and type(a[3]) is float\n"
      "assert a[2] == 0 and math.copysign(1, a[2]) < 0\n"
      "assert a[4] == \"x\\0y\\n\\1\" and j[\"c\"][2] == -2**63\n"
      "assert j[\"caf\\u00e9\"] == {\"b\": None} and j[\"d\"] == [] and j[\"e\"] == \"\\U0001d11e\"'";
  lua_State *L = new_state();
  push(L, "return {a = {1, 2.5, -0.0, 1e300, 'x\\0y\\n\\1'}, ['caf\\u{e9}'] = {b = json.null}, "
          "c = {true, false, math.mininteger}, d = json.array(), e = '\\u{1d11e}'}");
  for (int pretty = 0; pretty <= 1; pretty++) {
    CHECK(enc(L, pretty) != NULL);
    FILE *py = popen(check, "w");
    CHECK(py != NULL);
    if (!py) continue;
    fwrite(text.data, 1, text.len, py);
    int st = pclose(py);
    CHECK(st == 0);
    if (st != 0) fprintf(stderr, "python3 refused: %s\n", text.data);
  }
  lua_pop(L, 1);
  lua_close(L);
}

/* Random tables of random keys and values: encode, decode, compare. */
static void test_random(void) {
  lua_State *L = new_state();
  static const char gen[] =
      "local seed = ...\n"
      "local r = math.random\n"
      "math.randomseed(seed)\n"
      "local function str()\n"
      "  local t = {}\n"
      "  for i = 1, r(0, 12) do\n"
      "    local k = r(1, 4)\n"
      "    if k == 1 then t[#t+1] = string.char(r(0, 255))\n"
      "    elseif k == 2 then t[#t+1] = utf8.char(r(0, 0x10ffff))\n"
      "    elseif k == 3 then t[#t+1] = '\\0' else t[#t+1] = string.char(r(32, 126)) end\n"
      "  end\n"
      "  return table.concat(t)\n"
      "end\n"
      "local function val(d)\n"
      "  local k = r(1, d > 3 and 6 or 8)\n"
      "  if k == 1 then return r(math.mininteger, math.maxinteger)\n"
      "  elseif k == 2 then return string.unpack('d', string.pack('i8', r(math.mininteger, math.maxinteger)))\n"
      "  elseif k == 3 then return str()\n"
      "  elseif k == 4 then return r(2) == 1\n"
      "  elseif k == 5 then return json.null\n"
      "  elseif k == 6 then return (r(1e6) - 5e5) / 7\n"
      "  elseif k == 7 then local t = {} for i = 1, r(0, 5) do t[i] = val(d + 1) end\n"
      "    if #t == 0 and r(2) == 1 then json.array(t) end return t\n"
      "  else local t = {} for i = 1, r(0, 5) do t[str()] = val(d + 1) end return t end\n"
      "end\n"
      "return val(0)\n";
  for (int i = 0; i < 3000; i++) {
    luaL_loadstring(L, gen);
    lua_pushinteger(L, i);
    if (lua_pcall(L, 1, 1, 0) != 0) {
      fprintf(stderr, "gen: %s\n", lua_tostring(L, -1));
      unit_failed_checks++;
      lua_pop(L, 1);
      break;
    }
    roundtrip(L);
  }
  lua_close(L);
}

static void test_lua_module(void) {
  lua_State *L = new_state();
  static const char chunk[] =
      "local json = require 'sluice.json'\n"
      "assert(json.encode({a = 1, b = {1, 2.5, 'x'}}) == '{\"a\":1,\"b\":[1,2.5,\"x\"]}')\n"
      "assert(json.encode(math.maxinteger) == '9223372036854775807')\n"
      "assert(json.encode({x = {1}}, {pretty = true}) == '{\\n  \"x\": [\\n    1\\n  ]\\n}')\n"
      "assert(json.decode('9223372036854775807') == math.maxinteger)\n"
      "assert(math.type(json.decode('1.0')) == 'float')\n"
      "local t = json.decode('{\"a\":[1,null,3],\"e\":[]}')\n"
      "assert(t.a[2] == json.null and #t.a == 3)\n"
      "assert(json.is_array(t.a) and json.is_array(t.e))\n"
      "assert(not json.is_array(t) and not json.is_array({}) and not json.is_array('x'))\n"
      "assert(not json.is_array({1, x = 2}) and not json.is_array({[2] = 1}))\n"
      "assert(json.encode(t.e) == '[]' and json.encode(json.array()) == '[]')\n"
      "local a = {}\n"
      "assert(json.array(a) == a and json.encode(a) == '[]' and json.is_array(a))\n"
      "assert(not pcall(json.array, setmetatable({}, {})))\n"
      "local s = '\\xff\\0\\xfe'\n"
      "assert(json.decode(json.encode(s)) == s)\n"
      "assert(json.decode(json.encode({[s] = s}))[s] == s)\n"
      "local z = json.decode(json.encode(-0.0))\n"
      "assert(1/z == -math.huge)\n"
      "local ok, err = pcall(json.encode, {rows = {{}, {fn = print}}})\n"
      "assert(not ok and err == 'value.rows[2].fn: cannot store a function', err)\n"
      "ok, err = pcall(json.decode, '{\"a\": x}')\n"
      "assert(not ok and err == 'line 1, column 7 (byte 6): unexpected token', err)\n"
      "ok, err = pcall(json.decode, {})\n"
      "assert(not ok)\n"
      "local big = string.rep('x', 200000)\n"
      "assert(json.decode(json.encode({big})) [1] == big)\n"
      "assert(json.encode('again') == '\"again\"')\n"
      "return true\n";
  if (luaL_dostring(L, chunk) != 0) {
    fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
    unit_failed_checks++;
  } else {
    CHECK(lua_toboolean(L, -1));
  }
  lua_close(L);
}

/* Under LC_NUMERIC with a ',' decimal point the text is still JSON. */
static void test_locale(void) {
  lua_State *L = new_state();
  const char *locales[] = {"de_DE.UTF-8", "fr_FR.UTF-8", "de_DE", NULL};
  int set = 0;
  for (int i = 0; locales[i] && !set; i++) set = setlocale(LC_NUMERIC, locales[i]) != NULL;
  check_text(L, "return 0.5", "0.5");
  check_text(L, "return {2.25, 1e-7}", "[2.25,1e-07]");
  setlocale(LC_NUMERIC, "C");
  if (!set) fprintf(stderr, "(test_locale: no comma locale installed; ran in C)\n");
  lua_close(L);
}

/* codec_members: the spans of some members' values, the text validated */
static void test_members(void) {
  static const char *const names[] = {"a", "next_at", "n", "missing", NULL};
  codec_span v[4];
  const char *s = " {\"n\": -12.5e3, \"x\": {\"a\": [1, {\"next_at\": 1}]}, \"a\": \"q\\\"r\","
                  " \"next_at\":\"2026-12-02T05:00:00Z\", \"\\u0061\": 9, \"n\": [true, null]} ";
  CHECK(codec_members(s, strlen(s), names, v, err, sizeof err) == 0);
  /* nested members are not top-level ones; a key with escapes is none of names */
  CHECK(v[0].p && v[0].n == 6 && memcmp(v[0].p, "\"q\\\"r\"", 6) == 0);
  CHECK(v[1].p && v[1].n == 22 && memcmp(v[1].p, "\"2026-12-02T05:00:00Z\"", 22) == 0);
  /* repeated: the last one (as decoding keeps it) */
  CHECK(v[2].p && v[2].n == 12 && memcmp(v[2].p, "[true, null]", 12) == 0);
  CHECK(v[3].p == NULL);
  lua_State *L = new_state();
  CHECK(dec(L, v[0].p, v[0].n) == 0);
  CHECK_STR(lua_tostring(L, -1), "q\"r");
  lua_close(L);
  CHECK(codec_members("{}", 2, names, v, err, sizeof err) == 0 && v[0].p == NULL);
  /* the text is validated as decoding would */
  const char *bad[] = {"[1]", "{\"a\":1", "{\"a\":[1,}", "{\"a\":1} x", "{\"a\":\"\x01\"}", "{a:1}"};
  const char *why[] = {"line 1, column 1 (byte 0): an object expected",
                       "line 1, column 7 (byte 6): premature end of input",
                       "line 1, column 9 (byte 8): unexpected token",
                       "line 1, column 9 (byte 8): end of input expected",
                       "line 1, column 7 (byte 6): control character 0x01 in string",
                       "line 1, column 2 (byte 1): string or '}' expected"};
  for (int i = 0; i < 6; i++) {
    CHECK(codec_members(bad[i], strlen(bad[i]), names, v, err, sizeof err) == -1);
    CHECK_STR(err, why[i]);
  }
  char deep[3000];
  int n = snprintf(deep, sizeof deep, "{\"a\":");
  for (int i = 0; i < CODEC_RECORD_DEPTH + 1; i++) deep[n++] = '[';
  for (int i = 0; i < CODEC_RECORD_DEPTH + 1; i++) deep[n++] = ']';
  deep[n++] = '}';
  CHECK(codec_members(deep, (size_t)n, names, v, err, sizeof err) == -1);
  CHECK(strstr(err, "nesting deeper than") != NULL);
}

int main(void) {
  RUN(test_members);
  RUN(test_integers);
  RUN(test_floats);
  RUN(test_nonfinite);
  RUN(test_edge);
  RUN(test_depth);
  RUN(test_strings);
  RUN(test_keys);
  RUN(test_tables);
  RUN(test_null);
  RUN(test_encode_errors);
  RUN(test_decode_errors);
  RUN(test_pretty);
  RUN(test_valid_for_python);
  RUN(test_random);
  RUN(test_lua_module);
  RUN(test_locale);
  sbuf_free(&text);
  return UNIT_DONE();
}
