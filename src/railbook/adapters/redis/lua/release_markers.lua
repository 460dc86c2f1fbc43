-- release_markers.lua: sale tokens back and duplicate markers released, per batch.
--
-- Orders of one train-day finished (or undone): their sale tokens back, and their duplicate markers
-- kept for ARGV[1] seconds (0: deleted), only where they still name that order: a later order's
-- marker for the same passenger is left alone. KEYS[1] the day's tokens, then each
-- order's markers in turn; ARGV[1] keep, then per order its id and how many markers follow. One call
-- settles a committer's whole batch for the day.

local keep = tonumber(ARGV[1])
local k = 2
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  redis.call('ZREM', KEYS[1], id)
  for j = k, k + tonumber(ARGV[i + 1]) - 1 do
    if redis.call('GET', KEYS[j]) == id then
      if keep > 0 then redis.call('EXPIRE', KEYS[j], keep) else redis.call('DEL', KEYS[j]) end
    end
  end
  k = k + tonumber(ARGV[i + 1])
end
return 1
