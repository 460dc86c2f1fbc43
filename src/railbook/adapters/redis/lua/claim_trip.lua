-- claim_trip.lua: hold one journey for one person, unless it collides with a trip they hold.
--
-- Invariant kept: one person, one seat at a time. A person's hash (keyed by their traveller key: the
-- ID number's HMAC, the same for every member's passenger record of them) holds one field per order
-- that holds a trip of theirs (in flight, unpaid or paid): "member train-day starts ends claimed-at
-- passenger" (Unix seconds; the passenger record that order holds it for). A new trip is added only
-- if no other order's trip is on the same train-day or overlaps it in time, checked and written in
-- this one call, so of two concurrent orders for one person (from one member or two) at most one
-- holds the trip. The trips are complete only once restored from the system of record after the
-- last loss of Redis data: the field '~' (this person's were restored) or ARGV[8] = 1 (the caller
-- saw that everyone's were: the global flag, checked in the same round trip). Without either nothing
-- changes and the call returns {-3}. Trips that have ended are pruned on the way. The hash outlives
-- its last trip by a day, so it never expires while it holds a live trip.
--
-- KEYS: 1 the person's trips hash (its own hash tag, {t<traveller key>}: one slot per person).
-- ARGV: 1 order id, 2 member id, 3 train-day, 4 starts, 5 ends, 6 now, 7 an order whose trip does
--       not count ('' none: a change ignores the ticket it replaces), 8 all trips restored (0/1),
--       9 the passenger id (in this order) of this person.
-- Returns {1} (held), {-3} (not known complete), or
-- {-1, order, member, train-day, claimed-at, passenger} (the holding order and its passenger).

if ARGV[8] ~= '1' and redis.call('HEXISTS', KEYS[1], '~') == 0 then return {-3} end
local starts, ends, now = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local last = ends
local held = redis.call('HGETALL', KEYS[1])
for k = 1, #held, 2 do
  local order = held[k]
  if order ~= '~' and order ~= ARGV[1] and order ~= ARGV[7] then
    local member, day, s, e, at, pid = string.match(held[k + 1], '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
    e = tonumber(e)
    if e < now then
      redis.call('HDEL', KEYS[1], order)
    elseif day == ARGV[3] or (tonumber(s) < ends and starts < e) then
      return {-1, order, member, day, at, pid}
    elseif e > last then
      last = e
    end
  end
end
local value = ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[5] .. ' ' .. ARGV[6] .. ' ' .. ARGV[9]
redis.call('HSET', KEYS[1], ARGV[1], value)
local ttl = last - now + 86400
if redis.call('TTL', KEYS[1]) < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
return {1}
