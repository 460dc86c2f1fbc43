-- remaining.lua: seats free for one journey, per class, from the run tables alone.
--
-- Invariant relied on: H[a][t] counts the seats whose maximal free run starts at stop a and ends
-- at or after stop t, so the seats free for x->y are the sum of H[a][y] over a <= x: at most x+1
-- cells per class, read from one GETRANGE of its header and H (layout in allocate.lua). Read-only;
-- one call answers every class of the day.
--
-- KEYS: 1 meta hash, then one inventory string per known seat class (fixed order); all share the
-- train-day's hash tag {CODE:YYYY-MM-DD}.
-- ARGV: 1 x, 2 y. Returns {1, slot, count, ...} or {0, code, text}.

local HDR = 256
local FIRST_READ = HDR + 2 * 496
local x = tonumber(ARGV[1])
local y = tonumber(ARGV[2])
local out = {1}
local seen = false
for i = 2, #KEYS do
  local s = redis.call('GETRANGE', KEYS[i], 0, FIRST_READ - 1)
  if s ~= '' then
    seen = true
    local n = struct.unpack('>H', s)
    if y > n - 1 then return {0, 'BAD_JOURNEY', 'bad journey for this train'} end
    -- cells (a, y) for a <= x end at tri(x, y)
    local last = HDR + 2 * (x * (2 * n - x - 1) / 2 + y - x - 1) + 2
    if #s < last then s = s .. redis.call('GETRANGE', KEYS[i], #s, last - 1) end
    local sum = 0
    for a = 0, x do
      local o = HDR + 2 * (a * (2 * n - a - 1) / 2 + y - a - 1) + 1
      local hi, lo = string.byte(s, o, o + 1)
      sum = sum + hi * 256 + lo
    end
    out[#out + 1] = i - 1
    out[#out + 1] = sum
  end
end
if not seen and redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 'DAY_NOT_LOADED', 'train-day not loaded'}
end
return out
