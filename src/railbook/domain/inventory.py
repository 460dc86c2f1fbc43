"""Segment inventory of a train-day: the pure-Python reference model of seat allocation.

The Redis Lua allocator and the in-process allocator must answer exactly as this module does for
the same state and request (property tests compare them), so the policy below is the specification.

State, per seat class: the sold-segment mask of every seat and the **run table** ``G[a][b]``, the
number of seats whose maximal free run spans stops ``a..b``. A journey ``x→y`` fits a seat iff one
of its runs contains ``[x, y]``, hence ``remaining(x, y) = Σ G[a][b]`` over ``a ≤ x, b ≥ y``; a
sale or release changes a handful of entries, never one row per station pair.

Allocation policy (one order, all-or-nothing):

1. Checks that need no state, in this order: 1–5 passengers (``BAD_PASSENGERS``); ``0 ≤ from <
   to`` (``BAD_JOURNEY``); per passenger in order, a known class (``BAD_SEAT_CLASS``) and a
   well-formed preference (``BAD_SEAT_PREF``: a letter of that class, or a canonical seat name
   ``05-12F``); no seat name asked twice (``BAD_SEAT_PREF``). They come first so that an adapter
   can run them before any round trip to its store.
2. Checks against the train-day: ``to`` is a stop of the train (``BAD_JOURNEY``); per passenger
   in order, the class runs on this train-day (``BAD_SEAT_CLASS``) and a named seat exists
   (``BAD_SEAT_PREF``).
3. The sold-out check, from the run table alone: per class in order of first appearance,
   ``remaining(x, y)`` must cover the passengers asking for it, else ``SoldOut`` (``SOLD_OUT``).
4. Named seats must be free for the journey, else ``SoldOut`` with code ``SEAT_TAKEN``.
   Nothing has changed when any check fails; after step 4 seating cannot fail.
5. Seating, class by class (order of first appearance):
   a. named seats are given as asked;
   b. passengers with letters are placed together honouring their letters: the first row (by
      carriage, then row) where all letters are free, else the first pair of adjacent rows of
      one carriage (each passenger, in order, takes its letter in the upper row if free, else in
      the lower one). A letter asked more than twice cannot fit. If no place exists the
      preference is dropped and they join the passengers without one — as 12306 does, a letter
      is best-effort and never a reason to refuse a ticket;
   c. the others (order of position) are kept together: ``s0`` is the best-fit seat — the free
      seat whose free run around the journey is shortest (smallest ``b − a``), ties by lowest
      seat index — so that long free runs stay sellable for long journeys. One passenger gets
      ``s0``. A group gets the free seats of ``s0``'s carriage nearest to ``s0`` (by index
      distance, then index) if that carriage holds them all; else the lowest free seats of the
      first carriage that holds them all; else successive best-fit seats. The chosen seats, in
      index order, go to the passengers in position order.
   The whole procedure is deterministic: same state and request, same seats.

Release frees the journey's segments of each seat (bits already free stay free); checks, in
order: journey (``BAD_JOURNEY``), then per seat its class (``BAD_SEAT_CLASS``) and index
(``BAD_SEAT``); nothing changes when one fails.

``policy="first_fit"`` (lowest free seat instead of best fit) exists only for the benchmark that
shows what best fit buys; allocators always use best fit.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from railbook.domain.errors import (
    BadJourney,
    BadPassengers,
    BadSeat,
    BadSeatClass,
    BadSeatPref,
    SeatTaken,
    SoldOut,
)
from railbook.domain.seating import (
    SEAT_LETTERS,
    AllocationRequest,
    Seat,
    SeatAssignment,
    journey_mask,
    seat_name,
)

MAX_PASSENGERS = 5
# Masks must stay exact in Lua (doubles, 53 bits) and G counts fit 16 bits (see the Redis adapter).
MAX_STOPS = 50
MAX_SEATS_PER_CLASS = 65535
# The carriage table fills the Redis class header up to its load epoch (4 bytes a carriage).
MAX_CARRIAGES_PER_CLASS = 56

Policy = Literal["best_fit", "first_fit"]
Run = tuple[int, int]

_SEAT_NAME = re.compile(r"([0-9]{2,3})-([0-9]{2,3})")


@dataclass(frozen=True, slots=True)
class LetterPref:
    """A passenger's wish for a letter (window, aisle…), by its position in the class's letters."""

    letter_index: int


@dataclass(frozen=True, slots=True)
class SeatNamePref:
    """A passenger's wish for one exact seat, parsed from its name."""

    carriage: int
    row: int
    letter_index: int


ParsedPref = LetterPref | SeatNamePref | None


def parse_pref(seat_class: str, pref: str | None) -> ParsedPref:
    """Parse a seat preference of a known class; raise ``BAD_SEAT_PREF`` when it is not well-formed."""
    if pref is None:
        return None
    letters = SEAT_LETTERS[seat_class]
    if len(pref) == 1:
        if pref in letters:
            return LetterPref(letters.index(pref))
    elif len(pref) >= 6 and pref[-1] in letters:
        m = _SEAT_NAME.fullmatch(pref[:-1])
        if m is not None:
            carriage, row = int(m.group(1)), int(m.group(2))
            if carriage >= 1 and row >= 1 and seat_name(carriage, row, pref[-1]) == pref:
                return SeatNamePref(carriage, row, letters.index(pref[-1]))
    raise BadSeatPref(f"no seat {pref!r} in class {seat_class}")


def check_journey_static(from_index: int, to_index: int) -> None:
    """The part of the journey check that needs no train-day (a stop index can't be negative)."""
    if from_index < 0 or to_index <= from_index:
        raise BadJourney(f"bad journey {from_index}→{to_index}")


def check_request(request: AllocationRequest) -> list[ParsedPref]:
    """Step 1 of the policy: checks without state; returns the parsed preference per passenger."""
    if not 1 <= len(request.passengers) <= MAX_PASSENGERS:
        raise BadPassengers(f"an order seats 1 to {MAX_PASSENGERS} passengers")
    check_journey_static(request.from_index, request.to_index)
    parsed: list[ParsedPref] = []
    for p in request.passengers:
        if p.seat_class not in SEAT_LETTERS:
            raise BadSeatClass(f"unknown seat class {p.seat_class!r}")
        parsed.append(parse_pref(p.seat_class, p.pref))
    named = [
        (p.seat_class, p.pref)
        for p, q in zip(request.passengers, parsed, strict=True)
        if isinstance(q, SeatNamePref)
    ]
    if len(set(named)) != len(named):
        raise BadSeatPref("the same seat is asked twice in one order")
    return parsed


def free_runs(mask: int, n_stops: int) -> list[Run]:
    """Maximal free runs ``(a, b)`` (stops; segments ``a..b-1`` free) of a seat's sold mask."""
    runs: list[Run] = []
    start: int | None = None
    for k in range(n_stops - 1):
        if not mask >> k & 1:
            if start is None:
                start = k
        elif start is not None:
            runs.append((start, k))
            start = None
    if start is not None:
        runs.append((start, n_stops - 1))
    return runs


def run_containing(mask: int, n_stops: int, x: int, y: int) -> Run:
    """The free run of a seat that contains journey ``x→y`` (the seat must be free for it)."""
    a, b = x, y
    while a > 0 and not mask >> (a - 1) & 1:
        a -= 1
    while b < n_stops - 1 and not mask >> b & 1:
        b += 1
    return a, b


def diff_masks(expected: Mapping[str, Sequence[int]], actual: Mapping[str, Sequence[int]]) -> list[str]:
    """Human-readable drift between two mask sets (system of record vs allocator), empty if equal."""
    out: list[str] = []
    for c in sorted(set(expected) | set(actual)):
        if c not in actual:
            out.append(f"{c}: class missing from the allocator")
            continue
        if c not in expected:
            out.append(f"{c}: class unknown to the system of record")
            continue
        e, a = expected[c], actual[c]
        if len(e) != len(a):
            out.append(f"{c}: {len(e)} seats expected, {len(a)} found")
        for i, (me, ma) in enumerate(zip(e, a, strict=False)):
            if me != ma:
                out.append(
                    f"{c} seat {i}: sold segments {me:#b} expected, {ma:#b} found "
                    f"(missing {me & ~ma:#b}, extra {ma & ~me:#b})"
                )
    return out


@dataclass(frozen=True, slots=True)
class CarriageBlock:
    """One carriage of a class: its number, first seat index and row count."""

    carriage: int
    first: int
    rows: int


class ClassInventory:
    """Masks, run table and run index of one seat class of a train-day."""

    def __init__(
        self, seat_class: str, n_stops: int, seats: Sequence[Seat], masks: Sequence[int] | None = None
    ):
        if seat_class not in SEAT_LETTERS:
            raise ValueError(f"unknown seat class {seat_class!r}")
        if not 2 <= n_stops <= MAX_STOPS:
            raise ValueError(f"a train has 2 to {MAX_STOPS} stops")
        self.seat_class = seat_class
        self.n_stops = n_stops
        self.letters = SEAT_LETTERS[seat_class]
        self.seats: tuple[Seat, ...] = tuple(seats)
        self.carriages = _blocks(seat_class, self.seats)
        if len(self.seats) > MAX_SEATS_PER_CLASS or len(self.carriages) > MAX_CARRIAGES_PER_CLASS:
            raise ValueError("too many seats or carriages in one class")
        full = (1 << (n_stops - 1)) - 1
        ms = [0] * len(self.seats) if masks is None else list(masks)
        if len(ms) != len(self.seats) or any(m < 0 or m & ~full for m in ms):
            raise ValueError(f"{seat_class}: masks do not match the seats or the stops")
        self.masks: list[int] = ms
        self.runs: list[list[int]] = [[0] * n_stops for _ in range(n_stops)]
        self.by_run: dict[Run, set[int]] = {}
        for i, m in enumerate(ms):
            for r in free_runs(m, n_stops):
                self._add_run(r, i)

    # -- run table maintenance
    def _add_run(self, r: Run, seat: int) -> None:
        self.runs[r[0]][r[1]] += 1
        self.by_run.setdefault(r, set()).add(seat)

    def _drop_run(self, r: Run, seat: int) -> None:
        self.runs[r[0]][r[1]] -= 1
        members = self.by_run[r]
        members.remove(seat)
        if not members:
            del self.by_run[r]

    def is_free(self, seat: int, x: int, y: int) -> bool:
        return self.masks[seat] & journey_mask(x, y) == 0

    def remaining(self, x: int, y: int) -> int:
        """Seats free for the whole journey: the run-table quadrant ``a ≤ x, b ≥ y``."""
        return sum(self.runs[a][b] for a in range(x + 1) for b in range(y, self.n_stops))

    def take(self, seat: int, x: int, y: int) -> None:
        """Sell ``x→y`` on a seat free for it: its run ``(a, b)`` splits into ``(a, x)`` and ``(y, b)``."""
        a, b = run_containing(self.masks[seat], self.n_stops, x, y)
        self._drop_run((a, b), seat)
        if a < x:
            self._add_run((a, x), seat)
        if y < b:
            self._add_run((y, b), seat)
        self.masks[seat] |= journey_mask(x, y)

    def give_back(self, seat: int, x: int, y: int) -> None:
        """Free ``x→y`` on a seat; runs that merge are replaced in the table."""
        old = self.masks[seat]
        new = old & ~journey_mask(x, y)
        if new == old:
            return
        before, after = set(free_runs(old, self.n_stops)), set(free_runs(new, self.n_stops))
        for r in sorted(before - after):
            self._drop_run(r, seat)
        for r in sorted(after - before):
            self._add_run(r, seat)
        self.masks[seat] = new

    def hold(self, seat: int, x: int, y: int) -> bool:
        """Mark ``x→y`` sold on a seat whatever part of it already is (a repair from the system of
        record); returns whether the mask changed."""
        old = self.masks[seat]
        new = old | journey_mask(x, y)
        if new == old:
            return False
        before, after = set(free_runs(old, self.n_stops)), set(free_runs(new, self.n_stops))
        for r in sorted(before - after):
            self._drop_run(r, seat)
        for r in sorted(after - before):
            self._add_run(r, seat)
        self.masks[seat] = new
        return True

    def index_of(self, pref: SeatNamePref) -> int | None:
        for c in self.carriages:
            if c.carriage == pref.carriage:
                if pref.row <= c.rows:
                    return c.first + (pref.row - 1) * len(self.letters) + pref.letter_index
                return None
        return None

    def block_of(self, seat: int) -> CarriageBlock:
        for c in self.carriages:
            if c.first <= seat < c.first + c.rows * len(self.letters):
                return c
        raise IndexError(seat)

    # -- seat choice (pure: reads state, never changes it)
    def best_fit(self, x: int, y: int, taken: set[int], policy: Policy = "best_fit") -> int:
        """The free seat (not in ``taken``) with the shortest free run around ``x→y``, lowest index."""
        if policy == "first_fit":
            return next(s for s in range(len(self.seats)) if s not in taken and self.is_free(s, x, y))
        n = self.n_stops
        for length in range(y - x, n):
            best: int | None = None
            for a in range(max(0, y - length), min(x, n - 1 - length) + 1):
                members = self.by_run.get((a, a + length))
                if members:
                    cand = min((s for s in members if s not in taken), default=None)
                    if cand is not None and (best is None or cand < best):
                        best = cand
            if best is not None:
                return best
        raise AssertionError("best_fit called with no free seat: counts are inconsistent")

    def _free_in(self, block: CarriageBlock, x: int, y: int, taken: set[int]) -> list[int]:
        end = block.first + block.rows * len(self.letters)
        return [s for s in range(block.first, end) if s not in taken and self.is_free(s, x, y)]

    def place_letters(
        self, x: int, y: int, wishes: Sequence[tuple[int, int]], taken: set[int]
    ) -> dict[int, int] | None:
        """Policy 5b: ``wishes`` are (position, letter index); returns position → seat, or None."""
        width = len(self.letters)
        most = max(Counter(li for _, li in wishes).values())
        if most > 2:
            return None

        def ok(s: int) -> bool:
            return s not in taken and self.is_free(s, x, y)

        if most == 1:
            for c in self.carriages:
                for r in range(c.rows):
                    base = c.first + r * width
                    if all(ok(base + li) for _, li in wishes):
                        return {pos: base + li for pos, li in wishes}
        for c in self.carriages:
            for r in range(c.rows - 1):
                base = c.first + r * width
                got: dict[int, int] = {}
                used: set[int] = set()
                for pos, li in wishes:
                    for s in (base + li, base + width + li):
                        if s not in used and ok(s):
                            got[pos] = s
                            used.add(s)
                            break
                    else:
                        break
                if len(got) == len(wishes):
                    return got
        return None

    def seat_group(
        self, x: int, y: int, positions: Sequence[int], taken: set[int], policy: Policy = "best_fit"
    ) -> dict[int, int]:
        """Policy 5c: seats for passengers without (or with dropped) preferences, kept together."""
        u = len(positions)
        s0 = self.best_fit(x, y, taken, policy)
        chosen: list[int]
        if u == 1:
            chosen = [s0]
        else:
            near = self._free_in(self.block_of(s0), x, y, taken)
            if len(near) >= u:
                chosen = sorted(near, key=lambda s: (abs(s - s0), s))[:u]
            else:
                for block in self.carriages:
                    free = self._free_in(block, x, y, taken)
                    if len(free) >= u:
                        chosen = free[:u]
                        break
                else:
                    chosen, tmp = [], set(taken)
                    for _ in range(u):
                        s = self.best_fit(x, y, tmp, policy)
                        chosen.append(s)
                        tmp.add(s)
        return dict(zip(positions, sorted(chosen), strict=True))

    def check(self) -> None:
        """Recompute the run table and index from the masks; raise AssertionError on any drift."""
        runs = [[0] * self.n_stops for _ in range(self.n_stops)]
        by_run: dict[Run, set[int]] = {}
        for i, m in enumerate(self.masks):
            for r in free_runs(m, self.n_stops):
                runs[r[0]][r[1]] += 1
                by_run.setdefault(r, set()).add(i)
        assert runs == self.runs, f"{self.seat_class}: run table drifted from the masks"
        assert by_run == self.by_run, f"{self.seat_class}: run index drifted from the masks"


def _blocks(seat_class: str, seats: Sequence[Seat]) -> tuple[CarriageBlock, ...]:
    """Carriage blocks of a class; the seats must be numbered exactly as ``class_seats`` does."""
    letters = SEAT_LETTERS[seat_class]
    blocks: list[CarriageBlock] = []
    i = 0
    while i < len(seats):
        car = seats[i].carriage
        first = i
        while i < len(seats) and seats[i].carriage == car:
            i += 1
        count = i - first
        if count % len(letters) or (blocks and blocks[-1].carriage >= car):
            raise ValueError(f"{seat_class}: seats of carriage {car} are not whole rows in carriage order")
        blocks.append(CarriageBlock(car, first, count // len(letters)))
    for i, s in enumerate(seats):
        b = next(b for b in blocks if b.carriage == s.carriage)
        k = i - b.first
        if s.index != i or s.row != k // len(letters) + 1 or s.letter != letters[k % len(letters)]:
            raise ValueError(f"{seat_class}: seat {i} is not numbered in (carriage, row, letter) order")
    return tuple(blocks)


class DayInventory:
    """All seat classes of one train-day; ``allocate``/``release`` follow the module's policy."""

    def __init__(self, n_stops: int, classes: Mapping[str, ClassInventory], *, policy: Policy = "best_fit"):
        self.n_stops = n_stops
        self.classes: dict[str, ClassInventory] = dict(classes)
        self.policy: Policy = policy

    @classmethod
    def from_masks(
        cls,
        n_stops: int,
        seats: Mapping[str, Sequence[Seat]],
        masks: Mapping[str, Sequence[int]] | None = None,
        *,
        policy: Policy = "best_fit",
    ) -> DayInventory:
        """Build from seats per class and the masks already sold (missing class: all free)."""
        masks = masks or {}
        return cls(
            n_stops, {c: ClassInventory(c, n_stops, s, masks.get(c)) for c, s in seats.items()}, policy=policy
        )

    def _check_journey(self, x: int, y: int) -> None:
        check_journey_static(x, y)
        if y > self.n_stops - 1:
            raise BadJourney(f"bad journey {x}→{y} on a train of {self.n_stops} stops")

    def _class(self, seat_class: str) -> ClassInventory:
        try:
            return self.classes[seat_class]
        except KeyError:
            raise BadSeatClass(f"no {seat_class} seats on this train-day") from None

    def allocate(self, request: AllocationRequest) -> list[SeatAssignment]:
        """Seat every passenger of the order or raise, changing nothing (see the module policy)."""
        parsed = check_request(request)
        x, y = request.from_index, request.to_index
        self._check_journey(x, y)
        named: dict[int, int] = {}
        for pos, (p, q) in enumerate(zip(request.passengers, parsed, strict=True)):
            inv = self._class(p.seat_class)
            if isinstance(q, SeatNamePref):
                idx = inv.index_of(q)
                if idx is None:
                    raise BadSeatPref(f"no seat {p.pref} in {p.seat_class}")
                named[pos] = idx
        need = Counter(p.seat_class for p in request.passengers)
        for c, k in need.items():  # insertion order = first appearance
            left = self.classes[c].remaining(x, y)
            if left < k:
                raise SoldOut(f"{c}: {left} seats left for {k} passengers", details={"seat_class": c})
        for pos, idx in named.items():
            c = request.passengers[pos].seat_class
            if not self.classes[c].is_free(idx, x, y):
                raise SeatTaken(
                    f"seat {request.passengers[pos].pref} is taken",
                    details={"seat_class": c},
                )
        chosen: dict[int, int] = {}
        for c in need:
            inv = self.classes[c]
            mine = [pos for pos, p in enumerate(request.passengers) if p.seat_class == c]
            taken: set[int] = set()
            for pos in mine:
                if pos in named:
                    chosen[pos] = named[pos]
                    taken.add(named[pos])
            wishes = [(pos, q.letter_index) for pos in mine if isinstance(q := parsed[pos], LetterPref)]
            rest = [pos for pos in mine if parsed[pos] is None]
            if wishes:
                placed = inv.place_letters(x, y, wishes, taken)
                if placed is None:
                    rest = sorted(rest + [pos for pos, _ in wishes])
                else:
                    chosen.update(placed)
                    taken.update(placed.values())
            if rest:
                chosen.update(inv.seat_group(x, y, rest, taken, self.policy))
        out: list[SeatAssignment] = []
        for pos in range(len(request.passengers)):
            c = request.passengers[pos].seat_class
            inv = self.classes[c]
            inv.take(chosen[pos], x, y)
            out.append(SeatAssignment(pos, c, chosen[pos], inv.seats[chosen[pos]].name))
        return out

    def release(self, from_index: int, to_index: int, seats: Iterable[tuple[str, int]]) -> None:
        """Free the journey on each (class, seat index); all checked before anything changes."""
        self._check_journey(from_index, to_index)
        todo = list(seats)
        for c, idx in todo:
            inv = self._class(c)
            if not 0 <= idx < len(inv.seats):
                raise BadSeat(f"no {c} seat {idx}")
        for c, idx in todo:
            self.classes[c].give_back(idx, from_index, to_index)

    def remaining(self, from_index: int, to_index: int) -> dict[str, int]:
        """Seats free for the journey, per class."""
        self._check_journey(from_index, to_index)
        return {c: inv.remaining(from_index, to_index) for c, inv in self.classes.items()}

    def masks(self) -> dict[str, list[int]]:
        return {c: list(inv.masks) for c, inv in self.classes.items()}

    def sold_per_segment(self) -> dict[str, list[int]]:
        """Seats sold on each segment, per class (load factor per segment)."""
        return {
            c: [sum(m >> k & 1 for m in inv.masks) for k in range(self.n_stops - 1)]
            for c, inv in self.classes.items()
        }

    def check(self) -> None:
        """Invariant check: every class's run table and index equal a recount from the masks."""
        for inv in self.classes.values():
            inv.check()
