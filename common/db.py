"""Database models and engines. Postgres in deployment, SQLite on one machine."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from common import jsontext
from common.settings import Settings


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both databases (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict: JSON()}


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # The key's share of the queue against other busy keys (api/services/fair.py).
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default=text("1"))


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key", name="uq_jobs_owner_idempotency"),
        Index("ix_jobs_owner_id", "owner_id", "id"),
        Index("ix_jobs_status_queue", "status", "queue", "priority"),
        Index("ix_jobs_batch_line", "batch_id", "id"),  # a batch's lines in line order
        Index("ix_jobs_batch_status", "batch_id", "status"),
        Index("ix_jobs_owner_status", "owner_id", "status", "priority"),
        Index("ix_jobs_owner_finished", "owner_id", "finished_at"),
        Index("ix_jobs_held", "owner_id", "priority", "id",
              postgresql_where=text("status = 'queued' AND held_at IS NOT NULL"),
              sqlite_where=text("status = 'queued' AND held_at IS NOT NULL")),
        Index("ix_jobs_webhook_next", "webhook_next",
              postgresql_where=text("webhook_next IS NOT NULL"),
              sqlite_where=text("webhook_next IS NOT NULL")),
        # The retention sweep (api/retention.py): ended jobs by end time, and apart
        # those few with an expires_after of their own.
        Index("ix_jobs_finished", "finished_at"),
        Index("ix_jobs_expiring", "finished_at",
              postgresql_where=text("expires_after_s IS NOT NULL"),
              sqlite_where=text("expires_after_s IS NOT NULL")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(200))
    queue: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16))
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    timeout_s: Mapped[float | None] = mapped_column(Float, default=None)
    start_by: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # Lease of the running attempt, renewed by its worker's heartbeat.
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    worker_id: Mapped[str | None] = mapped_column(String(200), default=None)
    # NULL until the task message is on the broker; the reconciler publishes such rows.
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    # Set while a queued job is held back from the broker (api/services/fair.py): its
    # key is past its window of waiting jobs or at its cap of running ones. It has no
    # task message; the control process publishes it when its key has room.
    held_at: Mapped[datetime | None] = mapped_column(default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    batch_id: Mapped[str | None] = mapped_column(String(40), default=None)
    custom_id: Mapped[str | None] = mapped_column(Text, default=None)
    # A webhook the job calls (common/webhooks.py), the events it asked for (`start`,
    # `completed`), and the next one not yet handed to the delivery log (NULL: none).
    webhook: Mapped[str | None] = mapped_column(Text, default=None)
    webhook_events: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    webhook_next: Mapped[str | None] = mapped_column(String(16), default=None)
    # Deleted this many seconds after it ended (NULL: after MONKEY_RETENTION_DAYS).
    expires_after_s: Mapped[int | None] = mapped_column(Integer, default=None)


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the API read while a worker writes; busy_timeout waits out the writer lock.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


# Every engine reads and writes JSON columns with common/jsontext.py (orjson): a job's
# output can be hundreds of floats (an embedding), which the json module is slow at.
_JSON = {"json_serializer": jsontext.dumps, "json_deserializer": jsontext.loads}


def _sqlite_async_engine(settings: Settings, **kw: Any) -> AsyncEngine:
    engine = create_async_engine(settings.async_database_url, connect_args={"timeout": 30},
                                 **_JSON, **kw)
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_sync_engine(settings: Settings, **kw: Any) -> Engine:
    engine = create_engine(settings.sync_database_url,
                           connect_args={"timeout": 30, "check_same_thread": False},
                           **_JSON, **kw)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def make_async_engine(settings: Settings) -> AsyncEngine:
    if settings.is_sqlite:
        return _sqlite_async_engine(settings)
    # No pre-ping: it costs a round trip per checkout on the hot path. A connection
    # that died with a database restart fails once; SQLAlchemy then drops the whole
    # pool (the API answers that request 503, workers retry the write).
    return create_async_engine(
        settings.async_database_url, pool_size=20, max_overflow=20, pool_recycle=1800,
        **_JSON)


def make_autocommit_engine(engine: AsyncEngine, settings: Settings) -> AsyncEngine:
    """The engine of autocommit sessions (each statement commits on its own).

    On Postgres, the same pool with AUTOCOMMIT as an execution option: asyncpg switches
    a connection's mode without a round trip. On SQLite, a pool of its own, born
    autocommit: aiosqlite runs every call on the connection's thread, and flipping a
    shared connection's isolation level made a statement with its commit cost ten thread
    handovers instead of four (set on checkout; on checkin a reset, its PRAGMA and a
    rollback). Its rollbacks are skipped (there is never a transaction to roll back)."""
    if not settings.is_sqlite:
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return _sqlite_async_engine(settings, isolation_level="AUTOCOMMIT",
                                skip_autocommit_rollback=True)


def make_sync_autocommit_engine(engine: Engine, settings: Settings) -> Engine:
    """A worker's engine of single-statement writes (claim, finish, heartbeat): as
    make_autocommit_engine, for threads. On SQLite a pool of its own, born autocommit:
    on the shared pool every checkout set the connection's isolation level and every
    checkin reset it with a PRAGMA, a statement per write on top of the write (about 5%
    of a worker's CPU in a batch of echo lines). The rollback at checkin stays: it costs
    nothing outside a transaction, and the claim's BEGIN IMMEDIATE has one to end."""
    if not settings.is_sqlite:
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return _sqlite_sync_engine(settings, isolation_level="AUTOCOMMIT")


def dispose_own_pool(auto: Engine, engine: Engine) -> None:
    """Dispose an autocommit engine made by make_sync_autocommit_engine(engine, ...)
    when it has a pool of its own (SQLite); on Postgres it shares engine's."""
    if auto.pool is not engine.pool:
        auto.dispose()


def make_sync_engine(settings: Settings) -> Engine:
    if settings.is_sqlite:
        return _sqlite_sync_engine(settings)
    # A worker on another host than Postgres: after a partition, a connection whose
    # packets go nowhere fails within half a minute (unacknowledged writes:
    # tcp_user_timeout; an idle connection: keepalives) instead of after the kernel's
    # 15 minutes of retransmissions, so the store's retries reconnect once it heals.
    return create_engine(
        settings.sync_database_url, pool_size=10, max_overflow=40, pool_recycle=1800,
        connect_args={"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10,
                      "keepalives_interval": 5, "keepalives_count": 3,
                      "tcp_user_timeout": 30_000},
        **_JSON)


def async_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def sync_sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
