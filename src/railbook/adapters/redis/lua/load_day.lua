-- load_day.lua: install a train-day's inventory (built and checked in Python from the masks).
--
-- Invariant kept: a train-day is either absent or complete — meta and every class string (header,
-- run table H, masks and run bitmaps, layout in allocate.lua) are written by this one atomic call,
-- and any keys of an earlier load are deleted first, so the allocator never sees half a day.
-- Without replace an existing day is left alone (several processes may race to open the same
-- day: the first load wins, the rest are no-ops).
-- Every load stamps a fresh load epoch (meta field epoch, and the same bytes in every class
-- header, where allocate.lua reads it for free): orders allocated and releases meant for an earlier
-- copy of the day are recognised as such. The release markers of the releases the loaded masks
-- already reflect are set in the same call, so a late retry of one of them cannot free a seat this
-- copy holds for a newer order (a wipe lost the markers the first application had left).
--
-- KEYS: 1 meta hash, then one inventory string per known seat class (fixed order), then the markers
-- of the absorbed releases; all share the train-day's hash tag {CODE:YYYY-MM-DD}.
-- ARGV: 1 replace (0/1), 2 n stops, 3 classes (comma-separated), 4 epoch, 5 marker ttl seconds,
--       6 number of class keys, then per known class its string ('' when the class is absent).
-- Returns 1 when loaded, 0 when already present.

if ARGV[1] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local nc = tonumber(ARGV[6])
local own = {}
for i = 1, 1 + nc do own[i] = KEYS[i] end
redis.call('DEL', unpack(own))
redis.call('HSET', KEYS[1], 'n', ARGV[2], 'classes', ARGV[3], 'epoch', ARGV[4])
for i = 2, 1 + nc do
  local blob = ARGV[i + 5]
  if blob ~= '' then redis.call('SET', KEYS[i], blob) end
end
for i = 2 + nc, #KEYS do
  redis.call('SET', KEYS[i], '1', 'EX', tonumber(ARGV[5]))
end
return 1
