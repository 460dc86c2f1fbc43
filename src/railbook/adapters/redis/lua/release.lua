-- release.lua: give back a journey's segments of some seats, once per release id.
--
-- Invariant kept: per class, the sold masks, the row-suffix run table H and the run bitmaps stay
-- equal to a recount from the masks (each changed seat's old maximal free runs are removed and its
-- new ones added, the difference only), and a release id takes effect at most once while its
-- marker lives (a few days, longer than any retry of a cancel/refund). All checks (journey, class,
-- seat index) run before any write, so a bad request changes nothing and does not consume the
-- release id. Bits already free stay free. Writes per class: one BITFIELD (masks, run bits) and
-- one SETRANGE (the changed span of H); layout as in allocate.lua.
--
-- With an expected load epoch (the epoch the seats were allocated under), a day loaded under any
-- other epoch is left alone and the release id is not consumed: that copy was rebuilt from the
-- system of record and never held what is being given back.
--
-- KEYS: 1 meta hash, 2 release marker, then per class slot i: its inventory string. All keys share
-- the train-day's hash tag {CODE:YYYY-MM-DD} (one Cluster slot).
-- ARGV: 1 x, 2 y, 3 marker ttl seconds, 4 #slots, 5 #seats, then per seat (slot, seat index), then
--       optionally the expected epoch.
-- Returns {1} applied, {2} repeat (nothing done), {3} another epoch (nothing done), or {0, code, text}.

if redis.call('EXISTS', KEYS[2]) == 1 then return {2} end

local x = tonumber(ARGV[1])
local y = tonumber(ARGV[2])
local nslots = tonumber(ARGV[4])
local ns = tonumber(ARGV[5])
local want = ARGV[6 + 2 * ns]
if want and (redis.call('HGET', KEYS[1], 'epoch') or '') ~= want then return {3} end

local C = {}
local n = nil
for i = 1, nslots do
  local key = KEYS[2 + i]
  local s, cn, cN = seg_read_class(key)
  if s then
    C[i] = {s = s, n = cn, N = cN, key = key, masks = {}, g = {}, bf = {}, set = {}}
    n = n or cn
  else
    C[i] = false
  end
end
if not n then
  local mn = redis.call('HGET', KEYS[1], 'n')
  if not mn then return {0, 'DAY_NOT_LOADED', 'train-day not loaded'} end
  n = tonumber(mn)
end
if y > n - 1 then return {0, 'BAD_JOURNEY', 'bad journey for this train'} end
for j = 0, ns - 1 do
  local c = C[tonumber(ARGV[6 + 2 * j])]
  if not c then return {0, 'BAD_SEAT_CLASS', 'seat class not on this train-day'} end
  local seat = tonumber(ARGV[7 + 2 * j])
  if seat < 0 or seat >= c.N then return {0, 'BAD_SEAT', 'no such seat'} end
end

local T = n * (n - 1) / 2
local MOFF = HDR + 2 * T -- HDR, FIRST_READ and the seg_* helpers: lib/segments.lua

for j = 0, ns - 1 do
  local c = C[tonumber(ARGV[6 + 2 * j])]
  local seat = tonumber(ARGV[7 + 2 * j])
  local old = c.masks[seat]
  if not old then
    local raw = redis.call('GETRANGE', c.key, MOFF + 8 * seat, MOFF + 8 * seat + 7)
    old = struct.unpack('>I8', raw)
  end
  local new = old
  for k = x, y - 1 do
    if math.floor(new / 2 ^ k) % 2 == 1 then new = new - 2 ^ k end
  end
  if new ~= old then
    -- run bits in the order computed: a seat released twice in one call ends with the runs of its last mask
    seg_run_delta(n, old, new, seat, 8 * (MOFF + 8 * c.N), 8 * math.ceil(c.N / 8), c.g, c.bf)
    c.masks[seat] = new
    c.set[seat] = true
  end
end

for i = 1, nslots do
  local c = C[i]
  for seat in pairs(c.set) do
    local bf = c.bf
    bf[#bf + 1] = 'SET'; bf[#bf + 1] = 'u63'; bf[#bf + 1] = 8 * (MOFF + 8 * seat) + 1; bf[#bf + 1] = c.masks[seat]
  end
  seg_write(c.key, c.s, n, c.bf, c.g)
end

redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[3]))
return {1}
