-- allocate.lua: seat one order on one train-day, all-or-nothing, and append its message.
-- Built on lib/layout.lua (the class string), lib/carriage.lua (the take list, named seats, letters,
-- groups), lib/choose.lua (best fit) and lib/sell.lua (the writes), which the loader prepends in
-- that order.
--
-- Invariant kept: for every class, the sold mask of each seat, the row-suffix run table H and the
-- run bitmaps describe the same seats (a recount from the masks gives the same bytes), and no
-- seat segment is sold twice. The script reads and checks everything first (journey, classes,
-- seat names, the sold-out check, named seats free) and returns an error before any write; once
-- the checks pass seating cannot fail, so the writes (per class one BITFIELD and one SETRANGE,
-- then one XADD) all happen or none does. Seat choice follows railbook.domain.inventory exactly
-- (property tests compare them). Cost per call is a handful of redis.calls, never one per seat or
-- per station pair: a one-passenger order is GETRANGE, BITPOS (one per candidate run, usually
-- one), BITFIELD, SETRANGE, XADD; a group adds one GETRANGE of its carriage's masks. Every order
-- takes the same path. What it creates is paid on every call: a table per class (its take list in
-- its array part), none per seat for a lone seat, and every top-level function of the script, a
-- new closure on every call (about half a microsecond each on Redis 7.0): three of them, the class
-- reading, the epoch, a lone seat's take and the seat names are written in this body, and the take
-- and carriage helpers are built only for an order that needs them (carriage_tools).
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

local A = ARGV[1]
local x, y, nslots, np, nmsg, flags = string.byte(A, 1, 6)
if flags >= 2 and not redis.call('ZSCORE', KEYS[#KEYS], ARGV[2]) then
  return {0, 'NOT_ADMITTED', 'the order holds no sale token'}
end
local CA = 2 -- ARGV[CA + i]: the class name of slot i
local MA = CA + nslots -- ARGV[MA + 1 ..]: the message pairs

-- step 1: the classes and the journey; a class's table (see lib/layout.lua) from one GETRANGE of its
-- header and H (a second only past 32 stops), false when the class is not on this train-day
local C, n = {}, nil
for i = 1, nslots do
  local key = KEYS[2 + i]
  local s = redis.call('GETRANGE', key, '0', '1247')
  if s == '' then
    C[i] = false
  else
    local cn, N, L = struct.unpack('>HHB', s)
    local moff = 256 + cn * (cn - 1) -- the masks, after the header and H
    if #s < moff then s = s .. redis.call('GETRANGE', key, #s, moff - 1) end
    C[i] = {0, 0, 0, 0, key = key, s = s, n = cn, N = N, L = L, need = 0, nt = 0,
            moff = moff, roff8 = 8 * (moff + 8 * N), W8 = 8 * math.ceil(N / 8)}
    n = n or cn
  end
end
if not n then
  local mn = redis.call('HGET', KEYS[1], 'n')
  if not mn then return {0, 'DAY_NOT_LOADED', 'train-day not loaded'} end
  n = tonumber(mn)
end
if y > n - 1 then return {0, 'BAD_JOURNEY', 'bad journey for this train'} end

-- step 2: classes on the train-day and named seats exist (passenger order); seats wanted per class
local named = nil -- {pos, slot, seat} per passenger naming a seat
for p = 0, np - 1 do
  local slot, kind = byte(A, 7 + 7 * p, 8 + 7 * p)
  local c = C[slot]
  if not c then return {0, 'BAD_SEAT_CLASS', 'seat class not on this train-day'} end
  c.need = c.need + 1
  if kind == 2 then
    local car, row, li = struct.unpack('>HHB', A, 9 + 7 * p)
    local idx = nil
    for _, k in ipairs(carriage_tools(best_fit).carriages(c)) do
      if k.no == car then
        if row <= k.rows then idx = k.first + (row - 1) * c.L + li end
        break
      end
    end
    if not idx then return {0, 'BAD_SEAT_PREF', 'no such seat'} end
    named = named or {}
    named[#named + 1] = {p, slot, idx}
  end
end

-- step 3: sold-out check, H column y over rows 0..x (at most x+1 cells), early exit
for i = 1, nslots do
  local c = C[i]
  local s, sum = c.s, 0
  for a = 0, x do
    local o = HDR + 2 * (a * (2 * n - a - 1) / 2 + y - a - 1) + 1 -- cell tri(a, y), inlined: x+1 reads
    local hi, lo = byte(s, o, o + 1)
    sum = sum + hi * 256 + lo
    if sum >= c.need then break end
  end
  if sum < c.need then return {0, 'SOLD_OUT', ARGV[CA + i] .. ' sold out'} end
end

-- step 4: named seats free (one 8-byte GETRANGE each); then they are taken first
if named then
  for _, e in ipairs(named) do
    local c, seat = C[e[2]], e[3]
    local moff = c.moff
    local m = struct.unpack('>I8', redis.call('GETRANGE', c.key, moff + 8 * seat, moff + 8 * seat + 7))
    if floor(m / 2 ^ x) % 2 ^ (y - x) ~= 0 then return {0, 'SEAT_TAKEN', 'seat taken'} end
    e[4] = m
  end
  local t = carriage_tools(best_fit)
  for _, e in ipairs(named) do
    local a, b = t.run_of(e[4], x, y, n)
    t.take(C[e[2]], e[1], e[3], a, b)
  end
end

-- step 5: seat class by class: letters side by side where they fit, the rest as a group around
-- the best fit seat (rest, a table only for several: a lone passenger without preference, p1, is
-- seated at the best fit without one, its take recorded here)
for i = 1, nslots do
  local c = C[i]
  local wishes, p1, rest = nil, nil, nil
  for p = 0, np - 1 do
    local slot, kind = byte(A, 7 + 7 * p, 8 + 7 * p)
    if slot == i then
      if kind == 0 then
        if rest then rest[#rest + 1] = p elseif p1 then rest = {p1, p} else p1 = p end
      elseif kind == 1 then
        wishes = wishes or {}
        wishes[#wishes + 1] = {p, (struct.unpack('>H', A, 9 + 7 * p))}
      end
    end
  end
  if wishes then
    local t = carriage_tools(best_fit)
    local got = t.place_letters(c, wishes, x, y)
    if got then
      for _, g in ipairs(got) do t.take_seat(c, g[1], g[2], x, y) end
    else
      rest = rest or {p1}
      for _, w in ipairs(wishes) do rest[#rest + 1] = w[1] end
      table.sort(rest)
    end
  end
  if rest or p1 then
    local s0, a0, b0 = best_fit(c, x, y)
    if rest and #rest > 1 then
      carriage_tools(best_fit).group(c, rest, s0, x, y)
    else
      local k = c.nt
      c[k + 1], c[k + 2], c[k + 3], c[k + 4] = p1 or rest[1], s0, a0, b0
      c.nt = k + 4
    end
  end
end

-- writes, per class: one BITFIELD (masks, run bits) and one SETRANGE (the changed span of H)
local jm = string.format('%d', 2 ^ y - 2 ^ x) -- formatted once, not by Redis for every seat
for i = 1, nslots do
  if C[i].nt > 0 then sell_class(C[i], x, y, jm) end
end

-- the reply and the message, in passenger order
local epoch = string.sub(C[1].s, 241, 256) -- the load epoch, NUL-padded only when shorter than 16
if byte(epoch, 16) == 0 then epoch = string.match(epoch, '^[^%z]*') end
local out, seats = {1, epoch, 0, 0, 0, 0}, nil -- out sized at once for one passenger
for p = 0, np - 1 do
  for i = 1, nslots do
    local c = C[i]
    for j = 1, c.nt, 4 do
      if c[j] == p then
        local seat, s, L = c[j + 1], c.s, c.L
        local name, first = nil, 0 -- the seat's name, from the carriage table in the header
        for o = 17, 16 + 4 * byte(s, 14), 4 do
          local r1, r2 = byte(s, o, o + 1)
          local size = (r1 * 256 + r2) * L
          if seat < first + size then
            local off = seat - first
            local li = off % L
            local k1, k2 = byte(s, o - 2, o - 1)
            name = string.format('%02d-%02d%s', k1 * 256 + k2, floor(off / L) + 1,
              string.sub(s, 6 + li, 6 + li))
            break
          end
          first = first + size
        end
        local o = 4 * p
        out[o + 3], out[o + 4], out[o + 5], out[o + 6] = p, i, seat, name
        local part = string.format('{"position":%d,"seat_class":"%s","seat_index":%d,"seat_name":"%s"}',
          p, ARGV[CA + i], seat, name)
        seats = seats and seats .. ',' .. part or part
      end
    end
  end
end
if flags % 2 == 1 then
  seats = '[' .. seats .. ']'
  if nmsg == 1 then
    redis.call('XADD', KEYS[2], '*', ARGV[MA + 1], ARGV[MA + 2], 'order_id', ARGV[2], 'seats', seats,
      'epoch', epoch)
  else
    local args = {unpack(ARGV, MA + 1, MA + 2 * nmsg)}
    local m = 2 * nmsg
    args[m + 1], args[m + 2] = 'order_id', ARGV[2]
    args[m + 3], args[m + 4] = 'seats', seats
    args[m + 5], args[m + 6] = 'epoch', epoch
    redis.call('XADD', KEYS[2], '*', unpack(args))
  end
end
return out
