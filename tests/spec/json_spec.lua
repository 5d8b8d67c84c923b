-- json_spec.lua: sluice.json is the store's codec (exact integers, sorted
-- keys, pretty output) plus JSON Lines, with errors naming the line.
local json = require "sluice.json"

describe("sluice.json", function()
  it("is the store's codec: 64-bit integers, floats, sorted keys, empty arrays", function()
    local v = { b = math.maxinteger, a = 0.1, c = json.array({}), d = json.null }
    local text = json.encode(v)
    assert.are.equal('{"a":0.1,"b":9223372036854775807,"c":[],"d":null}', text)
    local back = json.decode(text)
    assert.are.equal("integer", math.type(back.b))
    assert.are.equal(math.maxinteger, back.b)
    assert.is_true(json.is_array(back.c))
    assert.are.equal(json.null, back.d)
  end)

  it("pretty-prints with sorted keys", function()
    assert.are.equal('{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}', json.encode({ b = 1, a = { 1, 2 } }, { pretty = true, sort_keys = true }))
  end)

  it("decodes JSON Lines, skipping blank lines and CRLF ends", function()
    local list = json.decode_lines('{"id":1}\r\n\n  \n[1,2]\n"x"\n3')
    assert.are.same({ { id = 1 }, { 1, 2 }, "x", 3 }, list)
    assert.is_true(json.is_array(list))
    assert.is_true(json.is_array(json.decode_lines("")))
    assert.are.equal(0, #json.decode_lines("\n\n"))
  end)

  it("names the line and column of a bad line", function()
    local ok, err = pcall(json.decode_lines, '{"a":1}\n\n{"b": }\n')
    assert.is_false(ok)
    assert.matches("^line 3, column 7: ", err)
  end)

  it("encodes JSON Lines and round-trips them", function()
    local list = { { id = 1, name = "a\nb" }, { 2, 3 }, "s" }
    local text = json.encode_lines(list)
    assert.are.equal('{"id":1,"name":"a\\nb"}\n[2,3]\n"s"\n', text)
    assert.are.same(list, json.decode_lines(text))
    assert.are.equal("", json.encode_lines({}))
    local ok, err = pcall(json.encode_lines, { 1, { f = print } })
    assert.is_false(ok)
    assert.matches("item 2: value.f: cannot store a function", err)
  end)
end)
