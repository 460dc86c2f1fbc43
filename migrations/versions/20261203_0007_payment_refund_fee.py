"""a refund's payment row keeps the fee kept back, so a ticket's view shows what was refunded and
what was kept (a plain refund's, or that of a change's refunded difference)

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payment") as batch:
        batch.add_column(sa.Column("fee_fen", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payment") as batch:
        batch.drop_column("fee_fen")
