"""An order admitted whose process ended before it was queued (a node killed between the admission
and the allocation): once the committers have drained its train-day past it, its read says it was
lost, its admission is given back, and a retry under its Idempotency-Key places a new order."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from railbook.services.booking import accept, read_model
from railbook.services.booking.allocation import OutcomeUnknown
from tests.api.after_sale import held_order, journey, make_train, member_with


async def _killed_before_queueing(*_: Any, **__: Any) -> None:
    # What the crowd sees of a node that died after the admission: no answer from the allocator.
    raise OutcomeUnknown("the process ended before the allocation")


async def test_an_order_never_queued_reads_lost_and_frees_its_key(
    pg_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = pg_client
    train = await make_train(client, days=(4,), rows=2)
    other = await member_with(client, 1)
    await held_order(client, other, journey(train, 4, other["passengers"]))  # the day's stream drained
    member = await member_with(client, 1)
    body = journey(train, 4, member["passengers"])
    headers = {**member["headers"], "Idempotency-Key": str(uuid.uuid4())}
    monkeypatch.setattr(accept, "allocate", _killed_before_queueing)
    r = await client.post("/api/v1/orders", json=body, headers=headers)
    assert r.status_code == 503, r.text
    order_id = r.json()["error"]["details"]["order_id"]
    monkeypatch.undo()
    # Within its first seconds it reads as queued (its acceptance may still be on its way) ...
    seen = await client.get(f"/api/v1/orders/{order_id}", headers=member["headers"])
    assert seen.json()["status"] == "PENDING", seen.text
    # ... and once the committers are past it (here: at once; the clock's margins all lapsed) it
    # reads as lost, for good.
    for name in ("PENDING_TRUSTED_SECONDS", "QUEUED_WITHIN_SECONDS", "LOST_AFTER_SECONDS"):
        monkeypatch.setattr(read_model, name, 0.0)
    for _ in range(2):
        seen = await client.get(f"/api/v1/orders/{order_id}", headers=member["headers"])
        assert seen.status_code == 200 and seen.json()["status"] == "FAILURE", seen.text
        assert seen.json()["error"]["code"] == "LOST_IN_FAILOVER"
    # Its key, markers and trips were given back: the retry is a new order, and it holds its seat.
    r = await client.post("/api/v1/orders", json=body, headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["order_id"] != order_id
    monkeypatch.undo()
    final = await client.get(f"/api/v1/orders/{r.json()['order_id']}", headers=member["headers"])
    assert final.status_code == 200
