-- load_day.lua: install a train-day's inventory (built and checked in Python from the masks).
--
-- Invariant kept: a train-day is either absent or complete — meta, every class string and every
-- run zset are written by this one atomic call, and any keys of an earlier load are deleted
-- first, so the allocator never sees half a day. Without replace an existing day is left alone
-- (several processes may race to open the same day: the first load wins, the rest are no-ops).
--
-- KEYS: 1 meta hash, then per known seat class (fixed order): inventory string, run zset.
-- ARGV: 1 replace (0/1), 2 n stops, 3 classes (comma-separated), then per known class:
--       blob ('' when the class is absent), member count, members (each its own score).
-- Returns 1 when loaded, 0 when already present.

if ARGV[1] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', unpack(KEYS))
redis.call('HSET', KEYS[1], 'n', ARGV[2], 'classes', ARGV[3])
local o = 4
local nclasses = (#KEYS - 1) / 2
for i = 1, nclasses do
  local blob = ARGV[o]
  local cnt = tonumber(ARGV[o + 1])
  o = o + 2
  if blob ~= '' then
    redis.call('SET', KEYS[2 * i], blob)
    local j = 0
    while j < cnt do
      local args = {}
      local stop = math.min(cnt, j + 2000)
      for q = j, stop - 1 do
        args[#args + 1] = ARGV[o + q]
        args[#args + 1] = ARGV[o + q]
      end
      redis.call('ZADD', KEYS[2 * i + 1], unpack(args))
      j = stop
    end
  end
  o = o + cnt
end
return 1
