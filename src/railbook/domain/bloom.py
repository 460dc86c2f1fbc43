"""Bloom filter arithmetic shared by the Redis bitmap and the in-process one.

A key sets (and is tested against) ``hashes`` bit positions derived from one 128-bit BLAKE2b
digest by double hashing (``h1 + i·h2``). Bits are numbered the way Redis numbers them in
``SETBIT``/``BITFIELD``: bit 0 is the most significant bit of byte 0, so a bitmap built here can
be stored with one ``SET`` and read back with ``BITFIELD_RO key GET u1 <p> ...``.
A filter answers "certainly absent" or "probably present"; it never forgets a key it was built with.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_SIZE_BITS = 1 << 20  # 128 KiB: ~10^5 keys at a false-positive rate below 1 %
DEFAULT_HASHES = 7


@dataclass(frozen=True, slots=True)
class BloomShape:
    """Size in bits (a multiple of 8) and number of hash positions per key."""

    size_bits: int = DEFAULT_SIZE_BITS
    hashes: int = DEFAULT_HASHES

    def __post_init__(self) -> None:
        if self.size_bits < 8 or self.size_bits % 8:
            raise ValueError("size_bits must be a positive multiple of 8")
        if not 1 <= self.hashes <= 32:
            raise ValueError("hashes must be between 1 and 32")

    @classmethod
    def for_capacity(cls, capacity: int, false_positive_rate: float = 0.001) -> BloomShape:
        """The smallest shape holding ``capacity`` keys at about that false-positive rate."""
        n = max(capacity, 1)
        bits = math.ceil(-n * math.log(false_positive_rate) / math.log(2) ** 2)
        bits = max(64, (bits + 7) // 8 * 8)
        hashes = max(1, min(32, round(bits / n * math.log(2))))
        return cls(bits, hashes)

    def positions(self, key: str) -> list[int]:
        """The bit positions of a key (same key, same positions, in every process)."""
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()
        h1 = int.from_bytes(digest[:8], "big")
        h2 = int.from_bytes(digest[8:], "big") | 1  # odd: the positions never collapse onto one
        return [(h1 + i * h2) % self.size_bits for i in range(self.hashes)]

    def false_positive_rate(self, keys: int) -> float:
        """Expected rate of "probably present" answers for absent keys once ``keys`` are in."""
        return float((1 - math.exp(-self.hashes * keys / self.size_bits)) ** self.hashes)


def build_bitmap(shape: BloomShape, keys: Iterable[str]) -> bytearray:
    """The filter's bitmap holding every key, MSB-first as Redis stores bits."""
    bits = bytearray(shape.size_bits // 8)
    for key in keys:
        for position in shape.positions(key):
            bits[position >> 3] |= 0x80 >> (position & 7)
    return bits


def bit_is_set(bits: bytes | bytearray, position: int) -> bool:
    """Bit ``position`` of a Redis-ordered bitmap (bits beyond its end read as 0, as in Redis)."""
    byte = position >> 3
    return byte < len(bits) and bool(bits[byte] & (0x80 >> (position & 7)))


def all_set(values: Iterable[int]) -> bool:
    """A key is probably present when every one of its bits is set."""
    return all(values)


def station_term_key(term: str) -> str:
    """Filter key of anything a passenger may type for a station: its name, telegraph code or city."""
    return f"station:{term}"


def train_day_key(train_code: str, date_text: str) -> str:
    """Filter key of an open train-day (``G1`` on ``2026-12-01``)."""
    return f"day:{train_code}:{date_text}"
