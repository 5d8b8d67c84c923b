--- sluice.pretty: how the REPL shows a value. One line when it fits the
--- width, else one entry per line; nested tables stop at a depth, long
--- tables after a number of entries, long strings after a number of bytes,
--- each saying how much was left out; cycles show as <cycle>. A list made
--- by M.rows (the REPL's runs(), events(), ...) shows as a table of
--- columns, like the CLI's listings. Strings are quoted, with the escapes
--- Lua reads back (bytes that are not UTF-8 as \xHH).
local null = require("sluice._codec").null

local M = {}

M.defaults = { depth = 4, items = 50, width = 100, string = 2000, cell = 48 }

local ROWS = {} -- metatable field: the rows view's column list

--- Marks list (an array of records) as rows shown under `columns`; returns
--- it. It stays a plain array: #list, list[1].id, JSON all work.
function M.rows(list, columns)
  return setmetatable(list, { __name = "sluice.rows", [ROWS] = columns })
end

local escapes = { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function quote(s, max)
  local cut = ""
  if #s > max then
    -- do not cut inside a UTF-8 sequence
    local n = max
    while n > 0 and s:byte(n + 1) and s:byte(n + 1) >= 0x80 and s:byte(n + 1) < 0xC0 do n = n - 1 end
    cut = ("...(%d bytes)"):format(#s)
    s = s:sub(1, n)
  end
  local out, i, n = {}, 1, #s
  while i <= n do
    local j = s:find('[%c\\"\128-\255]', i)
    if not j then out[#out + 1] = s:sub(i); break end
    out[#out + 1] = s:sub(i, j - 1)
    local c = s:sub(j, j)
    local b = c:byte()
    local seq = b >= 0xC2 and b <= 0xF4 and s:match("^[\194-\244][\128-\191]+", j)
    if seq and utf8.len(seq) == 1 then
      out[#out + 1] = seq -- a whole UTF-8 character
      i = j + #seq
    else
      out[#out + 1] = escapes[c] or (b < 128 and ("\\%03d"):format(b) or ("\\x%02X"):format(b))
      i = j + 1
    end
  end
  local body = table.concat(out)
  return '"' .. body .. '"' .. cut
end

local function is_ident(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function fn_text(f)
  local info = debug.getinfo(f, "S")
  if info.what == "C" then return "function: builtin" end
  return ("function: %s:%d"):format(info.short_src, info.linedefined)
end

local function scalar(v, o)
  local t = type(v)
  if t == "string" then return quote(v, o.string) end
  if t == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    if v ~= v then return "nan" end
    if v == math.huge then return "inf" elseif v == -math.huge then return "-inf" end
    local s
    for digits = 15, 17 do -- the shortest that reads back as v
      s = ("%." .. digits .. "g"):format(v)
      if tonumber(s) == v then break end
    end
    if not s:find("[%.eEn]") then s = s .. ".0" end
    return s
  end
  if v == null then return "null" end
  if t == "function" then return fn_text(v) end
  return tostring(v)
end

-- keys in a stable order: the array part, then the rest sorted by type
-- and value
local function sorted_keys(t)
  local n = #t
  local keys, rest = {}, {}
  for i = 1, n do keys[i] = i end
  for k in pairs(t) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then rest[#rest + 1] = k end
  end
  table.sort(rest, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  for _, k in ipairs(rest) do keys[#keys + 1] = k end
  return keys, n
end

local render

local function rows_text(list, columns, o)
  if #list == 0 then return "(none)" end
  local cells, widths = {}, {}
  for i, c in ipairs(columns) do widths[i] = #c end
  local shown = math.min(#list, o.items)
  for r = 1, shown do
    local rec, line = list[r], {}
    for i, c in ipairs(columns) do
      local v
      if type(rec) == "table" then v = rec[c] end
      local s
      if v == nil then s = "-"
      elseif type(v) == "string" then s = v:gsub("[%c]", " ")
      elseif type(v) == "table" then s = render(v, { depth = 1, items = 8, width = o.cell, string = o.cell, cell = o.cell }, 0, {}, 0)
      else s = scalar(v, o) end
      if utf8.len(s) and utf8.len(s) > o.cell then
        s = s:sub(1, utf8.offset(s, o.cell) - 1) .. "~"
      elseif #s > o.cell and not utf8.len(s) then
        s = s:sub(1, o.cell - 1) .. "~"
      end
      line[i] = s
      local w = utf8.len(s) or #s
      if w > widths[i] then widths[i] = w end
    end
    cells[r] = line
  end
  local out = {}
  local function emit(line)
    local parts = {}
    for i = 1, #columns do
      local s = line[i]
      parts[i] = i < #columns and s .. (" "):rep(widths[i] - (utf8.len(s) or #s)) or s
    end
    out[#out + 1] = table.concat(parts, "  ")
  end
  local head = {}
  for i, c in ipairs(columns) do head[i] = c:upper() end
  emit(head)
  for _, line in ipairs(cells) do emit(line) end
  if #list > shown then out[#out + 1] = ("... (%d more rows)"):format(#list - shown) end
  return table.concat(out, "\n")
end

-- v at `level` (0: the top), indented by `indent` columns; `path` holds
-- the tables being shown (a cycle is a table already on it)
render = function(v, o, level, path, indent)
  if type(v) ~= "table" then return scalar(v, o) end
  if path[v] then return "<cycle>" end
  local mt = getmetatable(v)
  if type(mt) == "table" then
    if mt[ROWS] and level == 0 then return rows_text(v, mt[ROWS], o) end
    if mt.__tostring then
      local ok, s = pcall(tostring, v)
      if ok and type(s) == "string" then return s end
    end
  end
  if next(v) == nil then return "{}" end
  local keys, n = sorted_keys(v)
  if level >= o.depth then return ("{...%d entries}"):format(#keys) end
  path[v] = true
  local parts = {}
  local shown = math.min(#keys, o.items)
  for i = 1, shown do
    local k = keys[i]
    local val = render(v[k], o, level + 1, path, indent + 2)
    if i <= n then
      parts[i] = val
    elseif is_ident(k) then
      parts[i] = k .. " = " .. val
    else
      parts[i] = "[" .. render(k, o, o.depth, path, indent + 2) .. "] = " .. val
    end
  end
  path[v] = nil
  if #keys > shown then parts[#parts + 1] = ("...(%d more)"):format(#keys - shown) end
  local one = "{ " .. table.concat(parts, ", ") .. " }"
  if #one + indent <= o.width and not one:find("\n", 1, true) then return one end
  local pad = (" "):rep(indent + 2)
  return "{\n" .. pad .. table.concat(parts, ",\n" .. pad) .. "\n" .. (" "):rep(indent) .. "}"
end

--- The text of v. opts (each optional): depth, items (entries shown per
--- table), width (of a line), string (bytes of a string shown), cell (width
--- of a rows column); defaults in M.defaults.
function M.show(v, opts)
  local o = {}
  for k, d in pairs(M.defaults) do o[k] = opts and opts[k] or d end
  return render(v, o, 0, {}, 0)
end

--- The values of an evaluation, one per line ("nil" for an explicit nil).
function M.values(t, opts)
  local lines = {}
  for i = 1, t.n do lines[i] = M.show(t[i], opts) end
  return table.concat(lines, "\n")
end

return M
