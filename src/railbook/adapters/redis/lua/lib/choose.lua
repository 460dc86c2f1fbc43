-- lib/choose.lua: best fit, the seat choice of every order (prepended to allocate.lua by the loader,
-- after lib/layout.lua and lib/carriage.lua, whose builder gets best_fit for its groups).
--
-- KEYS, ARGV: none of its own; it works on the class tables of lib/layout.lua. Read-only on Redis
-- (BITPOS of run bitmaps): a choice is recorded in the class's take list (the array part of its
-- table), written later by lib/sell.lua, so a refused order has written nothing.
-- Invariant kept: seat choice follows railbook.domain.inventory exactly (the differential tests
-- compare them): best fit is the shortest free run containing the journey, lowest seat; a group
-- sits in the best fit seat's carriage nearest to it, else in the first carriage with room, else in
-- successive best fits (lib/carriage.lua). A seat this call has taken is never chosen again: the
-- run table is read less the runs of those seats (taken_runs) and the run bitmaps skip them (taken);
-- a class has takes only once lib/carriage.lua's tools are built, so those come from there.
-- One path serves every order; a one-passenger order costs one BITPOS per candidate run (usually
-- one) and creates no table here.

-- best fit: shortest run containing the journey, lowest seat, skipping seats taken by this call.
-- Rows a = x down to 0 (a run from a is at least y - a long, so the scan stops once that exceeds
-- the best length found); in a row, H[a][.] does not increase, so the shortest run (a, b >= y) is
-- found by bisection on where it drops below H[a][y]. The lowest seat of a run is one BITPOS over
-- its bitmap, bounded by the best seat found so far. Returns seat, a, b.
local function best_fit(c, x, y)
  local n, s, nt = c.n, c.s, c.nt
  local bestL, c1, cands = nil, nil, nil -- the candidate rows: c1, or the list cands when several
  for a = x, 0, -1 do
    if bestL and y - a > bestL then break end
    -- cells read inline (rb + 2t is the 1-based byte offset of cell (a, t)): a call per read would
    -- cost more than the rest of the search; less the runs taken when this call has taken seats
    local rb = 256 + 2 * (a * (2 * n - a - 1) / 2 - a - 1) + 1 -- tri(a, 0), inlined
    local h1, l1 = byte(s, rb + 2 * y, rb + 2 * y + 1)
    local top = h1 * 256 + l1
    if nt > 0 then top = top - tools.taken_runs(c, a, y) end
    if top > 0 then
      local lo, hi = y, n - 1
      if bestL and a + bestL < hi then hi = a + bestL end
      local v = 0 -- H[a][hi + 1] (0 past the last stop)
      if hi + 1 <= n - 1 then
        h1, l1 = byte(s, rb + 2 * hi + 2, rb + 2 * hi + 3)
        v = h1 * 256 + l1
        if nt > 0 then v = v - tools.taken_runs(c, a, hi + 1) end
      end
      if v < top then
        while lo < hi do
          local mid = floor((lo + hi) / 2)
          v = 0 -- H[a][mid + 1]
          if mid + 1 <= n - 1 then
            h1, l1 = byte(s, rb + 2 * mid + 2, rb + 2 * mid + 3)
            v = h1 * 256 + l1
            if nt > 0 then v = v - tools.taken_runs(c, a, mid + 1) end
          end
          if v < top then hi = mid else lo = mid + 1 end
        end
        local len = lo - a
        if not bestL or len < bestL then
          bestL, c1, cands = len, a, nil
        elseif cands then
          cands[#cands + 1] = a
        else
          cands = {c1, a}
        end
      end
    end
  end
  if not bestL then error('best_fit: run table inconsistent') end
  local bs, ba = nil, nil
  local roff8, W8 = c.roff8, c.W8
  for j = 1, cands and #cands or 1 do
    local a = cands and cands[j] or c1
    if not bs or bs > 0 then
      local base = roff8 + W8 * (a * (2 * n - a - 1) / 2 + bestL - 1) -- bitmap tri(a, a + bestL)
      local from, last = base, base + (bs or c.N) - 1
      while true do
        local p = redis.call('BITPOS', c.key, '1', from, last, 'BIT')
        if p < 0 then break end
        local seat = p - base
        if nt == 0 or not tools.taken(c, seat) then
          bs, ba = seat, a
          break
        end
        from = p + 1
        if from > last then break end
      end
    end
  end
  if not bs then error('best_fit: run index inconsistent') end
  return bs, ba, ba + bestL
end
