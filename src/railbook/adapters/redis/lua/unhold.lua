-- unhold.lua: free segments this copy holds but no active ticket does, on a drained train-day (a repair).
--
-- Invariant kept: a segment is freed only while nothing can be on its way to the system of record for
-- it. The caller saw the day's order stream drained (its committer group had no pending and no
-- undelivered entry) BEFORE it read this copy's masks and then the database; this call frees only if
-- the stream has not grown since (same last-generated-id: no allocation was made after that check,
-- since every allocation appends its entry in the same atomic call), it is still drained, and the day
-- is still the copy that was read (same load epoch). Every allocation the masks show was therefore
-- final in the database when it was read, so a bit the database does not hold is drift. Only bits
-- still set are cleared (a seat's new mask is its old mask AND NOT the bits given); per class, the
-- sold masks, the run table H and the run bitmaps stay equal to a recount from the masks (changed
-- seats' old maximal free runs removed and new ones added, as in release.lua and hold.lua).
--
-- KEYS: 1 meta hash, 2 order stream, then per class slot i: its inventory string. All keys share the
-- train-day's hash tag {CODE:YYYY-MM-DD} (one Cluster slot).
-- ARGV: 1 expected epoch, 2 expected last-generated-id of the stream, 3 committer group name,
--       4 #slots, 5 #seats, then per seat (slot, seat index, bits to free).
-- Returns {1, seats changed} or {0, code, text} (EPOCH_CHANGED, NOT_DRAINED: nothing done).

if redis.call('EXISTS', KEYS[1]) == 0 or (redis.call('HGET', KEYS[1], 'epoch') or '') ~= ARGV[1] then
  return {0, 'EPOCH_CHANGED', 'the train-day was loaded again'}
end
if redis.call('EXISTS', KEYS[2]) == 0 then return {0, 'NOT_DRAINED', 'no order stream'} end
local info = redis.call('XINFO', 'STREAM', KEYS[2])
local last = nil
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
end
if last ~= ARGV[2] then return {0, 'NOT_DRAINED', 'orders were appended since'} end
local drained = false
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[2])) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  if f['name'] == ARGV[3] then drained = f['pending'] == 0 and f['lag'] == 0 end
end
if not drained then return {0, 'NOT_DRAINED', 'orders are pending'} end

local n = tonumber(redis.call('HGET', KEYS[1], 'n'))
local nslots = tonumber(ARGV[4])
local ns = tonumber(ARGV[5])
local C = seg_read_classes(2, nslots)
if not C then return {0, 'BAD_SEAT_CLASS', 'seat class not on this train-day'} end

local T = n * (n - 1) / 2
local MOFF = HDR + 2 * T -- HDR, FIRST_READ and the seg_* helpers: lib/segments.lua

for j = 0, ns - 1 do
  local o = 6 + 3 * j
  local c = C[tonumber(ARGV[o])]
  local seat, bits = tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2])
  if seat >= 0 and seat < c.N then
    local m = seg_mask(c, seat, MOFF)
    for k = 0, n - 2 do
      if math.floor(bits / 2 ^ k) % 2 == 1 and math.floor(m / 2 ^ k) % 2 == 1 then m = m - 2 ^ k end
    end
    c.masks[seat] = m
  end
end

return {1, seg_write_masks(C, nslots, n, MOFF)}
