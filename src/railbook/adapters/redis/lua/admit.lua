-- admit.lua: one order's admission on its train-day (sale token and duplicate markers).
--
-- Admission of one order on a train-day, atomic in one slot (all keys carry the day's hash tag).
--
-- Invariant: either every duplicate marker of the order is set AND one sale token is taken (a member
-- of the tokens zset, scored by time), or nothing changes. A marker exists while an order of that
-- member for that passenger is in flight or committed and unpaid (the committer keeps it until the
-- pay deadline, payment and cancellation delete it), so a second order for the same passenger is
-- refused here without asking the database. The markers of a day are trusted only while the day's
-- "markers valid" flag exists (KEYS[2]): it is set once the markers of every unpaid order of the day
-- were restored from the database, and a loss of Redis data loses it with the markers; without it
-- the script changes nothing and returns -3 (the caller asks the database, then admits with ARGV[6]
-- = 1). The tokens zset never holds more than ARGV[3] orders, which bounds the queue per train-day.
-- Tokens older than ARGV[5] seconds are dropped first (their order never got queued). Admitting an
-- order again (a group sent again after NOSCRIPT) admits it: its own markers and token are no refusal.
-- On a single Redis the order's trip claims (claim_trip.lua) may run just before it in the same round
-- trip: ARGV[7] > 0 names that many last KEYS, each passenger's trips hash (the person's, by traveller
-- key) and then the global "trips restored" flag, and the order is admitted only if every hash holds
-- its trip and the flag exists (else -4, nothing changed); a duplicate marker still answers first. A
-- cluster never passes them (the keys live in other slots): there the claim is a round trip of its
-- own, before the admission.
-- KEYS: 1 tokens zset, 2 markers-valid flag, 3.. duplicate markers, then the ARGV[7] trip keys.
-- ARGV: 1 order id, 2 now, 3 limit, 4 marker ttl, 5 stale, 6 checked against the database (0/1),
--       7 trip keys at the end of KEYS (0 or absent: none).

local last = #KEYS - tonumber(ARGV[7] or '0')
if ARGV[6] ~= '1' and redis.call('EXISTS', KEYS[2]) == 0 then return -3 end
for k = 3, last do
  local holder = redis.call('GET', KEYS[k])
  if holder and holder ~= ARGV[1] then return -1 end
end
if last < #KEYS then
  if redis.call('EXISTS', KEYS[#KEYS]) == 0 then return -4 end
  for k = last + 1, #KEYS - 1 do
    if redis.call('HEXISTS', KEYS[k], ARGV[1]) == 0 then return -4 end
  end
end
local now = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[5]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return -2
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
for k = 3, last do
  redis.call('SET', KEYS[k], ARGV[1], 'EX', tonumber(ARGV[4]))
end
return 1
