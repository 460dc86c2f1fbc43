-- remaining.lua: seats free for one journey, per class, from the run tables alone.
--
-- Invariant relied on: G[a][b] counts the seats whose maximal free run spans a..b, so the seats
-- free for x->y are the sum over a <= x, b >= y. Read-only; one call for every class of the day.
--
-- KEYS: 1 meta hash, then one inventory string per known seat class (fixed order).
-- ARGV: 1 x, 2 y. Returns {1, slot, count, ...} or {0, code, text}.

local HDR = 256
local GREAD = HDR + 2 * 50 * 50
local x = tonumber(ARGV[1])
local y = tonumber(ARGV[2])
local out = {1}
local seen = false
for i = 2, #KEYS do
  local s = redis.call('GETRANGE', KEYS[i], 0, GREAD - 1)
  if s ~= '' then
    seen = true
    local n = struct.unpack('>H', s)
    if y > n - 1 then return {0, 'BAD_JOURNEY', 'bad journey for this train'} end
    local cnt = n - y
    local fmt = '>' .. string.rep('H', cnt)
    local sum = 0
    for a = 0, x do
      local v = {struct.unpack(fmt, s, HDR + 2 * (a * n + y) + 1)}
      for j = 1, cnt do sum = sum + v[j] end
    end
    out[#out + 1] = i - 1
    out[#out + 1] = sum
  end
end
if not seen and redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 'DAY_NOT_LOADED', 'train-day not loaded'}
end
return out
