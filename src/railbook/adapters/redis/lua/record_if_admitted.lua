-- record_if_admitted.lua: the pending record of an order admitted just before.
--
-- The pending record of an order just admitted in the same round trip (``_remember``'s writes), made
-- only if the order holds its sale token: a refused admission then leaves nothing to undo. A single
-- Redis only (the record's keys are in other slots than the day's tokens).
-- KEYS: 1 the day's tokens, 2 the record, 3 the member's pending orders. ARGV: 1 order id, 2 record
-- (JSON), 3 ttl, 4 now.

if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[3]))
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
return 1
