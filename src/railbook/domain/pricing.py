"""Fares from distance and class rates, in fen, rounded the way 12306 rounds them.

Rates (yuan per km) follow the published base rates of China Railway:
- high-speed and intercity trains (G, D, C): second class 0.46, first class 0.46 × 1.6,
  business 0.46 × 3.15; a D sleeper's berths at 0.46 × 1.9 (soft) and × 1.3 (hard);
- conventional trains (K, T, Z, Y): hard seat 0.0861, hard sleeper 0.15, soft sleeper 0.23,
  and the rare soft seat cars priced as second/first class at 0.12 / 0.16.
A fare is km × rate, rounded to the nearest 0.5 yuan (below 0.25 down, from 0.25 to 0.5, from
0.75 up to the next yuan), and never less than the minimum fare of the train's kind.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

HIGH_SPEED_KINDS = frozenset({"G", "D", "C"})
SECOND = Decimal("0.46")

HIGH_SPEED_RATES: dict[str, Decimal] = {
    "second": SECOND,
    "first": SECOND * Decimal("1.6"),
    "business": SECOND * Decimal("3.15"),
    "soft_sleeper": SECOND * Decimal("1.9"),
    "hard_sleeper": SECOND * Decimal("1.3"),
    "hard_seat": SECOND,
}
CONVENTIONAL_RATES: dict[str, Decimal] = {
    "hard_seat": Decimal("0.0861"),
    "hard_sleeper": Decimal("0.15"),
    "soft_sleeper": Decimal("0.23"),
    "second": Decimal("0.12"),
    "first": Decimal("0.16"),
    "business": Decimal("0.30"),
}
MIN_FARE_FEN = {"high_speed": 1000, "conventional": 200}  # 10 yuan / 2 yuan
FARE_STEP_FEN = 50  # fares are whole multiples of 0.5 yuan


def rate_per_km(kind: str, seat_class: str) -> Decimal:
    """Yuan per km for a class on a train of this kind (KeyError for an unknown class)."""
    table = HIGH_SPEED_RATES if kind in HIGH_SPEED_KINDS else CONVENTIONAL_RATES
    return table[seat_class]


def round_fare_fen(exact_yuan: Decimal) -> int:
    """Nearest multiple of 0.5 yuan, halves up (12306: 0.25 → 0.5, 0.75 → 1), in fen."""
    steps = (exact_yuan * 100 / FARE_STEP_FEN).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(steps) * FARE_STEP_FEN


def fare_fen(kind: str, seat_class: str, km: int) -> int:
    """The fare of a journey of ``km`` kilometres in that class, in fen."""
    minimum = MIN_FARE_FEN["high_speed" if kind in HIGH_SPEED_KINDS else "conventional"]
    return max(minimum, round_fare_fen(Decimal(km) * rate_per_km(kind, seat_class)))


def pair_fares(kind: str, seat_class: str, kms: list[int]) -> dict[tuple[int, int], int]:
    """Fare of every stop pair ``(i, j)``, i < j, given the km of each stop."""
    return {
        (i, j): fare_fen(kind, seat_class, kms[j] - kms[i])
        for i in range(len(kms))
        for j in range(i + 1, len(kms))
    }


FARE_TYPES: tuple[str, ...] = ("adult", "child", "student", "disabled_military")
HALF = Decimal("0.5")
STUDENT_SHARES: dict[str, Decimal] = {"second": Decimal("0.75"), "hard_seat": HALF}


def fare_share(fare_type: str, seat_class: str) -> Decimal:
    """The share of the adult fare a passenger of this type pays (12306): children and disabled
    servicemen half; students 75 % in second class and half in hard seats, full fare elsewhere."""
    if fare_type in ("child", "disabled_military"):
        return HALF
    if fare_type == "student":
        return STUDENT_SHARES.get(seat_class, Decimal(1))
    return Decimal(1)


def passenger_fare_fen(adult_fen: int, fare_type: str, seat_class: str) -> int:
    """What a passenger of ``fare_type`` pays for a seat whose adult fare is ``adult_fen``, rounded
    to the nearest 0.50 yuan the way fares are."""
    share = fare_share(fare_type, seat_class)
    if share == 1:
        return adult_fen
    return round_fare_fen(Decimal(adult_fen) * share / 100)


def fares_by_type(adult_fen: int, seat_class: str) -> dict[str, int]:
    """The fare of every passenger type for one seat, in fen."""
    return {kind: passenger_fare_fen(adult_fen, kind, seat_class) for kind in FARE_TYPES}


def yuan_text(fen: int) -> str:
    """Money as the API writes it: a decimal string in yuan with two places."""
    return f"{fen // 100}.{fen % 100:02d}"
