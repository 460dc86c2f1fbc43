-- lib/sell.lua: the writes of one allocate call (prepended to allocate.lua by the loader, last of
-- lib/: after lib/layout.lua, lib/carriage.lua and lib/choose.lua).
--
-- KEYS, ARGV: none of its own; it writes the class keys of the class tables it is given.
-- Invariant kept: for every class, the sold masks, the row-suffix run table H and the run bitmaps
-- stay equal to a recount from the masks. Selling x->y on a seat of free run (a, b) sets the
-- journey's bits in its mask, clears its run bit (a, b) and sets those of the runs left, (a, x)
-- when a < x and (y, b) when y < b; in H that is H[a][x+1..b] - 1 and H[y][y+1..b] + 1, row
-- pieces rewritten from the bytes read, with the rows between them copied as read. Per class one
-- BITFIELD and one SETRANGE, called only once every seat of the order is chosen.

-- a class's writes for the seats this call took in it (c[1..c.nt]); jm is the journey mask, formatted
local function sell_class(c, x, y, jm)
  local nt, n, s, key = c.nt, c.n, c.s, c.key
  local moff, roff8, W8 = c.moff, c.roff8, c.W8
  -- one BITFIELD: per seat its mask + journey (no carry: the journey's bits were clear), run bits
  -- (a, b) cleared, (a, x) and (y, b) set when they exist
  local a1, bmax, rows = c[3], y, nil -- rows: the run starts, ascending, when more than a1
  if nt == 4 then -- one seat, most orders: its arguments in the call, no table
    local seat, a, b = c[2], c[3], c[4]
    local m, o = 8 * (moff + 8 * seat) + 1, roff8 + seat
    local ra = a * (2 * n - a - 1) / 2 - a - 1 -- tri(a, t) = ra + t
    local ab = o + W8 * (ra + b)
    if y < b then bmax = b end
    if a < x and y < b then
      redis.call('BITFIELD', key, 'INCRBY', 'u63', m, jm, 'SET', 'u1', ab, '0',
        'SET', 'u1', o + W8 * (ra + x), '1', 'SET', 'u1', o + W8 * (y * (2 * n - y - 1) / 2 + b - y - 1), '1')
    elseif a < x then
      redis.call('BITFIELD', key, 'INCRBY', 'u63', m, jm, 'SET', 'u1', ab, '0',
        'SET', 'u1', o + W8 * (ra + x), '1')
    elseif y < b then
      redis.call('BITFIELD', key, 'INCRBY', 'u63', m, jm, 'SET', 'u1', ab, '0',
        'SET', 'u1', o + W8 * (y * (2 * n - y - 1) / 2 + b - y - 1), '1')
    else
      redis.call('BITFIELD', key, 'INCRBY', 'u63', m, jm, 'SET', 'u1', ab, '0')
    end
  else
    local bf, k = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0 -- sized at once for two seats
    for j = 1, nt, 4 do
      local seat, a, b = c[j + 1], c[j + 2], c[j + 3]
      local ra = a * (2 * n - a - 1) / 2 - a - 1 -- tri(a, t) = ra + t
      bf[k + 1], bf[k + 2], bf[k + 3], bf[k + 4] = 'INCRBY', 'u63', 8 * (moff + 8 * seat) + 1, jm
      bf[k + 5], bf[k + 6], bf[k + 7], bf[k + 8] = 'SET', 'u1', roff8 + W8 * (ra + b) + seat, '0'
      k = k + 8
      if a < x then
        bf[k + 1], bf[k + 2], bf[k + 3], bf[k + 4] = 'SET', 'u1', roff8 + W8 * (ra + x) + seat, '1'
        k = k + 4
      end
      if y < b then
        bf[k + 1], bf[k + 2], bf[k + 3], bf[k + 4] = 'SET', 'u1',
          roff8 + W8 * (y * (2 * n - y - 1) / 2 + b - y - 1) + seat, '1'
        k = k + 4
        if b > bmax then bmax = b end
      end
      if a ~= a1 then
        rows = rows or {a1}
        local new = true
        for i = 1, #rows do if rows[i] == a then new = false end end
        if new then rows[#rows + 1] = a end
      end
    end
    redis.call('BITFIELD', key, unpack(bf, 1, k))
  end
  -- one SETRANGE from the first changed H cell to the last: rows a (run starts, ascending) lose
  -- each of their seats on x+1..b, row y gains every seat on y+1..b (y > x >= every a)
  local nr = rows and #rows or 1
  if rows then table.sort(rows) end
  local piece, first, prev = '', nil, nil
  for ri = 1, bmax > y and nr + 1 or nr do
    local r = a1 -- no table for the common single run start
    if ri > nr then r = y elseif rows then r = rows[ri] end
    local t1, t2 = x + 1, 0
    if r == y then t1 = y + 1 end
    for j = 3, nt, 4 do
      if (r == y or c[j] == r) and c[j + 1] > t2 then t2 = c[j + 1] end
    end
    local p1 = 256 + 2 * (r * (2 * n - r - 1) / 2 + t1 - r - 1) + 1 -- cell tri(r, t1)
    local p2 = p1 + 2 * (t2 - t1) + 1
    local v = {byte(s, p1, p2)}
    -- each seat of the row by itself, on the low bytes of its cells t1..b: a row a cell counts
    -- every seat of the row taken here (no borrow below 0), a row y cell stays <= N (no carry out)
    for j = 3, nt, 4 do
      local a, b = c[j], c[j + 1]
      if r == y and b > y then
        for o = 2, 2 * (b - t1) + 2, 2 do
          local lo = v[o]
          if lo < 255 then v[o] = lo + 1 else v[o - 1], v[o] = v[o - 1] + 1, 0 end
        end
      elseif a == r then
        for o = 2, 2 * (b - t1) + 2, 2 do
          local lo = v[o]
          if lo > 0 then v[o] = lo - 1 else v[o - 1], v[o] = v[o - 1] - 1, 255 end
        end
      end
    end
    if prev then piece = piece .. string.sub(s, prev + 1, p1 - 1) else first = p1 end
    piece = piece .. string.char(unpack(v))
    prev = p2
  end
  redis.call('SETRANGE', key, first - 1, piece)
end
