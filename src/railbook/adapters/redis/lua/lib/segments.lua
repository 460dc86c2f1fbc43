-- lib/segments.lua: the segment helpers shared by hold.lua, unhold.lua and release.lua (prepended to
-- each by the loader; Redis scripts have no require).
--
-- Invariant kept: per class, the sold masks, the row-suffix run table H and the run bitmaps stay equal
-- to a recount from the masks. A seat whose mask changes from old to new has its old maximal free
-- runs that are not runs of new removed (run bit 0, G[a][b] - 1) and its new ones that were not runs
-- of old added (run bit 1, G[a][b] + 1), the difference only; G[a][b] += d is H[a][a+1..b] += d.
-- Writes per class: one BITFIELD (run bits in the order computed, then the 63-bit masks) and one
-- SETRANGE over the span from the first changed H cell to the last. Layout as in allocate.lua.

local HDR = 256
local FIRST_READ = HDR + 2 * 496

-- a class's header and H in one or two GETRANGEs: s, stops, seats; nil when the class is not loaded
local function seg_read_class(key)
  local s = redis.call('GETRANGE', key, 0, FIRST_READ - 1)
  if s == '' then return nil end
  local cn, cN = struct.unpack('>HH', s)
  local need = HDR + cn * (cn - 1)
  if #s < need then s = s .. redis.call('GETRANGE', key, #s, need - 1) end
  return s, cn, cN
end

-- the classes of KEYS[first + 1 .. first + nslots] as seg_mask and seg_write_masks use them; nil
-- when one of them is not loaded
local function seg_read_classes(first, nslots)
  local C = {}
  for i = 1, nslots do
    local key = KEYS[first + i]
    local s, _, cN = seg_read_class(key)
    if not s then return nil end
    C[i] = {s = s, N = cN, key = key, masks = {}, old = {}}
  end
  return C
end

-- a seat's mask in this call: as changed so far, else read (and kept as its old mask)
local function seg_mask(c, seat, moff)
  local m = c.masks[seat]
  if not m then
    m = struct.unpack('>I8', redis.call('GETRANGE', c.key, moff + 8 * seat, moff + 8 * seat + 7))
    c.masks[seat] = m
    c.old[seat] = m
  end
  return m
end

-- index of the journey a..b (0 <= a < b <= n - 1) in the row-major upper triangle of n stops
local function seg_tri(n, a, b) return a * (2 * n - a - 1) / 2 + b - a - 1 end

-- a mask's maximal free runs, as a set of run ids a * n + b
local function seg_runs(n, m)
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

-- a seat's mask old -> new: run-bit SETs appended to bf (run bitmaps from bit offset rb, rows of W8
-- bits) and the run-table deltas added to g
local function seg_run_delta(n, old, new, seat, rb, W8, g, bf)
  local before, after = seg_runs(n, old), seg_runs(n, new)
  for rid in pairs(before) do
    if not after[rid] then
      g[rid] = (g[rid] or 0) - 1
      local a, b = math.floor(rid / n), rid % n
      bf[#bf + 1] = 'SET'; bf[#bf + 1] = 'u1'; bf[#bf + 1] = rb + W8 * seg_tri(n, a, b) + seat; bf[#bf + 1] = 0
    end
  end
  for rid in pairs(after) do
    if not before[rid] then
      g[rid] = (g[rid] or 0) + 1
      local a, b = math.floor(rid / n), rid % n
      bf[#bf + 1] = 'SET'; bf[#bf + 1] = 'u1'; bf[#bf + 1] = rb + W8 * seg_tri(n, a, b) + seat; bf[#bf + 1] = 1
    end
  end
end

-- one class's writes: the BITFIELD args bf, then the run-table deltas g applied to H (read as s)
local function seg_write(key, s, n, bf, g)
  if #bf > 0 then redis.call('BITFIELD', key, unpack(bf)) end
  local hd = {}
  local lo, hi = nil, nil
  for rid, d in pairs(g) do
    if d ~= 0 then
      local a, b = math.floor(rid / n), rid % n
      local j1, j2 = seg_tri(n, a, a + 1), seg_tri(n, a, b)
      for j = j1, j2 do hd[j] = (hd[j] or 0) + d end
      if not lo or j1 < lo then lo = j1 end
      if not hi or j2 > hi then hi = j2 end
    end
  end
  if lo then
    local bytes = {}
    for j = lo, hi do
      local o = HDR + 2 * j + 1
      local h1, l1 = string.byte(s, o, o + 1)
      local v = h1 * 256 + l1 + (hd[j] or 0)
      bytes[#bytes + 1] = string.char(math.floor(v / 256), v % 256)
    end
    redis.call('SETRANGE', key, HDR + 2 * lo, table.concat(bytes))
  end
end

-- every class's writes for seats whose mask went from c.old[seat] to c.masks[seat]; the seats changed
local function seg_write_masks(C, nslots, n, MOFF)
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
        seg_run_delta(n, old, new, seat, rb, W8, g, bf)
        bf[#bf + 1] = 'SET'; bf[#bf + 1] = 'u63'; bf[#bf + 1] = 8 * (MOFF + 8 * seat) + 1; bf[#bf + 1] = new
      end
    end
    seg_write(c.key, c.s, n, bf, g)
  end
  return changed
end
