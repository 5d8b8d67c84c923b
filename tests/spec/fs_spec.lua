-- fs_spec.lua: sluice.fs on real files: atomic writes, appends, streamed
-- lines, listing and globbing, mkdir -p, errors as nil, message, code; and
-- that a call suspends only its own coroutine.
local H = require "helper"
local fs = require "sluice.fs"
local sched = require "sluice.sched"
local uv = require "luv"

local dir = H.tmpdir()

describe("sluice.fs", function()
  it("writes atomically and reads back, leaving no temporary file", function()
    local p = dir .. "/a.txt"
    assert.is_true(fs.write(p, "first"))
    assert.is_true(fs.write(p, "second\0bytes\255"))
    assert.are.equal("second\0bytes\255", fs.read(p))
    assert.are.same({ "a.txt" }, fs.list(dir))
    assert.are.equal(tonumber("644", 8), fs.stat(p).mode)
  end)

  it("reads files whose size is not known in advance", function()
    local s = fs.read("/proc/self/status")
    assert.matches("Name:", s)
  end)

  it("returns nil, message, code on failure; fs.must raises", function()
    local v, err, code = fs.read(dir .. "/missing")
    assert.is_nil(v)
    assert.are.equal("ENOENT", code)
    assert.matches("^ENOENT: .*missing", err)
    v, err, code = fs.write(dir .. "/no/such/dir/f", "x")
    assert.is_nil(v)
    assert.are.equal("ENOENT", code)
    local ok, e = pcall(fs.must.read, dir .. "/missing")
    assert.is_false(ok)
    assert.matches("fs.read: ENOENT", e)
    assert.are.equal("x", (function() fs.must.write(dir .. "/m", "x") return fs.must.read(dir .. "/m") end)())
  end)

  it("appends, creating the file", function()
    local p = dir .. "/log.txt"
    assert.is_true(fs.append(p, "a\n"))
    assert.is_true(fs.append(p, "b\n", { sync = false }))
    assert.are.equal("a\nb\n", fs.read(p))
  end)

  it("streams lines across chunk boundaries, with CRLF and a last line without newline", function()
    local p = dir .. "/lines.txt"
    local parts, want = {}, {}
    for i = 1, 30000 do
      want[i] = ("line %d %s"):format(i, string.rep("x", i % 17))
      parts[i] = want[i] .. (i % 3 == 0 and "\r\n" or "\n")
    end
    fs.write(p, table.concat(parts) .. "tail")
    want[#want + 1] = "tail"
    local got = {}
    for line in fs.lines(p) do got[#got + 1] = line end
    assert.are.equal(#want, #got)
    assert.are.same(want, got)
    -- an empty line in the middle is kept
    fs.write(p, "a\n\nb\n")
    got = {}
    for line in fs.lines(p) do got[#got + 1] = line end
    assert.are.same({ "a", "", "b" }, got)
  end)

  it("closes the file when a loop over lines is left early", function()
    local p = dir .. "/early.txt"
    fs.write(p, "1\n2\n3\n")
    local function open_fds()
      return #fs.list("/proc/self/fd")
    end
    local before = open_fds()
    for _ = 1, 20 do
      for line in fs.lines(p) do if line == "1" then break end end
    end
    assert.are.equal(before, open_fds())
    local ok, err = pcall(function() for _ in fs.lines(dir .. "/nope") do end end)
    assert.is_false(ok)
    assert.matches("fs.lines: ENOENT", err)
  end)

  it("mkdir -p, stat, rename, recursive remove", function()
    local d = dir .. "/x/y/z"
    assert.is_true(fs.mkdir(d))
    assert.is_true(fs.mkdir(d)) -- exists: fine
    assert.are.equal("directory", fs.stat(d).type)
    fs.write(d .. "/f", "12345")
    local st = fs.stat(d .. "/f")
    assert.are.equal("file", st.type)
    assert.are.equal(5, st.size)
    assert.is_true(math.abs(st.mtime - os.time()) < 60)
    local _, _, code = fs.mkdir(d .. "/f/g")
    assert.are.equal("ENOTDIR", code)
    assert.is_true(fs.rename(d .. "/f", dir .. "/x/g"))
    assert.is_false(fs.exists(d .. "/f"))
    assert.is_true(fs.exists(dir .. "/x/g"))
    local _, _, c2 = fs.remove(dir .. "/x")
    assert.are.equal("ENOTEMPTY", c2)
    assert.is_true(fs.remove(dir .. "/x", { recursive = true }))
    assert.is_false(fs.exists(dir .. "/x"))
  end)

  it("globs with *, ?, [sets], ** and hidden files", function()
    local g = dir .. "/glob"
    for _, f in ipairs({ "a.csv", "b.csv", "c.txt", ".h.csv", "d1.csv", "sub/e.csv", "sub/deep/f.csv", "sub/deep/g.txt" }) do
      fs.mkdir(fs.dirname(g .. "/" .. f))
      fs.write(g .. "/" .. f, "")
    end
    local function rel(list)
      local out = {}
      for i, p in ipairs(list) do out[i] = p:sub(#g + 2) end
      return out
    end
    assert.are.same({ "a.csv", "b.csv", "d1.csv" }, rel(fs.glob(g .. "/*.csv")))
    assert.are.same({ ".h.csv" }, rel(fs.glob(g .. "/.*.csv")))
    assert.are.same({ "a.csv", "b.csv" }, rel(fs.glob(g .. "/?.csv")))
    assert.are.same({ "a.csv", "c.txt" }, rel(fs.glob(g .. "/[ac].*")))
    assert.are.same({ "b.csv", "d1.csv", "sub" }, rel(fs.glob(g .. "/[!ac]*")))
    assert.are.same({ "a.csv", "b.csv", "d1.csv", "sub/deep/f.csv", "sub/e.csv" }, rel(fs.glob(g .. "/**/*.csv")))
    assert.are.same({ "sub/deep/g.txt" }, rel(fs.glob(g .. "/sub/*/g.txt")))
    assert.are.same({}, fs.glob(g .. "/nothing/*.csv"))
    assert.are.same({ g .. "/c.txt" }, fs.glob(g .. "/c.txt"))
  end)

  it("suspends only the calling task: the loop goes on while it waits", function()
    -- the task blocks in open() of a FIFO until a writer comes: this test's
    -- coroutine (the loop must run it meanwhile), or else a watchdog process
    -- after 10 s, whose data would then be the one read
    local fifo = dir .. "/fifo"
    assert(os.execute("mkfifo '" .. fifo .. "'"))
    local watchdog = H.spawn({ "-c", "exec >&- 2>&-; sleep 10; echo late > '" .. fifo .. "'" }, { bin = "/bin/sh" })
    local t = sched.go({}, function() return fs.read(fifo) end)
    local c = uv.constants
    local function writer() return uv.fs_open(fifo, c.O_WRONLY | c.O_NONBLOCK, 0) end
    local ok, err = pcall(function()
      -- non-blocking: ENXIO until the task is in open() as a reader
      local fd
      H.wait_until(function() fd = writer(); return fd ~= nil end,
        "the task to wait in open() of the FIFO while this test runs", 5000, 5)
      assert.are.equal(14, uv.fs_write(fd, "from the test\n", -1))
      uv.fs_close(fd)
      local done, data = t:await()
      assert.is_true(done)
      assert.are.equal("from the test\n", data)
    end)
    -- whatever happened, no read stays blocked in the thread pool (the loop
    -- could not close at exit): a writer that comes and goes ends it
    for _ = 1, 1000 do
      if t.done then break end
      local fd = writer()
      if fd then uv.fs_close(fd) end
      H.sleep(10)
    end
    watchdog:kill()
    watchdog:wait()
    if not ok then error(err, 0) end
  end)

  it("runs synchronously in a coroutine the host does not resume", function()
    fs.write(dir .. "/sync", "sync")
    local co = coroutine.wrap(function() coroutine.yield(fs.read(dir .. "/sync")) end)
    assert.are.equal("sync", co())
  end)
end)
