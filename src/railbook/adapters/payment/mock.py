"""The mock payment provider: always succeeds, and signs its callbacks."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from typing import Any

from railbook.services.after_sale.ports import MOCK, Charge


class MockProvider:
    """An in-process provider that always succeeds; its callbacks are signed with HMAC-SHA256 under a
    key derived from the system secret, so only this deployment can forge them."""

    name = MOCK

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"railbook:payment:mock", hashlib.sha256).digest()

    async def charge(self, *, order_id: str, amount_fen: int, idempotency_key: str | None) -> Charge:
        """A charge that succeeds at once under a fresh reference."""
        return Charge(MOCK, f"mock-{uuid.uuid4().hex}", amount_fen)

    async def refund(self, *, order_id: str, amount_fen: int, reference: str) -> Charge:
        """A refund that succeeds at once; its reference follows from the caller's."""
        return Charge(MOCK, f"mock-refund-{reference}"[:64], amount_fen)

    def sign(self, payload: Mapping[str, Any]) -> str:
        """The HMAC of the payload's canonical JSON."""
        body = json.dumps(dict(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def verify(self, payload: Mapping[str, Any], signature: str) -> bool:
        """Whether the signature is the payload's (compared in constant time)."""
        given = (signature or "").encode("utf-8", "surrogatepass")
        return hmac.compare_digest(self.sign(payload).encode(), given)
