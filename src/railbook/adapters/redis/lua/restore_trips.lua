-- restore_trips.lua: a person's trips as the system of record holds them.
--
-- Invariant kept: '~' (restored) is set only together with every trip the system of record held when
-- the caller read it. Trips are only added where missing: an order claimed since keeps its own
-- field. Run for every person (traveller key) with trips before the global "restored" flag is set
-- again.
--
-- KEYS: 1 the person's trips hash. ARGV: 1 now, 2 ttl seconds, then (order, value) pairs, value
-- as claim_trip.lua writes it. Returns 1.

for k = 3, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[k], ARGV[k + 1]) end
redis.call('HSET', KEYS[1], '~', ARGV[1])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2])) end
return 1
