"""per-day records partitioned by service date on PostgreSQL: ``order``, ``ticket`` and
``daily_seat`` become RANGE-partitioned tables, one partition per service date (created when a
day's sale opens, by ``railbook_day_partitions``) and a DEFAULT partition; ``ticket`` and
``daily_seat`` gain the ``service_date`` column (on SQLite too, where the tables stay plain).

On PostgreSQL the tables are rebuilt: existing rows are moved, in one transaction, into partitions
made for every date that has orders or train-days. Keys include the partition key (PostgreSQL
requires it), which is exactly as strong here: an order, a ticket and a seat belong to one service
date, and an order id carries its date. The exclusion constraint that refuses a seat segment sold
twice is declared on each ticket partition (PostgreSQL 15 refuses it on a partitioned table): two
tickets of one seat are always of one train-day, so per partition it refuses exactly what it did.
``payment`` and ``ticket_change`` lose their foreign keys to ``order`` and ``ticket`` (a key to a
partitioned table must name the partition key, which they do not carry); both are written only
beside a locked order or ticket row. See docs/partitions.md.

One-way on PostgreSQL: the downgrade refuses rather than fold the partitions back.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PARTITIONED = ("order", "daily_seat", "ticket")

# The partitions of one service date, made when the date's sale opens (and here for dates already
# in the database). Each is made apart and then attached: ATTACH takes only a SHARE UPDATE EXCLUSIVE
# lock on the parent, so a flash sale's inserts into other days go on meanwhile. A ticket partition
# gets the exclusion constraint before any row enters it. Rows of the date that the DEFAULT
# partitions took meanwhile are moved in first (tickets before the seats and orders they name, so
# the keys' ON DELETE actions find nothing to act on), then the three are attached, orders first.
DAY_PARTITIONS = r"""
CREATE OR REPLACE FUNCTION railbook_day_partitions(d date) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    parent text;
    part text;
    cols text;
BEGIN
    -- Two makers of one date (two schedulers): the second waits, then finds the tables made.
    PERFORM pg_advisory_xact_lock(hashtext('railbook_day_partitions'));
    IF to_regclass(quote_ident('order_p' || to_char(d, 'YYYYMMDD'))) IS NOT NULL THEN
        RETURN 0;
    END IF;
    FOREACH parent IN ARRAY ARRAY['ticket', 'daily_seat', 'order'] LOOP
        part := parent || '_p' || to_char(d, 'YYYYMMDD');
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING ALL)', part, parent);
        IF parent = 'ticket' THEN
            EXECUTE format(
                'ALTER TABLE %I ADD CONSTRAINT %I EXCLUDE USING gist '
                '(daily_seat_id WITH =, segments WITH &&) WHERE (status IN (''UNPAID'', ''PAID''))',
                part, 'ex_ticket_seat_segments_' || to_char(d, 'YYYYMMDD'));
        END IF;
        SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols FROM pg_attribute
        WHERE attrelid = quote_ident(parent)::regclass AND attnum > 0 AND NOT attisdropped
            AND attgenerated = '';
        EXECUTE format(
            'WITH moved AS (DELETE FROM %I WHERE service_date = %L RETURNING *) '
            'INSERT INTO %I (%s) SELECT %s FROM moved',
            parent || '_default', d, part, cols, cols);
    END LOOP;
    FOREACH parent IN ARRAY ARRAY['order', 'daily_seat', 'ticket'] LOOP
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
            parent, parent || '_p' || to_char(d, 'YYYYMMDD'), d, d + 1);
    END LOOP;
    RETURN 3;
END
$fn$
"""

_TICKET_COLUMNS = (
    "id, order_id, member_id, passenger_id, passenger_name, daily_train_id, daily_seat_id, seat_class, "
    "seat_index, seat_name, from_index, to_index, price_fen, status, created_at, updated_at, released_at, "
    "fare_type"
)
_SEAT_COLUMNS = "id, daily_train_id, seat_class, seat_index, carriage, seat_row, letter"

# The keys, foreign keys and indexes of the partitioned tables, under their former names.
_PARENT_KEYS = [
    'ALTER TABLE "order" ADD CONSTRAINT pk_order PRIMARY KEY (id, service_date)',
    'ALTER TABLE "order" ADD CONSTRAINT uq_order_member_id_idempotency_key '
    "UNIQUE (member_id, idempotency_key, service_date)",
    'ALTER TABLE "order" ADD CONSTRAINT fk_order_member_id_member FOREIGN KEY (member_id) '
    "REFERENCES member (id) ON DELETE CASCADE",
    'ALTER TABLE "order" ADD CONSTRAINT fk_order_daily_train_id_daily_train FOREIGN KEY (daily_train_id) '
    "REFERENCES daily_train (id)",
    'CREATE INDEX ix_order_member_created ON "order" (member_id, created_at)',
    'CREATE INDEX ix_order_status_deadline ON "order" (status, pay_deadline)',
    "CREATE INDEX ix_order_unreleased ON \"order\" (updated_at) WHERE status = 'CANCEL' AND released_at IS NULL",
    "ALTER TABLE daily_seat ADD CONSTRAINT pk_daily_seat PRIMARY KEY (id, service_date)",
    "ALTER TABLE daily_seat ADD CONSTRAINT uq_daily_seat_daily_train_id_seat_class_seat_index "
    "UNIQUE (daily_train_id, seat_class, seat_index, service_date)",
    "ALTER TABLE daily_seat ADD CONSTRAINT fk_daily_seat_daily_train_id_daily_train "
    "FOREIGN KEY (daily_train_id) REFERENCES daily_train (id) ON DELETE CASCADE",
    "ALTER TABLE ticket ADD CONSTRAINT pk_ticket PRIMARY KEY (id, service_date)",
    "ALTER TABLE ticket ADD CONSTRAINT fk_ticket_order_id_order FOREIGN KEY (order_id, service_date) "
    'REFERENCES "order" (id, service_date) ON DELETE CASCADE',
    "ALTER TABLE ticket ADD CONSTRAINT fk_ticket_daily_seat_id_daily_seat "
    "FOREIGN KEY (daily_seat_id, service_date) REFERENCES daily_seat (id, service_date)",
    "ALTER TABLE ticket ADD CONSTRAINT fk_ticket_daily_train_id_daily_train FOREIGN KEY (daily_train_id) "
    "REFERENCES daily_train (id)",
    "ALTER TABLE ticket ADD CONSTRAINT fk_ticket_member_id_member FOREIGN KEY (member_id) "
    "REFERENCES member (id) ON DELETE CASCADE",
    "CREATE INDEX ix_ticket_daily_seat ON ticket (daily_seat_id)",
    "CREATE INDEX ix_ticket_daily_train_status ON ticket (daily_train_id, status)",
    "CREATE INDEX ix_ticket_passenger ON ticket (passenger_id)",
    "CREATE INDEX ix_ticket_member_id ON ticket (member_id)",
    "CREATE INDEX ix_ticket_order_id ON ticket (order_id)",
    "CREATE INDEX ix_ticket_unreleased ON ticket (updated_at) "
    "WHERE status IN ('REFUNDED', 'CHANGED') AND released_at IS NULL",
]


def _upgrade_postgresql() -> None:
    bind = op.get_bind()
    op.execute(DAY_PARTITIONS)
    # Keys that point at the tables being rebuilt.
    op.execute("ALTER TABLE payment DROP CONSTRAINT fk_payment_order_id_order")
    op.execute("ALTER TABLE ticket_change DROP CONSTRAINT fk_ticket_change_ticket_id_ticket")
    op.execute("ALTER TABLE ticket DROP CONSTRAINT fk_ticket_order_id_order")
    op.execute("ALTER TABLE ticket DROP CONSTRAINT fk_ticket_daily_seat_id_daily_seat")
    for name in PARTITIONED:
        op.execute(f'ALTER TABLE "{name}" RENAME TO {name}_0008')
    op.execute("ALTER SEQUENCE daily_seat_id_seq OWNED BY NONE")
    op.execute('CREATE TABLE "order" (LIKE order_0008 INCLUDING DEFAULTS) PARTITION BY RANGE (service_date)')
    op.execute(
        "CREATE TABLE daily_seat (LIKE daily_seat_0008 INCLUDING DEFAULTS, service_date date NOT NULL) "
        "PARTITION BY RANGE (service_date)"
    )
    op.execute(
        "CREATE TABLE ticket (LIKE ticket_0008 INCLUDING DEFAULTS INCLUDING GENERATED, "
        "service_date date NOT NULL) PARTITION BY RANGE (service_date)"
    )
    # A row of a date without its partition (none should come: a date's partitions are made before
    # its sale opens) lands here rather than being refused: an accepted order is never lost.
    for name in PARTITIONED:
        op.execute(f'CREATE TABLE {name}_default PARTITION OF "{name}" DEFAULT')
    op.execute(
        "ALTER TABLE ticket_default ADD CONSTRAINT ex_ticket_seat_segments_default EXCLUDE USING gist "
        "(daily_seat_id WITH =, segments WITH &&) WHERE (status IN ('UNPAID', 'PAID'))"
    )
    dates = (
        bind.execute(
            sa.text("SELECT service_date FROM order_0008 UNION SELECT service_date FROM daily_train")
        )
        .scalars()
        .all()
    )
    for date in sorted(dates):
        bind.execute(sa.text("SELECT railbook_day_partitions(:d)"), {"d": date})
    op.execute('INSERT INTO "order" SELECT * FROM order_0008')
    op.execute(
        f"INSERT INTO daily_seat ({_SEAT_COLUMNS}, service_date) "
        f"SELECT {', '.join('s.' + c for c in _SEAT_COLUMNS.split(', '))}, d.service_date "
        "FROM daily_seat_0008 s JOIN daily_train d ON d.id = s.daily_train_id"
    )
    op.execute(
        f"INSERT INTO ticket ({_TICKET_COLUMNS}, service_date) "
        f"SELECT {', '.join('t.' + c for c in _TICKET_COLUMNS.split(', '))}, o.service_date "
        "FROM ticket_0008 t JOIN order_0008 o ON o.id = t.order_id"
    )
    moved = bind.execute(
        sa.text(
            "SELECT (SELECT count(*) FROM ticket_0008) - (SELECT count(*) FROM ticket), "
            "(SELECT count(*) FROM daily_seat_0008) - (SELECT count(*) FROM daily_seat)"
        )
    ).one()
    if any(moved):
        raise RuntimeError(f"0009: {moved[0]} ticket(s), {moved[1]} seat(s) lost their order or train-day")
    for name in ("ticket", "order", "daily_seat"):
        op.execute(f"DROP TABLE {name}_0008")
    op.execute("ALTER SEQUENCE daily_seat_id_seq OWNED BY daily_seat.id")
    for statement in _PARENT_KEYS:
        op.execute(statement)
    for name in PARTITIONED:
        op.execute(f'ANALYZE "{name}"')


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgresql()
        return
    # SQLite keeps plain tables; the new columns are filled from the order and the train-day.
    for table in ("ticket", "daily_seat"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("service_date", sa.Date(), nullable=True))
    op.execute(
        'UPDATE ticket SET service_date = (SELECT o.service_date FROM "order" o WHERE o.id = ticket.order_id)'
    )
    op.execute(
        "UPDATE daily_seat SET service_date = "
        "(SELECT d.service_date FROM daily_train d WHERE d.id = daily_seat.daily_train_id)"
    )
    for table in ("ticket", "daily_seat"):
        with op.batch_alter_table(table) as batch:
            batch.alter_column("service_date", existing_type=sa.Date(), nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        raise RuntimeError(
            "0009 is one-way on PostgreSQL: the partitioned order, ticket and daily_seat tables are not "
            "folded back (restore the backup taken before the upgrade instead)"
        )
    for table in ("daily_seat", "ticket"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("service_date")
