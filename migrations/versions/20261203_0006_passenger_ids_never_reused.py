"""passenger ids are never reused on SQLite (AUTOINCREMENT): the id of a deleted passenger must not
come back as someone else's, as tickets and held trips name passengers by id

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return  # PostgreSQL's sequences never hand out an id twice
    with op.batch_alter_table(
        "passenger", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        batch.alter_column("name", existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("passenger", recreate="always") as batch:
        batch.alter_column("name", existing_nullable=False)
