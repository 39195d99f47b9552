-- The loops of traverse_bench_test.go, timed in the reference interpreter:
-- lua5.2 testdata/traverse.lua prints the mean CPU time (os.clock) of one
-- traversal of a 100,000-key table, over 20 runs of each loop.
local t = {}
for i = 1, 100000 do t["k" .. i] = i end

local loops = {
  {"Pairs100k", function()
    local n = 0
    for k, v in pairs(t) do n = n + v end
    return n
  end},
  {"Pairs100kFresh", function()
    t.extra = 0 t.extra = nil
    local n = 0
    for k, v in pairs(t) do n = n + v if k == "k1" then t[k] = v end end
    return n
  end},
  {"NextInterleaved100k", function()
    local a, b, n = nil, nil, 0
    repeat a = next(t, a) b = next(t, b) if a then n = n + t[a] end until a == nil
    return n
  end},
}

for _, l in ipairs(loops) do
  local name, f = l[1], l[2]
  local runs = 20
  local c = os.clock()
  for _ = 1, runs do assert(f() == 100000 * 100001 / 2) end
  print(string.format("%-22s %12.0f cpu-ns/op", name, (os.clock() - c) / runs * 1e9))
end
