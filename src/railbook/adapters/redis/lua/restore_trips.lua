-- restore_trips.lua: a passenger's trips as the system of record holds them, trusted from now on.
--
-- Invariant kept: '~' (trusted) is set only together with every trip the system of record held when
-- the caller read it; orders claimed since then carry their own field (claims need '~', so none can
-- have been made before this call: the trips are only added where missing). A hash trusted already
-- is left alone (a concurrent restore won).
--
-- KEYS: 1 the passenger's trips hash. ARGV: 1 now, 2 ttl seconds, then (order, value) pairs, value
-- as claim_trip.lua writes it. Returns 1 when restored now, 0 when it was trusted already.

if redis.call('HEXISTS', KEYS[1], '~') == 1 then return 0 end
for k = 3, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[k], ARGV[k + 1]) end
redis.call('HSET', KEYS[1], '~', ARGV[1])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2])) end
return 1
