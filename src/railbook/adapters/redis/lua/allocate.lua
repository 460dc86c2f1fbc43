-- allocate.lua: seat one order on one train-day, all-or-nothing, and append its message.
--
-- Invariant kept: for every class, the sold mask of each seat, the row-suffix run table H and the
-- run bitmaps describe the same seats (a recount from the masks gives the same bytes), and no
-- seat segment is sold twice. The script reads and checks everything first (journey, classes,
-- seat names, the sold-out check, named seats free) and returns an error before any write; once
-- the checks pass seating cannot fail, so the writes (per class one BITFIELD and one SETRANGE,
-- then one XADD) all happen or none does. Seat choice follows railbook.domain.inventory exactly
-- (property tests compare them). Cost per call is a handful of redis.calls, never one per seat or
-- per station pair: a one-passenger order is GETRANGE, BITPOS (one per candidate run, usually
-- one), BITFIELD, SETRANGE, XADD; a group adds one GETRANGE of its carriage's masks.
-- An order of one class without preference (most orders) takes an inlined fast path that creates
-- almost no closures and tables; it must choose and write exactly what the general path would (the
-- differential tests drive both).
--
-- Class key layout (one string per class, see allocator.py): 256-byte header (u16 n, u16 N, u8 L,
-- 8 bytes letters, u8 ncar, ncar x (u16 carriage, u16 rows)); then H, T = n(n-1)/2 big-endian
-- u16 cells, cell tri(a,t) = H[a][t] = seats whose maximal free run starts at stop a and ends at
-- or after stop t (a < t); then N sold masks, big-endian u64 (BITFIELD u63 at bit +1); then T run
-- bitmaps of W = ceil(N/8) bytes, bit s of bitmap tri(a,b) set iff seat s has free run a..b.
-- remaining(x, y) = sum of H[a][y] over a <= x: at most x+1 cells, answered before any search.
-- Selling x->y on a seat of run (a, b) is H[a][x+1..b] - 1 and H[y][y+1..b] + 1: two contiguous
-- row pieces, written with the rows between them as one SETRANGE.
--
-- The load epoch of the day (header bytes 241..256, stamped by load_day.lua, read with the header at
-- no extra cost) is returned and added to the message as field epoch, so the committer can tell an
-- order of this copy of the day from one of a copy that was lost and rebuilt since.
--
-- KEYS: 1 meta hash, 2 order stream, then per class slot i: its inventory string; with flag 2, last
-- the day's sale tokens zset. All keys share the train-day's hash tag {CODE:YYYY-MM-DD} (one Cluster
-- slot).
-- ARGV: 1 the call's numbers packed in bytes: u8 x, u8 y, u8 #slots, u8 #passengers, u8 #message
--       pairs, u8 flags (1: append the message; 2: only for an admitted order, one holding its sale
--       token, else NOT_ADMITTED and nothing written: the guard's admission ran just before, in the
--       same round trip), then per passenger 7 bytes: u8 slot, u8 kind 0/1/2, big-endian
--       u16 v1, u16 v2, u8 v3 (one string to read with string.byte, not one ARGV item and one
--       tonumber each); 2 order_id; then the slot class names; then the message pairs.
-- Returns {1, epoch, pos, slot, seat, name, ...} or {0, code, text}.

local HDR = 256
local EPOCH_AT = 241 -- 1-based: header bytes 240..255
local FIRST_READ = HDR + 2 * 496 -- header and H of a train of up to 32 stops in one GETRANGE
-- Arguments of redis.call that are constants are passed as strings: Redis formats every number
-- argument with "%.17g", which is a large share of a short command's cost.
local FIRST_READ_LAST = '1247' -- FIRST_READ - 1

local A = ARGV[1]
local x, y, nslots, np, nmsg, flags = string.byte(A, 1, 6)
local want_msg = flags % 2 == 1
if flags >= 2 and not redis.call('ZSCORE', KEYS[#KEYS], ARGV[2]) then
  return {0, 'NOT_ADMITTED', 'the order holds no sale token'}
end
local CA = 2 -- ARGV[CA + i]: the class name of slot i
local MA = CA + nslots -- ARGV[MA + 1 ..]: the message pairs

local PX = 2 ^ x
local PLEN = 2 ^ (y - x)

local function fail(code, text) return {0, code, text} end

-- Fast path: one class, no preference, the common order. The same checks, best fit and writes as
-- the general path below, inlined so that it creates almost no closures and tables (Lua work paid
-- on every call). Falls through when the class is absent, or when a group does not fit in its best
-- fit seat's carriage (nothing is written by then).
local plain = nslots == 1
for p = 0, np - 1 do
  if string.byte(A, 8 + 7 * p) ~= 0 then plain = false break end
end
if plain then
  local key = KEYS[3]
  local s = redis.call('GETRANGE', key, '0', FIRST_READ_LAST)
  if s ~= '' then
    local byte, floor = string.byte, math.floor
    local n, N, L = struct.unpack('>HHB', s)
    local need = HDR + n * (n - 1)
    if #s < need then s = s .. redis.call('GETRANGE', key, #s, need - 1) end
    if y > n - 1 then return fail('BAD_JOURNEY', 'bad journey for this train') end
    local function seat_name(st) -- from the carriage table in the header
      local first = 0
      for o = 17, 16 + 4 * byte(s, 14), 4 do
        local r1, r2 = byte(s, o, o + 1)
        local size = (r1 * 256 + r2) * L
        if st < first + size then
          local off = st - first
          local li = off % L
          local k1, k2 = byte(s, o - 2, o - 1)
          return string.format('%02d-%02d%s', k1 * 256 + k2, floor(off / L) + 1, string.sub(s, 6 + li, 6 + li))
        end
        first = first + size
      end
    end
    local n2 = 2 * n - 1
    -- byte offset (1-based) of H cell (a, t) is HDR + 2 * tri(a, t) + 1
    local sum = 0
    for a = 0, x do
      local o = HDR + 2 * (a * (n2 - a) / 2 + y - a - 1) + 1
      local hi, lo = byte(s, o, o + 1)
      sum = sum + hi * 256 + lo
      if sum >= np then break end
    end
    if sum < np then return fail('SOLD_OUT', ARGV[CA + 1] .. ' sold out') end
    -- best fit (see best_fit below): rows a = x down to 0, bisection on the row's drop below H[a][y]
    local bestL, c1, cands = nil, nil, nil
    for a = x, 0, -1 do
      if bestL and y - a > bestL then break end
      local rb = HDR + 2 * (a * (n2 - a) / 2 - a - 1) + 1 -- byte offset of cell (a, t) is rb + 2t
      local hi, lo = byte(s, rb + 2 * y, rb + 2 * y + 1)
      local top = hi * 256 + lo
      if top > 0 then
        local lo_, hi_ = y, n - 1
        if bestL and a + bestL < hi_ then hi_ = a + bestL end
        local below
        if hi_ + 1 > n - 1 then
          below = 0
        else
          local h1, l1 = byte(s, rb + 2 * (hi_ + 1), rb + 2 * (hi_ + 1) + 1)
          below = h1 * 256 + l1
        end
        if below < top then
          while lo_ < hi_ do
            local mid = floor((lo_ + hi_) / 2)
            local v = 0
            if mid + 1 <= n - 1 then
              local h1, l1 = byte(s, rb + 2 * (mid + 1), rb + 2 * (mid + 1) + 1)
              v = h1 * 256 + l1
            end
            if v < top then hi_ = mid else lo_ = mid + 1 end
          end
          local len = lo_ - a
          if not bestL or len < bestL then
            bestL, c1, cands = len, a, nil
          elseif cands then
            cands[#cands + 1] = a
          else
            cands = {c1, a}
          end
        end
      end
    end
    if not bestL then error('best_fit: run table inconsistent') end
    local T = n * (n - 1) / 2
    local moff = HDR + 2 * T
    local W8 = 8 * math.ceil(N / 8)
    local roff8 = 8 * (moff + 8 * N)
    local seat, ra = nil, nil
    local ncand = cands and #cands or 1
    for j = 1, ncand do
      local a = cands and cands[j] or c1
      if not seat or seat > 0 then
        local base = roff8 + W8 * (a * (n2 - a) / 2 + bestL - 1)
        local p = redis.call('BITPOS', key, '1', base, base + (seat or N) - 1, 'BIT')
        if p >= 0 then seat, ra = p - base, a end
      end
    end
    if not seat then error('best_fit: run index inconsistent') end
    local rb = ra + bestL
    local function cell(a, b) return a * (n2 - a) / 2 + b - a - 1 end
    if np == 1 then
      -- writes: one BITFIELD (mask, run bits), one SETRANGE over H rows ra and y (see below)
      local JM = 2 ^ y - 2 ^ x
      if ra < x and y < rb then
        redis.call('BITFIELD', key, 'INCRBY', 'u63', 8 * (moff + 8 * seat) + 1, JM,
          'SET', 'u1', roff8 + W8 * cell(ra, rb) + seat, '0', 'SET', 'u1', roff8 + W8 * cell(ra, x) + seat, '1',
          'SET', 'u1', roff8 + W8 * cell(y, rb) + seat, '1')
      elseif ra < x then
        redis.call('BITFIELD', key, 'INCRBY', 'u63', 8 * (moff + 8 * seat) + 1, JM,
          'SET', 'u1', roff8 + W8 * cell(ra, rb) + seat, '0', 'SET', 'u1', roff8 + W8 * cell(ra, x) + seat, '1')
      elseif y < rb then
        redis.call('BITFIELD', key, 'INCRBY', 'u63', 8 * (moff + 8 * seat) + 1, JM,
          'SET', 'u1', roff8 + W8 * cell(ra, rb) + seat, '0', 'SET', 'u1', roff8 + W8 * cell(y, rb) + seat, '1')
      else
        redis.call('BITFIELD', key, 'INCRBY', 'u63', 8 * (moff + 8 * seat) + 1, JM,
          'SET', 'u1', roff8 + W8 * cell(ra, rb) + seat, '0')
      end
      -- H[ra][x+1..rb] - 1, and H[y][y+1..rb] + 1 when y < rb, with the bytes between copied
      local p1 = HDR + 2 * cell(ra, x + 1) + 1
      local p2 = HDR + 2 * cell(ra, rb) + 2
      local v = {byte(s, p1, p2)}
      for k = 2, #v, 2 do -- each cell >= 1 (the seat's run is counted in it): no borrow below 0
        local lo = v[k]
        if lo > 0 then v[k] = lo - 1 else v[k - 1], v[k] = v[k - 1] - 1, 255 end
      end
      local piece = string.char(unpack(v))
      if y < rb then
        local q1 = HDR + 2 * cell(y, y + 1) + 1
        local q2 = HDR + 2 * cell(y, rb) + 2
        local u = {byte(s, q1, q2)}
        for k = 2, #u, 2 do -- each cell < N <= 65535 before: no carry out
          local lo = u[k]
          if lo < 255 then u[k] = lo + 1 else u[k - 1], u[k] = u[k - 1] + 1, 0 end
        end
        piece = piece .. string.sub(s, p2 + 1, q1 - 1) .. string.char(unpack(u))
      end
      redis.call('SETRANGE', key, p1 - 1, piece)
      local name = seat_name(seat)
      local epoch = string.sub(s, EPOCH_AT, EPOCH_AT + 15) -- NUL-padded only when shorter than 16
      if byte(s, EPOCH_AT + 15) == 0 then epoch = string.match(epoch, '^[^%z]*') end
      if want_msg then
        local seats = string.format('[{"position":0,"seat_class":"%s","seat_index":%d,"seat_name":"%s"}]',
          ARGV[CA + 1], seat, name)
        if nmsg == 1 then
          redis.call('XADD', KEYS[2], '*', ARGV[MA + 1], ARGV[MA + 2], 'order_id', ARGV[2], 'seats', seats,
            'epoch', epoch)
        else
          local args = {unpack(ARGV, MA + 1, MA + 2 * nmsg)}
          local m = 2 * nmsg
          args[m + 1] = 'order_id'; args[m + 2] = ARGV[2]
          args[m + 3] = 'seats'; args[m + 4] = seats
          args[m + 5] = 'epoch'; args[m + 6] = epoch
          redis.call('XADD', KEYS[2], '*', unpack(args))
        end
      end
      return {1, epoch, 0, 1, seat, name}
    end
    -- A group (seat_group below): the np free seats of s0's carriage nearest to s0, by distance
    -- then index, walking outwards from s0; when that carriage has fewer, the general path (nothing
    -- is written yet).
    local kf, kl = 0, 0
    for o = 17, 16 + 4 * byte(s, 14), 4 do
      local r1, r2 = byte(s, o, o + 1)
      kl = kf + (r1 * 256 + r2) * L - 1
      if seat <= kl then break end
      kf = kl + 1
    end
    local raw = redis.call('GETRANGE', key, moff + 8 * kf, moff + 8 * kl + 7)
    local got, masks = {}, {}
    for d = 0, kl - kf do
      local lo, hi = seat - d, seat + d
      if lo >= kf then
        local m = struct.unpack('>I8', raw, 8 * (lo - kf) + 1)
        if floor(m / PX) % PLEN == 0 then
          got[#got + 1], masks[lo] = lo, m
          if #got == np then break end
        end
      end
      if d > 0 and hi <= kl then
        local m = struct.unpack('>I8', raw, 8 * (hi - kf) + 1)
        if floor(m / PX) % PLEN == 0 then
          got[#got + 1], masks[hi] = hi, m
          if #got == np then break end
        end
      end
    end
    if #got == np then
      table.sort(got)
      local epoch = string.sub(s, EPOCH_AT, EPOCH_AT + 15) -- NUL-padded only when shorter than 16
      if byte(s, EPOCH_AT + 15) == 0 then epoch = string.match(epoch, '^[^%z]*') end
      -- per seat its free run (a, b) around the journey (run_of below), the mask and run-bit writes
      local JMs = string.format('%d', 2 ^ y - 2 ^ x)
      local bf, runs, starts, bmax = {}, {}, {}, y
      for j = 1, np do
        local st, mk = got[j], masks[got[j]]
        local a, b = 0, y
        local below = mk % PX
        if below > 0 then
          local _, e = math.frexp(below)
          a = e
        end
        local w = floor(mk / 2 ^ y)
        if w == 0 then
          b = n - 1
        else
          while w % 2 == 0 do w = w / 2; b = b + 1 end
        end
        runs[j] = {a, b}
        if b > bmax then bmax = b end
        local k = #bf
        bf[k + 1], bf[k + 2], bf[k + 3], bf[k + 4] = 'INCRBY', 'u63', 8 * (moff + 8 * st) + 1, JMs
        bf[k + 5], bf[k + 6], bf[k + 7], bf[k + 8] = 'SET', 'u1', roff8 + W8 * cell(a, b) + st, '0'
        k = k + 8
        if a < x then
          bf[k + 1], bf[k + 2], bf[k + 3], bf[k + 4] = 'SET', 'u1', roff8 + W8 * cell(a, x) + st, '1'
          k = k + 4
        end
        if y < b then
          bf[k + 1], bf[k + 2], bf[k + 3], bf[k + 4] = 'SET', 'u1', roff8 + W8 * cell(y, b) + st, '1'
        end
        local new = true
        for i = 1, #starts do if starts[i] == a then new = false end end
        if new then starts[#starts + 1] = a end
      end
      redis.call('BITFIELD', key, unpack(bf))
      -- H: rows a (run starts, ascending) lose each of their seats on x+1..b, row y gains every
      -- seat on y+1..b; one SETRANGE from the first changed cell to the last, the rows between
      -- copied as read
      table.sort(starts)
      if bmax > y then starts[#starts + 1] = y end
      local pieces, first, prev = {}, nil, nil
      for _, r in ipairs(starts) do
        local t1, t2 = x + 1, 0
        if r == y then t1 = y + 1 end
        for j = 1, np do
          if (r == y or runs[j][1] == r) and runs[j][2] > t2 then t2 = runs[j][2] end
        end
        local p1 = HDR + 2 * cell(r, t1) + 1
        local p2 = p1 + 2 * (t2 - t1) + 1
        local v = {byte(s, p1, p2)}
        for t = t1, t2 do
          local d = 0
          for j = 1, np do
            if runs[j][2] >= t and (r == y or runs[j][1] == r) then d = d + 1 end
          end
          if d > 0 then
            local k = 2 * (t - t1) + 1
            local w = v[k] * 256 + v[k + 1] + (r == y and d or -d)
            v[k], v[k + 1] = floor(w / 256), w % 256
          end
        end
        if prev then pieces[#pieces + 1] = string.sub(s, prev + 1, p1 - 1) else first = p1 end
        pieces[#pieces + 1] = string.char(unpack(v))
        prev = p2
      end
      redis.call('SETRANGE', key, first - 1, table.concat(pieces))
      local out, parts = {1, epoch}, {}
      for j = 1, np do
        local st = got[j]
        local name = seat_name(st)
        out[4 * j - 1], out[4 * j], out[4 * j + 1], out[4 * j + 2] = j - 1, 1, st, name
        parts[j] = string.format('{"position":%d,"seat_class":"%s","seat_index":%d,"seat_name":"%s"}',
          j - 1, ARGV[CA + 1], st, name)
      end
      if want_msg then
        local args = {unpack(ARGV, MA + 1, MA + 2 * nmsg)}
        local m = 2 * nmsg
        args[m + 1] = 'order_id'; args[m + 2] = ARGV[2]
        args[m + 3] = 'seats'; args[m + 4] = '[' .. table.concat(parts, ',') .. ']'
        args[m + 5] = 'epoch'; args[m + 6] = epoch
        redis.call('XADD', KEYS[2], '*', unpack(args))
      end
      return out
    end
  end
end

-- passenger p (0-based): slot, kind, v1, v2, v3
local function passenger(p) return struct.unpack('>BBHHB', A, 7 + 7 * p) end

-- per class slot state
local C = {}
local n = nil
for i = 1, nslots do
  local key = KEYS[2 + i]
  local s = redis.call('GETRANGE', key, 0, FIRST_READ - 1)
  if s ~= '' then
    local cn, cN, cL = struct.unpack('>HHB', s)
    local need = HDR + cn * (cn - 1)
    if #s < need then s = s .. redis.call('GETRANGE', key, #s, need - 1) end
    C[i] = {s = s, n = cn, N = cN, L = cL, letters = string.sub(s, 6, 5 + cL), key = key,
            name = ARGV[CA + i], taken = {}, dlist = {}, takes = {}}
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
local T = n * (n - 1) / 2
local MOFF = HDR + 2 * T
for i = 1, nslots do
  local c = C[i]
  if c then
    c.W = math.ceil(c.N / 8)
    c.roff8 = 8 * (MOFF + 8 * c.N)
  end
end

-- index of run / H cell (a, b), a < b, in the triangular tables
local function tri(a, b) return a * (2 * n - a - 1) / 2 + b - a - 1 end

local function hcell(c, a, t)
  local o = HDR + 2 * tri(a, t) + 1
  local hi, lo = string.byte(c.s, o, o + 1)
  return hi * 256 + lo
end

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

-- a seat's name from the carriage table, without building it (the common one-passenger path)
local function name_of(c, seat)
  local ct = c.ct
  if not ct then
    local ncar = string.byte(c.s, 14)
    ct = {string.byte(c.s, 15, 14 + 4 * ncar)}
    c.ct = ct
  end
  local first = 0
  for o = 1, #ct, 4 do
    local size = (ct[o + 2] * 256 + ct[o + 3]) * c.L
    if seat < first + size then
      local off = seat - first
      local li = off % c.L
      return string.format('%02d-%02d%s', ct[o] * 256 + ct[o + 1], math.floor(off / c.L) + 1,
        string.sub(c.letters, li + 1, li + 1))
    end
    first = first + size
  end
end

-- a seat's carriage; without the whole table when it is not built yet (a group needs one or two)
local function car_of(c, seat)
  if c.cars then
    for _, k in ipairs(c.cars) do
      if seat <= k.last then return k end
    end
  end
  local first = 0
  for o = 15, 14 + 4 * string.byte(c.s, 14), 4 do
    local c1, c2, r1, r2 = string.byte(c.s, o, o + 3)
    local rows = r1 * 256 + r2
    local last = first + rows * c.L - 1
    if seat <= last then return {no = c1 * 256 + c2, rows = rows, first = first, last = last} end
    first = last + 1
  end
end

local function is_free(m) return math.floor(m / PX) % PLEN == 0 end
-- the free run (a, b) around the journey of a seat free for it: a is one past the highest sold
-- segment below x (frexp gives a number's highest set bit exactly), b the lowest sold segment at
-- or above y, else the last stop
local function run_of(m)
  local a, b = 0, y
  local below = m % PX
  if below > 0 then
    local _, e = math.frexp(below)
    a = e
  end
  local w = math.floor(m / 2 ^ y)
  if w == 0 then return a, n - 1 end
  while w % 2 == 0 do
    w = w / 2
    b = b + 1
  end
  return a, b
end

local function seat_mask(c, seat)
  local raw = redis.call('GETRANGE', c.key, MOFF + 8 * seat, MOFF + 8 * seat + 7)
  return (struct.unpack('>I8', raw))
end

-- a seat's mask; its carriage block's masks are read with one GETRANGE, once per call, and a mask
-- is decoded only when asked for (most orders look at a few seats of one carriage)
local function mask_of(c, k, seat)
  c.bm = c.bm or {}
  local raw = c.bm[k.first]
  if not raw then
    raw = redis.call('GETRANGE', c.key, MOFF + 8 * k.first, MOFF + 8 * (k.last + 1) - 1)
    c.bm[k.first] = raw
  end
  return (struct.unpack('>I8', raw, 8 * (seat - k.first) + 1))
end

local function ok_seat(c, k, seat)
  return not c.taken[seat] and is_free(mask_of(c, k, seat))
end

local function take(c, pos, seat, a, b)
  c.taken[seat] = true
  c.dlist[#c.dlist + 1] = {a, b}
  c.takes[#c.takes + 1] = {pos, seat, a, b}
end

local function take_masked(c, pos, seat, m)
  local a, b = run_of(m)
  take(c, pos, seat, a, b)
end

-- step 2: classes on the train-day and named seats exist (passenger order)
local named = {}
for p = 0, np - 1 do
  local slot, kind, car, row, li = passenger(p)
  local c = C[slot]
  if not c then return fail('BAD_SEAT_CLASS', 'seat class not on this train-day') end
  if kind == 2 then
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

-- step 3: sold-out check, H column y over rows 0..x (at most x+1 cells), early exit
local need = {}
for p = 0, np - 1 do
  local slot = passenger(p)
  need[slot] = (need[slot] or 0) + 1
end
for i = 1, nslots do
  local c = C[i]
  local k = need[i]
  local sum = 0
  for a = 0, x do
    sum = sum + hcell(c, a, y)
    if sum >= k then break end
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

-- H[a][t] less the seats of runs (a, b >= t) already taken by this call (t = n reads as 0)
local function hleft(c, a, t)
  if t > n - 1 then return 0 end
  local o = HDR + 2 * (a * (2 * n - a - 1) / 2 + t - a - 1) + 1 -- cell tri(a, t)
  local hi, lo = string.byte(c.s, o, o + 1)
  local v = hi * 256 + lo
  local dl = c.dlist
  for j = 1, #dl do
    local d = dl[j]
    if d[1] == a and d[2] >= t then v = v - 1 end
  end
  return v
end

-- best fit: shortest run containing the journey, lowest seat, skipping seats taken by this order.
-- Rows a = x down to 0 (a run from a is at least y - a long, so the scan stops once that exceeds
-- the best length found); in a row, H[a][.] does not increase, so the shortest run (a, b >= y) is
-- found by bisection on where it drops below H[a][y]. The lowest seat of a run is one BITPOS over
-- its bitmap, bounded by the best seat found so far.
local function best_fit(c)
  local bestL, cands = nil, {}
  for a = x, 0, -1 do
    if bestL and y - a > bestL then break end
    local top = hleft(c, a, y)
    if top > 0 then
      local lo, hi = y, n - 1
      if bestL and a + bestL < hi then hi = a + bestL end
      if hleft(c, a, hi + 1) < top then
        while lo < hi do
          local mid = math.floor((lo + hi) / 2)
          if hleft(c, a, mid + 1) < top then hi = mid else lo = mid + 1 end
        end
        local L = lo - a
        if not bestL or L < bestL then
          bestL = L
          cands = {a}
        else
          cands[#cands + 1] = a
        end
      end
    end
  end
  if not bestL then error('best_fit: run table inconsistent') end
  local W8 = 8 * c.W
  local bs, ba = nil, nil
  for _, a in ipairs(cands) do
    if not bs or bs > 0 then
      local base = c.roff8 + W8 * tri(a, a + bestL)
      local from = base
      local last = base + (bs or c.N) - 1
      while true do
        local p = redis.call('BITPOS', c.key, 1, from, last, 'BIT')
        if p < 0 then break end
        local seat = p - base
        if not c.taken[seat] then
          bs, ba = seat, a
          break
        end
        from = p + 1
        if from > last then break end
      end
    end
  end
  return bs, ba, ba + bestL
end

-- the lowest free seats of a carriage, at most u of them (the scan stops there)
local function free_in(c, k, u)
  local out = {}
  for seat = k.first, k.last do
    if ok_seat(c, k, seat) then
      out[#out + 1] = seat
      if #out == u then break end
    end
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
  -- the u free seats of s0's carriage nearest to s0 (by distance, then index): walking outwards
  -- from s0, lower side first, visits them in that order without sorting the carriage
  local near = {}
  for d = 0, k0.last - k0.first do
    local lo, hi = s0 - d, s0 + d
    if lo >= k0.first and ok_seat(c, k0, lo) then
      near[#near + 1] = lo
      if #near == u then break end
    end
    if d > 0 and hi <= k0.last and ok_seat(c, k0, hi) then
      near[#near + 1] = hi
      if #near == u then break end
    end
  end
  if #near == u then
    chosen = near
  else
    for _, k in ipairs(cars(c)) do
      local free = free_in(c, k, u)
      if #free == u then
        chosen = free
        break
      end
    end
  end
  if chosen then
    table.sort(chosen)
    for j = 1, u do
      local seat = chosen[j]
      take_masked(c, positions[j], seat, mask_of(c, car_of(c, seat), seat))
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
    local slot, kind, li = passenger(p)
    if slot == i then
      if kind == 1 then
        wishes[#wishes + 1] = {p, li}
      elseif kind == 0 then
        rest[#rest + 1] = p
      end
    end
  end
  if #wishes > 0 then
    local got = place_letters(c, wishes)
    if got then
      for _, g in ipairs(got) do
        take_masked(c, g[1], g[2], mask_of(c, car_of(c, g[2]), g[2]))
      end
    else
      for _, w in ipairs(wishes) do rest[#rest + 1] = w[1] end
      table.sort(rest)
    end
  end
  if #rest > 0 then seat_group(c, rest) end
end

-- writes, per class: one BITFIELD (masks, run bits) and one SETRANGE (the changed span of H)
local JM = string.format('%d', 2 ^ y - 2 ^ x) -- formatted once, not by Redis for every seat
local epoch = string.match(string.sub(C[1].s, EPOCH_AT, EPOCH_AT + 15), '^[^%z]*')
local out = {1, epoch}
local assigned = {}
for i = 1, nslots do
  local c = C[i]
  if #c.takes > 0 then
    local bf, rows, order = {}, {}, {}
    local function runbit(a, b, seat, v)
      bf[#bf + 1] = 'SET'; bf[#bf + 1] = 'u1'; bf[#bf + 1] = c.roff8 + 8 * c.W * tri(a, b) + seat; bf[#bf + 1] = v
    end
    local function hrange(a, t1, t2, d) -- H[a][t1..t2] += d
      local r = rows[a]
      if not r then r = {lo = t1, hi = t2}; rows[a] = r; order[#order + 1] = a end
      if t1 < r.lo then r.lo = t1 end
      if t2 > r.hi then r.hi = t2 end
      r[#r + 1] = {t1, t2, d}
    end
    for _, t in ipairs(c.takes) do
      local pos, seat, a, b = t[1], t[2], t[3], t[4]
      bf[#bf + 1] = 'INCRBY'; bf[#bf + 1] = 'u63'; bf[#bf + 1] = 8 * (MOFF + 8 * seat) + 1; bf[#bf + 1] = JM
      runbit(a, b, seat, '0')
      if a < x then runbit(a, x, seat, '1') end
      hrange(a, x + 1, b, -1)
      if y < b then
        runbit(y, b, seat, '1')
        hrange(y, y + 1, b, 1)
      end
      assigned[pos + 1] = {pos, i, seat, name_of(c, seat)}
    end
    redis.call('BITFIELD', c.key, unpack(bf))
    -- one SETRANGE from the first changed cell to the last: changed row pieces re-encoded,
    -- unchanged bytes between them copied from what was read
    table.sort(order)
    local pieces = {}
    local first = nil
    local prev = nil
    for _, a in ipairs(order) do
      local r = rows[a]
      local cnt = r.hi - r.lo + 1
      local j1 = tri(a, r.lo)
      if prev then pieces[#pieces + 1] = string.sub(c.s, HDR + 2 * prev + 3, HDR + 2 * j1) else first = j1 end
      local fmt = '>' .. string.rep('H', cnt)
      local v = {struct.unpack(fmt, c.s, HDR + 2 * j1 + 1)}
      for _, e in ipairs(r) do
        for t = e[1] - r.lo + 1, e[2] - r.lo + 1 do v[t] = v[t] + e[3] end
      end
      pieces[#pieces + 1] = struct.pack(fmt, unpack(v, 1, cnt))
      prev = j1 + cnt - 1
    end
    redis.call('SETRANGE', c.key, HDR + 2 * first, table.concat(pieces))
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
  local args = {unpack(ARGV, MA + 1, MA + 2 * nmsg)}
  args[#args + 1] = 'order_id'; args[#args + 1] = ARGV[2]
  args[#args + 1] = 'seats'; args[#args + 1] = '[' .. table.concat(parts, ',') .. ']'
  args[#args + 1] = 'epoch'; args[#args + 1] = epoch
  redis.call('XADD', KEYS[2], '*', unpack(args))
end
return out
