"""processed_event: an index on processed_at, for pruning by age (BRIN on PostgreSQL)

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_processed_event_processed_at", "processed_event", ["processed_at"], postgresql_using="brin"
    )


def downgrade() -> None:
    op.drop_index("ix_processed_event_processed_at", table_name="processed_event")
