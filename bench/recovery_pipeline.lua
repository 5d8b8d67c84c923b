-- bench/recovery_pipeline.lua: the pipeline of bench/recovery.sh.
-- input = {n = steps, side = path}: step i appends one fixed-width 8-byte
-- record ("%07d\n") to the side-effect file, unbuffered, so a watcher sees
-- how far the run got and a SIGKILL loses nothing already written.
pipeline("recovery", function(input)
  local f = assert(io.open(input.side, "ab"))
  f:setvbuf("no")
  local last
  for i = 1, input.n do
    last = step("s" .. i, function()
      f:write(("%07d\n"):format(i))
      return { i = i }
    end)
  end
  f:close()
  return { done = input.n, last = last.i }
end)
