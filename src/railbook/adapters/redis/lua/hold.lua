-- hold.lua: mark held the segments the system of record holds and this copy shows free (a repair).
--
-- Invariant kept: nothing is ever freed — a seat's new mask is its old mask OR the held journey, so
-- a repeat changes nothing and a segment some newer order took meanwhile stays as it is (the ticket
-- exclusion constraint settles that order). Per class, the sold masks, the run table H and the run
-- bitmaps stay equal to a recount from the masks (each changed seat's old maximal free runs are
-- removed and its new ones added, as in release.lua). A hold is skipped when one of the release
-- markers given with it exists (its ticket was given back here after the caller read the database),
-- and the whole call is a no-op unless the day is still loaded under the expected epoch (the caller
-- compared against that copy; a rebuilt one must be compared again).
--
-- KEYS: 1 meta hash, then per class slot i: its inventory string, then the release markers of every
-- hold in turn. All keys share the train-day's hash tag {CODE:YYYY-MM-DD} (one Cluster slot).
-- ARGV: 1 expected epoch, 2 #slots, 3 #holds, then per hold (slot, seat index, x, y, #markers).
-- Returns {1, seats changed} or {0, code, text}.

if (redis.call('HGET', KEYS[1], 'epoch') or '') ~= ARGV[1] or redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 'EPOCH_CHANGED', 'the train-day was loaded again'}
end
local nslots = tonumber(ARGV[2])
local nh = tonumber(ARGV[3])
local n = tonumber(redis.call('HGET', KEYS[1], 'n'))

local C = seg_read_classes(1, nslots)
if not C then return {0, 'BAD_SEAT_CLASS', 'seat class not on this train-day'} end

local T = n * (n - 1) / 2
local MOFF = HDR + 2 * T -- HDR, FIRST_READ and the seg_* helpers: lib/segments.lua

-- new masks, hold by hold (a seat held twice in one call ends with both journeys)
local mk = 1 + nslots
for j = 0, nh - 1 do
  local o = 4 + 5 * j
  local c = C[tonumber(ARGV[o])]
  local seat, x, y, nm = tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3]), tonumber(ARGV[o + 4])
  local released = false
  for k = 1, nm do
    if redis.call('EXISTS', KEYS[mk + k]) == 1 then released = true end
  end
  mk = mk + nm
  if not released and seat >= 0 and seat < c.N and x >= 0 and x < y and y <= n - 1 then
    local m = seg_mask(c, seat, MOFF)
    for k = x, y - 1 do
      if math.floor(m / 2 ^ k) % 2 == 0 then m = m + 2 ^ k end
    end
    c.masks[seat] = m
  end
end

return {1, seg_write_masks(C, nslots, n, MOFF)}
