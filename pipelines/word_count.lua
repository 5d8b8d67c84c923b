-- word_count.lua: counts the words of a few text files in parallel branches,
-- one durable step per file, and merges the counts in a final step.
--
--   sluice run pipelines/word_count.lua --input '{"files": ["README.md"]}'
--
-- Kill it half-way and run it again with the same --id: the files already
-- counted are not read again, their stored counts are used.

local function count_words(path)
  local f = assert(io.open(path, "rb"))
  local counts = {}
  for word in f:read("a"):lower():gmatch("%a+") do
    counts[word] = (counts[word] or 0) + 1
  end
  f:close()
  return counts
end

pipeline("word_count", function(input)
  local files = input and input.files or { "/usr/share/common-licenses/GPL-3", "/usr/share/common-licenses/Apache-2.0" }
  local top = input and input.top or 5

  -- one branch per file; each count is a durable step
  local branches = {}
  for i, path in ipairs(files) do
    branches[i] = function()
      return step("count " .. path, count_words, path)
    end
  end
  local per_file = { parallel(table.unpack(branches)) }

  return step("merge", function()
    local total = {}
    for _, counts in ipairs(per_file) do
      for word, n in pairs(counts) do total[word] = (total[word] or 0) + n end
    end
    local words = {}
    for word, n in pairs(total) do words[#words + 1] = { word = word, count = n } end
    table.sort(words, function(a, b)
      if a.count ~= b.count then return a.count > b.count end
      return a.word < b.word
    end)
    local result = { files = #files, distinct = #words, top = {} }
    for i = 1, math.min(top, #words) do result.top[i] = words[i] end
    return result
  end)
end)
