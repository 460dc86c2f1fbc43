-- load_day.lua: install a train-day's inventory (built and checked in Python from the masks).
--
-- Invariant kept: a train-day is either absent or complete — meta and every class string (header,
-- run table H, masks and run bitmaps, layout in allocate.lua) are written by this one atomic call,
-- and any keys of an earlier load are deleted first, so the allocator never sees half a day.
-- Without replace an existing day is left alone (several processes may race to open the same
-- day: the first load wins, the rest are no-ops).
--
-- KEYS: 1 meta hash, then one inventory string per known seat class (fixed order); all share the
-- train-day's hash tag {CODE:YYYY-MM-DD}.
-- ARGV: 1 replace (0/1), 2 n stops, 3 classes (comma-separated), then per known class its string
--       ('' when the class is absent).
-- Returns 1 when loaded, 0 when already present.

if ARGV[1] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', unpack(KEYS))
redis.call('HSET', KEYS[1], 'n', ARGV[2], 'classes', ARGV[3])
for i = 2, #KEYS do
  local blob = ARGV[i + 2]
  if blob ~= '' then redis.call('SET', KEYS[i], blob) end
end
return 1
