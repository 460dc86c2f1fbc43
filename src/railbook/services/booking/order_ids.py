"""Order ids: uuid7 strings whose last 32 bits are an HMAC tag over (member, the other bits).

An id issued for a service date carries that date, so the system of record can read an order by id
from its date's partition alone (docs/partitions.md). Layout of the 16 bytes:

- 0–5: the uuid7 millisecond timestamp; 6: version 7 and 4 random bits; 7: 8 random bits;
  8: the variant and 6 random bits;
- 9: ``DATED`` (this id carries a date); 10–11: the service date, days after 2000-01-01;
- 12–15: the tag, over the member and bytes 0–11, so the date is authenticated too.

Ids issued before dates were carried have random bits in 9–11: about one in 256 of them shows the
marker by chance, so a date read back is a hint, never a proof. Readers look in the date's partition
first and fall back to every partition when the order is not there (``adapters.db.by_day``).
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import time
import uuid

import uuid_utils

from railbook.services.booking.ports import DATED, ORDER_DATE_EPOCH, order_id_date, ticket_id

__all__ = [
    "issue_order_id",
    "order_id_date",
    "order_id_time",
    "stable_uuid",
    "ticket_id",
    "verify_order_id",
]


def issue_order_id(secret: str, member_id: int, service_date: dt.date | None = None) -> str:
    """A time-ordered id that only this system can have issued to this member (carrying
    ``service_date`` when given)."""
    if service_date is None:
        raw = bytearray(uuid_utils.uuid7().bytes)
    else:
        ms = time.time_ns() // 1_000_000
        bits = _random_bits(ms)
        raw = bytearray(ms.to_bytes(6, "big") + bytes(6))
        raw[6] = 0x70 | bits >> 14
        raw[7] = bits >> 6 & 0xFF
        raw[8] = 0x80 | bits & 0x3F
        raw[9] = DATED
        raw[10:12] = (service_date - ORDER_DATE_EPOCH).days.to_bytes(2, "big")
    raw[12:16] = _order_tag(secret, member_id, bytes(raw[:12]))
    return str(uuid.UUID(bytes=bytes(raw)))


_last = [0, 0]  # the millisecond and the random bits of this process's last dated id


def _random_bits(ms: int) -> int:
    """18 bits: random at each new millisecond (the top one clear, to leave room to count), then
    counting up within it (as uuid7's counter does), so two ids of one process never share a
    millisecond and its bits, and they sort in the order issued."""
    bits = (_last[1] + 1) & 0x3FFFF if ms == _last[0] else secrets.randbits(17)
    _last[0], _last[1] = ms, bits
    return bits


def verify_order_id(secret: str, member_id: int, order_id: str) -> bool:
    """True when ``order_id`` was issued by ``issue_order_id`` to this member."""
    try:
        raw = uuid.UUID(order_id).bytes
    except (ValueError, AttributeError, TypeError):
        return False
    if len(order_id) != 36 or raw[6] >> 4 != 7:
        return False
    return hmac.compare_digest(raw[12:16], _order_tag(secret, member_id, raw[:12]))


def order_id_time(order_id: str) -> dt.datetime:
    """When the id was issued (the uuid7 millisecond timestamp)."""
    ms = int.from_bytes(uuid.UUID(order_id).bytes[:6], "big")
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _order_tag(secret: str, member_id: int, head: bytes) -> bytes:
    return hmac.digest(secret.encode(), b"order:%d:%s" % (member_id, head), "sha256")[:4]


def stable_uuid(value: str) -> str:
    """The canonical text of a uuid (ids in URLs may come in upper case)."""
    return str(uuid.UUID(value))
