--- sluice.sorted_keys: the keys of a table as a sorted list, so that what
--- is printed, hashed or listed does not depend on the order of pairs().
return function(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
end
