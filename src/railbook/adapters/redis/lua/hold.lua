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

local HDR = 256
local FIRST_READ = HDR + 2 * 496

if (redis.call('HGET', KEYS[1], 'epoch') or '') ~= ARGV[1] or redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 'EPOCH_CHANGED', 'the train-day was loaded again'}
end
local nslots = tonumber(ARGV[2])
local nh = tonumber(ARGV[3])
local n = tonumber(redis.call('HGET', KEYS[1], 'n'))

local C = {}
for i = 1, nslots do
  local key = KEYS[1 + i]
  local s = redis.call('GETRANGE', key, 0, FIRST_READ - 1)
  if s == '' then return {0, 'BAD_SEAT_CLASS', 'seat class not on this train-day'} end
  local cn, cN = struct.unpack('>HH', s)
  local need = HDR + cn * (cn - 1)
  if #s < need then s = s .. redis.call('GETRANGE', key, #s, need - 1) end
  C[i] = {s = s, N = cN, key = key, masks = {}, set = {}}
end

local T = n * (n - 1) / 2
local MOFF = HDR + 2 * T
local function tri(a, b) return a * (2 * n - a - 1) / 2 + b - a - 1 end

local function runs(m)
  local out = {}
  local start = nil
  for k = 0, n - 2 do
    if math.floor(m / 2 ^ k) % 2 == 0 then
      if not start then start = k end
    elseif start then
      out[start * n + k] = true
      start = nil
    end
  end
  if start then out[start * n + n - 1] = true end
  return out
end

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
    local m = c.masks[seat]
    if not m then
      m = struct.unpack('>I8', redis.call('GETRANGE', c.key, MOFF + 8 * seat, MOFF + 8 * seat + 7))
      c.masks[seat] = m
      c.old = c.old or {}
      c.old[seat] = m
    end
    for k = x, y - 1 do
      if math.floor(m / 2 ^ k) % 2 == 0 then m = m + 2 ^ k end
    end
    c.masks[seat] = m
  end
end

local changed = 0
for i = 1, nslots do
  local c = C[i]
  local bf, g = {}, {}
  local rb = 8 * (MOFF + 8 * c.N)
  local W8 = 8 * math.ceil(c.N / 8)
  for seat, new in pairs(c.masks) do
    local old = c.old[seat]
    if new ~= old then
      changed = changed + 1
      local before, after = runs(old), runs(new)
      for rid in pairs(before) do
        if not after[rid] then
          g[rid] = (g[rid] or 0) - 1
          local a, b = math.floor(rid / n), rid % n
          bf[#bf + 1] = 'SET'; bf[#bf + 1] = 'u1'; bf[#bf + 1] = rb + W8 * tri(a, b) + seat; bf[#bf + 1] = 0
        end
      end
      for rid in pairs(after) do
        if not before[rid] then
          g[rid] = (g[rid] or 0) + 1
          local a, b = math.floor(rid / n), rid % n
          bf[#bf + 1] = 'SET'; bf[#bf + 1] = 'u1'; bf[#bf + 1] = rb + W8 * tri(a, b) + seat; bf[#bf + 1] = 1
        end
      end
      bf[#bf + 1] = 'SET'; bf[#bf + 1] = 'u63'; bf[#bf + 1] = 8 * (MOFF + 8 * seat) + 1; bf[#bf + 1] = new
    end
  end
  if #bf > 0 then redis.call('BITFIELD', c.key, unpack(bf)) end
  -- G[a][b] += d is H[a][a+1..b] += d; one SETRANGE from the first changed H cell to the last
  local hd = {}
  local lo, hi = nil, nil
  for rid, d in pairs(g) do
    if d ~= 0 then
      local a, b = math.floor(rid / n), rid % n
      local j1, j2 = tri(a, a + 1), tri(a, b)
      for j = j1, j2 do hd[j] = (hd[j] or 0) + d end
      if not lo or j1 < lo then lo = j1 end
      if not hi or j2 > hi then hi = j2 end
    end
  end
  if lo then
    local bytes = {}
    for j = lo, hi do
      local o = HDR + 2 * j + 1
      local h1, l1 = string.byte(c.s, o, o + 1)
      local v = h1 * 256 + l1 + (hd[j] or 0)
      bytes[#bytes + 1] = string.char(math.floor(v / 256), v % 256)
    end
    redis.call('SETRANGE', c.key, HDR + 2 * lo, table.concat(bytes))
  end
end
return {1, changed}
