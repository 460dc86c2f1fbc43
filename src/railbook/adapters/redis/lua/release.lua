-- release.lua: give back a journey's segments of some seats, once per release id.
--
-- Invariant kept: masks, run table G and run index stay equal to a recount from the masks (each
-- changed seat's old maximal free runs are removed and its new ones added, the difference only),
-- and a release id takes effect at most once while its marker lives (a few days, longer than any
-- retry of a cancel/refund). All checks (journey, class, seat index) run before any write, so a
-- bad request changes nothing and does not consume the release id. Bits already free stay free.
--
-- KEYS: 1 meta hash, 2 release marker, then per class slot i: inventory string, run zset.
-- ARGV: 1 x, 2 y, 3 marker ttl seconds, 4 #slots, 5 #seats, then per seat (slot, seat index).
-- Returns {1} applied, {2} repeat (nothing done), or {0, code, text}.

local HDR = 256
local S = 65536

if redis.call('EXISTS', KEYS[2]) == 1 then return {2} end

local x = tonumber(ARGV[1])
local y = tonumber(ARGV[2])
local nslots = tonumber(ARGV[4])
local ns = tonumber(ARGV[5])

local C = {}
local n = nil
for i = 1, nslots do
  local h = redis.call('GETRANGE', KEYS[1 + 2 * i], 0, 3)
  if h ~= '' then
    local cn, cN = struct.unpack('>HH', h)
    C[i] = {n = cn, N = cN, key = KEYS[1 + 2 * i], rkey = KEYS[2 + 2 * i], masks = {}, g = {}, z = {}, set = {}}
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

local P = {}
P[0] = 1
for k = 1, 52 do P[k] = P[k - 1] * 2 end
local MOFF = HDR + 2 * n * n

local function runs(m)
  local out = {}
  local start = nil
  for k = 0, n - 2 do
    if math.floor(m / P[k]) % 2 == 0 then
      if not start then start = k end
    elseif start then
      out[start * n + k] = true
      start = nil
    end
  end
  if start then out[start * n + n - 1] = true end
  return out
end

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
    if math.floor(new / P[k]) % 2 == 1 then new = new - P[k] end
  end
  if new ~= old then
    local before, after = runs(old), runs(new)
    for rid in pairs(before) do
      if not after[rid] then
        c.g[rid] = (c.g[rid] or 0) - 1
        c.z[rid * S + seat] = (c.z[rid * S + seat] or 0) - 1
      end
    end
    for rid in pairs(after) do
      if not before[rid] then
        c.g[rid] = (c.g[rid] or 0) + 1
        c.z[rid * S + seat] = (c.z[rid * S + seat] or 0) + 1
      end
    end
    c.masks[seat] = new
    c.set[seat] = true
  end
end

for i = 1, nslots do
  local c = C[i]
  local zrem, zadd, bf = {}, {}, {}
  for member, d in pairs(c.z) do
    if d < 0 then zrem[#zrem + 1] = member
    elseif d > 0 then zadd[#zadd + 1] = member; zadd[#zadd + 1] = member end
  end
  for rid, d in pairs(c.g) do
    if d ~= 0 then
      bf[#bf + 1] = 'INCRBY'; bf[#bf + 1] = 'u16'; bf[#bf + 1] = 8 * (HDR + 2 * rid); bf[#bf + 1] = d
    end
  end
  for seat in pairs(c.set) do
    bf[#bf + 1] = 'SET'; bf[#bf + 1] = 'u63'; bf[#bf + 1] = 8 * (MOFF + 8 * seat) + 1; bf[#bf + 1] = c.masks[seat]
  end
  if #zrem > 0 then redis.call('ZREM', c.rkey, unpack(zrem)) end
  if #zadd > 0 then redis.call('ZADD', c.rkey, unpack(zadd)) end
  if #bf > 0 then redis.call('BITFIELD', c.key, unpack(bf)) end
end

redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[3]))
return {1}
