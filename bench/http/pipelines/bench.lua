-- bench/http/pipelines/bench.lua: what bench/http.sh serves: a 3-step pipeline
-- started over HTTP, and the pipelines of the populated run listings.
pipeline("three", function(input)
  local a = step("a", function() return input and input.n or 1 end)
  local b = step("b", function() return a + 1 end)
  return step("c", function() return a + b end)
end)
for i = 0, 9 do pipeline("p" .. i, function() return i end) end
