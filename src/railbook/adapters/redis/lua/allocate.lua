-- allocate.lua: seat one order on one train-day, all-or-nothing, and append its message.
--
-- Invariant kept: for every class, the mask of each seat, the run table G (seats per maximal
-- free run a..b) and the run index (zset of run*65536+seat) describe the same seats, and no
-- seat segment is sold twice. The script reads and checks everything first (journey, classes,
-- seat names, the O(1)-per-class sold-out check from G, named seats free) and returns an error
-- before any write; once the checks pass, seating cannot fail, so the writes (one ZREM, one
-- ZADD and one BITFIELD per class, one XADD) all happen or none does. Seat choice follows
-- railbook.domain.inventory exactly (property tests compare them); per call it costs a few
-- redis.calls, not one per seat or per station pair.
--
-- Class key layout (a string): 256-byte header (u16 n, u16 N, u8 L, 8 bytes letters, u8 ncar,
-- ncar x (u16 carriage, u16 rows)), then G as n*n big-endian u16 (cell a*n+b), then N masks as
-- big-endian u64 (BITFIELD u63 at bit +1).
--
-- KEYS: 1 meta hash, 2 order stream, then per class slot i: inventory string, run zset.
-- ARGV: 1 x, 2 y, 3 order_id, 4 #slots, 5 #passengers, 6 #message pairs, 7 want message (0/1),
--       then per passenger (slot, kind 0/1/2, v1, v2, v3), then slot class names, then message pairs.
-- Returns {1, pos, slot, seat, name, ...} or {0, code, text}.

local HDR = 256
local GREAD = HDR + 2 * 50 * 50
local S = 65536

local x = tonumber(ARGV[1])
local y = tonumber(ARGV[2])
local nslots = tonumber(ARGV[4])
local np = tonumber(ARGV[5])
local nmsg = tonumber(ARGV[6])
local want_msg = ARGV[7] == '1'
local PA = 7
local CA = PA + 5 * np

local P = {}
P[0] = 1
for k = 1, 52 do P[k] = P[k - 1] * 2 end
local PX = P[x]
local PLEN = P[y - x] or 0

local function fail(code, text) return {0, code, text} end

-- per class slot state
local C = {}
local n = nil
for i = 1, nslots do
  local s = redis.call('GETRANGE', KEYS[1 + 2 * i], 0, GREAD - 1)
  if s ~= '' then
    local cn, cN, cL = struct.unpack('>HHB', s)
    C[i] = {s = s, n = cn, N = cN, L = cL, letters = string.sub(s, 6, 5 + cL), key = KEYS[1 + 2 * i],
            rkey = KEYS[2 + 2 * i], name = ARGV[CA + i], taken = {}, delta = {}, takes = {}}
    n = n or cn
  else
    C[i] = false
  end
end
if not n then
  local mn = redis.call('HGET', KEYS[1], 'n')
  if not mn then return fail('DAY_NOT_LOADED', 'train-day not loaded') end
  n = tonumber(mn)
end
if y > n - 1 then return fail('BAD_JOURNEY', 'bad journey for this train') end
local MOFF = HDR + 2 * n * n

local function cars(c)
  if not c.cars then
    local ncar = string.byte(c.s, 14)
    local t = {}
    local first = 0
    for j = 0, ncar - 1 do
      local cno, rows = struct.unpack('>HH', c.s, 15 + 4 * j)
      t[j + 1] = {no = cno, rows = rows, first = first, last = first + rows * c.L - 1}
      first = first + rows * c.L
    end
    c.cars = t
  end
  return c.cars
end

local function car_of(c, seat)
  for _, k in ipairs(cars(c)) do
    if seat <= k.last then return k end
  end
end

local function is_free(m) return math.floor(m / PX) % PLEN == 0 end
local function bit(m, k) return math.floor(m / P[k]) % 2 end
local function run_of(m)
  local a, b = x, y
  while a > 0 and bit(m, a - 1) == 0 do a = a - 1 end
  while b < n - 1 and bit(m, b) == 0 do b = b + 1 end
  return a, b
end

local function gcell(c, a, b)
  local v = struct.unpack('>H', c.s, HDR + 2 * (a * n + b) + 1)
  return v - (c.delta[a * n + b] or 0)
end

local function seat_mask(c, seat)
  local raw = redis.call('GETRANGE', c.key, MOFF + 8 * seat, MOFF + 8 * seat + 7)
  return (struct.unpack('>I8', raw))
end

-- masks of one carriage block, cached for this call: seat index -> mask
local function block_masks(c, k)
  c.bm = c.bm or {}
  local t = c.bm[k.first]
  if not t then
    local cnt = k.last - k.first + 1
    local raw = redis.call('GETRANGE', c.key, MOFF + 8 * k.first, MOFF + 8 * (k.last + 1) - 1)
    local v = {struct.unpack('>' .. string.rep('I8', cnt), raw)}
    t = {}
    for j = 1, cnt do t[k.first + j - 1] = v[j] end
    c.bm[k.first] = t
  end
  return t
end

local function ok_seat(c, k, seat)
  return not c.taken[seat] and is_free(block_masks(c, k)[seat])
end

local function take(c, pos, seat, a, b)
  c.taken[seat] = true
  c.delta[a * n + b] = (c.delta[a * n + b] or 0) + 1
  c.takes[#c.takes + 1] = {pos, seat, a, b}
end

local function take_masked(c, pos, seat, m)
  local a, b = run_of(m)
  take(c, pos, seat, a, b)
end

-- step 2: classes on the train-day and named seats exist (passenger order)
local named = {}
for p = 0, np - 1 do
  local o = PA + 5 * p
  local slot, kind = tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2])
  local c = C[slot]
  if not c then return fail('BAD_SEAT_CLASS', 'seat class not on this train-day') end
  if kind == 2 then
    local car, row, li = tonumber(ARGV[o + 3]), tonumber(ARGV[o + 4]), tonumber(ARGV[o + 5])
    local idx = nil
    for _, k in ipairs(cars(c)) do
      if k.no == car then
        if row <= k.rows then idx = k.first + (row - 1) * c.L + li end
        break
      end
    end
    if not idx then return fail('BAD_SEAT_PREF', 'no such seat') end
    named[#named + 1] = {p, slot, idx}
  end
end

-- step 3: sold-out check from the run table (quadrant a <= x, b >= y), early exit
local need = {}
for p = 0, np - 1 do
  local slot = tonumber(ARGV[PA + 5 * p + 1])
  need[slot] = (need[slot] or 0) + 1
end
for i = 1, nslots do
  local c = C[i]
  local k = need[i]
  local sum = 0
  -- the longest run (0, n-1) holds most free seats early in a sale: try it alone first
  if x >= 0 then sum = gcell(c, 0, n - 1) end
  if sum < k then
    sum = 0
    local cnt = n - y
    local fmt = '>' .. string.rep('H', cnt)
    for a = 0, x do
      local v = {struct.unpack(fmt, c.s, HDR + 2 * (a * n + y) + 1)}
      for j = 1, cnt do sum = sum + v[j] end
      if sum >= k then break end
    end
  end
  if sum < k then return fail('SOLD_OUT', c.name .. ' sold out') end
end

-- step 4: named seats free
local named_masks = {}
for j, e in ipairs(named) do
  local m = seat_mask(C[e[2]], e[3])
  if not is_free(m) then return fail('SEAT_TAKEN', 'seat taken') end
  named_masks[j] = m
end

-- best fit: shortest run containing the journey, lowest seat, skipping seats taken by this order
local function best_fit(c)
  for L = y - x, n - 1 do
    local lo = y - L
    if lo < 0 then lo = 0 end
    local hi = x
    if hi > n - 1 - L then hi = n - 1 - L end
    local bs, ba = nil, nil
    for a = lo, hi do
      local b = a + L
      if gcell(c, a, b) > 0 then
        local rid = a * n + b
        local r = redis.call('ZRANGEBYSCORE', c.rkey, rid * S, rid * S + S - 1, 'LIMIT', 0,
          (c.delta[rid] or 0) + 1)
        for _, m in ipairs(r) do
          local seat = tonumber(m) % S
          if not c.taken[seat] then
            if not bs or seat < bs then bs, ba = seat, a end
            break
          end
        end
      end
    end
    if bs then return bs, ba, ba + L end
  end
  error('best_fit: run table inconsistent')
end

local function free_in(c, k)
  local out = {}
  for seat = k.first, k.last do
    if ok_seat(c, k, seat) then out[#out + 1] = seat end
  end
  return out
end

local function place_letters(c, wishes)
  local cnt, most = {}, 0
  for _, w in ipairs(wishes) do
    cnt[w[2]] = (cnt[w[2]] or 0) + 1
    if cnt[w[2]] > most then most = cnt[w[2]] end
  end
  if most > 2 then return nil end
  local W = c.L
  if most == 1 then
    for _, k in ipairs(cars(c)) do
      for r = 0, k.rows - 1 do
        local base = k.first + r * W
        local all = true
        for _, w in ipairs(wishes) do
          if not ok_seat(c, k, base + w[2]) then all = false break end
        end
        if all then
          local got = {}
          for _, w in ipairs(wishes) do got[#got + 1] = {w[1], base + w[2]} end
          return got
        end
      end
    end
  end
  for _, k in ipairs(cars(c)) do
    for r = 0, k.rows - 2 do
      local base = k.first + r * W
      local got, used = {}, {}
      for _, w in ipairs(wishes) do
        local s1, s2 = base + w[2], base + W + w[2]
        if not used[s1] and ok_seat(c, k, s1) then
          got[#got + 1] = {w[1], s1}
          used[s1] = true
        elseif not used[s2] and ok_seat(c, k, s2) then
          got[#got + 1] = {w[1], s2}
          used[s2] = true
        else
          break
        end
      end
      if #got == #wishes then return got end
    end
  end
  return nil
end

local function seat_group(c, positions)
  local u = #positions
  local s0, a0, b0 = best_fit(c)
  if u == 1 then
    take(c, positions[1], s0, a0, b0)
    return
  end
  local chosen = nil
  local k0 = car_of(c, s0)
  local near = free_in(c, k0)
  if #near >= u then
    table.sort(near, function(p, q)
      local dp, dq = math.abs(p - s0), math.abs(q - s0)
      if dp ~= dq then return dp < dq end
      return p < q
    end)
    chosen = {}
    for j = 1, u do chosen[j] = near[j] end
  else
    for _, k in ipairs(cars(c)) do
      local free = free_in(c, k)
      if #free >= u then
        chosen = {}
        for j = 1, u do chosen[j] = free[j] end
        break
      end
    end
  end
  if chosen then
    table.sort(chosen)
    for j = 1, u do
      local seat = chosen[j]
      take_masked(c, positions[j], seat, block_masks(c, car_of(c, seat))[seat])
    end
    return
  end
  -- successive best fits: take each as found (they only shrink quadrant cells), then re-sort
  local picks = {}
  for j = 1, u do
    local s, a, b = best_fit(c)
    take(c, -1, s, a, b)
    picks[j] = c.takes[#c.takes]
  end
  table.sort(picks, function(p, q) return p[2] < q[2] end)
  for j = 1, u do picks[j][1] = positions[j] end
end

-- step 5: seat class by class
for j, e in ipairs(named) do take_masked(C[e[2]], e[1], e[3], named_masks[j]) end
for i = 1, nslots do
  local c = C[i]
  local wishes, rest = {}, {}
  for p = 0, np - 1 do
    local o = PA + 5 * p
    if tonumber(ARGV[o + 1]) == i then
      local kind = tonumber(ARGV[o + 2])
      if kind == 1 then
        wishes[#wishes + 1] = {p, tonumber(ARGV[o + 3])}
      elseif kind == 0 then
        rest[#rest + 1] = p
      end
    end
  end
  if #wishes > 0 then
    local got = place_letters(c, wishes)
    if got then
      for _, g in ipairs(got) do
        take_masked(c, g[1], g[2], block_masks(c, car_of(c, g[2]))[g[2]])
      end
    else
      for _, w in ipairs(wishes) do rest[#rest + 1] = w[1] end
      table.sort(rest)
    end
  end
  if #rest > 0 then seat_group(c, rest) end
end

-- writes: per class one ZREM, one ZADD, one BITFIELD
local JM = P[y] - P[x]
local out = {1}
local assigned = {}
for i = 1, nslots do
  local c = C[i]
  local zrem, zadd, bf = {}, {}, {}
  for _, t in ipairs(c.takes) do
    local pos, seat, a, b = t[1], t[2], t[3], t[4]
    zrem[#zrem + 1] = (a * n + b) * S + seat
    bf[#bf + 1] = 'INCRBY'; bf[#bf + 1] = 'u16'; bf[#bf + 1] = 8 * (HDR + 2 * (a * n + b)); bf[#bf + 1] = -1
    if a < x then
      local sc = (a * n + x) * S + seat
      zadd[#zadd + 1] = sc; zadd[#zadd + 1] = sc
      bf[#bf + 1] = 'INCRBY'; bf[#bf + 1] = 'u16'; bf[#bf + 1] = 8 * (HDR + 2 * (a * n + x)); bf[#bf + 1] = 1
    end
    if y < b then
      local sc = (y * n + b) * S + seat
      zadd[#zadd + 1] = sc; zadd[#zadd + 1] = sc
      bf[#bf + 1] = 'INCRBY'; bf[#bf + 1] = 'u16'; bf[#bf + 1] = 8 * (HDR + 2 * (y * n + b)); bf[#bf + 1] = 1
    end
    bf[#bf + 1] = 'INCRBY'; bf[#bf + 1] = 'u63'; bf[#bf + 1] = 8 * (MOFF + 8 * seat) + 1; bf[#bf + 1] = JM
    local k = car_of(c, seat)
    local off = seat - k.first
    local li = off % c.L
    local name = string.format('%02d-%02d%s', k.no, math.floor(off / c.L) + 1, string.sub(c.letters, li + 1, li + 1))
    assigned[pos + 1] = {pos, i, seat, name}
  end
  if #zrem > 0 then
    redis.call('ZREM', c.rkey, unpack(zrem))
    if #zadd > 0 then redis.call('ZADD', c.rkey, unpack(zadd)) end
    redis.call('BITFIELD', c.key, unpack(bf))
  end
end

local parts = {}
for p = 1, np do
  local e = assigned[p]
  out[#out + 1] = e[1]; out[#out + 1] = e[2]; out[#out + 1] = e[3]; out[#out + 1] = e[4]
  parts[p] = string.format('{"position":%d,"seat_class":"%s","seat_index":%d,"seat_name":"%s"}',
    e[1], C[e[2]].name, e[3], e[4])
end

if want_msg then
  local args = {}
  local mo = CA + nslots
  for j = 1, 2 * nmsg do args[j] = ARGV[mo + j] end
  args[#args + 1] = 'order_id'; args[#args + 1] = ARGV[3]
  args[#args + 1] = 'seats'; args[#args + 1] = '[' .. table.concat(parts, ',') .. ']'
  redis.call('XADD', KEYS[2], '*', unpack(args))
end
return out
