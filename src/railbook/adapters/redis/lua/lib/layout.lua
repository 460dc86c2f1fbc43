-- lib/layout.lua: a seat class's inventory string as one allocate call sees it (prepended to
-- allocate.lua by the loader, before lib/carriage.lua, lib/choose.lua and lib/sell.lua; Redis
-- scripts have no require).
--
-- KEYS, ARGV: none of its own. Read-only: nothing here writes.
-- Invariant relied on: for every class, the sold mask of each seat, the row-suffix run table H and
-- the run bitmaps describe the same seats (a recount from the masks gives the same bytes).
--
-- Class key layout (one string per class, see allocator.py): 256-byte header (u16 n, u16 N, u8 L,
-- 8 bytes letters, u8 ncar, ncar x (u16 carriage, u16 rows); the load epoch in bytes 240..255,
-- stamped by load_day.lua); then H, T = n(n-1)/2 big-endian u16 cells, cell tri(a,t) = H[a][t] =
-- seats whose maximal free run starts at stop a and ends at or after stop t (a < t); then N sold
-- masks, big-endian u64 (BITFIELD u63 at bit +1); then T run bitmaps of W = ceil(N/8) bytes, bit s
-- of bitmap tri(a,b) set iff seat s has free run a..b. tri(a, b) = a(2n - a - 1)/2 + b - a - 1,
-- written out where it is used.
-- remaining(x, y) = sum of H[a][y] over a <= x: at most x+1 cells, answered before any search.
--
-- A class as one call sees it is one table, built by allocate.lua's step 1 from one GETRANGE (a
-- second only past 32 stops): key, s (the header and H), n, N, L; moff (byte offset of the masks),
-- roff8 and W8 (bit offset and width in bits of the run bitmaps); need (seats asked of it); and in
-- its array part the seats this call takes in it, nt items (pos, seat, a, b per take; four slots
-- made with the table, as most orders take one seat of a class).
--
-- Every function defined at the top level of a script is a new closure on every call, each of its
-- upvalues found and later closed on every call too, and every table is garbage the next
-- collection step pays for: the common order (one class, one passenger) should create few of
-- either. So the script defines four functions at its top level (seat_name, carriage_tools,
-- best_fit, sell_class); the take helpers and the carriage-level helpers are built by
-- carriage_tools on first need, the class reading and the epoch are written in allocate.lua's
-- body. The functions capture only byte, floor and the functions they call; the layout's
-- constants are written as literals: 256 (HDR, the header's bytes), 241 (the epoch's first byte,
-- 1-based) and '1247' (the last byte of the first read: the header and H of a train of up to 32
-- stops, 256 + 2 * 496 - 1, a string because Redis formats every number argument with "%.17g", a
-- large share of a short command's cost).

local HDR = 256 -- for the script body
local byte, floor = string.byte, math.floor

-- a seat's name from the carriage table in the header
local function seat_name(c, seat)
  local s, L = c.s, c.L
  local first = 0
  for o = 17, 16 + 4 * byte(s, 14), 4 do
    local r1, r2 = byte(s, o, o + 1)
    local size = (r1 * 256 + r2) * L
    if seat < first + size then
      local off = seat - first
      local li = off % L
      local k1, k2 = byte(s, o - 2, o - 1)
      return string.format('%02d-%02d%s', k1 * 256 + k2, floor(off / L) + 1, string.sub(s, 6 + li, 6 + li))
    end
    first = first + size
  end
end
