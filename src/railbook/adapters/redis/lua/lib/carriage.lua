-- lib/carriage.lua: the take list and seat choice beyond one best fit seat — named seats, letters,
-- groups (prepended to allocate.lua by the loader, after lib/layout.lua, before lib/choose.lua).
--
-- KEYS, ARGV: none of its own; it works on the class tables of lib/layout.lua. Read-only on Redis:
-- the masks of a carriage are read with one GETRANGE, once per call; choices go to the take list.
-- Invariant kept: seat choice follows railbook.domain.inventory exactly (the differential tests
-- compare them): a group sits in the best fit seat's carriage nearest to it (by distance, then
-- index), else at the lowest free seats of the first carriage that has room, else in successive
-- best fits; letters go side by side in one row, else over two adjacent rows; seats ascending go
-- to positions ascending. A seat this call has taken is never chosen again.
--
-- The helpers are built by carriage_tools(best_fit) the first time an order needs them, not at the
-- top of the script: a script's functions are created anew on every call, and most orders are one
-- passenger without preference, which needs none of them (allocate.lua records its one take
-- itself). Every take but that one goes through take below, so a class with takes (nt > 0) means
-- the tools are built: best_fit relies on it for taken and taken_runs.

local tools = nil

-- the helpers, built once per call on first need: taken, taken_runs, take, carriages, run_of,
-- take_seat, place_letters, group (best_fit, of lib/choose.lua, is passed in for the group's
-- successive best fits)
local function carriage_tools(best_fit)
  if tools then return tools end

  -- whether this call has already taken a seat of the class (its take list: c[1..c.nt])
  local function taken(c, seat)
    for j = 2, c.nt, 4 do
      if c[j] == seat then return true end
    end
    return false
  end

  -- the seats of runs (a, b >= t) this call has taken: H[a][t] less these is what is left to choose
  local function taken_runs(c, a, t)
    local k = 0
    for j = 3, c.nt, 4 do
      if c[j] == a and c[j + 1] >= t then k = k + 1 end
    end
    return k
  end

  -- record a take: the array part of the class table, its first four slots made with it
  local function take(c, pos, seat, a, b)
    local k = c.nt
    c[k + 1], c[k + 2], c[k + 3], c[k + 4] = pos, seat, a, b
    c.nt = k + 4
  end

  -- the first and last seat of a seat's carriage, from the header (no table built)
  local function carriage_of(c, seat)
    local s, first = c.s, 0
    for o = 17, 16 + 4 * byte(s, 14), 4 do
      local r1, r2 = byte(s, o, o + 1)
      local last = first + (r1 * 256 + r2) * c.L - 1
      if seat <= last then return first, last end
      first = last + 1
    end
  end

  -- the carriages of a class in seat order, {no, rows, first, last} each; built once, when a seat
  -- name, a letter or a search over every carriage needs them
  local function carriages(c)
    if not c.cars then
      local t, first = {}, 0
      for j = 0, byte(c.s, 14) - 1 do
        local no, rows = struct.unpack('>HH', c.s, 15 + 4 * j)
        t[j + 1] = {no = no, rows = rows, first = first, last = first + rows * c.L - 1}
        first = first + rows * c.L
      end
      c.cars = t
    end
    return c.cars
  end

  -- the free run (a, b) around the journey x..y of a seat free for it: a is one past the highest sold
  -- segment below x (frexp gives a number's highest set bit exactly), b the lowest sold segment at
  -- or above y, else the last stop
  local function run_of(m, x, y, n)
    local a, b = 0, y
    local below = m % 2 ^ x
    if below > 0 then
      local _, e = math.frexp(below)
      a = e
    end
    local w = floor(m / 2 ^ y)
    if w == 0 then return a, n - 1 end
    while w % 2 == 0 do
      w = w / 2
      b = b + 1
    end
    return a, b
  end

  -- a seat's mask, from the masks of its carriage (first..last) read with one GETRANGE once per call
  local function block_mask(c, first, last, seat)
    local bm = c.bm
    if not bm then
      bm = {}
      c.bm = bm
    end
    local raw = bm[first]
    if not raw then
      raw = redis.call('GETRANGE', c.key, c.moff + 8 * first, c.moff + 8 * (last + 1) - 1)
      bm[first] = raw
    end
    return (struct.unpack('>I8', raw, 8 * (seat - first) + 1))
  end

  -- a seat of the carriage first..last not taken by this call and free for x..y
  local function ok_seat(c, first, last, seat, x, y)
    return not taken(c, seat) and floor(block_mask(c, first, last, seat) / 2 ^ x) % 2 ^ (y - x) == 0
  end

  local function take_seat(c, pos, seat, x, y)
    local first, last = carriage_of(c, seat)
    local a, b = run_of(block_mask(c, first, last, seat), x, y, c.n)
    take(c, pos, seat, a, b)
  end

  -- the letter wishes {pos, letter index} of a class side by side in one row (when the letters
  -- differ), else over two adjacent rows; nil when no row pair has them (or a letter is wished more
  -- than twice)
  local function place_letters(c, wishes, x, y)
    local cnt, most = {}, 0
    for _, w in ipairs(wishes) do
      cnt[w[2]] = (cnt[w[2]] or 0) + 1
      if cnt[w[2]] > most then most = cnt[w[2]] end
    end
    if most > 2 then return nil end
    local W = c.L
    if most == 1 then
      for _, k in ipairs(carriages(c)) do
        for r = 0, k.rows - 1 do
          local base = k.first + r * W
          local all = true
          for _, w in ipairs(wishes) do
            if not ok_seat(c, k.first, k.last, base + w[2], x, y) then
              all = false
              break
            end
          end
          if all then
            local got = {}
            for _, w in ipairs(wishes) do got[#got + 1] = {w[1], base + w[2]} end
            return got
          end
        end
      end
    end
    for _, k in ipairs(carriages(c)) do
      for r = 0, k.rows - 2 do
        local base = k.first + r * W
        local got, used = {}, {}
        for _, w in ipairs(wishes) do
          local s1, s2 = base + w[2], base + W + w[2]
          if not used[s1] and ok_seat(c, k.first, k.last, s1, x, y) then
            got[#got + 1] = {w[1], s1}
            used[s1] = true
          elseif not used[s2] and ok_seat(c, k.first, k.last, s2, x, y) then
            got[#got + 1] = {w[1], s2}
            used[s2] = true
          else
            break
          end
        end
        if #got == #wishes then return got end
      end
    end
    return nil
  end

  -- the rest of a group of u once its best fit seat s0 is known: walking outwards from s0, lower
  -- side first, visits s0's carriage nearest first without sorting it
  local function group(c, positions, s0, x, y)
    local u = #positions
    local first, last = carriage_of(c, s0)
    local chosen = {}
    for d = 0, last - first do
      local lo, hi = s0 - d, s0 + d
      if lo >= first and ok_seat(c, first, last, lo, x, y) then
        chosen[#chosen + 1] = lo
        if #chosen == u then break end
      end
      if d > 0 and hi <= last and ok_seat(c, first, last, hi, x, y) then
        chosen[#chosen + 1] = hi
        if #chosen == u then break end
      end
    end
    if #chosen < u then
      chosen = nil
      for _, k in ipairs(carriages(c)) do
        local free = {}
        for seat = k.first, k.last do
          if ok_seat(c, k.first, k.last, seat, x, y) then
            free[#free + 1] = seat
            if #free == u then break end
          end
        end
        if #free == u then
          chosen = free
          break
        end
      end
    end
    if chosen then
      table.sort(chosen)
      for j = 1, u do take_seat(c, positions[j], chosen[j], x, y) end
      return
    end
    -- successive best fits: take each as found (they only shrink the cells read), then order them
    local from = c.nt
    local picks = {}
    for j = 1, u do
      local s, a, b = best_fit(c, x, y)
      take(c, -1, s, a, b)
      picks[j] = {s, a, b}
    end
    table.sort(picks, function(p, q) return p[1] < q[1] end)
    for j = 1, u do
      local o = from + 4 * (j - 1)
      c[o + 1], c[o + 2], c[o + 3], c[o + 4] = positions[j], picks[j][1], picks[j][2], picks[j][3]
    end
  end

  tools = {taken = taken, taken_runs = taken_runs, take = take, carriages = carriages, run_of = run_of,
           take_seat = take_seat, place_letters = place_letters, group = group}
  return tools
end
