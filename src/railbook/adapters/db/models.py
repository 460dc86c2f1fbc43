"""SQLAlchemy tables (the system of record). Mapped to domain types explicitly in repositories.

Runs on PostgreSQL (asyncpg) and SQLite (aiosqlite). PostgreSQL-only parts (the ticket
``segments`` range and its exclusion constraint) are added by the migration, not here; so is, on
PostgreSQL, the partitioning of the per-day records (``order``, ``ticket``, ``daily_seat``) by
service date, whose keys then include ``service_date`` (docs/partitions.md).
Money is held in fen (1/100 yuan) as integers.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from railbook.kit.clock import utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY autoincrements).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Station(Base):
    __tablename__ = "station"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    code: Mapped[str] = mapped_column(String(3), unique=True)
    pinyin: Mapped[str] = mapped_column(String(64), default="")
    city: Mapped[str] = mapped_column(String(32), default="")


class Train(Base):
    __tablename__ = "train"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    kind: Mapped[str] = mapped_column(String(2))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainStop(Base):
    __tablename__ = "train_stop"
    __table_args__ = (UniqueConstraint("train_id", "stop_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_id: Mapped[int] = mapped_column(ForeignKey("train.id", ondelete="CASCADE"), index=True)
    stop_index: Mapped[int] = mapped_column(SmallInteger)
    station_id: Mapped[int] = mapped_column(ForeignKey("station.id"))
    arrives: Mapped[str | None] = mapped_column(String(5))  # "HH:MM"; None at the first stop
    departs: Mapped[str | None] = mapped_column(String(5))  # None at the last stop
    day: Mapped[int] = mapped_column(SmallInteger, default=0)  # days after the departure day
    km: Mapped[int] = mapped_column(Integer)


class Carriage(Base):
    __tablename__ = "carriage"
    __table_args__ = (UniqueConstraint("train_id", "carriage_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_id: Mapped[int] = mapped_column(ForeignKey("train.id", ondelete="CASCADE"), index=True)
    carriage_index: Mapped[int] = mapped_column(SmallInteger)
    seat_class: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(SmallInteger)


class SeatRow(Base):
    """A physical seat of the timetable, generated from its carriage's class layout."""

    __tablename__ = "seat"
    __table_args__ = (UniqueConstraint("carriage_id", "seat_row", "letter"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    carriage_id: Mapped[int] = mapped_column(ForeignKey("carriage.id", ondelete="CASCADE"), index=True)
    seat_row: Mapped[int] = mapped_column(SmallInteger)
    letter: Mapped[str] = mapped_column(String(2))
    seat_class: Mapped[str] = mapped_column(String(16))


class DailyTrain(Base):
    """A train on one service date, frozen when its sale opened (later timetable edits do not touch it)."""

    __tablename__ = "daily_train"
    __table_args__ = (UniqueConstraint("train_code", "service_date"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    train_id: Mapped[int | None] = mapped_column(ForeignKey("train.id", ondelete="SET NULL"), index=True)
    train_code: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(2))
    service_date: Mapped[dt.date] = mapped_column(Date, index=True)
    n_stops: Mapped[int] = mapped_column(SmallInteger)
    carriages: Mapped[list[dict[str, object]]] = mapped_column(JSON)  # [{carriage, seat_class, rows}]
    opened_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DailyTrainStop(Base):
    """Stops of a daily train: the route index (station pair → trains) is a self-join on this table."""

    __tablename__ = "daily_train_stop"
    __table_args__ = (
        UniqueConstraint("daily_train_id", "stop_index"),
        Index("ix_daily_train_stop_date_station", "service_date", "station_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    daily_train_id: Mapped[int] = mapped_column(ForeignKey("daily_train.id", ondelete="CASCADE"))
    service_date: Mapped[dt.date] = mapped_column(Date)
    stop_index: Mapped[int] = mapped_column(SmallInteger)
    station_id: Mapped[int] = mapped_column(ForeignKey("station.id"))
    station_name: Mapped[str] = mapped_column(String(32))
    arrives: Mapped[str | None] = mapped_column(String(5))
    departs: Mapped[str | None] = mapped_column(String(5))
    day: Mapped[int] = mapped_column(SmallInteger, default=0)
    km: Mapped[int] = mapped_column(Integer)


class DailySeat(Base):
    """A seat of a daily train. Its segment state is derived from the active tickets that name it."""

    __tablename__ = "daily_seat"
    __table_args__ = (UniqueConstraint("daily_train_id", "seat_class", "seat_index"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    daily_train_id: Mapped[int] = mapped_column(ForeignKey("daily_train.id", ondelete="CASCADE"))
    service_date: Mapped[dt.date] = mapped_column(Date)  # the daily train's (the partition key)
    seat_class: Mapped[str] = mapped_column(String(16))
    seat_index: Mapped[int] = mapped_column(Integer)  # number within the class, as the allocators use it
    carriage: Mapped[int] = mapped_column(SmallInteger)
    seat_row: Mapped[int] = mapped_column(SmallInteger)
    letter: Mapped[str] = mapped_column(String(2))


class DailyPairInventory(Base):
    """Per station pair and class: the price, and a snapshot of what remains (refreshed off the hot path)."""

    __tablename__ = "daily_pair_inventory"
    __table_args__ = (UniqueConstraint("daily_train_id", "seat_class", "from_index", "to_index"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    daily_train_id: Mapped[int] = mapped_column(ForeignKey("daily_train.id", ondelete="CASCADE"))
    seat_class: Mapped[str] = mapped_column(String(16))
    from_index: Mapped[int] = mapped_column(SmallInteger)
    to_index: Mapped[int] = mapped_column(SmallInteger)
    remaining: Mapped[int] = mapped_column(Integer)
    price_fen: Mapped[int] = mapped_column(Integer)
    refreshed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Member(Base):
    __tablename__ = "member"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mobile: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="member")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Passenger(Base):
    __tablename__ = "passenger"
    # SQLite would otherwise reuse the id of the last passenger deleted: tickets, trips and caches
    # keyed by it would then belong to someone else.
    __table_args__ = (UniqueConstraint("member_id", "id_card"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("member.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    id_card: Mapped[str] = mapped_column(String(18))
    type: Mapped[str] = mapped_column(String(24), default="adult")  # "disabled_military" is 17 long
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Order(Base):
    __tablename__ = "order"
    __table_args__ = (
        UniqueConstraint("member_id", "idempotency_key"),
        Index("ix_order_member_created", "member_id", "created_at"),
        Index("ix_order_status_deadline", "status", "pay_deadline"),
        # CANCEL orders whose seats are not yet confirmed back (the expiry job retries these).
        Index(
            "ix_order_unreleased",
            "updated_at",
            postgresql_where=text("status = 'CANCEL' AND released_at IS NULL"),
            sqlite_where=text("status = 'CANCEL' AND released_at IS NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid7, time-ordered
    member_id: Mapped[int] = mapped_column(ForeignKey("member.id", ondelete="CASCADE"))
    daily_train_id: Mapped[int] = mapped_column(ForeignKey("daily_train.id"))
    train_code: Mapped[str] = mapped_column(String(16))
    service_date: Mapped[dt.date] = mapped_column(Date)
    from_index: Mapped[int] = mapped_column(SmallInteger)
    to_index: Mapped[int] = mapped_column(SmallInteger)
    from_station: Mapped[str] = mapped_column(String(32))
    to_station: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    payment_status: Mapped[str | None] = mapped_column(String(20))
    error_code: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(Text)
    total_fen: Mapped[int] = mapped_column(Integer, default=0)
    request: Mapped[dict[str, object]] = mapped_column(JSON)  # the passengers as asked
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    pay_deadline: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Set once a cancelled order's seats are back in the allocator; NULL on a CANCEL order means
    # the release after commit has not been confirmed, and the expiry job retries it (idempotently).
    released_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # The row's identity as PostgreSQL keys it (partitioned by date): an ORM update names the date,
    # so it touches one partition.
    __mapper_args__ = {"primary_key": [id, service_date]}


class Ticket(Base):
    """A seat held for a journey. On PostgreSQL the migration adds ``segments int4range``
    (generated from from_index/to_index) and an exclusion constraint over active tickets, so
    no seat segment can be sold twice whatever the code above does."""

    __tablename__ = "ticket"
    __table_args__ = (
        Index("ix_ticket_daily_seat", "daily_seat_id"),
        Index("ix_ticket_daily_train_status", "daily_train_id", "status"),
        # A passenger's trips (one person, one seat at a time), read when they are restored.
        Index("ix_ticket_passenger", "passenger_id"),
        # Refunded or changed tickets whose seat is not yet confirmed back (retried by the expiry job).
        Index(
            "ix_ticket_unreleased",
            "updated_at",
            postgresql_where=text("status IN ('REFUNDED', 'CHANGED') AND released_at IS NULL"),
            sqlite_where=text("status IN ('REFUNDED', 'CHANGED') AND released_at IS NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("order.id", ondelete="CASCADE"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("member.id", ondelete="CASCADE"), index=True)
    passenger_id: Mapped[int] = mapped_column(BigId)
    passenger_name: Mapped[str] = mapped_column(String(64))
    daily_train_id: Mapped[int] = mapped_column(ForeignKey("daily_train.id"))
    service_date: Mapped[dt.date] = mapped_column(Date)  # the order's (the partition key)
    daily_seat_id: Mapped[int] = mapped_column(ForeignKey("daily_seat.id"))
    seat_class: Mapped[str] = mapped_column(String(16))
    seat_index: Mapped[int] = mapped_column(Integer)
    seat_name: Mapped[str] = mapped_column(String(12))
    from_index: Mapped[int] = mapped_column(SmallInteger)
    to_index: Mapped[int] = mapped_column(SmallInteger)
    price_fen: Mapped[int] = mapped_column(Integer)
    # The passenger's fare type when the ticket was sold (adult, child, student, disabled_military).
    fare_type: Mapped[str] = mapped_column(String(24), default="adult", server_default="adult")
    status: Mapped[str] = mapped_column(String(16))  # UNPAID, PAID (active); REFUNDED, CHANGED, CANCELLED
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Set once a refunded or changed ticket's seat is back in the allocator (retried while NULL).
    released_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    __mapper_args__ = {"primary_key": [id, service_date]}  # as for Order


class Payment(Base):
    __tablename__ = "payment"
    __table_args__ = (
        UniqueConstraint("provider", "provider_ref"),
        # A pay retried under its Idempotency-Key is found by the key, not by a scan of every payment.
        Index(
            "ix_payment_idempotency_key",
            "idempotency_key",
            postgresql_where=text("idempotency_key IS NOT NULL"),
            sqlite_where=text("idempotency_key IS NOT NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("order.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    provider_ref: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8), default="pay")  # pay | refund
    amount_fen: Mapped[int] = mapped_column(Integer)
    # A refund's fee kept back (a plain refund's, or that of a change's refunded difference); NULL on
    # charges and on refunds written before fees were recorded.
    fee_fen: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Outbox(Base):
    """Events written in the same transaction as the state change; a relay publishes them."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unpublished", "published_at", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, object]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    published_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Waitlist(Base):
    """A member's wish for seats on a sold-out train-day, filled in arrival order when seats return."""

    __tablename__ = "waitlist"
    __table_args__ = (
        Index("ix_waitlist_status_day", "status", "train_code", "service_date", "id"),
        Index("ix_waitlist_member_created", "member_id", "created_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("member.id", ondelete="CASCADE"))
    train_code: Mapped[str] = mapped_column(String(16))
    service_date: Mapped[dt.date] = mapped_column(Date)
    from_station: Mapped[str] = mapped_column(String(32))
    to_station: Mapped[str] = mapped_column(String(32))
    passengers: Mapped[list[dict[str, object]]] = mapped_column(JSON)  # as POST /orders takes them
    status: Mapped[str] = mapped_column(String(16))  # WAITING, FILLING, FILLED, EXPIRED, CANCELLED
    order_id: Mapped[str | None] = mapped_column(String(36))
    # Waiting ends then (EXPIRED); NULL on entries made before deadlines existed (their day ends them).
    deadline: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    error_code: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TicketChange(Base):
    """A paid ticket being changed to another train or date: done once the new order holds its seats."""

    __tablename__ = "ticket_change"
    __table_args__ = (Index("ix_ticket_change_status", "status", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[str] = mapped_column(ForeignKey("ticket.id", ondelete="CASCADE"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("member.id", ondelete="CASCADE"))
    new_order_id: Mapped[str] = mapped_column(String(36), unique=True)
    status: Mapped[str] = mapped_column(String(16))  # PENDING, DONE, ABANDONED
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProcessedEvent(Base):
    """Idempotent consumers remember what they have handled."""

    __tablename__ = "processed_event"
    # Pruned by age (``workers.outbox.prune_events``): on PostgreSQL a BRIN index, tiny and nearly
    # free to maintain for rows written in time order.
    __table_args__ = (Index("ix_processed_event_processed_at", "processed_at", postgresql_using="brin"),)
    consumer: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    processed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BlocklistEntry(Base):
    """A blocked mobile or client address (or network), until ``until`` or for good. Read whole
    by each process (``services.members.blocklist``): a short list, no index beyond the key."""

    __tablename__ = "blocklist_entry"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mobile: Mapped[str | None] = mapped_column(String(20))
    ip: Mapped[str | None] = mapped_column(String(64))  # canonical text: an address or a network
    reason: Mapped[str] = mapped_column(String(200))
    until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SystemValue(Base):
    """Small values kept with the data (the generated JWT secret, leader notes)."""

    __tablename__ = "system_value"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )


__all__ = [
    "Base",
    "BlocklistEntry",
    "Carriage",
    "DailyPairInventory",
    "DailySeat",
    "DailyTrain",
    "DailyTrainStop",
    "Member",
    "Order",
    "Outbox",
    "Passenger",
    "Payment",
    "ProcessedEvent",
    "SeatRow",
    "Station",
    "SystemValue",
    "Ticket",
    "TicketChange",
    "Train",
    "TrainStop",
    "Waitlist",
]
