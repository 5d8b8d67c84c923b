-- csv_spec.lua: sluice.csv on real files: RFC 4180 quoting, CRLF and LF,
-- delimiters, headers to records, malformed input named by line and
-- column, a 30 MB file streamed in bounded memory with its file closed when
-- the loop breaks, and encode/parse round trips.
local H = require "helper"
local csv = require "sluice.csv"
local json = require "sluice.json"

local dir = H.tmpdir()

-- how many of this process's file descriptors are open on files in dir
local function open_fds()
  local p = assert(io.popen(("ls -l /proc/%d/fd"):format(require("luv").os_getpid())))
  local n = 0
  for line in p:lines() do
    if line:find(dir, 1, true) then n = n + 1 end
  end
  p:close()
  return n
end

describe("sluice.csv", function()
  it("parses quoted fields, doubled quotes, line breaks inside quotes, CRLF and LF", function()
    local rows = csv.parse('a,b,c\r\n1,"x,y","he said ""hi"""\n\n2,"multi\r\nline",\n3')
    assert.are.same({
      { "a", "b", "c" },
      { "1", "x,y", 'he said "hi"' },
      { "2", "multi\r\nline", "" },
      { "3" },
    }, rows)
  end)

  it("takes a delimiter, and turns rows into records with a header", function()
    assert.are.same({ { name = "bob", age = "3" }, { name = "al;ice", age = "4" } },
      csv.parse('name;age\nbob;3\n"al;ice";4\n', { delimiter = ";", header = true }))
    assert.are.same({ { "a", "b" } }, csv.parse("a\tb\n", { delimiter = "\t" }))
    assert.are.same({ { id = "1", v = "x" } }, csv.parse("1,x\n", { header = { "id", "v" } }))
    assert.has_error(function() csv.parse("a", { delimiter = "ab" }) end,
      "sluice.csv: delimiter must be one byte other than a quote or a line break")
  end)

  it("drops a UTF-8 byte order mark", function()
    assert.are.same({ { id = "1" } }, csv.parse("\239\187\191id\n1\n", { header = true }))
  end)

  it("names the line and column of an unterminated quote", function()
    local path = H.write(dir .. "/bad.csv", 'id,name\n1,ok\n2,"never closed\n3,x\n')
    local ok, err = pcall(csv.read, path, { header = true })
    assert.is_false(ok)
    assert.are.equal("ECSV", err.code)
    assert.are.equal(3, err.line)
    assert.are.equal(3, err.column)
    assert.are.equal(path, err.path)
    assert.are.equal(path .. ": line 3, column 3: unterminated quoted field (its closing quote is missing)",
      tostring(err))
    ok, err = pcall(csv.parse, 'a\n"x"y\n')
    assert.are.equal("<string>: line 2, column 4: unexpected character after a closing quote "
      .. "(write a quote inside a quoted field twice)", err.message)
  end)

  it("refuses a record whose field count differs from the header, unless ragged", function()
    local ok, err = pcall(csv.parse, "a,b\n1,2\n1,2,3\n", { header = true })
    assert.is_false(ok)
    assert.are.equal("<string>: line 3: 3 fields, the header has 2 (ragged = true allows it)", err.message)
    assert.are.same({ { a = "1" }, { a = "1", b = "2" } },
      csv.parse("a,b\n1\n1,2,3\n", { header = true, ragged = true }))
    ok, err = pcall(csv.parse, "a,b,a\n", { header = true })
    assert.are.equal("<string>: line 1: the header names 'a' twice (columns 1 and 3)", err.message)
  end)

  it("fails with the errno name for a file it cannot read", function()
    local ok, err = pcall(csv.read, dir .. "/missing.csv")
    assert.is_false(ok)
    assert.are.equal("ENOENT", err.code)
    assert.matches("missing.csv: cannot open: No such file or directory", err.message)
    ok, err = pcall(csv.read, dir)
    assert.are.equal("EISDIR", err.code)
  end)

  it("streams a 30 MB file row by row in bounded memory", function()
    local path = dir .. "/big.csv"
    local f = assert(io.open(path, "wb"))
    f:write("id,name,note\r\n")
    local line = ',"Name, with comma","a ""quoted"" note\nover two lines"\r\n'
    local n = 300000
    for i = 1, n do f:write(i, line) end
    f:close()
    collectgarbage("collect")
    local base = collectgarbage("count")
    local peak, count = 0, 0
    for row, lineno in csv.rows(path, { header = true }) do
      count = count + 1
      assert(row.id == tostring(count), "row " .. count)
      assert(lineno == 2 * count, "line " .. lineno)
      if count % 1000 == 0 then
        local kb = collectgarbage("count") - base
        if kb > peak then peak = kb end
      end
    end
    assert.are.equal(n, count)
    assert.are.equal("a \"quoted\" note\nover two lines", csv.read(path, { header = true })[n].note)
    -- the file is 30 MB; streaming holds a chunk and a record, plus garbage
    -- the collector has not reached yet
    assert.is_true(peak < 8 * 1024, ("peak Lua heap %.0f KiB"):format(peak))
  end)

  it("closes the file when a loop breaks or raises, and when read fails", function()
    local path = H.write(dir .. "/small.csv", "a\n1\n2\n3\n")
    local ragged = H.write(dir .. "/ragged.csv", "a\n1\n2,3\n")
    collectgarbage("collect") -- files left to the collector by earlier tests
    local before = open_fds()
    do
      local _, _, _, f <close> = csv.rows(path) -- an open one is counted
      assert.are.equal(before + 1, open_fds())
    end
    for _ = 1, 50 do
      for row in csv.rows(path, { header = true }) do
        if row.a == "2" then break end
      end
      pcall(function()
        for _ in csv.rows(path) do error("stop") end
      end)
      assert.is_false(pcall(csv.read, ragged, { header = true }))
    end
    assert.are.equal(before, open_fds())
  end)

  it("encodes rows and records, quoting only what needs it", function()
    assert.are.equal('a,"b,c","q""",1,2.5,true,\n"x\ny",0.1,9223372036854775807,\n',
      csv.encode({ { "a", "b,c", 'q"', 1, 2.5, true, json.null }, { "x\ny", 0.1, math.maxinteger, "" } }))
    assert.are.equal("id,name\n1,x\n2,\n",
      csv.encode({ { id = 1, name = "x" }, { id = 2 } }, { header = { "id", "name" } }))
    assert.are.equal("extra,id\r\n,1\r\ny,2\r\n",
      csv.encode({ { id = 1 }, { id = 2, extra = "y" } }, { header = true, eol = "\r\n" }))
    assert.are.equal("a;b\n", csv.encode({ { "a", "b" } }, { delimiter = ";" }))
    assert.has_error(function() csv.encode({ { id = {} } }, { header = { "id" } }) end,
      "sluice.csv.encode: rows[1].id: cannot write a table")
  end)

  it("round-trips what it encodes", function()
    local rows = {}
    for i = 1, 200 do
      rows[i] = { tostring(i), ("v%d, \"q\"\r\n%s"):format(i, string.rep("x", i % 7)), "", " pad " }
    end
    assert.are.same(rows, csv.parse(csv.encode(rows)))
    assert.are.same(rows, csv.parse(csv.encode(rows, { eol = "\r\n" })))
  end)
end)
