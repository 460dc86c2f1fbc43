"""ticket: the passenger's fare type; an index on passenger_id (a passenger's trips);
passenger.type wide enough for "disabled_military"

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ticket") as batch:
        batch.add_column(sa.Column("fare_type", sa.String(24), nullable=False, server_default="adult"))
    op.create_index("ix_ticket_passenger", "ticket", ["passenger_id"])
    with op.batch_alter_table("passenger") as batch:
        batch.alter_column("type", type_=sa.String(24), existing_type=sa.String(16), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("passenger") as batch:
        batch.alter_column("type", type_=sa.String(16), existing_type=sa.String(24), existing_nullable=False)
    op.drop_index("ix_ticket_passenger", table_name="ticket")
    with op.batch_alter_table("ticket") as batch:
        batch.drop_column("fare_type")
