"""Order ids: uuid7 strings whose last 32 bits are an HMAC tag over (member, the other bits)."""

from __future__ import annotations

import datetime as dt
import hmac
import uuid

import uuid_utils

from railbook.services.booking.ports import ticket_id

__all__ = ["issue_order_id", "order_id_time", "stable_uuid", "ticket_id", "verify_order_id"]


def issue_order_id(secret: str, member_id: int) -> str:
    """A time-ordered id that only this system can have issued to this member."""
    raw = bytearray(uuid_utils.uuid7().bytes)
    raw[12:16] = _order_tag(secret, member_id, bytes(raw[:12]))
    return str(uuid.UUID(bytes=bytes(raw)))


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
