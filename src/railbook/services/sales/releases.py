"""Release ids: the name under which the allocator records that a seat was given back, so a retried
release is applied at most once per allocator copy."""

from __future__ import annotations


def order_release_id(order_id: str) -> str:
    """The allocator release id of a cancelled order's seats."""
    return f"cancel:{order_id}"


def ticket_release_id(ticket_id: str, status: str) -> str:
    """The allocator release id of a refunded (or changed) ticket's seat."""
    return f"{'refund' if status == 'REFUNDED' else 'change'}:{ticket_id}"
